"""Command-line plumbing shared by the checkpoint tools (not a tool itself).

- ``just`` passes ``key=value`` words; :func:`flags_from_key_values` turns them into ``--key value``
  (``true``/``false`` for switches), so ``just convert-hf model=x tp=2 te=true`` and
  ``python tools/ckpts/convert_hf_to_neox.py --model x --tp 2 --te`` are the same call.
- :func:`run` is every tool's entry point: a :class:`~neox.errors.NeoxError` becomes one line on
  stderr and exit status 1; on success the tool's summary is printed as one JSON line on stdout
  (progress and notes go to stderr), so scripts can parse it. An error carrying a ``summary``
  (a batch with some failed items) prints that JSON too.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable

from neox.errors import NeoxError

_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$")


def flags_from_key_values(
    argv: Iterable[str], switches: Iterable[str] = (), aliases: dict[str, str] | None = None
) -> list[str]:
    """``key=value`` words as ``--key value``; a switch (``te=true``) becomes ``--te`` or nothing.

    ``aliases`` maps a key (dashes for underscores) to the flag it stands for (``output`` -> ``output-dir``).
    """
    switches, aliases = set(switches), aliases or {}
    out: list[str] = []
    for word in argv:
        m = _KEY_VALUE.match(word)
        if not m or word.startswith("-"):
            out.append(word)
            continue
        key, value = m.groups()
        flag = key.replace("_", "-")
        flag = aliases.get(flag, flag)
        if flag in switches:
            if value.lower() in ("true", "yes", "1"):
                out.append(f"--{flag}")
            elif value.lower() in ("false", "no", "0", ""):
                if f"no-{flag}" in switches:
                    out.append(f"--no-{flag}")
            else:
                raise NeoxError(f"{key}={value}: {key} takes true or false")
        elif value != "":
            out += [f"--{flag}", value]
    return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(prog: str, work: Callable[[], dict]) -> int:
    """Run ``work``; print its summary as JSON (exit 0) or a NeoxError as one line (exit 1)."""
    try:
        summary = work()
    except NeoxError as err:
        partial = getattr(err, "summary", None)  # what was done before the failure, still machine-readable
        if partial is not None:
            print(json.dumps(partial, default=str))
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was published", file=sys.stderr)
        return 130
    print(json.dumps(summary, default=str))
    return 0


def checkpoint_root() -> str | None:
    """``$NEOX_CKPT_ROOT``, else ``NEOX_CKPT_ROOT`` in the site profile (``$NEOX_SITE``), else None."""
    import os

    root = os.environ.get("NEOX_CKPT_ROOT")
    if root:
        return root
    try:
        from neox.cluster.profile import default_name, parse_env_file, profile_path

        path = profile_path(default_name())
        return parse_env_file(path)[0].get("NEOX_CKPT_ROOT") or None if path.is_file() else None
    except NeoxError:
        return None
