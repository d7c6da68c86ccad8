"""The command lines a job runs: ``srun`` with one task per GPU, into ``apptainer exec`` or not.

The container line is built from the site profile alone (no run paths), so a rendered job
script reads the same for every user:

- host libfabric is bound under ``/host`` and its ``lib64`` leads ``LD_LIBRARY_PATH``;
- single host libraries (libcxi, libnl) are bound one by one into ``/opt/neox/hostlibs``, which
  comes last on ``LD_LIBRARY_PATH``: the host's ``/usr/lib64`` never appears there;
- the aws-ofi-nccl plugin is bound to ``/opt/neox/ofi/`` and named by ``NCCL_NET_PLUGIN`` with
  its absolute path, so NCCL cannot pick another plugin from the library path;
- NCCL ``system`` mode binds the host libnccl.so.2 *over* the image's copy (the file torch
  loads), so exactly one libnccl is in the process without ``LD_PRELOAD``; ``image`` mode binds
  no NCCL at all.

Host variables that would leak a host Python or host libraries into the image are removed with
``env -u`` before ``apptainer`` starts (it imports most of the host environment otherwise).
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from neox.cluster.profile import SiteProfile

HOSTLIBS_DIR = "/opt/neox/hostlibs"
OFI_DIR = "/opt/neox/ofi"
SCRUBBED = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV", "CUDA_HOME")


def container_binds(profile: SiteProfile, image_nccl_lib: str) -> list[str]:
    """``--bind`` values, in a stable order: file systems, libfabric, host libs, plugin, NCCL."""
    binds = list(profile.binds)
    if profile.host_libfabric:
        binds.append(f"{profile.host_libfabric}:/host{profile.host_libfabric}:ro")
    for lib in profile.host_libs:
        binds.append(f"{lib}:{HOSTLIBS_DIR}/{PurePosixPath(lib).name}:ro")
    if profile.ofi_plugin:
        binds.append(f"{profile.ofi_plugin}:{plugin_in_container(profile)}:ro")
    if profile.nccl == "system":
        binds.append(f"{profile.host_nccl_lib}:{image_nccl_lib}:ro")
    return binds


def plugin_in_container(profile: SiteProfile) -> str:
    return f"{OFI_DIR}/{PurePosixPath(profile.ofi_plugin).name}" if profile.ofi_plugin else ""


def container_env(profile: SiteProfile) -> dict[str, str]:
    """Variables set inside the container with ``--env`` (beyond the exported host ones)."""
    env: dict[str, str] = {}
    lib_path = []
    if profile.host_libfabric:
        lib_path.append(f"/host{profile.host_libfabric}/lib64")
    if profile.host_libs:
        lib_path.append(HOSTLIBS_DIR)
    if lib_path:
        env["LD_LIBRARY_PATH"] = ":".join(lib_path)
    if profile.ofi_plugin:
        env["NCCL_NET_PLUGIN"] = plugin_in_container(profile)
    env["NEOX_NCCL_MODE"] = profile.nccl
    # $HOME is bound: keep ~/.local out of the image's Python.
    env["PYTHONNOUSERSITE"] = "1"
    return env


def apptainer_exec(profile: SiteProfile, image_nccl_lib: str, *, gpus: bool | None = None) -> list[str]:
    """``env -u ... apptainer exec --nv --bind ... --env ... "$NEOX_SIF"`` as words (the SIF as a shell variable)."""
    words = ["env"]
    for name in SCRUBBED:
        words += ["-u", name]
    words += ["apptainer", "exec"]
    if profile.uses_gpus if gpus is None else gpus:
        words.append("--nv")
    for bind in container_binds(profile, image_nccl_lib):
        words += ["--bind", bind]
    for key, value in container_env(profile).items():
        words += ["--env", f"{key}={value}"]
    words.append('"$NEOX_SIF"')
    return words


def image_words(profile: SiteProfile, image_nccl_lib: str, *, gpus: bool | None = None) -> list[str]:
    """The prefix that runs a command in the image (empty without a container)."""
    return apptainer_exec(profile, image_nccl_lib, gpus=gpus) if profile.container == "apptainer" else []


def neox_words(profile: SiteProfile, image_nccl_lib: str) -> list[str]:
    """How a job starts ``neox``: in the image, or with the submitter's Python."""
    if profile.container == "apptainer":
        return [*apptainer_exec(profile, image_nccl_lib), "neox"]
    return ['"$NEOX_PYTHON"', "-m", "neox.cli.main"]


def bash_array(name: str, words: list[str], comment: str) -> str:
    """``NAME=( ... )`` with one option group per line; ``NAME=()`` when empty."""
    if not words:
        return f"# {comment}\n{name}=()"
    body = format_command(words).replace(" \\\n", "\n")
    lines = body.splitlines()
    return f"# {comment}\n{name}=(\n" + "\n".join("    " + ln.strip() for ln in lines) + "\n)"


def srun_words(profile: SiteProfile, *, tasks_per_node: int | None = None) -> list[str]:
    # --kill-on-bad-exit=0, also where the site defaults to 1: after the time-limit signal every
    # rank exits 75 on its own, and the first one out must not get the others killed mid-exit.
    # A crashed rank still ends the step: the others' collectives time out and abort.
    words = ["srun", f"--ntasks-per-node={tasks_per_node or profile.tasks_per_node}", "--kill-on-bad-exit=0"]
    return words + list(profile.srun_args)


def quote(word: str) -> str:
    """Shell-quote a word, leaving words that are already shell expressions ("$VAR") alone."""
    if word.startswith('"$') and word.endswith('"'):
        return word
    return shlex.quote(word)


def format_command(words: list[str], *, indent: str = "    ", width: int = 100) -> str:
    """One readable multi-line command: each ``--bind``/``--env`` on its own line, ``apptainer`` and
    the image on new lines, other words wrapped at ``width``."""
    chunks: list[str] = []
    i = 0
    while i < len(words):
        if words[i] in ("--bind", "--env", "-u") and i + 1 < len(words):
            chunks.append(f"{words[i]} {quote(words[i + 1])}")
            i += 2
        else:
            chunks.append(quote(words[i]))
            i += 1
    lines: list[str] = []
    current = ""
    for chunk in chunks:
        own_line = chunk == "env" or chunk.startswith(("--bind ", "--env ", "apptainer", '"$NEOX_SIF"'))
        if current and (own_line or len(current) + 1 + len(chunk) > width):
            lines.append(current + " \\")
            current = indent + chunk
        else:
            current = f"{current} {chunk}" if current else chunk
    lines.append(current)
    return "\n".join(lines)
