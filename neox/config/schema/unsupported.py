"""Keys of upstream features neox does not implement: mixture of experts, muP, Mamba, RWKV,
Comet and online weight serving.

They are declared (with upstream's defaults) so that configs which leave them at the default
load, and so that setting one names the feature and says what to do instead. Both generations
of upstream's MoE keys are listed (the DeepSpeed-MoE ones and the later dropless ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neox.config.fields import key

_MOE = "mixture of experts; train a dense model"
_MUP = "muP; use the standard parametrisation"
_MAMBA = "Mamba layers; use global or flash attention layers"
_RWKV = "RWKV layers; use global or flash attention layers"
_COMET = "Comet logging; use use_wandb or tensorboard_dir"
_SERVE = "online weight and data serving"


def _off(default, doc, hint):
    return key(default, doc, implemented=False, hint=hint)


@dataclass
class UnsupportedArgs:
    """Upstream features neox does not implement (only their defaults are accepted)."""

    moe_num_experts: int = _off(1, "experts per MoE layer", _MOE)
    moe_expert_interval: int = _off(1, "one MoE layer every this many layers", _MOE)
    moe_top_k: int = _off(1, "experts per token", _MOE)
    moe_router_type: Literal["sinkhorn", "topk"] = _off("sinkhorn", "MoE routing", _MOE)
    moe_lbl_in_fp32: bool = _off(False, "MoE load-balancing loss in fp32", _MOE)
    moe_jitter_eps: float | None = _off(None, "MoE routing jitter", _MOE)
    moe_type: str = _off("megablocks", "MoE implementation", _MOE)
    moe_loss_coeff: float = _off(0.1, "MoE auxiliary loss coefficient", _MOE)
    moe_train_capacity_factor: float = _off(1.0, "MoE training capacity factor", _MOE)
    moe_eval_capacity_factor: float = _off(1.0, "MoE eval capacity factor", _MOE)
    moe_min_capacity: int = _off(4, "MoE minimum capacity", _MOE)
    moe_token_dropping: bool = _off(False, "MoE token dropping", _MOE)
    moe_use_residual: bool = _off(False, "residual MoE", _MOE)
    moe_expert_parallel_size: int = _off(1, "expert-parallel degree", _MOE)
    moe_glu: bool = _off(False, "gated experts", _MOE)
    num_experts: int | list = _off(1, "experts per layer (DeepSpeed-MoE generation)", _MOE)
    create_moe_param_group: bool = _off(True, "separate optimizer group for experts", _MOE)
    enable_expert_tensor_parallelism: bool = _off(False, "tensor-parallel experts", _MOE)

    use_mup: bool = _off(False, "use muP", _MUP)
    coord_check: bool = _off(False, "muP coordinate check", _MUP)
    save_base_shapes: bool = _off(False, "save muP base shapes", _MUP)
    base_shapes_file: str | None = _off(None, "muP base shapes file", _MUP)
    mup_init_scale: float = _off(1.0, "muP init scale", _MUP)
    mup_attn_temp: float = _off(1.0, "muP attention temperature", _MUP)
    mup_output_temp: float = _off(1.0, "muP output temperature", _MUP)
    mup_embedding_mult: float = _off(1.0, "muP embedding multiplier", _MUP)
    mup_rp_embedding_mult: float = _off(1.0, "muP relative-position multiplier", _MUP)
    mup_width_scale: int = _off(2, "muP width scale", _MUP)

    mamba_selective_scan_fusion: bool = _off(False, "Mamba fused selective scan", _MAMBA)
    mamba_causal_conv_fusion: bool = _off(False, "Mamba fused causal conv", _MAMBA)
    mamba_inner_func_fusion: bool = _off(False, "Mamba fused inner function", _MAMBA)
    mamba_selective_fp32_params: bool = _off(True, "Mamba fp32 A and D", _MAMBA)
    mamba_use_bias_in_conv: bool = _off(True, "Mamba conv bias", _MAMBA)
    mamba_use_bias_in_linears: bool = _off(False, "Mamba projection biases", _MAMBA)

    dim_att: int | None = _off(None, "RWKV attention width", _RWKV)
    head_size: int | None = _off(None, "RWKV head size", _RWKV)

    use_comet: bool | None = _off(None, "log to Comet", _COMET)
    comet_workspace: str | None = _off(None, "Comet workspace", _COMET)
    comet_project: str | None = _off(None, "Comet project", _COMET)
    comet_experiment_name: str | None = _off(None, "Comet experiment name", _COMET)
    comet_tags: list | None = _off(None, "Comet tags", _COMET)
    comet_others: dict | None = _off(None, "Comet metadata", _COMET)

    serve_model_weights: bool = _off(False, "serve weights over a socket", _SERVE)
    weight_server_port: int | list = _off(6000, "weight server port(s)", _SERVE)
    online_dataserver_ips: str | list = _off("localhost", "online data server address(es)", _SERVE)
    online_dataserver_ports: int | list = _off(10000, "online data server port(s)", _SERVE)
