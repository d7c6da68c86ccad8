"""The checkpoint tools as users run them: `just convert-hf` / `just convert-neox`, --help, JSON summaries,
default output root, and one-line errors with exit status 1 (nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOOLS = REPO / "tools" / "ckpts"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(TOOLS))

import convert_hf_to_neox  # noqa: E402
import convert_neox_to_hf  # noqa: E402
from test_convert_round_trip import make_hf_dir  # noqa: E402


def just(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NEOX_PYTHON=sys.executable)
    return subprocess.run(["just", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_just_convert_hf_and_convert_neox_with_verify(tmp_path):
    src = make_hf_dir(tmp_path / "tiny-llama", "llama", kv_heads=2)
    proc = just("convert-hf", f"model={src}", f"output={tmp_path / 'neox'}", "tp=2", "te=true", "verify=true",
                "no_progress=true")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["tp"], summary["naming"], summary["architecture"]) == (2, "te", "llama") and summary["verify"]["ok"]
    assert "verify: max |Δlogits| = " in proc.stderr
    proc = just("convert-neox", f"ckpt={tmp_path / 'neox' / 'global_step0'}", f"output={tmp_path / 'hf'}", "verify=true",
                "no_progress=true")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["naming"] == "te" and summary["tp"] == 2 and summary["verify"]["max_abs_diff"] < 1e-5
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    "script, flags",
    [
        ("convert_hf_to_neox", ["--model", "--revision", "--tp", "--pp", "--iteration", "--te", "--verify"]),
        ("convert_neox_to_hf", ["--input_dir", "--config_file", "--output_dir", "--precision", "--architecture",
                                "--no_save_tokenizer", "--vocab-is-hf-tokenizer", "--pad-token-id", "--verify"]),
        ("inspect_checkpoint", ["--attributes", "--compare", "--diff", "--interactive"]),
        ("reshard", ["--tp", "--pp", "--verify"]),
        ("upload", ["--max-retries", "--delay"]),
        ("convert_all", ["--save-dir", "--hf-repo", "--upload-neox", "--upload-delay", "--max-retries", "--slurm"]),
    ],
)
def test_every_tool_has_help_with_its_flags(script, flags, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text, (script, flag)


def test_default_output_is_under_the_checkpoint_root(tmp_path, monkeypatch, capsys):
    src = make_hf_dir(tmp_path / "pythia-tiny", "neox")
    capsys.readouterr()
    monkeypatch.delenv("NEOX_CKPT_ROOT", raising=False)
    monkeypatch.setenv("NEOX_SITE", "local")  # a profile without NEOX_CKPT_ROOT
    assert convert_hf_to_neox.main([f"model={src}", "no_progress=true"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["convert_hf_to_neox: error: no output directory: pass --output-dir (output=), or set NEOX_CKPT_ROOT "
                   "(in the environment or in your site profile, slurm/sites/<site>.env)"]
    monkeypatch.setenv("NEOX_CKPT_ROOT", str(tmp_path / "ckpts"))
    assert convert_hf_to_neox.main([f"model={src}", "iteration=7", "no_progress=true"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == str(tmp_path / "ckpts" / "pythia-tiny")
    assert (tmp_path / "ckpts" / "pythia-tiny" / "global_step7").is_dir()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "{tmp}/nothing/here/x", "--output", "{tmp}/o"], "does not exist (neither a local directory nor a Hub name"),
        (["model={src}", "output={tmp}/o", "tp=0"], "tp must be >= 1"),
        (["model={src}", "output={tmp}/o", "naming=weird"], "invalid choice: 'weird'"),
        (["model={src}", "output={tmp}/o", "te=maybe"], "te=maybe: te takes true or false"),
    ],
)
def test_convert_hf_to_neox_errors_are_one_line(tmp_path, capsys, argv, message):
    src = make_hf_dir(tmp_path / "hf", "neox")
    argv = [a.format(tmp=tmp_path, src=src) for a in argv]
    try:
        code = convert_hf_to_neox.main(argv)
    except SystemExit as done:  # argparse's own usage errors exit 2
        code = done.code
    assert code in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1], err
    assert not (tmp_path / "o").exists()


def test_convert_neox_to_hf_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "global_step3").mkdir()
    assert convert_neox_to_hf.main([f"ckpt={tmp_path / 'global_step3'}", f"output={tmp_path / 'o'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no mp_rank_00_model_states.pt" in err[0], err
    assert convert_neox_to_hf.main([f"ckpt={tmp_path / 'missing'}", f"output={tmp_path / 'o'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
