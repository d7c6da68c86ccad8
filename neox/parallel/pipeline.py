"""Pipeline stages on DeepSpeed's pipeline engine (1F1B), built from the model's NeoX layer list.

``pipe_parallel_size > 1`` runs the model as a DeepSpeed ``PipelineModule`` whose spec list is
upstream's (``megatron/model/gpt2_model.py:init_specs``, facts §4.3), built from
:func:`neox.model.gpt.layer_recipes`:

| index | entry |
|---|---|
| 0 | ``Embedding`` (a ``TiedLayerSpec`` keyed ``embed`` when the head is tied) |
| 1, L+2 | plain functions (upstream's ``_pre``/``_post_transformer_block``): no parameters, no file |
| 2 … L+1 | ``TransformerLayer`` |
| L+3 | ``FinalNorm`` |
| L+4 | ``LMHead``, or, tied, the ``embed`` module again with a logits function: no file |

So DeepSpeed names the layer files ``layer_{idx:02d}-model_{tp:02d}-model_states.pt`` with
exactly upstream's indices, and ``mp_rank_XX`` numbers the pipe × tensor ranks. Each stage builds
only its layers, initialised as :func:`neox.model.build_layers` would (per-parameter seeds from
the NeoX name), so the weights do not depend on the layout; the tied embedding exists on the first
and last stage, DeepSpeed sums its two gradients and broadcasts it from the first stage.

Layers are assigned by ``pipe_partition_method``: ``type:<regex>`` (balances the layers whose
class name matches — ours or upstream's, e.g. ``ParallelTransformerLayerPipe``; upstream's default
``type:transformer|mlp``), ``parameters`` (balances
parameter counts, counted on the ``meta`` device rather than by building every layer) or
``uniform``. ``checkpoint_activations`` recomputes every ``checkpoint_num_layers`` transformer
layers of a stage (:func:`neox.parallel.random.checkpoint`, which replays the dropout streams).

Data: the engine feeds ``(inputs, labels)`` micro-batches; the first stage reads the token ids,
the last stage ``(labels, loss_mask)`` for the loss function (the objective's vocab-parallel loss).
Loading maps legacy/Transformer Engine parameter names as the plain model does.
"""

from __future__ import annotations

import contextlib
import io
from functools import cache
from pathlib import Path

import torch
from torch import nn

from neox.checkpoint import layout
from neox.errors import ConfigError

TIED_KEY = "embed"
TIED_ATTR = "word_embeddings.weight"
# Upstream's class for each of ours, so "type:<regex>" partitions written for upstream work here.
UPSTREAM_NAMES = {
    "Embedding": "EmbeddingPipe",
    "TransformerLayer": "ParallelTransformerLayerPipe",
    "FinalNorm": "NormPipe",
    "LMHead": "ParallelLinearPipe",
}


def pre_transformer_block(x: torch.Tensor) -> torch.Tensor:
    """Layer 1: parameter-free (upstream transposes to [s, b, h] here)."""
    return x


def post_transformer_block(x: torch.Tensor) -> torch.Tensor:
    """Layer L+2: parameter-free (upstream transposes back here)."""
    return x


def tied_logits(embedding: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer L+4, tied: vocab-parallel logits from the word embeddings (never gathered in training)."""
    return embedding.word_embeddings.logits(x, gather_output=False)


def check_partition_method(method: str) -> None:
    from neox.config.validate import partition_method_problem

    problem = partition_method_problem(method)
    if problem:
        raise ConfigError(f"pipe_partition_method {problem}")


@cache
def _module_class():
    """NeoXPipelineModule, defined on first use (DeepSpeed is imported only for pipeline runs)."""
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    from neox.model.gpt import Embedding, layer_recipes
    from neox.model.init import initialize_layer

    class NeoXPipelineModule(PipelineModule):
        """This stage's share of the NeoX layers under DeepSpeed's pipeline engine."""

        def __init__(self, cfg, *, topology, tp, device, loss_fn, activation_checkpoint_func) -> None:
            recipes = layer_recipes(cfg, device=device, tp=tp)
            tied = not cfg.no_weight_tying
            specs: list = []
            for idx, recipe in enumerate(recipes):
                if recipe.tied:
                    embed = recipes[0]
                    specs.append(TiedLayerSpec(TIED_KEY, Embedding, *embed.args, forward_fn=tied_logits,
                                               tied_weight_attr=[TIED_ATTR], **embed.kwargs))
                elif recipe.cls is None:
                    specs.append(pre_transformer_block if idx == 1 else post_transformer_block)
                elif idx == 0 and tied:
                    specs.append(TiedLayerSpec(TIED_KEY, Embedding, *recipe.args, tied_weight_attr=[TIED_ATTR],
                                               **recipe.kwargs))
                else:
                    specs.append(LayerSpec(recipe.cls, *recipe.args, **recipe.kwargs))
            self._neox_cfg = cfg  # read by _build, which the base constructor calls
            interval = max(1, cfg.checkpoint_num_layers) if cfg.checkpoint_activations else 0
            super().__init__(
                layers=specs,
                topology=topology,
                loss_fn=loss_fn,
                partition_method=cfg.pipe_partition_method,
                activation_checkpoint_interval=interval,
                activation_checkpoint_func=activation_checkpoint_func,
                checkpointable_layers=["TransformerLayer"],
            )

        def _build(self) -> None:
            super()._build()
            done = set()
            for local, layer in enumerate(self.forward_funcs):
                if isinstance(layer, nn.Module):
                    initialize_layer(self._local_start + local, layer, self._neox_cfg)
                    done.add(id(layer))
            for module in self.tied_modules.values():
                if id(module) not in done:
                    initialize_layer(0, module, self._neox_cfg)  # the head's copy of layer 0

        def _find_layer_type(self, layername: str) -> list[int]:
            import re

            pattern = re.compile(layername, re.IGNORECASE)
            found = []
            for idx, spec in enumerate(self._layer_specs):
                name = spec.typename.__name__ if isinstance(spec, LayerSpec) else getattr(spec, "__name__", "")
                if pattern.search(name) or pattern.search(UPSTREAM_NAMES.get(name, "")):
                    found.append(idx)
            if not found:
                raise ConfigError(f"pipe_partition_method 'type:{layername}' matches no layer")
            return found

        def _count_layer_params(self) -> list[int]:
            # DeepSpeed builds every layer of the model to count; build them on "meta" instead.
            counts = []
            for spec in self._layer_specs:
                if isinstance(spec, LayerSpec):
                    module = spec.typename(*spec.module_args, **{**spec.module_kwargs, "device": "meta"})
                    counts.append(sum(p.numel() for p in module.parameters() if p.requires_grad))
                else:
                    counts.append(0)
            return counts

        def stage_layers(self) -> dict[int, nn.Module]:
            """{NeoX layer index: module} of this stage's layers that hold weights (the layer files)."""
            return {
                self._local_start + local: layer
                for local, layer in enumerate(self.forward_funcs)
                if isinstance(layer, nn.Module) and layer.state_dict()
            }

        def neox_state_dict(self) -> dict[str, torch.Tensor]:
            """This stage's weights under ``sequential.<idx>.`` keys (as the plain model names them)."""
            return {
                f"sequential.{idx}.{name}": value
                for idx, layer in self.stage_layers().items()
                for name, value in layer.state_dict().items()
            }

        def load_state_dir(self, load_dir, checkpoint_engine=None, strict=True) -> None:
            """Load this stage's layer files (this TP rank's), mapping legacy/TE names."""
            from neox.checkpoint import load_weights
            from neox.checkpoint.weights import torch_load

            tp_rank = self._grid.get_slice_parallel_rank()
            for idx, layer in self.stage_layers().items():
                path = Path(load_dir) / layout.layer_file(idx, tp_rank)
                load_weights(layer, torch_load(path), source=str(path))
            self._synchronize_tied_weights()

        def partition_summary(self) -> str:
            return ", ".join(
                f"stage {s}: layers {self.parts[s]}-{self.parts[s + 1] - 1}" for s in range(self.num_stages)
            )

    return NeoXPipelineModule


def build_pipeline_module(cfg, topo, *, device: torch.device, loss_fn) -> nn.Module:
    """This rank's pipeline stage as a DeepSpeed ``PipelineModule`` (a collective: all ranks call it)."""
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    from neox.parallel.random import checkpoint
    from neox.parallel.state import tensor_parallel

    check_partition_method(cfg.pipe_partition_method)
    ds_topology = PipeModelDataParallelTopology(num_pp=topo.pipe, num_mp=topo.tensor, num_dp=topo.data)
    module_class = _module_class()
    # DeepSpeed prints its seed settings and the partition on rank 0; the loop reports it in one line.
    with contextlib.redirect_stdout(io.StringIO()):
        return module_class(
            cfg, topology=ds_topology, tp=tensor_parallel(), device=device, loss_fn=loss_fn,
            activation_checkpoint_func=checkpoint,
        )
