"""``neox verify``: the runtime self-check, in the image, on a compute node or on a laptop.

Reports torch/CUDA/cuDNN/NCCL versions and GPU visibility; that the installed packages match the
pins in ``containers/``; that flash-attn and Transformer Engine import and, on a GPU, agree with
PyTorch SDPA on one small causal attention call (through neox's own attention backends); that
the DeepSpeed ops named in ``DS_BUILD_OPS_LIST`` were built into the install and load without a
JIT build; that ``kernels/`` loads; and which NCCL network plugin would be used.

The install profile decides what must be present: ``cuda`` (the image: everything) or ``cpu``
(CI and laptops: flash-attn, TE and prebuilt DeepSpeed ops are absent by design and reported as
such). It is ``cuda`` when torch is a CUDA build. Exit status 1 on any failed check.

``kernels/``: the optional compiled ops are installed as the ``neox_kernels`` package when the
directory holds a buildable project. "Loads" means every module of that package imports (so
each compiled extension's shared library loads) with JIT building disabled. With an empty
``kernels/`` nothing is built and the check reports "no kernels built", which is not a failure:
the engine falls back to PyTorch ops.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from neox.cluster import versions


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _guard(name: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    try:
        ok, detail = fn()
    except Exception as err:  # a broken install raises anything; report it as this check's failure
        ok, detail = False, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    return Check(name, ok, detail)


def install_profile() -> str:
    import torch

    return "cuda" if torch.version.cuda else "cpu"


def check_torch() -> tuple[bool, str]:
    import torch

    parts = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda or 'none (CPU build)'}"]
    if torch.backends.cudnn.is_available():
        parts.append(f"cuDNN {torch.backends.cudnn.version()}")
    if torch.version.cuda and hasattr(torch.cuda, "nccl"):
        try:
            parts.append("NCCL " + ".".join(str(x) for x in torch.cuda.nccl.version()))
        except (RuntimeError, AttributeError):
            parts.append("NCCL unavailable")
    return True, ", ".join(parts)


def check_gpus(profile: str) -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        # The image's %test runs at build time, where no GPU need be visible.
        return True, "no GPU visible" + (" (CUDA build: run on a GPU node to test the GPU path)" if profile == "cuda" else "")
    names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    cap = torch.cuda.get_device_capability(0)
    return True, f"{torch.cuda.device_count()} GPU(s): {', '.join(sorted(names))} (sm_{cap[0]}{cap[1]})"


def check_pins(profile: str) -> tuple[bool, str]:
    problems = versions.mismatches(profile)
    return (not problems), "; ".join(problems) if problems else f"installed versions match the {profile} pins"


def _attention_inputs(torch):
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (2, 128, 4, 64)  # [b, s, heads, d]
    return [torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3)]


def check_backend(kind: str, profile: str) -> tuple[bool, str]:
    """Import the library; on a GPU compare it with SDPA through neox's backends."""
    module = {"flash": "flash_attn", "te": "transformer_engine.pytorch"}[kind]
    dist = {"flash": "flash-attn", "te": "transformer-engine"}[kind]
    try:
        importlib.import_module(module)
    except ImportError as err:
        if profile == "cpu":
            return True, f"not installed (CPU profile; {dist} is built only in the image)"
        return False, f"import {module} failed: {err}"
    import torch

    version = versions.installed(dist) or "?"
    if not torch.cuda.is_available():
        return True, f"{dist} {version} imports (no GPU: numerics not checked)"
    from neox.model.attention_backends import FlashAttention, SDPAttention, TEAttention

    q, k, v = _attention_inputs(torch)
    ref = SDPAttention()(q, k, v, 0.0)
    backend = FlashAttention() if kind == "flash" else TEAttention(4, 4, 64, 0.0, None)
    out = backend(q, k, v, 0.0)
    err = (out.float() - ref.float()).abs().max().item()
    # bf16 kernels with different accumulation orders: a few ulps of bf16 at |x| ~ 1.
    ok = err < 2e-2
    return ok, f"{dist} {version}: max |{kind} - sdpa| = {err:.2e} ({'ok' if ok else 'too large'}, tolerance 2e-2)"


def check_deepspeed_ops(profile: str) -> tuple[bool, str]:
    import deepspeed
    from deepspeed.git_version_info import installed_ops

    wanted = versions.read_versions().get("DS_BUILD_OPS_LIST", "").lower().split()
    built = sorted(op for op, ok in installed_ops.items() if ok)
    if profile == "cpu":
        return True, f"deepspeed {deepspeed.__version__}; prebuilt ops: {', '.join(built) or 'none (CPU profile: JIT only)'}"
    missing = [op for op in wanted if not installed_ops.get(_op_key(op), False)]
    if missing:
        return False, f"deepspeed {deepspeed.__version__}: ops not prebuilt: {', '.join(missing)} (they would JIT-build at run time)"
    loaded = []
    for op in wanted:
        builder = _builder(op)
        if builder is not None:
            importlib.import_module(builder.absolute_name())
            loaded.append(op)
    return True, f"deepspeed {deepspeed.__version__}: prebuilt ops load: {', '.join(loaded)}"


def _op_key(op: str) -> str:
    # DS_BUILD_FUSED_ADAM -> installed_ops["fused_adam"]; UTILS -> "utils"; AIO -> "async_io".
    return {"aio": "async_io"}.get(op, op)


def _builder(op: str):
    from deepspeed.ops.op_builder import ALL_OPS

    return ALL_OPS.get(_op_key(op))


def check_kernels() -> tuple[bool, str]:
    # Never JIT-build at run time: an unbuilt extension must fail here, not compile.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", "/nonexistent-neox-no-jit")
    try:
        pkg = importlib.import_module("neox_kernels")
    except ImportError:
        return True, "no kernels built (kernels/ has no buildable project); PyTorch fallbacks are used"
    names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    for name in names:
        importlib.import_module(name)
    return True, f"neox_kernels: {len(names)} module(s) load"


def check_network() -> tuple[bool, str]:
    from neox.cluster import nccl

    plugin = os.environ.get("NCCL_NET_PLUGIN", "")
    if not plugin or plugin.lower() == "none":
        if os.environ.get("NCCL_NET"):
            return False, f"NCCL_NET={os.environ['NCCL_NET']!r} but no NCCL_NET_PLUGIN: NCCL would find no such network"
        return True, "no network plugin configured: NCCL would use its built-in IB/socket transports"
    info = nccl.check_plugin(plugin)
    return True, f"NCCL would load {plugin} ({', '.join(info.tables)})"


def run_all() -> list[Check]:
    checks = [_guard("torch", check_torch)]
    try:
        profile = install_profile()
    except Exception as err:
        return [*checks, Check("profile", False, f"torch does not import: {err}")]
    checks += [
        _guard("gpus", lambda: check_gpus(profile)),
        _guard("pins", lambda: check_pins(profile)),
        _guard("flash-attn", lambda: check_backend("flash", profile)),
        _guard("transformer-engine", lambda: check_backend("te", profile)),
        _guard("deepspeed ops", lambda: check_deepspeed_ops(profile)),
        _guard("kernels", check_kernels),
        _guard("nccl plugin", check_network),
    ]
    return checks


def report(checks: list[Check]) -> int:
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'}  {c.name.ljust(width)}  {c.detail}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"neox verify: {len(failed)} check(s) failed: {', '.join(failed)}")
        return 1
    print("neox verify: all checks passed")
    return 0
