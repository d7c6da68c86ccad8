"""The pinned version matrix: ``containers/versions.env`` (the compiled stack) and
``containers/constraints.txt`` (the pure-Python packages CI tests), and a check of what is installed.

The install script ends with ``python -m neox.cluster.versions --check <profile>``, and ``neox
verify`` runs the same check, so an image or a CI venv that drifted from the pins is caught.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from neox.errors import NeoxError

# install.sh installs the repository editable (in the image too), so the pins sit beside the code.
CONTAINERS = Path(__file__).resolve().parents[2] / "containers"

_KV = re.compile(r'^([A-Z_][A-Z0-9_]*)="([^"]*)"$')


def pins_dir() -> Path:
    return CONTAINERS


def read_versions(path: Path | None = None) -> dict[str, str]:
    """``KEY="value"`` lines of versions.env (the format apptainer's --build-arg-file reads)."""
    path = path or pins_dir() / "versions.env"
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _KV.match(line)
        if not m:
            raise NeoxError(f'{path}:{lineno}: expected KEY="value", got {line!r}')
        out[m.group(1)] = m.group(2)
    return out


def read_constraints(path: Path | None = None) -> dict[str, str]:
    """``name==version`` lines of constraints.txt, keyed by normalised distribution name."""
    path = path or pins_dir() / "constraints.txt"
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            out[normalise(name)] = version.strip()
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def expected(profile: str, versions: dict[str, str], constraints: dict[str, str]) -> dict[str, str]:
    """Distribution -> version that ``profile`` (cuda | cpu) must have installed."""
    want = dict(constraints)
    # Tools pinned for CI that the image does not need; checked only where installed.
    if profile == "cuda":
        want["torch"] = versions["TORCH_VERSION"]
        want["deepspeed"] = versions["DEEPSPEED_VERSION"]
        want["flash-attn"] = versions["FLASH_ATTN_VERSION"]
        want["transformer-engine"] = versions["TE_VERSION"]
    elif profile == "cpu":
        want["torch"] = versions["TORCH_CPU_VERSION"]
        want["deepspeed"] = versions["DEEPSPEED_VERSION"]
    else:
        raise NeoxError(f"unknown install profile {profile!r}; use cuda or cpu")
    return want


def mismatches(profile: str, *, required: tuple[str, ...] = ("torch", "deepspeed")) -> list[str]:
    """One line per pinned package that is installed at another version or (if required) missing."""
    versions, constraints = read_versions(), read_constraints()
    want = expected(profile, versions, constraints)
    must = set(required) | ({"flash-attn", "transformer-engine"} if profile == "cuda" else set())
    problems = []
    for name, version in sorted(want.items()):
        got = installed(name)
        if got is None:
            if name in must:
                problems.append(f"{name} is not installed (pinned {version})")
            continue
        # A local version label (+cu126, +cpu) is the build, not the version.
        if got.split("+")[0] != version.split("+")[0]:
            problems.append(f"{name} {got} is installed, pinned {version}")
    return problems


def image_record() -> dict:
    """What the image holds, for the provenance JSON (``install.sh`` writes it to /opt/neox/image.json)."""
    import platform

    from neox.cluster import nccl

    record = {"python": platform.python_version(), "machine": platform.machine()}
    for name in ("torch", "deepspeed", "flash-attn", "transformer-engine", "nvidia-nccl-cu12", "transformers", "neox"):
        record[name] = installed(name)
    libdir = nccl.torch_lib_dir()
    site = libdir.parents[1] if libdir else None
    lib = site / "nvidia" / "nccl" / "lib" / "libnccl.so.2" if site else None
    record["nccl_library"] = str(lib) if lib and lib.is_file() else None
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neox.cluster.versions", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", metavar="PROFILE", help="cuda or cpu: fail on any installed drift")
    group.add_argument("--record", metavar="PATH", help="write what is installed (JSON) for the image's provenance")
    args = parser.parse_args(argv)
    if args.record:
        import json

        Path(args.record).write_text(json.dumps(image_record(), indent=2) + "\n")
        print(f"wrote {args.record}")
        return 0
    try:
        problems = mismatches(args.check)
    except NeoxError as err:
        print(f"neox: error: {err}", file=sys.stderr)
        return 1
    for p in problems:
        print(f"version drift: {p}", file=sys.stderr)
    if problems:
        print(f"neox: error: {len(problems)} package(s) differ from containers/ pins; reinstall with containers/install.sh",
              file=sys.stderr)
        return 1
    print(f"versions match the {args.check} pins (torch {installed('torch')}, deepspeed {installed('deepspeed')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
