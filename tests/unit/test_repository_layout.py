"""The fixed top level (ARCHITECTURE.md) is tracked by git, so a fresh clone and the image have it.

An empty directory is not tracked, and the image definition copies ``kernels/`` with ``%files``:
a clone without it would fail ``apptainer build``.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ["containers", "neox", "kernels", "slurm", "tools", "tests", "configs", ".ci"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_fixed_top_level_is_tracked():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    tops = {path.split("/", 1)[0] for path in tracked}
    missing = [d for d in TOP_LEVEL + ["justfile", "pyproject.toml", "README.md"] if d not in tops]
    assert not missing, f"not tracked by git: {missing}"


def test_image_files_exist():
    # Every source path the image definition copies in %files must exist in the repository.
    text = (ROOT / "containers" / "neox.def").read_text()
    section = re.search(r"^%files\n(.*?)^%", text, re.S | re.M).group(1)
    sources = [line.split()[0] for line in section.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert sources, "no %files entries found"
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"containers/neox.def copies paths that do not exist: {missing}"
