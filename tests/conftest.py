"""Shared fixtures and markers.

- ``gpu``: needs CUDA; skipped cleanly without it (these run on the device machine).
- ``slurm``: needs the Slurm daemons that ``.ci/run`` starts; skipped when ``sinfo`` cannot reach a controller.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "neox-tiny.yml"
TINY_TOKENIZER = REPO / "configs" / "tokenizers" / "neox-tiny.json"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if not _cuda_available():
        skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    # Tests never reach the network: hub lookups and W&B stay local.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
