#!/usr/bin/env python3
"""Upload a converted checkpoint directory to a Hugging Face Hub branch, retrying rate limits.

    python tools/ckpts/upload.py <converted-ckpt-dir> <repo-name> <branch-name> [--max-retries 20]

Upstream's ``upload.py`` arguments. The repo is created if missing (``--private`` for a new
private one), the branch is created from ``main`` if missing, and the folder is uploaded as one
commit on the branch (``huggingface_hub.HfApi``: ``create_repo``, ``create_branch``,
``upload_folder``). Every Hub call is retried on HTTP 429 and 5xx and on connection errors with
exponential backoff (``--backoff`` seconds, doubled each time, at most 10 minutes; a server's
``Retry-After`` is honoured) up to ``--max-retries`` times. ``--delay`` waits first (seconds, or
``random`` for 0-60 s): many jobs starting at once then do not hit the Hub together.

The token comes from ``HF_TOKEN`` (or ``huggingface-cli login``); it is never printed: any
message that would contain it shows ``***``. ``HF_ENDPOINT`` selects another Hub (tests point it
at a local server). Ends with a JSON summary (repo, branch, commit, attempts) on stdout.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import flags_from_key_values, log, run  # noqa: E402

from neox.errors import NeoxError  # noqa: E402

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 600.0
RANDOM_DELAY = 60.0


def scrub(text: str) -> str:
    """``text`` with the Hub token (if any) replaced by ``***``."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return text.replace(token, "***") if token else text


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _retryable(err: BaseException) -> bool:
    status = _status(err)
    if status is not None:
        return status in RETRY_STATUS
    return any(word in type(err).__name__ for word in ("Connect", "Timeout", "RemoteProtocol"))


def _retry_after(err: BaseException) -> float | None:
    response = getattr(err, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def with_retries(
    call: Callable[[], object],
    what: str,
    *,
    max_retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
    stats: dict | None = None,
):
    """``call()``, retried on 429/5xx/connection errors with exponential backoff."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Exception as err:  # the Hub client raises many types; only retryable ones loop
            if stats is not None:
                stats["failures"] = stats.get("failures", 0) + 1
            status = _status(err)
            reason = f"HTTP {status}" if status is not None else type(err).__name__
            if not _retryable(err):
                first = scrub(str(err)).splitlines()[0] if str(err) else ""
                raise NeoxError(f"{what} failed ({reason}: {first}); check the repo name, HF_TOKEN and its write access") from None
            if attempt == max_retries:
                raise NeoxError(
                    f"{what} failed ({reason}) after {max_retries} retries; the Hub is rate-limiting or down: "
                    "rerun later (finished steps are skipped) or raise --max-retries"
                ) from None
            wait = min(_retry_after(err) or backoff * 2**attempt, MAX_BACKOFF)
            log(f"{what}: {reason}; retry {attempt + 1}/{max_retries} in {wait:.1f} s")
            sleep(wait)
    raise AssertionError("unreachable")


def parse_delay(value: str | float | None) -> float:
    if value in (None, "", "0"):
        return 0.0
    if value == "random":
        return random.uniform(0.0, RANDOM_DELAY)
    try:
        delay = float(value)
    except (TypeError, ValueError):
        raise NeoxError(f"upload delay {value!r} is not a number of seconds or 'random'") from None
    if delay < 0:
        raise NeoxError(f"upload delay {delay} must not be negative")
    return delay


def upload(
    folder: Path,
    repo: str,
    branch: str,
    *,
    max_retries: int = 20,
    backoff: float = 2.0,
    delay: str | float | None = None,
    private: bool = False,
    path_in_repo: str | None = None,
    ignore_patterns: list[str] | None = None,
    commit_message: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Upload ``folder`` to branch ``branch`` of model repo ``repo``; returns a summary."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise NeoxError(f"{folder} is not a directory with files to upload")
    if repo.count("/") != 1:
        raise NeoxError(f"repo {repo!r} is not of the form org/name")
    if max_retries < 0:
        raise NeoxError(f"max_retries {max_retries} must be at least 0")
    wait = parse_delay(delay)
    if wait:
        log(f"upload: waiting {wait:.1f} s before starting (delay)")
        sleep(wait)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    stats: dict = {}
    retry = dict(max_retries=max_retries, backoff=backoff, sleep=sleep, stats=stats)
    with_retries(lambda: api.create_repo(repo, repo_type="model", private=private, exist_ok=True),
                 f"creating repo {repo}", **retry)
    if branch != "main":
        with_retries(lambda: api.create_branch(repo, branch=branch, repo_type="model", exist_ok=True),
                     f"creating branch {branch} of {repo}", **retry)
    info = with_retries(
        lambda: api.upload_folder(
            repo_id=repo, folder_path=str(folder), path_in_repo=path_in_repo, revision=branch,
            repo_type="model", commit_message=commit_message or f"Upload {folder.name} to {branch}",
            ignore_patterns=ignore_patterns,
        ),
        f"uploading {folder} to {repo}@{branch}", **retry,
    )
    commit = getattr(info, "oid", None) or getattr(info, "commit_url", None)
    return {"folder": str(folder), "repo": repo, "branch": branch, "path_in_repo": path_in_repo or "",
            "commit": scrub(str(commit)) if commit else None, "retried": stats.get("failures", 0),
            "delay_s": round(wait, 3)}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="upload.py",
        description=__doc__.splitlines()[1],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, help="the converted checkpoint directory")
    p.add_argument("repo", help="Hub model repo, org/name")
    p.add_argument("branch", help="branch (revision) to upload to, e.g. global_step1000; 'main' for the default")
    p.add_argument("--max-retries", type=int, default=20, help="retries per Hub call on 429/5xx/connection errors")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry wait in seconds, doubled each retry")
    p.add_argument("--delay", default=None, help="seconds to wait before starting, or 'random' (0-60 s)")
    p.add_argument("--private", action="store_true", help="create the repo private if it does not exist")
    return p.parse_args(flags_from_key_values(argv, ("private",)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def work() -> dict:
        args = parse(argv)
        return upload(args.folder, args.repo, args.branch, max_retries=args.max_retries, backoff=args.backoff,
                      delay=args.delay, private=args.private)

    return run("upload", work)


if __name__ == "__main__":
    raise SystemExit(main())
