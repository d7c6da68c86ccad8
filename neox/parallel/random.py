"""The model-parallel random stream: dropout that must differ between tensor-parallel ranks.

Every rank seeds torch's default generator with the same ``seed`` (upstream GPT-NeoX does), so
dropout on activations that all TP ranks hold in full (the embedding output, the residual
branches) draws the same mask everywhere and the replicas stay identical. Dropout on a rank's
*own* slice — the attention probabilities of its heads, or a sequence shard under sequence
parallelism — must not repeat across ranks, or heads h and h + heads/tp would share masks. Such
dropout runs inside :meth:`RNGTracker.fork`, which swaps the device's default generator for a
stream seeded with ``seed + 2718 + tp_rank`` (Megatron's ``model_parallel_cuda_manual_seed``
offset, which upstream uses).

The fork is used at every TP degree, TP = 1 included: the shared stream then draws exactly the
same numbers whatever the TP, so a run with hidden dropout and no attention dropout follows the
same curve at TP 1 and 2 (only the per-rank masks, of attention dropout, depend on TP).

The tracker's states are part of a checkpoint (upstream key ``rng_tracker_states``), and
:func:`checkpoint` (activation checkpointing) replays them in the recomputed forward, so dropout
masks repeat exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

MODEL_PARALLEL = "model-parallel-rng"
SEED_OFFSET = 2718


def _device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _get_state() -> torch.Tensor:
    return torch.cuda.get_rng_state() if _device_type() == "cuda" else torch.get_rng_state()


def _set_state(state: torch.Tensor) -> None:
    if _device_type() == "cuda":
        torch.cuda.set_rng_state(state)
    else:
        torch.set_rng_state(state)


class RNGTracker:
    """Named generator states that can stand in for the device's default generator."""

    def __init__(self) -> None:
        self.states: dict[str, torch.Tensor] = {}

    def seed(self, seed: int, tp_rank: int) -> None:
        """(Re)start the model-parallel stream of this TP rank from ``seed``; the default stream is untouched."""
        value = seed + SEED_OFFSET + tp_rank
        if _device_type() == "cuda":
            outer = torch.cuda.get_rng_state()
            torch.cuda.manual_seed(value)  # the current device only
            self.states = {MODEL_PARALLEL: torch.cuda.get_rng_state()}
            torch.cuda.set_rng_state(outer)
        else:
            self.states = {MODEL_PARALLEL: torch.Generator().manual_seed(value).get_state()}

    def get_states(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.states.items()}

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self.states = {k: v.clone() for k, v in states.items()}

    @contextlib.contextmanager
    def fork(self, name: str = MODEL_PARALLEL) -> Iterator[None]:
        """Run the block on stream ``name``; the default stream is left where it was."""
        if name not in self.states:
            # Never seeded (a model used outside the training loop): start from the default seed.
            self.seed(torch.initial_seed(), 0)
        outer = _get_state()
        _set_state(self.states[name])
        try:
            yield
        finally:
            self.states[name] = _get_state()
            _set_state(outer)


_TRACKER = RNGTracker()


def rng_tracker() -> RNGTracker:
    """The process's model-parallel RNG tracker."""
    return _TRACKER


def _recompute_context():
    """torch.utils.checkpoint ``context_fn``: the recomputation sees the tracker as the forward did."""
    saved: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def forward():
        saved.update(_TRACKER.get_states())
        yield

    @contextlib.contextmanager
    def recompute():
        now = _TRACKER.get_states()
        _TRACKER.set_states(saved)
        try:
            yield
        finally:
            _TRACKER.set_states(now)

    return forward(), recompute()


def checkpoint(function, *args):
    """Activation checkpointing (non-reentrant) that replays the default and model-parallel streams."""
    return torch_checkpoint(function, *args, use_reentrant=False, context_fn=_recompute_context)

