#!/usr/bin/env python3
"""Convert every checkpoint of a training run to Hugging Face format and upload each as a Hub branch.

    python tools/ckpts/convert_all.py --save-dir runs/x/checkpoints --hf-repo org/model [--steps 1000,5000-9000]
    just convert-all save_dir=runs/x/checkpoints hf_repo=org/model upload_delay=random
    just convert-all save_dir=runs/x/checkpoints hf_repo=org/model slurm=true     # one Slurm job per step

For each ``global_stepN`` in the save directory (or the ``--steps`` selection: numbers and
inclusive ranges ``a-b``): convert it to ``<output-dir>/global_stepN`` (default output dir:
``<save-dir>-hf``) with the NeoX -> HF converter, then, with ``--hf-repo``, upload it to the
branch ``global_stepN`` of that repo (``--upload-neox`` also uploads the NeoX checkpoint itself,
without optimizer states, under ``neox/`` on the same branch). Uploads retry HTTP 429/5xx with
exponential backoff up to ``--max-retries``; ``--upload-delay`` (seconds or ``random``) spreads
the start of many uploads.

Resumable: each step's progress is recorded in ``<output-dir>/.convert_all/global_stepN.json``
(converted / uploaded / uploaded_neox, commit, last error), so a rerun skips finished work and
retries only what failed. A step that fails is recorded and the others go on; the run then ends
with exit status 1 naming the failed steps. ``--slurm`` submits one job per unfinished step
through the site profile (``neox.cluster``: ``slurm/run.sbatch``, in the image when the site has
one); each job runs this script for its step. The token comes from ``HF_TOKEN`` in the
environment (Slurm passes the submitting environment to the jobs); it is never printed or written
to any file. Ends with a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import flags_from_key_values, log, run  # noqa: E402
from upload import scrub, upload  # noqa: E402

from neox.errors import NeoxError  # noqa: E402

STATE_DIR = ".convert_all"
SWITCHES = ("upload", "no-upload", "upload-neox", "slurm", "dry-run", "overwrite", "no-progress")
ALIASES = {"output": "output-dir", "config": "config-file"}
NEOX_UPLOAD_IGNORE = ["*optim_states.pt", "zero_to_fp32.py"]


# ---------------------------------------------------------------- selection and state


def select_steps(save_dir: Path, selection: str | None) -> list[tuple[int, Path]]:
    """The checkpoints of ``save_dir`` to process: all, or those ``selection`` names."""
    from neox.checkpoint import layout

    found = layout.list_checkpoints(save_dir)
    if not save_dir.is_dir():
        raise NeoxError(f"save directory {save_dir} does not exist")
    if not found:
        raise NeoxError(f"{save_dir} has no global_stepN checkpoints")
    if not selection:
        return found
    wanted: list[tuple[int, int]] = []
    for part in selection.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise NeoxError(f"steps {selection!r}: {part!r} is not a number or a range a-b")
        lo = int(m.group(1))
        wanted.append((lo, int(m.group(2)) if m.group(2) else lo))
    chosen = [(n, p) for n, p in found if any(lo <= n <= hi for lo, hi in wanted)]
    if not chosen:
        available = ", ".join(str(n) for n, _ in found)
        raise NeoxError(f"steps {selection!r} match no checkpoint in {save_dir} (available: {available})")
    return chosen


def state_path(out_root: Path, step: int) -> Path:
    return out_root / STATE_DIR / f"global_step{step}.json"


def read_state(out_root: Path, step: int) -> dict:
    path = state_path(out_root, step)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # a torn write of a state file: redo the step's unfinished parts


def write_state(out_root: Path, step: int, state: dict) -> None:
    path = state_path(out_root, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- one step


def process_step(step: int, ckpt: Path, out_root: Path, args: argparse.Namespace) -> dict:
    """Convert (and upload) one checkpoint, skipping what its state file records as done."""
    from neox.checkpoint.convert import neox_to_hf

    state = read_state(out_root, step)
    hf_dir = out_root / f"global_step{step}"
    done: list[str] = []
    try:
        if state.get("converted") and (hf_dir / "config.json").is_file():
            done.append("converted (skipped: done before)")
        else:
            summary = neox_to_hf(
                ckpt, hf_dir, config_files=args.config_file, architecture=args.architecture,
                precision=args.precision, overwrite=True, progress=not args.no_progress, log=log,
            )
            state.update(converted=True, dtype=summary["dtype"], architecture=summary["architecture"], error=None)
            write_state(out_root, step, state)
            done.append("converted")
        if args.do_upload:
            branch = f"global_step{step}"
            if state.get("uploaded"):
                done.append("uploaded (skipped: done before)")
            else:
                result = upload(hf_dir, args.hf_repo, branch, max_retries=args.max_retries, backoff=args.backoff,
                                delay=args.upload_delay, commit_message=f"Upload {branch} (converted from NeoX)")
                state.update(uploaded=True, repo=args.hf_repo, branch=branch, commit=result["commit"], error=None)
                write_state(out_root, step, state)
                done.append("uploaded")
            if args.upload_neox and not state.get("uploaded_neox"):
                upload(ckpt, args.hf_repo, branch, max_retries=args.max_retries, backoff=args.backoff,
                       path_in_repo="neox", ignore_patterns=NEOX_UPLOAD_IGNORE,
                       commit_message=f"Upload NeoX checkpoint {branch}")
                state.update(uploaded_neox=True, error=None)
                write_state(out_root, step, state)
                done.append("uploaded neox")
        return {"step": step, "ok": True, "done": done, "hf_dir": str(hf_dir)}
    except NeoxError as err:
        state["error"] = scrub(str(err))
        write_state(out_root, step, state)
        return {"step": step, "ok": False, "done": done, "error": state["error"]}


# ---------------------------------------------------------------- drivers


def run_local(steps, out_root: Path, args) -> dict:
    from tqdm import tqdm

    results = []
    for step, ckpt in tqdm(steps, desc="checkpoints", unit="ckpt", disable=args.no_progress or len(steps) < 2):
        result = process_step(step, ckpt, out_root, args)
        log(f"global_step{step}: {'; '.join(result['done']) or 'nothing done'}"
            + ("" if result["ok"] else f"; FAILED: {result['error']}"))
        results.append(result)
    failed = [r for r in results if not r["ok"]]
    summary = {"save_dir": str(args.save_dir), "output_dir": str(out_root), "repo": args.hf_repo,
               "upload": args.do_upload, "steps": results, "failed": [r["step"] for r in failed]}
    if failed:
        err = NeoxError(
            f"{len(failed)} of {len(results)} checkpoints failed: "
            + "; ".join(f"global_step{r['step']}: {r['error']}" for r in failed[:3])
            + f"; the state is in {out_root / STATE_DIR}: fix and rerun to retry only these"
        )
        err.summary = summary
        raise err
    return summary


def _step_command(args, step: int, python: str) -> list[str]:
    words = [python, str(Path(__file__).resolve()), "--save-dir", str(args.save_dir.resolve()),
             "--output-dir", str(args.output_dir.resolve()), "--steps", str(step), "--no-progress",
             "--precision", args.precision, "--architecture", args.architecture,
             "--max-retries", str(args.max_retries), "--backoff", str(args.backoff)]
    if args.config_file:
        words += ["--config-file", *[str(Path(f).resolve()) for f in args.config_file]]
    if args.do_upload:
        words += ["--hf-repo", args.hf_repo, "--upload"]
        if args.upload_neox:
            words.append("--upload-neox")
        if args.upload_delay:
            words += ["--upload-delay", str(args.upload_delay)]
    else:
        words.append("--no-upload")
    return words


def run_slurm(steps, out_root: Path, args) -> dict:
    """One job per step that is not finished yet (``neox.cluster``'s run.sbatch)."""
    from neox.cluster import profile, runcmd

    prof = profile.load(args.profile or profile.default_name())
    in_image = prof.container != "none"
    python = "python3" if in_image else '"$NEOX_PYTHON"'
    jobs, skipped = [], []
    for step, _ in steps:
        state = read_state(out_root, step)
        finished = state.get("converted") and (not args.do_upload or state.get("uploaded")) and (
            not args.upload_neox or state.get("uploaded_neox"))
        if finished:
            skipped.append(step)
            continue
        run_dir, job = runcmd.submit_command(
            prof, _step_command(args, step, python), name=f"convert-step{step}", time=args.time,
            partition=args.partition, account=args.account, in_image=in_image, gpus_per_node=0,
            dry_run=args.dry_run,
        )
        jobs.append({"step": step, "job": job, "run_dir": str(run_dir)})
        log(f"global_step{step}: " + (f"job {job}" if job else f"rendered {run_dir / 'job.sbatch'} (dry run)"))
    return {"save_dir": str(args.save_dir), "output_dir": str(out_root), "repo": args.hf_repo,
            "upload": args.do_upload, "jobs": jobs, "skipped_finished": skipped}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="convert_all.py",
        description=__doc__.splitlines()[1],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--save-dir", "--save_dir", dest="save_dir", type=Path, required=True,
                   help="the run's save directory (holding global_stepN/)")
    p.add_argument("--steps", default=None, help="which steps: e.g. 1000,2000,5000-9000 (default: all)")
    p.add_argument("--output-dir", type=Path, default=None, help="where HF directories go (default: <save-dir>-hf)")
    p.add_argument("--hf-repo", default=None, help="Hub model repo org/name to upload to (one branch per step)")
    p.add_argument("--upload", dest="upload", action="store_true", default=None,
                   help="upload the converted models (the default when --hf-repo is given)")
    p.add_argument("--no-upload", dest="upload", action="store_false", help="convert only")
    p.add_argument("--upload-neox", action="store_true", help="also upload the NeoX checkpoint (no optimizer) under neox/")
    p.add_argument("--upload-delay", default=None, help="seconds to wait before each upload, or 'random' (0-60 s)")
    p.add_argument("--max-retries", type=int, default=20, help="retries per Hub call on 429/5xx (default 20)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry wait in seconds, doubled each retry")
    p.add_argument("--config-file", nargs="+", default=None, help="the model's config (default: each checkpoint's)")
    p.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"), default="auto")
    p.add_argument("--architecture", choices=("auto", "neox", "llama"), default="auto")
    p.add_argument("--slurm", action="store_true", help="submit one Slurm job per unfinished step")
    p.add_argument("--dry-run", action="store_true", help="with --slurm: write the job scripts, do not submit")
    p.add_argument("--profile", default=None, help="site profile for --slurm (default $NEOX_SITE or 'local')")
    p.add_argument("--time", default="02:00:00", help="with --slurm: time limit per job")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(flags_from_key_values(argv, SWITCHES, ALIASES))
    if args.upload and not args.hf_repo:
        raise NeoxError("upload=true needs hf_repo=org/name")
    args.do_upload = bool(args.hf_repo) and args.upload is not False
    if args.hf_repo and args.hf_repo.count("/") != 1:
        raise NeoxError(f"hf_repo {args.hf_repo!r} is not of the form org/name")
    if args.max_retries < 0:
        raise NeoxError(f"max_retries {args.max_retries} must be at least 0")
    if args.output_dir is None:
        args.output_dir = args.save_dir.parent / f"{args.save_dir.resolve().name}-hf"
    return args


def work(argv: list[str]) -> dict:
    args = parse(argv)
    steps = select_steps(args.save_dir, args.steps)
    out_root = args.output_dir.expanduser().resolve()
    return run_slurm(steps, out_root, args) if args.slurm else run_local(steps, out_root, args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run("convert_all", lambda: work(argv))


if __name__ == "__main__":
    raise SystemExit(main())
