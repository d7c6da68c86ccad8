"""Vocab-parallel cross-entropy equals the full-vocab cross-entropy (loss and gradient), without a gather.

Two gloo processes each hold half of the vocab columns of the same logits. Run:
pytest -q tests/unit/test_vocab_parallel.py
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from neox.parallel import TensorParallel
from neox.parallel.cross_entropy import vocab_parallel_cross_entropy

REPO = Path(__file__).resolve().parents[2]
V = 24


def _reference(dtype):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, V, generator=gen) * 4).to(dtype)
    target = torch.randint(0, V, (3, 7), generator=gen)
    target[0, :4] = torch.tensor([0, V // 2 - 1, V // 2, V - 1])  # both edges of both halves
    full = logits.detach().float().requires_grad_()
    loss = F.cross_entropy(full.flatten(0, 1), target.flatten(), reduction="none").view(3, 7)
    weights = torch.linspace(0.5, 2.0, 21).view(3, 7)
    (loss * weights).sum().backward()
    return logits, target, weights, loss.detach(), full.grad


def _main(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        tp = TensorParallel(dist.group.WORLD, rank, world)
        part = V // world
        results = {}
        for dtype in (torch.float32, torch.bfloat16):
            logits, target, weights, ref_loss, ref_grad = _reference(dtype)
            mine = logits[..., rank * part : (rank + 1) * part].clone().requires_grad_()
            loss = vocab_parallel_cross_entropy(mine, target, tp)
            (loss * weights).sum().backward()
            assert loss.dtype == torch.float32 and mine.grad.dtype == dtype
            results[str(dtype)] = {
                "loss": (loss.detach() - ref_loss).abs().max().item(),
                "grad": (mine.grad.float() - ref_grad[..., rank * part : (rank + 1) * part]).abs().max().item(),
                "untouched": torch.equal(mine.detach(), logits[..., rank * part : (rank + 1) * part]),
            }
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_vocab_parallel_cross_entropy_matches_full_vocab(tmp_path):
    mp.spawn(_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        fp32, bf16 = results["torch.float32"], results["torch.bfloat16"]
        assert fp32["loss"] < 1e-5 and fp32["grad"] < 1e-6, fp32  # fp32: a few ulps
        assert bf16["loss"] < 1e-5 and bf16["grad"] < 1e-2, bf16  # bf16 inputs, fp32 loss; grad rounded to bf16
        assert fp32["untouched"] and bf16["untouched"]


def test_one_rank_is_torch_cross_entropy_in_fp32():
    logits, target, _, ref_loss, _ = _reference(torch.bfloat16)
    loss = vocab_parallel_cross_entropy(logits, target, TensorParallel(None, 0, 1))
    assert loss.dtype == torch.float32 and torch.equal(loss, ref_loss)


def test_language_modeling_loss_takes_sharded_or_gathered_logits():
    import neox.config
    from neox.train.objective import LanguageModeling

    cfg = neox.config.load([str(REPO / "configs/neox-tiny.yml")], ["padded_vocab_size=2048"], world_size=1)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 2048, generator=gen)
    labels = torch.randint(0, 2048, (2, 5), generator=gen)
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    ref = (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none") * mask.flatten()).sum() / 8
    objective = LanguageModeling(cfg, None, tp=TensorParallel(None, 0, 2))  # a TP group of 2, but full logits
    assert objective.vocab_parallel
    assert torch.allclose(objective.pipeline_loss(logits, (labels, mask)), ref, atol=1e-6)
    tokens, (lab, loss_mask) = objective.pipeline_batch({"text": torch.arange(12).view(2, 6)})
    assert torch.equal(tokens, torch.arange(12).view(2, 6)[:, :-1]) and torch.equal(lab, torch.arange(12).view(2, 6)[:, 1:])
    assert loss_mask.dtype == torch.float32 and loss_mask.sum() == 10

