"""Training progress of a run from its files: the last iteration, loss, tokens/s and ETA.

Two sources, the first that answers wins: ``metrics.jsonl`` (written by ``neox train`` under
``log_dir`` or ``<save>/logs``; keys ``train/lm_loss``, ``throughput/tokens_per_s``,
``time/eta_s``), then the console lines in the job log (``iter 120/300 | lm_loss 5.1 | ... tok/s
12,345 ... | ETA 0:10:00``). The console parser is deliberately tolerant (upstream's
``iteration 10/ 320000 | lm_loss: 1.0E+01`` reads too), because logs outlive format changes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_ITER = re.compile(r"\biter(?:ation)?\s*:?\s*(\d+)\s*/\s*(\d+)", re.I)
_LOSS = re.compile(r"\b(?:lm_loss|loss)\s*[:=]?\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_TOKS = re.compile(r"\btok(?:en)?s?/s(?:ec)?\s*[:=]?\s*([\d,]+(?:\.\d+)?)\s*([kKM])?")
_ETA = re.compile(r"\bETA\s*[:=]?\s*((?:\d+-)?\d+:\d{2}:\d{2}|\d+(?:\.\d+)?\s*[smhd])", re.I)


@dataclass
class Progress:
    iteration: int | None = None
    total: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    eta: str | None = None

    def cells(self) -> tuple[str, str, str, str]:
        it = "-" if self.iteration is None else f"{self.iteration}/{self.total}" if self.total else str(self.iteration)
        loss = "-" if self.loss is None else f"{self.loss:.4f}"
        toks = "-" if self.tokens_per_s is None else f"{self.tokens_per_s:,.0f}"
        return it, loss, toks, self.eta or "-"


def hms(seconds: float | None) -> str | None:
    if seconds is None or seconds != seconds or seconds < 0:
        return None
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}-{text}" if days else text


def from_console(text: str) -> Progress:
    """The last training line of a log (lines without an iteration are skipped)."""
    for line in reversed(text.splitlines()):
        m = _ITER.search(line)
        if not m or " at iter" in line:
            continue
        p = Progress(iteration=int(m.group(1)), total=int(m.group(2)))
        if loss := _LOSS.search(line[m.end():]):
            p.loss = float(loss.group(1))
        if toks := _TOKS.search(line):
            scale = {"k": 1e3, "K": 1e3, "M": 1e6}.get(toks.group(2) or "", 1.0)
            p.tokens_per_s = float(toks.group(1).replace(",", "")) * scale
        if eta := _ETA.search(line):
            p.eta = eta.group(1)
        return p
    return Progress()


def from_jsonl(path: Path, total: int | None = None) -> Progress:
    """The last ``train`` event of a metrics.jsonl (reads only the tail of big files)."""
    if not path.is_file():
        return Progress()
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        lines = f.read().decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("event") != "train":
            continue
        return Progress(
            iteration=rec.get("iteration"),
            total=rec.get("train_iters") or total,
            loss=rec.get("train/lm_loss"),
            tokens_per_s=rec.get("throughput/tokens_per_s"),
            eta=hms(rec.get("time/eta_s")),
        )
    return Progress()


def metrics_files(meta: dict) -> list[Path]:
    save = meta.get("save")
    files = []
    if save:
        files.append(Path(save) / "logs" / "metrics.jsonl")
    files.append(Path(meta["run_dir"]) / "metrics.jsonl")
    return files


def of_run(meta: dict, log: Path | None) -> Progress:
    for path in metrics_files(meta):
        p = from_jsonl(path, meta.get("train_iters"))
        if p.iteration is not None:
            return p
    if log is not None and log.is_file():
        return from_console(log.read_text(errors="replace")[-256 * 1024:])
    return Progress()
