"""Weight initialisation (upstream ``megatron/model/init_functions.py``).

``init_method`` initialises the QKV projection, ``linear1``, the word and position embeddings
and the untied LM head; ``output_layer_init_method`` initialises the two projections that
write into the residual stream (``attention.dense``, ``mlp.linear2``). Biases start at 0,
norm weights at 1. With σ = ``init_method_std``, L = ``num_layers``, h = ``hidden_size``:

| name | distribution |
|---|---|
| ``normal`` | N(0, σ) |
| ``scaled_normal`` | N(0, σ/√(2L)) |
| ``single_residual_scaled_normal`` | N(0, σ/√L) |
| ``small_init`` | N(0, √(2/(5h))) |
| ``wang_init`` | N(0, 2/(L·√h)) |
| ``xavier_uniform``, ``xavier_normal`` | Glorot, fans of the full weight |
| ``orthogonal`` | (semi-)orthogonal, gain √2 |
| ``scaled_orthogonal`` | (semi-)orthogonal, gain √(2/L) |

``orthogonal`` deviates on purpose: upstream passes ``use_mup`` where the layer count belongs,
so its gain √(2/n_layers) divides by False and fails; we use the function's documented default
(n_layers = 1).

Determinism: every parameter draws from its own generator, seeded from ``seed`` and the
parameter's NeoX name (``sequential.{index}.{path}``). Tensor-parallel parameters are drawn at
full (TP = 1) shape and each rank keeps its shard. So the initial model is the same whatever
the TP and pipeline layout and whichever layers a process builds. (Upstream draws each shard
from a per-rank RNG, so its initial weights change with TP; a given device type — CPU or CUDA —
gives the same values every run here.)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import nn

from neox.errors import ConfigError
from neox.model.norms import is_norm
from neox.parallel import TensorParallelModule

InitFn = Callable[[torch.Tensor, torch.Generator], object]

INIT_METHODS = (
    "normal",
    "scaled_normal",
    "orthogonal",
    "scaled_orthogonal",
    "xavier_uniform",
    "xavier_normal",
    "wang_init",
    "small_init",
    "single_residual_scaled_normal",
)

# Parameters written by output_layer_init_method: the projections into the residual stream.
OUTPUT_LAYERS = ("attention.dense", "mlp.linear2")


def _normal(std: float) -> InitFn:
    return lambda t, g: nn.init.normal_(t, 0.0, std, generator=g)


def init_function(name: str, cfg) -> InitFn:
    """The upstream init method ``name`` for this model's sizes."""
    sigma, layers, h = cfg.init_method_std, cfg.num_layers, cfg.hidden_size
    if name == "normal":
        return _normal(sigma)
    if name == "scaled_normal":
        return _normal(sigma / math.sqrt(2 * layers))
    if name == "single_residual_scaled_normal":
        return _normal(sigma / math.sqrt(layers))
    if name == "small_init":
        return _normal(math.sqrt(2 / (5 * h)))
    if name == "wang_init":
        return _normal(2 / layers / math.sqrt(h))
    if name == "xavier_uniform":
        return lambda t, g: nn.init.xavier_uniform_(t, generator=g)
    if name == "xavier_normal":
        return lambda t, g: nn.init.xavier_normal_(t, generator=g)
    if name == "orthogonal":
        return lambda t, g: nn.init.orthogonal_(t, gain=math.sqrt(2), generator=g)
    if name == "scaled_orthogonal":
        return lambda t, g: nn.init.orthogonal_(t, gain=math.sqrt(2 / layers), generator=g)
    raise ConfigError(f"init method {name!r} is not one of {', '.join(INIT_METHODS)}")


def parameter_seed(seed: int, name: str) -> int:
    """A 63-bit seed for parameter ``name``, stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@torch.no_grad()
def initialize_layer(index: int, layer: nn.Module, cfg) -> None:
    """Initialise the parameters of NeoX layer ``index`` in place."""
    init = init_function(cfg.init_method, cfg)
    output_init = init_function(cfg.output_layer_init_method, cfg)
    for path, module in layer.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if param.is_meta:
                continue
            if pname == "bias":
                param.zero_()
                continue
            if is_norm(module):  # weight, scale or g
                param.fill_(1.0)
                continue
            fn = output_init if path.endswith(OUTPUT_LAYERS) else init
            full_name = ".".join(filter(None, ("sequential", str(index), path, pname)))
            generator = torch.Generator(device=param.device).manual_seed(parameter_seed(cfg.seed, full_name))
            if isinstance(module, TensorParallelModule):
                full = torch.empty(module.full_shape(pname), dtype=torch.float32, device=param.device)
                fn(full, generator)
                param.copy_(module.take_shard(pname, full))
            else:
                full = torch.empty(param.shape, dtype=torch.float32, device=param.device)
                fn(full, generator)
                param.copy_(full)
