"""Sequence parallelism and the model-parallel RNG.

- The sequence collectives (all-gather / reduce-scatter / scatter along dim 1) and their adjoints.
- A TP = 2 model with sequence parallelism gives the TP = 1 logits and gradients: split weights get
  their shard of the full gradient, replicated norms / biases / position embeddings (which see only
  a sequence shard) the full gradient after their TP all-reduce; the parallel residual's summed
  biases the full gradient on each rank. Checked for the Pythia-style block (parallel residual,
  rotary, untied head), a sequential-residual block with learned positions and a tied head, and a
  Llama-style block (GQA split per [Q|K|V] block, SwiGLU split per [value|gate] half, no biases).
- The RNG tracker: per-TP-rank streams, a shared default stream, replay under activation
  checkpointing, and its place in the checkpoint's RNG state.

Run: pytest -q tests/unit/test_sequence_parallel.py
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
SMALL = ["num_layers=2", "hidden_size=64", "num_attention_heads=4", "seq_length=16", "max_position_embeddings=16",
         "hidden_dropout=0", "attention_dropout=0"]
VARIANTS = {
    "pythia": [],
    "sequential-learned-tied": ["gpt_j_residual=false", "pos_emb=learned", "no_weight_tying=false", "norm=rmsnorm"],
    "llama-gqa-swiglu": ["gpt_j_residual=false", "num_kv_heads=2", "activation=swiglu", "norm=rmsnorm",
                         "use_bias_in_norms=false", "use_bias_in_attn_linear=false", "use_bias_in_mlp=false",
                         "rotary_pct=1", "intermediate_size=256", "mlp_multiple_of=64"],
}


def _config(overrides, world_size=1):
    import neox.config

    return neox.config.load([str(REPO / "configs/neox-tiny.yml")], [*SMALL, *overrides], world_size=world_size)


def _collectives(rank: int, tp) -> dict:
    from neox.parallel.sequence import (
        gather_from_sequence_parallel_region,
        reduce_scatter_to_sequence_parallel_region,
        scatter_to_sequence_parallel_region,
    )

    x = torch.arange(2 * 8 * 3, dtype=torch.float32).view(2, 8, 3)
    mine = slice(rank * 4, (rank + 1) * 4)
    shard = x[:, mine].clone().requires_grad_()
    full = gather_from_sequence_parallel_region(shard, tp)
    (full * x).sum().backward()  # d/dshard = sum over ranks of x[:, mine]
    partial = (x * (rank + 1)).requires_grad_()
    reduced = reduce_scatter_to_sequence_parallel_region(partial, tp)
    reduced.backward(torch.ones_like(reduced))
    whole = x.clone().requires_grad_()
    kept = scatter_to_sequence_parallel_region(whole, tp)
    kept.sum().backward()
    return {
        "gather": torch.equal(full, x),
        "gather_grad": torch.equal(shard.grad, 2 * x[:, mine]),
        "reduce_scatter": torch.equal(reduced, 3 * x[:, mine]),
        "reduce_scatter_grad": torch.equal(partial.grad, torch.ones_like(x)),
        "scatter": torch.equal(kept, x[:, mine]),
        "scatter_grad": torch.equal(whole.grad, torch.ones_like(x)),  # the ranks' shard gradients, gathered
    }


def _model_parity(rank: int, overrides) -> dict:
    from neox.checkpoint import tp as rules
    from neox.model import build
    from neox.parallel import set_tensor_parallel_group

    cfg = _config(overrides)
    ids = torch.randint(0, 2048, (2, 16), generator=torch.Generator().manual_seed(3))
    weights = torch.randn(2, 16, 2048, generator=torch.Generator().manual_seed(4))

    set_tensor_parallel_group(None)
    ref = build(cfg)
    with torch.no_grad():  # non-zero biases and norms, so their TP semantics show
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    full_state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    ref_logits = ref(ids)
    (ref_logits * weights).sum().backward()
    ref_grads = {k: p.grad for k, p in ref.named_parameters()}

    tp_cfg = _config([*overrides, "model_parallel_size=2", "sequence_parallel=true"], world_size=2)
    set_tensor_parallel_group(dist.group.WORLD, sequence_parallel=True)
    try:
        model = build(tp_cfg)
        model.load_state_dict(rules.split_state(full_state, tp_cfg, 2)[rank])
        logits = model(ids)  # the head gathers the vocab shards (gather_output defaults to True)
        (logits * weights).sum().backward()
    finally:
        set_tensor_parallel_group(None)
    worst = {}
    for name, p in model.named_parameters():
        rule = rules.rule(name, tp_cfg)
        want = ref_grads[name] if rule.kind != "split" else rules.split_tensor(name, ref_grads[name], tp_cfg, rank, 2)
        worst[name] = ((p.grad - want).abs().max() / want.abs().max().clamp(min=1e-6)).item()  # relative
    hooked = sorted(n for n, p in model.named_parameters() if getattr(p, "sequence_parallel", False))
    logits_error = ((logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
    return {"logits": logits_error, "grads": worst, "hooked": hooked}


def _saved_activation_bytes(rank: int, sequence_parallel: bool) -> int:
    """Bytes the transformer blocks keep for the backward pass on this rank (weights not counted)."""
    from neox.model import build
    from neox.parallel import set_tensor_parallel_group

    cfg = _config(["model_parallel_size=2", f"sequence_parallel={str(sequence_parallel).lower()}", "seq_length=64",
                   "max_position_embeddings=64"], world_size=2)
    set_tensor_parallel_group(dist.group.WORLD, sequence_parallel=sequence_parallel)
    try:
        model = build(cfg)
        weights = {p.data_ptr() for p in model.parameters()}
        x = torch.randn(4, 64, 64)
        x = (x[:, rank * 32 : (rank + 1) * 32].clone() if sequence_parallel else x).requires_grad_()
        storages: dict[int, int] = {}

        def pack(t):
            if t.data_ptr() not in weights and t.data_ptr() != x.data_ptr():
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.layers(x).sum().backward()
    finally:
        set_tensor_parallel_group(None)
    return sum(storages.values())


def _main(rank: int, world: int, store: str, out: str) -> None:
    from neox.parallel import TensorParallel
    from neox.parallel.random import rng_tracker

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        results = {"collectives": _collectives(rank, TensorParallel(dist.group.WORLD, rank, world, True))}
        for name, overrides in VARIANTS.items():
            results[name] = _model_parity(rank, overrides)
        results["saved_bytes"] = {sp: _saved_activation_bytes(rank, sp) for sp in (False, True)}
        torch.manual_seed(5)
        rng_tracker().seed(5, rank)
        with rng_tracker().fork():
            results["tracker_draw"] = torch.rand(4)
        results["default_draw"] = torch.rand(4)
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sequence_parallel_collectives_model_and_streams(tmp_path):
    mp.spawn(_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for res in ranks:
        assert all(res["collectives"].values()), res["collectives"]
        for variant in VARIANTS:
            got = res[variant]
            assert got["logits"] < 1e-6, (variant, got["logits"])  # relative to the largest value: fp32 rounding
            bad = {k: v for k, v in got["grads"].items() if v > 1e-5}
            assert not bad, (variant, bad)
        # the parameters that act on sequence shards and are replicated over TP sum their gradients
        assert "sequential.2.input_layernorm.weight" in res["pythia"]["hooked"]
        assert "sequential.5.norm.weight" in res["pythia"]["hooked"]
        assert "sequential.2.attention.dense.bias" not in res["pythia"]["hooked"]  # parallel residual: summed
        learned = res["sequential-learned-tied"]["hooked"]
        assert "sequential.0.position_embeddings.weight" in learned and "sequential.2.attention.dense.bias" in learned
        assert "sequential.2.mlp.linear2.bias" in learned
    # Activation memory of the 2 blocks at TP 2 (b 4, s 64, h 64, fp32): with SP the second block's
    # input and the four norm outputs (the inputs of the QKV and MLP projections, which
    # sequence_parallel_linear keeps as shards) are held as half-sequence shards; the tensors inside
    # the TP regions (q, k, v, the MLP's hidden layer) are split by heads/columns either way.
    saved = ranks[0]["saved_bytes"]
    print(f"saved activations of 2 blocks, TP 2, rank 0: {saved[False]} bytes without SP, {saved[True]} with SP")
    whole = 4 * 64 * 64 * 4  # one [b, s, h] fp32 activation
    assert saved[False] - saved[True] >= 0.5 * (1 + 4) * whole, saved
    # the model-parallel stream differs between TP ranks, the default stream does not
    assert not torch.equal(ranks[0]["tracker_draw"], ranks[1]["tracker_draw"])
    assert torch.equal(ranks[0]["default_draw"], ranks[1]["default_draw"])


def test_checkpointed_dropout_replays_both_streams():
    from neox.parallel.random import checkpoint, rng_tracker

    def block(x):
        with rng_tracker().fork():
            y = F.dropout(x, 0.5, True)
        return F.dropout(y * 2, 0.3, True)

    x = torch.randn(64, 32)
    grads = []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        rng_tracker().seed(0, 1)
        leaf = x.clone().requires_grad_()
        out = checkpoint(block, leaf) if use_checkpoint else block(leaf)
        with rng_tracker().fork():  # the recompute must not see the tracker's later state
            torch.rand(100)  # advance the model-parallel stream between forward and backward
        torch.rand(100)
        out.sum().backward()
        grads.append((out.detach(), leaf.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert 0.2 < (grads[0][1] == 0).float().mean() < 0.8  # dropout did act


def test_tracker_state_travels_with_the_checkpoint_rng_state():
    from neox.parallel.random import rng_tracker
    from neox.train import rng

    rng.seed_everything(11, tp_rank=1)
    state = rng.rng_state()
    assert set(state["rng_tracker_states"]) == {"model-parallel-rng"}
    with rng_tracker().fork():
        first = torch.rand(3)
    rng.set_rng_state(state)
    with rng_tracker().fork():
        again = torch.rand(3)
    assert torch.equal(first, again)
    rng.seed_everything(11, tp_rank=0)
    with rng_tracker().fork():
        assert not torch.equal(torch.rand(3), first)
