"""The learning-rate schedule: upstream GPT-NeoX's ``AnnealingLR``, same math and same state.

With T = ``lr_decay_iters`` (resolved by the config: ``lr_decay_iters``, else
floor(``train_iters`` · ``lr_decay_fraction``), else ``train_iters``; at least 1),
W = ``warmup`` · T (a float) and n the scheduler's step count:

- warmup (W > 0 and n ≤ W): lr = lr_max · max(1, n) / W — the ``max(1, ·)`` keeps step 0 from
  training at lr 0 (upstream since May 2026);
- after it, with n' = n − W and E = T − W: ``linear`` lr_max · (E − n') / E, ``cosine``
  min_lr + (lr_max − min_lr)/2 · (1 + cos(π n'/E)), ``exponential`` lr_max · exp(−0.693 n'/E),
  ``constant`` lr_max;
- the result is floored at ``min_lr``.

As upstream, linear decays toward 0 (min_lr only clips it) and cosine is not clamped past T.

The scheduler is constructed at step 0 and handed to DeepSpeed, which calls :meth:`step` once per
applied optimizer step and skips it on fp16 overflow; so optimizer step k (1-based) runs at
lr(k − 1). :meth:`state_dict` has upstream's keys (``start_lr``, ``warmup_iter``, ``num_iters``,
``decay_style``, ``end_iter``, ``min_lr``) so checkpoints load both ways.
"""

from __future__ import annotations

import math

from neox.errors import CheckpointError

DECAY_STYLES = ("constant", "linear", "cosine", "exponential")


def annealing_lr(n: float, *, lr_max: float, warmup: float, total: int, style: str, min_lr: float) -> float:
    """The learning rate after ``n`` scheduler steps (``warmup`` = W in iterations, ``total`` = T)."""
    if warmup > 0 and n <= warmup:
        return lr_max * max(1, n) / warmup
    n_ = n - warmup
    span = total - warmup
    if style == "linear":
        lr = lr_max * (span - n_) / span
    elif style == "cosine":
        lr = min_lr + (lr_max - min_lr) / 2.0 * (math.cos(math.pi * n_ / span) + 1)
    elif style == "exponential":
        lr = lr_max * math.exp(-0.693 * n_ / span)
    else:
        lr = lr_max
    return max(lr, min_lr)


class AnnealingLR:
    """Sets ``lr`` of every optimizer param group from :func:`annealing_lr` at each :meth:`step`.

    ``use_checkpoint_lr_scheduler`` and ``override_lr_scheduler`` decide, as upstream, what
    :meth:`load_state_dict` does when the checkpoint's schedule differs from the config's: take the
    checkpoint's, keep the config's, or (neither set) refuse with a clear error.
    """

    def __init__(
        self,
        optimizer,
        *,
        start_lr: float,
        warmup_iter: float,
        total_iters: int,
        decay_style: str,
        min_lr: float = 0.0,
        last_iter: int = 0,
        use_checkpoint_lr_scheduler: bool = False,
        override_lr_scheduler: bool = False,
    ) -> None:
        assert total_iters > 0, total_iters
        assert decay_style in DECAY_STYLES, decay_style
        assert not (use_checkpoint_lr_scheduler and override_lr_scheduler)
        self.optimizer = optimizer
        self.start_lr = start_lr
        self.warmup_iter = warmup_iter
        self.end_iter = total_iters
        self.decay_style = decay_style
        self.min_lr = min_lr
        self.use_checkpoint_lr_scheduler = use_checkpoint_lr_scheduler
        self.override_lr_scheduler = override_lr_scheduler
        self.num_iters = last_iter
        self.step(last_iter)

    def get_lr(self) -> float:
        return annealing_lr(
            self.num_iters,
            lr_max=self.start_lr,
            warmup=self.warmup_iter,
            total=self.end_iter,
            style=self.decay_style,
            min_lr=self.min_lr,
        )

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, step_num: int | None = None) -> None:
        self.num_iters = self.num_iters + 1 if step_num is None else step_num
        lr = self.get_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # see neox.train.optim (TP-summed biases)

    def state_dict(self) -> dict:
        return {
            "start_lr": self.start_lr,
            "warmup_iter": self.warmup_iter,
            "num_iters": self.num_iters,
            "decay_style": self.decay_style,
            "end_iter": self.end_iter,
            "min_lr": self.min_lr,
        }

    def load_state_dict(self, sd: dict) -> None:
        mismatched = []
        for attr, label in (
            ("start_lr", "lr"),
            ("min_lr", "min_lr"),
            ("warmup_iter", "warmup iterations"),
            ("end_iter", "lr_decay_iters"),
            ("decay_style", "lr_decay_style"),
        ):
            ours, theirs = getattr(self, attr), sd[attr]
            if self.override_lr_scheduler or ours == theirs:
                continue
            if self.use_checkpoint_lr_scheduler:
                setattr(self, attr, theirs)
            else:
                mismatched.append(f"{label} {theirs!r} in the checkpoint vs {ours!r} in the config")
        if mismatched:
            raise CheckpointError(
                "the checkpoint's LR schedule differs from the config: "
                + "; ".join(mismatched)
                + "; set use_checkpoint_lr_scheduler: true to continue the saved schedule, "
                "or override_lr_scheduler: true to switch to the config's"
            )
        self.step(sd["num_iters"])
