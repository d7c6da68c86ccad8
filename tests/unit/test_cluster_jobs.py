"""Job bookkeeping without a cluster: progress parsing for `just status`, the after-step decisions
of a chained job (finish, fail, refuse to loop), tunnel names and the VS Code CLI install."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import pytest

from neox.cluster import chain, progress, render, tunnel
from neox.errors import NeoxError
from neox.train.loggers import format_train_line


def test_console_line_of_neox_train_parses():
    metrics = {"train/lm_loss": 3.25, "train/lr": 1e-4, "train/grad_norm": 0.5, "throughput/tokens_per_s": 123456.0,
               "throughput/tokens_per_s_per_gpu": 1929.0, "throughput/tflops_per_gpu": 1.5, "time/elapsed_s": 3600.0,
               "time/eta_s": 5430.0}
    line = format_train_line(1200, 300000, metrics)
    text = f"neox: training iterations 0 -> 300000\n{line}\nvalidation at iter 1200 | lm_loss 3.4000 | ppl 30.0\n"
    p = progress.from_console(text)
    assert (p.iteration, p.total, p.loss, p.tokens_per_s, p.eta) == (1200, 300000, 3.25, 123456.0, "1:30:30")
    assert p.cells() == ("1200/300000", "3.2500", "123,456", "1:30:30")


def test_upstream_neox_console_line_parses():
    line = (" iteration      100/  320000 | consumed samples:        51200 | elapsed time per iteration (ms): 512.3 |"
            " learning rate: 6.000E-05 | lm_loss: 7.123456E+00 | loss scale: 65536.0 |")
    p = progress.from_console(line)
    assert (p.iteration, p.total, p.loss) == (100, 320000, 7.123456)


def test_jsonl_metrics_take_precedence(tmp_path):
    save = tmp_path / "ckpt"
    (save / "logs").mkdir(parents=True)
    records = [{"event": "start", "iteration": 0}, {"event": "train", "iteration": 40, "train/lm_loss": 2.5,
               "throughput/tokens_per_s": 1000.0, "time/eta_s": 61.0}, {"event": "checkpoint", "iteration": 40}]
    (save / "logs" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"broken\n')
    log = tmp_path / "slurm-1.out"
    log.write_text("iter 10/50 | lm_loss 9.0\n")
    p = progress.of_run({"save": str(save), "run_dir": str(tmp_path), "train_iters": 50}, log)
    assert (p.iteration, p.total, p.loss, p.tokens_per_s, p.eta) == (40, 50, 2.5, 1000.0, "0:01:01")
    assert progress.of_run({"save": str(tmp_path / "none"), "run_dir": str(tmp_path)}, log).iteration == 10
    assert progress.hms(math.nan) is None and progress.hms(90061) == "1-1:01:01"


@pytest.fixture
def run_dir(tmp_path):
    save = tmp_path / "checkpoints"
    save.mkdir()
    meta = {"kind": "train", "name": "t", "run_dir": str(tmp_path), "nodes": 2, "save": str(save), "max_chains": 2,
            "jobs": [{"id": "41", "chain": 0}]}
    render.write_meta(tmp_path, meta)
    return tmp_path


def test_after_step_finished_and_failed(run_dir, capsys):
    (run_dir / "checkpoints" / "latest").write_text("global_step20\n")
    assert chain.after_step(run_dir, 0, environ={"SLURM_JOB_ID": "41"}) == 0
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["state"], state["latest"], state["job"]) == ("COMPLETED", "global_step20", "41")
    assert chain.after_step(run_dir, 1, environ={"SLURM_JOB_ID": "41"}) == 1
    assert json.loads((run_dir / "state.json").read_text())["reason"] == "neox train exited with status 1"
    assert chain.after_step(run_dir, 3, stage="preflight", environ={"SLURM_JOB_ID": "41"}) == 3
    assert "the preflight check failed (exit 3); nothing was trained" in capsys.readouterr().out


def test_chain_stops_without_progress_or_at_the_cap(run_dir, capsys):
    env = {"SLURM_JOB_ID": "41", "NEOX_CHAIN": "0"}
    assert chain.after_step(run_dir, 75, environ=env) == 75
    assert json.loads((run_dir / "state.json").read_text())["reason"] == "no new checkpoint in this link"
    (run_dir / "checkpoints" / "latest").write_text("global_step10\n")
    assert chain.after_step(run_dir, 75, environ={"SLURM_JOB_ID": "43", "NEOX_CHAIN": "2"}) == 75
    state = json.loads((run_dir / "state.json").read_text())
    assert state["reason"] == "reached NEOX_MAX_CHAINS=2"
    assert "raise NEOX_MAX_CHAINS" in capsys.readouterr().out
    meta = render.read_meta(run_dir)
    meta["last_latest"] = "global_step10"
    render.write_meta(run_dir, meta)
    assert chain.after_step(run_dir, 75, environ={"SLURM_JOB_ID": "42", "NEOX_CHAIN": "1"}) == 75
    assert "without a newer checkpoint than global_step10" in capsys.readouterr().out


@pytest.mark.parametrize("given, expected", [("My_Tunnel 1", "my-tunnel-1"), ("a.b!c", "abc"), ("x" * 20, "x" * 20)])
def test_tunnel_names_follow_vscode_rules(given, expected):
    assert tunnel.tunnel_name(given) == expected


def test_tunnel_name_errors_and_default(monkeypatch):
    with pytest.raises(NeoxError, match="is 21 characters; VS Code tunnel names have at most 20"):
        tunnel.tunnel_name("y" * 21)
    with pytest.raises(NeoxError, match="no usable characters"):
        tunnel.tunnel_name("!!!")
    monkeypatch.setenv("USER", "a-very-long-user-name-here")
    assert tunnel.tunnel_name(None) == "a-very-long-user-nam"


def test_install_vscode_cli_into_a_per_architecture_directory(tmp_path, monkeypatch):
    payload = b"#!/bin/sh\necho code\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("code")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    archive = tmp_path / "vscode_cli.tar.gz"
    archive.write_bytes(buf.getvalue())
    monkeypatch.setenv("NEOX_VSCODE_DIR", str(tmp_path / "vscode"))
    path = tunnel.install_cli("aarch64", url=archive.as_uri())
    assert path == tmp_path / "vscode" / "aarch64" / "code"
    assert path.read_bytes() == payload and path.stat().st_mode & 0o111
    with pytest.raises(NeoxError, match="arch='sparc'"):
        tunnel.install_cli("sparc", url=archive.as_uri())
    with pytest.raises(NeoxError, match="cannot download the VS Code CLI"):
        tunnel.install_cli("x86_64", url=(tmp_path / "missing.tar.gz").as_uri())
    assert not (tmp_path / "vscode" / "x86_64" / "code").exists()


def test_wait_for_login_reads_the_device_code_and_url(tmp_path, capsys):
    log = tmp_path / "slurm-7.out"
    log.write_text("*\nTo grant access to the server, please log into https://github.com/login/device and use code AB12-CD34\n"
                   "Open this link in your browser https://vscode.dev/tunnel/ci/home\n")
    device, url = tunnel.wait_for_login("7", log, wait_s=5)
    assert device.endswith("use code AB12-CD34") and url == "https://vscode.dev/tunnel/ci/home"
    assert "use code AB12-CD34" in capsys.readouterr().out


def test_meta_round_trip(tmp_path):
    render.write_meta(tmp_path, {"jobs": [], "x": 1})
    assert render.read_meta(tmp_path) == {"jobs": [], "x": 1}
    with pytest.raises(NeoxError, match="is not a neox run directory"):
        render.read_meta(Path(tmp_path / "nope"))
