"""Hub upload, Hub download and the batch convert-and-upload pipeline, against a local stand-in for the Hub.

The real Hugging Face Hub is unreachable from CI and from this machine, so a local HTTP server
(``HubStub``) answers the calls ``huggingface_hub`` makes for ``create_repo``, ``create_branch``
and ``upload_folder`` (``/api/repos/create``, ``/api/models/<repo>/branch/<b>``,
``.../preupload/<rev>``, ``.../commit/<rev>``) and for ``snapshot_download`` of a served directory
(``.../tree/<rev>``, ``.../revision/<rev>``, ``<repo>/resolve/<commit>/<file>``), the way the Hub
answers them, and can answer any upload call with 429/5xx/403 first. The tools run as subprocesses with ``HF_ENDPOINT`` pointing at it and
a fake ``HF_TOKEN``; the server checks the token arrives as ``Authorization: Bearer`` and the tests
check it is never printed nor written to any file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOOLS = REPO / "tools" / "ckpts"
TOKEN = "hf_TESTtoken0123456789secret"
COMMIT = "c" * 40


class HubStub:
    """The Hub API calls of HfApi.create_repo / create_branch / upload_folder, answered locally."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.plan: list[tuple[str, list[int]]] = []  # (path regex, statuses to answer before succeeding)
        self.commits: list[dict] = []
        self.branches: list[str] = []
        self.auth: set[str | None] = set()
        self.served: dict[str, Path] = {}  # "org/name@revision" -> a local HF model directory
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, obj: dict, headers: dict | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _download(self, head: bool) -> None:
                stub.requests.append((self.command, self.path))
                m = re.match(r"/api/models/([^/]+/[^/]+)/(tree|revision)/([^?/]+)", self.path)
                if m:
                    repo, kind, rev = m.groups()
                    root = stub.served.get(f"{repo}@{rev}") or stub.served.get(f"{repo}@{COMMIT}")
                    if root is None:
                        return self._reply(404, {"error": f"{repo}@{rev} not found"})
                    names = sorted(p.name for p in root.iterdir())
                    if kind == "tree":
                        return self._reply(200, [{"type": "file", "path": n, "size": (root / n).stat().st_size,
                                                  "oid": "0" * 40} for n in names])
                    return self._reply(200, {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": n} for n in names]})
                m = re.match(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path)
                root = stub.served.get(f"{m.group(1)}@{COMMIT}") if m else None
                if root is None:
                    return self._reply(404, {"error": "not found"})
                data = (root / m.group(3)).read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._download(head=False)

            def do_HEAD(self):  # noqa: N802
                self._download(head=True)

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append((self.command, self.path))
                stub.auth.add(self.headers.get("Authorization"))
                for pattern, statuses in stub.plan:
                    if statuses and re.search(pattern, self.path):
                        status = statuses.pop(0)
                        return self._reply(status, {"error": f"stub answers {status}"}, {"Retry-After": "0"} if status == 429 else None)
                endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
                if self.path == "/api/repos/create":
                    d = json.loads(body)
                    return self._reply(200, {"url": f"{endpoint}/{d.get('organization')}/{d['name']}"})
                m = re.fullmatch(r"/api/models/(.+?)/(branch|preupload|commit)/(.+)", self.path)
                if not m:
                    return self._reply(404, {"error": f"not a Hub API call: {self.path}"})
                repo, kind, rev = m.groups()
                if kind == "branch":
                    stub.branches.append(rev)
                    return self._reply(200, {})
                if kind == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                stub.commits.append({"repo": repo, "revision": rev,
                                     "files": sorted(x["value"]["path"] for x in lines if x["key"] == "file")})
                oid = f"{len(stub.commits):040x}"
                return self._reply(200, {"commitUrl": f"{endpoint}/{repo}/commit/{oid}", "commitOid": oid})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, repo: str, revision: str, directory: Path) -> None:
        """Answer downloads of ``repo`` at ``revision`` with the files of ``directory``."""
        self.served[f"{repo}@{revision}"] = self.served[f"{repo}@{COMMIT}"] = directory

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub():
    stub = HubStub()
    yield stub
    stub.close()


def tool(script: str, *args: str, hub: HubStub, cwd: Path | None = None, env: dict | None = None):
    """Run a tool in a fresh process against the stub (huggingface_hub reads its settings at import)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_OFFLINE"))}
    env = {**base, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    return subprocess.run([sys.executable, str(TOOLS / script), *args], capture_output=True, text=True, env=env,
                          cwd=cwd or REPO, timeout=300)


def assert_token_hidden(proc: subprocess.CompletedProcess, *dirs: Path) -> None:
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    for d in dirs:
        for f in d.rglob("*"):
            if f.is_file() and f.stat().st_size < 5_000_000:
                assert TOKEN.encode() not in f.read_bytes(), f


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\0" * 64)
    return d


def test_upload_retries_429_and_5xx_then_succeeds_without_printing_the_token(hub, folder):
    hub.plan = [(r"/api/repos/create", [429, 429]), (r"/commit/", [503, 429])]
    proc = tool("upload.py", str(folder), "org/model", "global_step100", "--backoff", "0.01", hub=hub)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["branch"] == "global_step100" and summary["retried"] >= 2  # huggingface_hub may retry commits itself
    assert summary["commit"] == f"{1:040x}"
    assert hub.branches == ["global_step100"]
    assert hub.commits == [{"repo": "org/model", "revision": "global_step100", "files": ["config.json", "model.safetensors"]}]
    assert hub.requests.count(("POST", "/api/repos/create")) == 3
    assert hub.requests.count(("POST", "/api/models/org/model/commit/global_step100")) == 3
    assert "creating repo org/model: HTTP 429; retry 1/20 in" in proc.stderr
    assert hub.auth == {f"Bearer {TOKEN}"}  # the token was used ...
    assert_token_hidden(proc)  # ... and never shown


def test_upload_gives_up_after_max_retries_in_one_line(hub, folder):
    hub.plan = [(r"/api/repos/create", [429] * 10)]
    proc = tool("upload.py", str(folder), "org/model", "global_step1", "--max-retries", "2", "--backoff", "0.01", hub=hub)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "upload: error: creating repo org/model failed (HTTP 429) after 2 retries; the Hub is rate-limiting or "
        "down: rerun later (finished steps are skipped) or raise --max-retries"
    )
    assert hub.requests.count(("POST", "/api/repos/create")) == 3 and not hub.commits
    assert_token_hidden(proc)


def test_upload_does_not_retry_a_permission_error(hub, folder):
    hub.plan = [(r"/branch/", [403])]
    proc = tool("upload.py", str(folder), "org/model", "global_step1", "--backoff", "0.01", hub=hub)
    assert proc.returncode == 1
    assert "creating branch global_step1 of org/model failed (HTTP 403" in proc.stderr
    assert hub.requests.count(("POST", "/api/models/org/model/branch/global_step1")) == 1
    assert_token_hidden(proc)


def test_upload_delay_waits_first_and_bad_values_are_refused(hub, folder):
    proc = tool("upload.py", str(folder), "org/model", "main", "--delay", "0.2", hub=hub)
    assert proc.returncode == 0, proc.stderr
    assert "upload: waiting 0.2 s before starting (delay)" in proc.stderr
    assert hub.branches == []  # main is not created as a branch
    sent = len(hub.requests)
    proc = tool("upload.py", str(folder), "org/model", "main", "--delay", "soon", hub=hub)
    assert proc.returncode == 1 and "upload delay 'soon' is not a number of seconds or 'random'" in proc.stderr
    assert len(hub.requests) == sent  # nothing was sent for the refused call

    sys.path.insert(0, str(TOOLS))
    from upload import RANDOM_DELAY, parse_delay

    random.seed(0)
    delays = [parse_delay("random") for _ in range(50)]
    assert all(0 <= d <= RANDOM_DELAY for d in delays) and len(set(delays)) == 50


def test_convert_hf_downloads_a_hub_revision(hub, tmp_path):
    sys.path.insert(0, str(HERE))
    from test_convert_round_trip import make_hf_dir

    src = make_hf_dir(tmp_path / "served", "neox")
    (src / "pytorch_model.bin").write_bytes(b"not wanted: the safetensors are there")
    hub.serve("org/tiny", "step1", src)
    env_root = tmp_path / "ckpts"
    proc = tool("convert_hf_to_neox.py", "model=org/tiny", "revision=step1", f"cache_dir={tmp_path / 'cache'}",
                "tp=2", "verify=true", "no_progress=true", hub=hub, env={"NEOX_CKPT_ROOT": str(env_root)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["source"] == "org/tiny" and summary["revision"] == "step1" and summary["verify"]["ok"]
    assert summary["output"] == str(env_root / "tiny-step1")
    assert ("GET", "/api/models/org/tiny/tree/step1?recursive=true&expand=false") in hub.requests
    assert not any(p.endswith("pytorch_model.bin") for _, p in hub.requests)
    missing = tool("convert_hf_to_neox.py", "model=org/other", f"output={tmp_path / 'x'}", hub=hub)
    assert missing.returncode == 1
    assert "convert_hf_to_neox: error: cannot fetch org/other from the Hugging Face Hub" in missing.stderr
    assert "check the name and revision, set HF_TOKEN for gated models" in missing.stderr
    assert_token_hidden(proc, env_root)
    assert_token_hidden(missing)


# ---------------------------------------------------------------- convert_all


@pytest.fixture
def save_dir(tmp_path) -> Path:
    """A run's save directory with global_step10, 20 and 30 (a tiny converted model, copied)."""
    sys.path.insert(0, str(HERE))
    from test_convert_round_trip import make_hf_dir

    from neox.checkpoint import convert

    convert.hf_to_neox(str(make_hf_dir(tmp_path / "hf", "neox")), tmp_path / "run", iteration=10, pp=1, progress=False)
    for step in (20, 30):
        shutil.copytree(tmp_path / "run" / "global_step10", tmp_path / "run" / f"global_step{step}")
    (tmp_path / "run" / "global_step30" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x")
    return tmp_path / "run"


def test_convert_all_converts_uploads_each_step_as_a_branch_and_resumes(hub, save_dir, tmp_path):
    hub.plan = [(r"/commit/global_step20", [503, 429])]
    proc = tool("convert_all.py", f"save_dir={save_dir}", "hf_repo=org/run", "backoff=0.01", "upload_neox=true",
                "no_progress=true", hub=hub)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["step"] for s in summary["steps"]] == [10, 20, 30]
    assert all(s["done"] == ["converted", "uploaded", "uploaded neox"] for s in summary["steps"])
    out = tmp_path / "run-hf"
    assert sorted(set(hub.branches)) == ["global_step10", "global_step20", "global_step30"]
    model_commits = [c for c in hub.commits if "config.json" in c["files"]]
    assert sorted(c["revision"] for c in model_commits) == ["global_step10", "global_step20", "global_step30"]
    assert "model.safetensors" in model_commits[0]["files"]
    neox_commit = next(c for c in hub.commits if c["revision"] == "global_step30" and "config.json" not in c["files"])
    assert "neox/layer_02-model_00-model_states.pt" in neox_commit["files"]
    assert not any("optim_states" in f for f in neox_commit["files"])  # optimizer states stay home
    state = json.loads((out / ".convert_all" / "global_step20.json").read_text())
    assert state["converted"] and state["uploaded"] and state["branch"] == "global_step20" and state["error"] is None
    assert (out / "global_step20" / "config.json").is_file()
    assert_token_hidden(proc, out)

    # A second run skips everything; after losing step 20's upload record only that upload is redone.
    n = len(hub.requests)
    again = tool("convert_all.py", f"save_dir={save_dir}", "hf_repo=org/run", "upload_neox=true", hub=hub)
    assert again.returncode == 0 and len(hub.requests) == n
    assert all("skipped: done before" in " ".join(s["done"]) for s in json.loads(again.stdout.splitlines()[-1])["steps"])
    state["uploaded"] = False
    (out / ".convert_all" / "global_step20.json").write_text(json.dumps(state))
    third = tool("convert_all.py", f"save_dir={save_dir}", "hf_repo=org/run", "steps=10-25", "upload_neox=true", hub=hub)
    steps = {s["step"]: s["done"] for s in json.loads(third.stdout.splitlines()[-1])["steps"]}
    assert steps == {10: ["converted (skipped: done before)", "uploaded (skipped: done before)"],
                     20: ["converted (skipped: done before)", "uploaded"]}
    assert hub.commits[-1]["revision"] == "global_step20"


def test_convert_all_reports_failed_steps_and_retries_only_them(hub, save_dir, tmp_path):
    broken = save_dir / "global_step20" / "layer_02-model_00-model_states.pt"
    good = broken.read_bytes()
    broken.write_bytes(good[:100])
    proc = tool("convert_all.py", f"save_dir={save_dir}", "hf_repo=org/run", "no_progress=true", hub=hub)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("convert_all: error: 1 of 3 checkpoints failed: global_step20: cannot read checkpoint file")
    assert "fix and rerun to retry only these" in err
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["failed"] == [20] and sorted(hub.branches) == ["global_step10", "global_step30"]
    broken.write_bytes(good)
    rerun = tool("convert_all.py", f"save_dir={save_dir}", "hf_repo=org/run", hub=hub)
    assert rerun.returncode == 0, rerun.stderr
    done = {s["step"]: s["done"] for s in json.loads(rerun.stdout.splitlines()[-1])["steps"]}
    assert done[20] == ["converted", "uploaded"] and "uploaded (skipped: done before)" in done[30]


def test_convert_all_without_repo_converts_only_and_refuses_bad_input(hub, save_dir, tmp_path, capsys):
    proc = tool("convert_all.py", f"save_dir={save_dir}", "steps=30", f"output={tmp_path / 'hf'}", hub=hub)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hf" / "global_step30" / "model.safetensors").is_file() and not hub.requests
    sys.path.insert(0, str(TOOLS))
    import convert_all

    for args, message in [
        (["upload=true"], "upload=true needs hf_repo=org/name"),
        (["steps=99"], "steps '99' match no checkpoint"),
        (["steps=ten"], "'ten' is not a number or a range a-b"),
        (["hf_repo=justname"], "hf_repo 'justname' is not of the form org/name"),
        (["max_retries=-1"], "max_retries -1 must be at least 0"),
    ]:
        assert convert_all.main([f"save_dir={save_dir}", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("convert_all: error: ") and message in err[0], (args, err)
    assert not hub.requests


def test_convert_all_on_slurm_renders_one_job_per_unfinished_step(hub, save_dir, tmp_path):
    (tmp_path / "run-hf" / ".convert_all").mkdir(parents=True)
    (tmp_path / "run-hf" / ".convert_all" / "global_step10.json").write_text(
        json.dumps({"converted": True, "uploaded": True}))
    (tmp_path / "run-hf" / "global_step10").mkdir()
    proc = tool("convert_all.py", f"save_dir={save_dir}", "hf_repo=org/run", "slurm=true", "dry_run=true",
                "upload_delay=random", hub=hub, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["skipped_finished"] == [10] and [j["step"] for j in summary["jobs"]] == [20, 30]
    script = (Path(summary["jobs"][0]["run_dir"]) / "job.sbatch").read_text()
    assert "convert_all.py" in script and "--steps 20" in script and "--hf-repo org/run" in script
    assert "--upload-delay random" in script
    assert not hub.requests
    assert_token_hidden(proc, tmp_path)
