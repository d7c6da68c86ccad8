"""Upstream GPT-NeoX YAML configs: loading, overrides, the typed schema, validation, derived values.

Public API::

    cfg = neox.config.load(["configs/pythia-160m.yml", "configs/local-setup.yml"], ["train_iters=10"])
    cfg.hidden_size, cfg.train_batch_size, cfg.padded_vocab_size, cfg.ffn_dim
    cfg.deepspeed_config()            # dict for deepspeed.initialize
    neox.config.plan.plan(cfg)        # dry run: parameters, FLOPs, layout, memory

Every error is a :class:`ConfigError` whose message is one line naming the file, key, value,
what is allowed and the fix. See ``loader`` (reading and merging), ``schema`` (keys),
``validate`` (checks) and ``derived`` (computed values).
"""

from __future__ import annotations

import os
from typing import Any

from neox.config.config import Config
from neox.config.derived import derive
from neox.config.loader import RawConfig, apply_overrides, read_files
from neox.config.schema import KEYS
from neox.config.validate import check_keys, check_values
from neox.errors import ConfigError

__all__ = ["Config", "ConfigError", "KEYS", "load", "from_dict"]


def load(
    paths: list[str | os.PathLike] | str | os.PathLike,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    world_size: int | None = None,
) -> Config:
    """Load, merge, override, validate and derive a config, as upstream's ``NeoXArgs.from_ymls``.

    ``paths``: YAML files in order (a name without ``.yml``/``.yaml``/``.json`` gets ``.yml``); a key
    may be set in only one of them. ``overrides``: ``["key=value", "optimizer.params.lr=3e-4"]`` or a
    dict, applied last. ``world_size``: total GPUs of the run. When None it comes from the
    ``WORLD_SIZE`` environment variable, else from the config's ``global_num_gpus``, else it is
    inferred from a fully given batch triad, else it is pipe x tensor parallel size (one data-parallel
    replica; 1, a CPU run, without model parallelism); ``cfg.note("world_size")`` says which.
    The training loop passes the real world size.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    raw = read_files(list(paths))
    apply_overrides(raw, overrides)
    return _build(raw, world_size)


def from_dict(values: dict[str, Any], *, world_size: int | None = None) -> Config:
    """A config from a dict of top-level keys (dashes allowed), validated and derived like :func:`load`."""
    raw = RawConfig()
    for k, v in values.items():
        norm = k.replace("-", "_")
        raw.values[norm] = v
        raw.sources[norm] = "dict"
    return _build(raw, world_size)


# Derived keys that record bookkeeping or where the world size came from; a file may carry any value.
_FREE = {"config_files", "git_hash", "save_iters", "world_size", "global_num_gpus"}


def _check_derived(cfg: Config, given: dict[str, Any], where) -> None:
    """A derived key written in a file (e.g. copied from `neox config show`) must match the derived value."""
    for name, value in given.items():
        info = KEYS[name]
        if info.derived and name not in _FREE and getattr(cfg, name) != value:
            raise ConfigError(
                f"{where(name)}: {name} {value!r} disagrees with the derived value {getattr(cfg, name)!r} "
                f"({info.doc}); remove {name}"
            )


def _build(raw: RawConfig, world_size: int | None) -> Config:
    files = ", ".join(raw.files) or "config"

    def where(name: str) -> str:
        return raw.sources.get(name, files)

    values = check_keys(raw.values, where)
    cfg = Config()
    for name, value in values.items():
        setattr(cfg, name, value)
    cfg._sources = dict(raw.sources)
    cfg._files = list(raw.files)
    explicit = set(values)
    derive(cfg, where, world_size=world_size, explicit=explicit)
    _check_derived(cfg, values, where)
    if raw.texts:
        cfg.config_files = dict(raw.texts)
    check_values(cfg, where)
    return cfg
