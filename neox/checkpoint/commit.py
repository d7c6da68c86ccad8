"""Crash-safe checkpoint directories: stage, commit, prune.

A checkpoint is written into ``<save>/global_step<N>.tmp-<run id>/`` by every rank. Only after all
ranks have finished (the caller's barrier) does rank 0 :func:`commit` it: rename the staging
directory to ``global_step<N>`` (replacing an older one of the same step) and rewrite ``latest``
through a temporary file and ``os.replace``, so a reader sees the old or the new name, never a
half-written file. A job killed mid-save leaves a ``.tmp-`` directory that nothing loads;
:func:`remove_stale_staging` clears those at the next start.

Upstream GPT-NeoX writes straight into ``global_step<N>`` and DeepSpeed then updates ``latest``,
so a crash during a save can leave ``latest`` pointing at a partial directory (user reports:
Lightning#688, KERMT PR#8). ``keep_last_n_checkpoints`` deletes old directories only after the new
one is committed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from neox.checkpoint import layout


def staging_dir(save: Path, iteration: int, run_id: str) -> Path:
    return save / f"{layout.tag(iteration)}{layout.STAGING_MARK}{run_id}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def commit(save: Path, staged: Path, iteration: int) -> Path:
    """Make a fully written staging directory the checkpoint ``global_step<iteration>`` and point ``latest`` at it."""
    final = save / layout.tag(iteration)
    if final.exists():
        # Re-saving a step (e.g. a resumed run reaching the same iteration): the new one wins.
        old = save / f"{final.name}{layout.STAGING_MARK}replaced-{os.getpid()}"
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)
    _fsync_dir(save)
    write_text_atomic(save / layout.LATEST, final.name)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def prune(save: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints; returns what was deleted."""
    ckpts = layout.list_checkpoints(save)
    latest = layout.read_latest(save)
    doomed = [p for _, p in ckpts[: max(0, len(ckpts) - keep)] if p.name != latest]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def remove_stale_staging(save: Path) -> list[Path]:
    """Delete staging directories left by a save that never completed."""
    stale = [p for p in save.iterdir() if p.is_dir() and layout.is_staging(p)] if save.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale
