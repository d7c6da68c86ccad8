"""Seeding and saving the random-number generators, under upstream GPT-NeoX's checkpoint keys.

Every data-parallel rank gets the same seed, as upstream: DP ranks then draw identical streams
(dropout masks included), so the state of rank 0 — the one in the checkpoint — is every DP
rank's state and a resumed run continues bit for bit. Keys: ``random_rng_state``,
``np_rng_state``, ``torch_rng_state``, ``cuda_rng_state`` (only when CUDA is available) and
``rng_tracker_states`` (the model-parallel dropout stream of :mod:`neox.parallel.random`, which
differs between TP ranks; each TP rank's ``mp_rank_XX`` file holds its own).
"""

from __future__ import annotations

import random

import numpy as np
import torch

from neox.parallel.random import rng_tracker


def seed_everything(seed: int, tp_rank: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    rng_tracker().seed(seed, tp_rank)


def rng_state() -> dict:
    state = {
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        "rng_tracker_states": rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda_rng_state"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> list[str]:
    """Restore what ``state`` holds; returns the keys that were missing (e.g. no CUDA state saved on a CPU)."""
    missing = []
    if "random_rng_state" in state:
        random.setstate(state["random_rng_state"])
    else:
        missing.append("random_rng_state")
    if "np_rng_state" in state:
        np.random.set_state(state["np_rng_state"])
    else:
        missing.append("np_rng_state")
    if "torch_rng_state" in state:
        torch.set_rng_state(state["torch_rng_state"])
    else:
        missing.append("torch_rng_state")
    if state.get("rng_tracker_states"):
        rng_tracker().set_states(state["rng_tracker_states"])
    if torch.cuda.is_available():
        if state.get("cuda_rng_state") is not None:
            torch.cuda.set_rng_state(state["cuda_rng_state"])
        else:
            missing.append("cuda_rng_state")
    return missing
