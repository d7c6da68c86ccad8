"""`neox generate CHECKPOINT`: sample a continuation of a prompt from a NeoX checkpoint.

A quick look at what a model learned (the demo's last step), not a serving path: the whole
sequence is recomputed for each new token (no KV cache), within the model's ``seq_length``.
Greedy with ``--top-k 1``; otherwise top-k sampling at ``--temperature`` from a seeded generator,
so the same command prints the same text.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample a continuation of a prompt from a NeoX checkpoint (quick check)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a save directory (its latest checkpoint) or a global_stepN directory")
    p.add_argument("--prompt", default="", help="text to continue (default: start from end-of-document)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--top-k", type=int, default=20, help="sample among the k most likely tokens; 1 is greedy")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (default 0.8)")
    p.add_argument("--seed", type=int, default=1234, help="sampling seed (default 1234)")
    p.add_argument("--iteration", type=int, default=None, help="use global_step<N> instead of latest")
    p.set_defaults(handler=run)


def sample(model, ids: list[int], *, max_new_tokens: int, context: int, vocab_size: int, top_k: int,
           temperature: float, seed: int, stop: int | None = None) -> list[int]:
    """Extend ``ids`` by up to ``max_new_tokens`` tokens (stopping at ``stop``); returns the new ones."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    seq = list(ids)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            window = torch.tensor([seq[-context:]])
            logits = model(window)[0, -1, :vocab_size].float()  # padded vocab entries are never sampled
            if top_k <= 1:
                nxt = int(logits.argmax())
            else:
                top = torch.topk(logits / max(temperature, 1e-5), min(top_k, vocab_size))
                choice = torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)
                nxt = int(top.indices[choice])
            if stop is not None and nxt == stop:
                break
            out.append(nxt)
            seq.append(nxt)
    return out


def run(args) -> int:
    import json

    from neox import config as neox_config
    from neox.checkpoint import config_files_of, layout, load_model
    from neox.errors import NeoxError
    from neox.tokenizer import from_config

    if args.max_new_tokens < 1:
        raise NeoxError(f"--max-new-tokens {args.max_new_tokens} must be at least 1")
    ckpt = layout.resolve(args.checkpoint, args.iteration)
    overrides_file = ckpt / layout.CONFIGS_DIR / layout.OVERRIDES_FILE
    overrides = json.loads(overrides_file.read_text()) if overrides_file.is_file() else None
    files = config_files_of(ckpt)
    if not files:
        raise NeoxError(f"{ckpt} has no configs/ directory; neox generate needs the training config saved with it")
    cfg = neox_config.load([str(f) for f in files], overrides)
    tok = from_config(cfg)
    model = load_model(ckpt, cfg)
    prompt = tok.encode(args.prompt) if args.prompt else []
    if not prompt:
        if tok.eod is None:
            raise NeoxError("this tokenizer has no end-of-document token to start from; pass --prompt")
        prompt = [tok.eod]
    new = sample(model, prompt, max_new_tokens=args.max_new_tokens, context=cfg.seq_length, vocab_size=tok.vocab_size,
                 top_k=args.top_k, temperature=args.temperature, seed=args.seed, stop=tok.eod)
    print(args.prompt + tok.decode(new))
    return 0
