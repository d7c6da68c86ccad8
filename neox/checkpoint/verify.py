"""Logits comparison between the engine (``neox.model``) and ``transformers`` for the converters.

Both models get the same weights: the reference side is rounded to the precision the
conversion wrote (bf16/fp16 storage), then both run in ``dtype`` (fp32 by default) on the same
token ids. What is compared is therefore the mapping, not the rounding the user asked for; in
fp32 a correct conversion agrees to float rounding.

The tolerance scales with the logits: a conversion passes when
``max |Δlogits| <= tolerance x max(1, max |logits|)``, since real models' logits reach tens and
fp32 differences grow with them. Defaults: 1e-5 in fp32 (tiny random models in the tests agree
to ~1e-6); 5e-2 when the models run in bf16, where each side rounds its activations differently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

DEFAULT_TOLERANCE = {"fp32": 1e-5, "bf16": 5e-2}
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PRECISION = {"fp32": "fp32", "bf16": "bfloat16"}  # the config precision an engine model is built in


@dataclass
class Verification:
    """The outcome of one logits comparison."""

    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    threshold: float
    dtype: str
    tokens: list[int]
    ok: bool

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"verify: max |Δlogits| = {self.max_abs_diff:.3e} on {self.tokens[0]}x{self.tokens[1]} tokens ({self.dtype}); "
            f"tolerance {self.tolerance:g} x max(1, max |logits| {self.max_abs_logit:.3g}) = {self.threshold:.3e}: {verdict}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def sample_ids(vocab: int, seq: int, batch: int = 2, seed: int = 1234) -> torch.Tensor:
    """Fixed pseudo-random token ids in ``[0, vocab)``, shaped [batch, seq]."""
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def round_parameters(model: torch.nn.Module, dtype: torch.dtype | None) -> None:
    """Round the parameters (not the buffers: rotary tables stay exact) to ``dtype`` and back."""
    if dtype is None:
        return
    for p in model.parameters():
        p.copy_(p.to(dtype).to(p.dtype))


@torch.no_grad()
def engine_logits(model: torch.nn.Module, ids: torch.Tensor, dtype: str, round_to: torch.dtype | None) -> torch.Tensor:
    round_parameters(model, round_to)
    model.to(device=device(), dtype=COMPUTE_DTYPES[dtype]).eval()
    return model(ids.to(device())).float().cpu()


@torch.no_grad()
def hf_logits(path, ids: torch.Tensor, dtype: str, round_to: torch.dtype | None) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    round_parameters(model, round_to)
    model.to(device=device(), dtype=COMPUTE_DTYPES[dtype]).eval()
    logits = model(ids.to(device())).logits.float().cpu()
    del model
    return logits


def compare(ours: torch.Tensor, reference: torch.Tensor, *, vocab: int, dtype: str, tolerance: float | None) -> Verification:
    """Compare the first ``vocab`` logits (real tokens; padding rows may differ in number)."""
    tol = DEFAULT_TOLERANCE[dtype] if tolerance is None else tolerance
    a, b = ours[..., :vocab], reference[..., :vocab]
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item()
    threshold = tol * max(1.0, scale)
    ok = bool(diff <= threshold) and bool(torch.isfinite(a).all())
    return Verification(diff, scale, tol, threshold, dtype, list(ours.shape[:2]), ok)


def record(result: Verification, summary: dict, log, *, what: str, out) -> None:
    """Log ``result``, store it in ``summary``; a failed check raises before anything is published."""
    from neox.errors import CheckpointError

    log(result.line())
    summary["verify"] = result.as_dict()
    if not result.ok:
        raise CheckpointError(
            f"verification failed: {what} differ by {result.max_abs_diff:.3e} (> {result.threshold:.3e}); "
            f"nothing was written to {out}"
        )
