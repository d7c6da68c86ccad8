"""The training loop, optimizer and LR schedule, checkpoints and metrics.

Public entry: :func:`train` (``neox train`` calls it in every rank); it returns the process exit
status: 0 finished, 75 stopped early by SIGUSR1/SIGTERM with a checkpoint saved (resume from
``latest``). See :mod:`neox.train.loop` for the loop and the preemption contract,
:mod:`neox.train.checkpointing` for save/resume, :mod:`neox.train.metrics` for TFLOPS/MFU.
"""

from __future__ import annotations

__all__ = ["train"]


def train(cfg, *, objective=None, env=None) -> int:
    from neox.train.loop import train as _train

    return _train(cfg, objective=objective, env=env)
