"""Sample-index cache files: upstream's names, built once per node, loaded memory-mapped.

Names are upstream GPT-NeoX's, next to the data prefix, so caches built by either project are
reused by the other::

    {prefix}_{name}_indexmap_{num_samples}ns_{seq_length}sl_{seed}s_{pack_impl}pi[_ac]_{doc_idx,sample_idx,shuffle_idx}.npy

``NEOX_DATA_CACHE_DIR`` moves them into another directory (for read-only dataset directories);
the file names stay the same.

Who builds: global rank 0 with ``use_shared_fs: true`` (upstream's default), else local rank 0
of every node. Upstream makes everyone else wait in an all-reduce, which hits the NCCL/gloo
timeout when the build is slow (a large dataset, a slow filesystem) and hangs forever when the
builder dies. Here the other ranks poll for the files instead: the builder writes each array to
a temporary name and renames it into place, so a file that exists is complete; a waiting rank
gives up after ``NEOX_DATA_INDEX_TIMEOUT`` seconds (default 7200) with a message that names
the files and the likely cause. No collective is involved, so no process-group timeout applies.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np

from neox.errors import DataError

SUFFIXES = ("doc_idx", "sample_idx", "shuffle_idx")


def cache_stem(data_prefix: str, name: str, num_samples, seq_length: int, seed: int, pack_impl: str,
               allow_chopped: bool) -> str:
    """The path of the cache files without ``_{doc_idx,...}.npy`` (upstream's scheme)."""
    stem = f"{data_prefix}_{name}_indexmap_{num_samples}ns_{seq_length}sl_{seed}s_{pack_impl}pi"
    if allow_chopped:
        stem += "_ac"
    cache_dir = os.environ.get("NEOX_DATA_CACHE_DIR")
    if cache_dir:
        stem = str(Path(cache_dir) / Path(stem).name)
    return stem


def cache_files(stem: str) -> list[str]:
    return [f"{stem}_{s}.npy" for s in SUFFIXES]


def is_builder(use_shared_fs: bool) -> bool:
    """Does this process build the caches? (global rank 0, or local rank 0 without a shared fs)"""
    if use_shared_fs:
        return _global_rank() == 0
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))) == 0


def _global_rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def load_or_build(stem: str, build, *, use_shared_fs: bool = True, log=print):
    """Return (doc_idx, sample_idx, shuffle_idx), building them with ``build()`` if needed."""
    files = cache_files(stem)
    if not all(os.path.isfile(f) for f in files):
        if is_builder(use_shared_fs):
            log(f"building sample index {Path(stem).name} ...")
            start = time.time()
            arrays = build()
            _save_all(files, arrays)
            log(f"built sample index in {time.time() - start:.2f} s: {len(arrays[2])} samples")
        else:
            _wait_for(files, use_shared_fs)
    return tuple(np.load(f, allow_pickle=False, mmap_mode="r") for f in files)


def _save_all(files: list[str], arrays) -> None:
    directory = Path(files[0]).parent
    if not os.access(directory, os.W_OK):
        raise DataError(f"cannot write the sample-index cache into {directory} (not writable); "
                        "set NEOX_DATA_CACHE_DIR to a writable directory")
    tag = f"{socket.gethostname()}-{os.getpid()}"
    for path, arr in zip(files, arrays):
        tmp = f"{path[:-4]}.tmp-{tag}.npy"
        np.save(tmp, np.asarray(arr), allow_pickle=False)
        os.replace(tmp, path)  # atomic: a visible file is a complete file


def _wait_for(files: list[str], use_shared_fs: bool) -> None:
    timeout = float(os.environ.get("NEOX_DATA_INDEX_TIMEOUT", "7200"))
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not all(os.path.isfile(f) for f in files):
        if time.monotonic() > deadline:
            who = "global rank 0" if use_shared_fs else "local rank 0 of this node"
            hint = (" If the nodes do not share this filesystem, set use_shared_fs: false." if use_shared_fs else "")
            raise DataError(f"waited {timeout:.0f} s for the sample-index cache {files[0]} (and its sample/shuffle "
                            f"files) that {who} builds; check that rank's log for an error.{hint} "
                            "NEOX_DATA_INDEX_TIMEOUT sets the wait in seconds")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
