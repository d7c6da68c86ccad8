"""The GPT-NeoX model as NeoX numbers it: a list of L + 5 layers (facts §4.3).

| index | module | parameters |
|---|---|---|
| 0 | :class:`Embedding` | ``word_embeddings.weight`` (+ ``position_embeddings.weight`` for learned positions) |
| 1 | :class:`BlockBoundary` | none |
| 2 … L+1 | :class:`~neox.model.transformer.TransformerLayer` | facts §4.4 |
| L+2 | :class:`BlockBoundary` | none |
| L+3 | :class:`FinalNorm` | ``norm.weight``/``norm.bias`` (RMSNorm: ``norm.scale``) |
| L+4 | :class:`LMHead` (``final_linear.weight``) or :class:`TiedLMHead` (no parameters) |

:class:`GPTModel` holds them as ``self.sequential``, so ``state_dict()`` keys are exactly the
``sequential.{index}.{name}`` keys of a NeoX ``mp_rank_XX_model_states.pt`` ``module`` dict, and
each layer's own state dict is the content of a pipeline-mode ``layer_XX-model_TT`` file. Every
layer maps one tensor to one tensor (ids -> hidden -> hidden -> logits), so the same list can be
cut into pipeline stages.

Activations stay [b, s, h] throughout. Upstream transposes to [s, b, h] at index 1 and back at
L+2 (the reason those parameter-free entries exist); the layout is an execution detail that no
checkpoint records, and [b, s, h] is what SDPA, flash-attn and the loss want without copies.
Under sequence parallelism the activations between layers are [b, s/tp, h] sequence shards.

:func:`layer_recipes` says how to build each layer without building it; :func:`build_layers`
builds them all, and :mod:`neox.parallel.pipeline` builds only a pipeline stage's share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from neox.errors import ConfigError
from neox.model.init import initialize_layer
from neox.model.linears import linears
from neox.model.norms import make_norm
from neox.model.transformer import TransformerLayer
from neox.parallel import TensorParallel, VocabParallelEmbedding, tensor_parallel
from neox.parallel.random import checkpoint as checkpoint_with_rng
from neox.parallel.random import rng_tracker
from neox.parallel.sequence import local_positions, sum_gradients_over_tensor_parallel

POSITION_EMBEDDINGS = ("rotary", "learned", "none")


class Embedding(nn.Module):
    """Layer 0: token ids [b, s] -> hidden states [b, s, h] (a [b, s/tp, h] shard under SP), then dropout."""

    def __init__(self, cfg, tp: TensorParallel, *, device=None, dtype=None) -> None:
        super().__init__()
        self.tp = tp
        self.word_embeddings = VocabParallelEmbedding(
            cfg.padded_vocab_size, cfg.hidden_size, tp=tp, device=device, dtype=dtype
        )
        self.position_embeddings: nn.Embedding | None = None
        if cfg.pos_emb == "learned":  # replicated over TP ranks
            self.position_embeddings = nn.Embedding(
                cfg.max_position_embeddings, cfg.hidden_size, device=device, dtype=dtype
            )
            sum_gradients_over_tensor_parallel([self.position_embeddings.weight], tp)
        self.position_offset = cfg.opt_pos_emb_offset  # OPT's learned positions start at 2
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            positions = local_positions(input_ids.shape[1], self.tp, input_ids.device) + self.position_offset
            x = x + self.position_embeddings(positions)
        if self.tp.sequence_parallel and self.training and self.dropout.p > 0:
            with rng_tracker().fork():  # each rank drops out its own positions
                return self.dropout(x)
        return self.dropout(x)


class BlockBoundary(nn.Module):
    """Layers 1 and L+2: parameter-free; upstream changes the activation layout here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FinalNorm(nn.Module):
    """Layer L+3: the final norm, under the attribute name ``norm`` as upstream's ``NormPipe``."""

    def __init__(self, cfg, tp: TensorParallel, *, device=None, dtype=None) -> None:
        super().__init__()
        self.norm = make_norm(cfg, cfg.hidden_size, device=device, dtype=dtype)
        sum_gradients_over_tensor_parallel(list(self.norm.parameters()), tp)  # it sees sequence shards under SP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class LMHead(nn.Module):
    """Layer L+4, untied: logits = h · ``final_linear.weight``ᵀ (no bias), vocab split over TP.

    ``gather_output`` (default True) all-gathers the vocab shards so the logits are
    [b, s, padded_vocab]; a trainer using a vocab-parallel loss sets it to False.
    """

    def __init__(self, cfg, column_linear, tp: TensorParallel, *, device=None, dtype=None) -> None:
        super().__init__()
        self.final_linear = column_linear(
            cfg.hidden_size,
            cfg.padded_vocab_size,
            False,
            gather_output=True,
            tp=tp,
            device=device,
            dtype=dtype,
        )

    @property
    def gather_output(self) -> bool:
        return self.final_linear.gather_output

    @gather_output.setter
    def gather_output(self, value: bool) -> None:
        self.final_linear.gather_output = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_linear(x)


class TiedLMHead(nn.Module):
    """Layer L+4, tied (``no_weight_tying: false``): logits from the word-embedding matrix.

    It has no parameters of its own and does not register the embedding as a submodule, so
    nothing appears under its index in the state dict, as in NeoX checkpoints.
    """

    def __init__(self, embedding: Embedding) -> None:
        super().__init__()
        self.gather_output = True
        object.__setattr__(self, "embedding", embedding)  # a reference, not a child module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding.word_embeddings.logits(x, gather_output=self.gather_output)


def check_supported(cfg, tp: TensorParallel) -> None:
    """Raise ConfigError for settings this model does not implement (one line each)."""
    cfg.require_padded_vocab_size()
    if cfg.pos_emb not in POSITION_EMBEDDINGS:
        raise ConfigError(
            f"pos_emb: {cfg.pos_emb!r} is not supported; use one of {', '.join(POSITION_EMBEDDINGS)}"
        )
    if cfg.model_parallel_size != tp.world_size:
        raise ConfigError(
            f"model_parallel_size is {cfg.model_parallel_size} but this process's tensor-parallel group has "
            f"{tp.world_size} rank(s); launch through `neox train`, which sets the group up"
        )
    if cfg.sequence_parallel and tp.world_size > 1 and not tp.sequence_parallel:
        raise ConfigError(
            "sequence_parallel: true but this process's tensor-parallel group was set up without it; "
            "launch through `neox train`, which sets the group up"
        )
    if cfg.output_layer_parallelism != "column":
        raise ConfigError(
            f"output_layer_parallelism: {cfg.output_layer_parallelism!r} is not supported; use 'column'"
        )
    if cfg.te_fp8_mha:
        raise ConfigError("te_fp8_mha: true (FP8 attention) is not supported; set it to false")
    if getattr(cfg, "use_mup", False):
        raise ConfigError("use_mup: true is not supported; set it to false")


@dataclass(frozen=True)
class LayerRecipe:
    """How to build one NeoX layer: ``cls(*args, **kwargs)``.

    ``cls`` is None for the parameter-free boundaries (1 and L+2) and for the tied head (L+4,
    ``tied`` True), which has no parameters of its own: it computes logits with layer 0's
    word embeddings.
    """

    cls: type[nn.Module] | None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    tied: bool = False

    def build(self) -> nn.Module:
        assert self.cls is not None, "boundaries and the tied head are not built on their own"
        return self.cls(*self.args, **self.kwargs)


def layer_recipes(
    cfg, *, device: torch.device | str | None = None, tp: TensorParallel | None = None
) -> list[LayerRecipe]:
    """The L + 5 layers of the model in NeoX order, as recipes (nothing is allocated)."""
    tp = tp or tensor_parallel()
    check_supported(cfg, tp)
    kw = {"device": device, "dtype": getattr(torch, cfg.params_dtype)}
    kinds = linears(cfg)
    boundary = LayerRecipe(None)
    recipes = [LayerRecipe(Embedding, (cfg, tp), kw), boundary]
    recipes += [LayerRecipe(TransformerLayer, (cfg, i, kinds, tp), kw) for i in range(cfg.num_layers)]
    recipes += [boundary, LayerRecipe(FinalNorm, (cfg, tp), kw)]
    if cfg.no_weight_tying:
        recipes.append(LayerRecipe(LMHead, (cfg, kinds.column, tp), kw))
    else:
        recipes.append(LayerRecipe(None, tied=True))
    return recipes


def build_layers(
    cfg, *, device: torch.device | str | None = None, tp: TensorParallel | None = None
) -> list[nn.Module]:
    """The L + 5 layers of the model, in NeoX order, initialised from ``cfg.seed``.

    ``device`` is where the parameters are created and initialised (the current default device
    if None; parameters on the ``meta`` device are left uninitialised). ``tp`` is the
    tensor-parallel group, the current one by default.
    """
    recipes = layer_recipes(cfg, device=device, tp=tp)
    embedding = recipes[0].build()
    layers: list[nn.Module] = [embedding]
    for recipe in recipes[1:]:
        if recipe.tied:
            layers.append(TiedLMHead(embedding))
        else:
            layers.append(recipe.build() if recipe.cls is not None else BlockBoundary())
    for index, layer in enumerate(layers):
        initialize_layer(index, layer, cfg)
    return layers


class GPTModel(nn.Module):
    """GPT-NeoX language model: ``forward(input_ids [b, s]) -> logits [b, s, padded_vocab]``.

    Attributes: ``sequential`` (the NeoX-numbered layers), ``embedding``, ``layers`` (the
    transformer blocks), ``final_norm``, ``head``, ``num_layers``; ``checkpoint_activations``
    and ``checkpoint_num_layers`` control activation checkpointing in training.
    """

    def __init__(self, layers: Sequence[nn.Module], cfg) -> None:
        super().__init__()
        self.num_layers = cfg.num_layers
        assert len(layers) == self.num_layers + 5, "expected the L + 5 NeoX layers"
        self.sequential = nn.Sequential(*layers)
        self.checkpoint_activations = cfg.checkpoint_activations
        self.checkpoint_num_layers = max(1, cfg.checkpoint_num_layers)

    @property
    def embedding(self) -> Embedding:
        return self.sequential[0]

    @property
    def layers(self) -> nn.Sequential:
        return self.sequential[2 : self.num_layers + 2]

    @property
    def final_norm(self) -> FinalNorm:
        return self.sequential[self.num_layers + 3]

    @property
    def head(self) -> LMHead | TiedLMHead:
        return self.sequential[self.num_layers + 4]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(input_ids)  # [b, s, h]
        blocks = self.layers
        if self.checkpoint_activations and self.training and torch.is_grad_enabled():
            # Recompute each chunk of checkpoint_num_layers blocks in the backward pass, as
            # upstream's activation_checkpoint_interval; dropout masks replay identically.
            n = self.checkpoint_num_layers
            for start in range(0, len(blocks), n):
                x = checkpoint_with_rng(blocks[start : start + n], x)
        else:
            x = blocks(x)
        return self.head(self.final_norm(x))  # [b, s, padded_vocab]


def build(cfg, *, device: torch.device | str | None = None, tp: TensorParallel | None = None) -> GPTModel:
    """The GPT-NeoX model ``cfg`` describes, initialised; see :func:`build_layers`."""
    return GPTModel(build_layers(cfg, device=device, tp=tp), cfg)
