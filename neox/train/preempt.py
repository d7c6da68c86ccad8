"""Stopping early on a signal: SIGUSR1 / SIGTERM → agree at a step boundary → save → exit 75.

The contract the Slurm templates rely on:

- ``neox train`` installs handlers for SIGUSR1 and SIGTERM that only set a flag (nothing unsafe
  runs inside a signal handler, and no collective is interrupted).
- At every step boundary all ranks all-reduce (MAX) the flag, so they agree even when only some
  got the signal, and stop together: save a checkpoint if ``save`` is set, then exit with status
  :data:`EXIT_STOPPED` (75, "stopped early; checkpoint saved; resume from latest"). A run that
  reaches ``train_iters`` exits 0.
- A watchdog started by the first signal ends the process with status 1 if the stop has not
  finished within ``NEOX_STOP_TIMEOUT`` seconds (default 600): a hung collective must not hold
  the allocation until Slurm's SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import torch

EXIT_STOPPED = 75
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopFlag:
    """Set by SIGUSR1/SIGTERM; :meth:`agreed` tells every rank whether any rank was signalled."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self.signalled: int | None = None
        self.timeout_s = float(os.environ.get("NEOX_STOP_TIMEOUT", "600")) if timeout_s is None else timeout_s
        self._previous: dict[int, object] = {}
        self._watchdog: threading.Timer | None = None

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _handle(self, signum, frame) -> None:
        if self.signalled is None:
            self.signalled = signum
            self._watchdog = threading.Timer(self.timeout_s, self._force_exit)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _force_exit(self) -> None:
        sys.stderr.write(
            f"neox: error: stopping after {signal.Signals(self.signalled).name} did not finish within "
            f"{self.timeout_s:.0f} s (a collective or the checkpoint write hung); exiting without a new checkpoint\n"
        )
        sys.stderr.flush()
        os._exit(1)

    def agreed(self, device: torch.device) -> bool:
        """True on every rank if any rank has been signalled (one tiny all-reduce)."""
        flag = torch.tensor([1 if self.signalled is not None else 0], dtype=torch.int32, device=device)
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())
