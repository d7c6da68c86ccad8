"""GPT-NeoX checkpoints on disk: layout and names, reading and writing weights, crash-safe commits.

Public API: :func:`load_model` (a model with the weights of a NeoX checkpoint directory).
Saving and resuming a training run (optimizer, scheduler, RNG, data position) is
:mod:`neox.train.checkpointing`, which uses the pieces here.
"""

from __future__ import annotations

from pathlib import Path

from neox.checkpoint.layout import resolve

__all__ = ["load_model", "resolve", "config_files_of"]


def config_files_of(ckpt_dir: Path) -> list[Path]:
    """The config files saved with a checkpoint (``global_step<N>/configs/*``), in name order."""
    d = Path(ckpt_dir) / "configs"
    return sorted(p for p in d.iterdir() if p.suffix in (".yml", ".yaml", ".json")) if d.is_dir() else []


def load_model(path, config=None, *, iteration: int | None = None):
    """A model (``neox.model.build``) holding the weights of a NeoX checkpoint.

    ``path`` is a save directory (its ``latest`` checkpoint, or ``global_step<iteration>``) or a
    ``global_step<N>`` directory. ``config`` is a :class:`neox.config.Config`; without it the
    config files saved in the checkpoint's ``configs/`` are used (with the run's command-line
    overrides, if neox saved it). Either layout (layer files or
    ``mp_rank_XX``), current, legacy or Transformer Engine parameter names, any TP degree: the
    shards are merged (:mod:`neox.checkpoint.tp`) into one TP = 1 model with the same padded vocab.
    The model is returned on the CPU in eval mode.
    """
    from neox.checkpoint.model_config import config_for_checkpoint, single_rank
    from neox.checkpoint.shards import read_full_state

    ckpt_dir = resolve(path, iteration)
    if config is None:
        config = config_for_checkpoint(ckpt_dir)
    config = single_rank(config)
    from neox.model import build

    model = build(config)
    load_weights(model, read_full_state(ckpt_dir, config), source=str(ckpt_dir))
    return model.eval()


def load_weights(model, state, *, source: str) -> None:
    """Load a ``sequential.*`` state dict into ``model`` strictly, after mapping legacy/TE names."""
    from neox.checkpoint.layout import rename_for
    from neox.errors import CheckpointError

    expected = model.state_dict()
    state = rename_for(state, expected.keys())
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not match the model: "
            + (f"missing {_few(missing)}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {_few(unexpected)}" if unexpected else "")
            + "; check that the config (num_layers, norm, no_weight_tying, gated MLP, pos_emb...) is the one it was trained with"
        )
    bad = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {source} has tensors of other shapes than the model ({_few(bad)}); "
            "check hidden_size, padded vocab (make_vocab_size_divisible_by) and the TP size"
        )
    model.load_state_dict(state, strict=True)


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
