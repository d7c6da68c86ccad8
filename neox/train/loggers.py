"""Where training metrics go: the console line, a JSONL file, TensorBoard and Weights & Biases.

Only rank 0 logs. Metric keys are ``group/name_unit`` (``train/lm_loss``, ``train/lr``,
``throughput/tokens_per_s_per_gpu``, ``throughput/mfu_causal_pct``, ``memory/peak_gib``,
``time/iter_s``, ``validation/lm_loss``, ...) and are the same in every sink.

- **Console**: one line per ``log_interval`` with fixed fields (:func:`format_train_line`).
- **JSONL**: ``<run dir>/metrics.jsonl``, one object per event, appended across resumed jobs:
  ``{"event": "start" | "train" | "eval" | "checkpoint" | "end", "iteration": N, "time": unix, ...metrics}``.
  The run directory is ``log_dir`` if set, else ``<save>/logs``, else ``runs/<config name>``
  (:func:`run_dir`); the resolved config is written next to it as ``config.json`` at start.
- **TensorBoard**: when ``tensorboard_dir`` is set; the config is recorded as text at start.
- **W&B**: when ``use_wandb``; the config is passed to ``wandb.init``. Without an API key
  (``WANDB_API_KEY`` or ``~/.netrc``) or with ``WANDB_MODE=offline`` it runs offline. If W&B
  cannot start (no network, bad key) training continues and says so once; it never crashes a run.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

from neox.train.metrics import hms


def run_dir(cfg, config_name: str = "run") -> Path:
    """The directory for this run's metrics and config copy (see the module docstring)."""
    if getattr(cfg, "log_dir", None):
        return Path(cfg.log_dir)
    if getattr(cfg, "save", None):
        return Path(cfg.save) / "logs"
    return Path("runs") / config_name


def _fmt_num(x: float | None, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_train_line(iteration: int, total: int, m: dict) -> str:
    """The fixed-field console line of one log step."""
    mfu = m.get("throughput/mfu_causal_pct")
    fields = [
        f"iter {iteration:>{len(str(total))}d}/{total}",
        f"lm_loss {_fmt_num(m.get('train/lm_loss'), '.4f')}",
        f"lr {_fmt_num(m.get('train/lr'), '.3e')}",
        f"grad_norm {_fmt_num(m.get('train/grad_norm'), '.3f')}",
        f"tok/s {_fmt_num(m.get('throughput/tokens_per_s'), ',.0f')} ({_fmt_num(m.get('throughput/tokens_per_s_per_gpu'), ',.0f')}/gpu)",
        f"TFLOPS/gpu {_fmt_num(m.get('throughput/tflops_per_gpu'), '.2f')}",
        "MFU n/a" if mfu is None else f"MFU {mfu:.1f}% (neox {m['throughput/mfu_neox_pct']:.1f}%)",
    ]
    if "memory/peak_gib" in m:
        fields.append(f"mem {m['memory/peak_gib']:.1f} GiB")
    if "train/loss_scale" in m:
        fields.append(f"loss_scale {m['train/loss_scale']:.0f}")
    if m.get("train/skipped_iters"):
        fields.append(f"skipped {int(m['train/skipped_iters'])}")
    fields.append(f"elapsed {hms(m.get('time/elapsed_s', float('nan')))}")
    fields.append(f"ETA {hms(m.get('time/eta_s', float('nan')))}")
    return " | ".join(fields)


def format_eval_line(prefix: str, iteration: int, m: dict) -> str:
    loss = m[f"{prefix}/lm_loss"]
    return f"{prefix} at iter {iteration} | lm_loss {loss:.4f} | ppl {m[f'{prefix}/lm_loss_ppl']:.3f}"


class MetricSinks:
    """JSONL, TensorBoard and W&B sinks of rank 0 (a no-op object on other ranks)."""

    def __init__(self, cfg, *, directory: Path, enabled: bool, config_dict: dict, print_fn=print) -> None:
        self.enabled = enabled
        self.print = print_fn
        self.dir = directory
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config_dict, indent=1, sort_keys=True, default=str))
        self._jsonl = open(directory / "metrics.jsonl", "a", buffering=1)
        if getattr(cfg, "tensorboard_dir", None):
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=cfg.tensorboard_dir)
            self._tb.add_text("config", "```\n" + json.dumps(config_dict, indent=1, sort_keys=True, default=str) + "\n```")
        if getattr(cfg, "use_wandb", False):
            self._wandb = _start_wandb(cfg, directory, config_dict, print_fn)

    def log(self, event: str, iteration: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"event": event, "iteration": iteration, "time": round(time.time(), 3)}
        record.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, iteration)
        if self._wandb is not None:
            try:
                self._wandb.log(numeric, step=iteration)
            except Exception as err:  # a sink must never stop training
                self.print(f"W&B logging failed ({err}); continuing without W&B")
                self._wandb = None

    def close(self, exit_code: int = 0) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            try:
                self._wandb.finish(exit_code=exit_code)
            except Exception:
                pass
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def _start_wandb(cfg, directory: Path, config_dict: dict, print_fn):
    try:
        import wandb
    except ImportError:
        print_fn("use_wandb is set but wandb is not installed (pip install wandb); continuing without W&B")
        return None
    if getattr(cfg, "wandb_host", None):
        os.environ.setdefault("WANDB_BASE_URL", cfg.wandb_host)
    mode = os.environ.get("WANDB_MODE")
    if mode is None and not os.environ.get("WANDB_API_KEY") and not _netrc_has_wandb(cfg):
        mode = "offline"
        print_fn("W&B: no API key (WANDB_API_KEY or ~/.netrc); logging offline — `wandb sync` the run later")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return wandb.init(
                project=getattr(cfg, "wandb_project", None) or "neox",
                group=getattr(cfg, "wandb_group", None),
                name=getattr(cfg, "wandb_run_name", None),
                entity=getattr(cfg, "wandb_team", None),
                dir=str(directory),
                config=config_dict,
                mode=mode,
                resume="allow",
                settings=wandb.Settings(init_timeout=90, silent=True),
            )
    except Exception as err:
        print_fn(f"W&B could not start ({type(err).__name__}: {err}); continuing without W&B (set WANDB_MODE=offline)")
        return None


def _netrc_has_wandb(cfg) -> bool:
    import netrc

    host = (getattr(cfg, "wandb_host", None) or "https://api.wandb.ai").split("//")[-1].rstrip("/")
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
