"""`neox slurm submit` on the login node: everything is checked before anything is queued; the run
directory holds the merged config with absolute paths, the rendered job and the site profile."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from neox.cli.main import main
from neox.cluster import profile, submit
from neox.data.indexed import IndexedDatasetBuilder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A user's directory: a copy of the tiny config (relative tokenizer path) and a small dataset."""
    (tmp_path / "configs" / "tokenizers").mkdir(parents=True)
    (tmp_path / "configs" / "neox-tiny.yml").write_text((REPO / "configs" / "neox-tiny.yml").read_text())
    (tmp_path / "configs" / "tokenizers" / "neox-tiny.json").write_text(
        (REPO / "configs" / "tokenizers" / "neox-tiny.json").read_text()
    )
    (tmp_path / "data").mkdir()
    with IndexedDatasetBuilder(tmp_path / "data" / "tiny_text_document", dtype=np.uint16) as b:
        rng = np.random.default_rng(0)
        for _ in range(50):
            b.add_item(rng.integers(1, 2000, size=200))
            b.end_document()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEOX_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


def args(**kw):
    base = dict(configs=["configs/neox-tiny.yml"], overrides=["data_path=data/tiny_text_document", "train_iters=20"],
                nodes=2, profile=profile.load("local"))
    base.update(kw)
    return submit.SubmitArgs(**base)


def test_run_directory_has_merged_config_with_absolute_paths(workdir):
    run_dir, meta = submit.prepare(args())
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    assert cfg["data_path"] == str(workdir / "data" / "tiny_text_document")
    assert cfg["vocab_file"] == str(workdir / "configs" / "tokenizers" / "neox-tiny.json")
    assert cfg["train_iters"] == 20 and cfg["hidden_size"] == 256
    # No save in the config: checkpoints go to the run directory; load follows save, so chained
    # and requeued jobs resume from `latest`.
    assert cfg["save"] == str(run_dir / "checkpoints") == cfg["load"]
    assert {p.name for p in run_dir.iterdir()} >= {"config.yml", "job.sbatch", "site.env", "run.env", "run.json"}
    assert (run_dir / "site.env").read_text() == profile.profile_path("local").read_text()
    assert meta["world_size"] == 2 and meta["train_iters"] == 20
    assert json.loads((run_dir / "run.json").read_text())["jobs"] == []
    # The merged config is a config neox can load as it is.
    import neox.config

    assert neox.config.load([run_dir / "config.yml"], world_size=2).train_iters == 20


def test_user_save_and_load_are_kept(workdir):
    (workdir / "old").mkdir()
    run_dir, _ = submit.prepare(args(overrides=["data_path=data/tiny_text_document", "save=ckpt", "load=old"]))
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    assert (cfg["save"], cfg["load"]) == (str(workdir / "ckpt"), str(workdir / "old"))
    run_dir, _ = submit.prepare(args(overrides=["data_path=data/tiny_text_document", "save=ckpt"]))
    assert yaml.safe_load((run_dir / "config.yml").read_text())["load"] == str(workdir / "ckpt")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data_path=data/missing"], "data_path: {w}/data/missing.bin does not exist; give the dataset prefix"),
        (["data_path=data/tiny_text_document", "load=nowhere"], "load: {w}/nowhere does not exist"),
        (["data_path=data/tiny_text_document", "vocab_file=nope.json"], "nope.json"),
        (["data_path=data/tiny_text_document", "hidden_size=250"], "hidden_size"),
        (["data_path=data/tiny_text_document", "save=/proc/neox-no"], "save: cannot write to /proc/neox-no"),
    ],
)
def test_nothing_is_written_when_a_check_fails(workdir, overrides, message, capsys):
    words = ["slurm", "submit", "configs/neox-tiny.yml", "nodes=2", *overrides]
    assert main(words) == 1
    err = capsys.readouterr().err
    assert err.startswith("neox: error: ") and err.count("\n") == 1
    assert message.format(w=workdir) in err
    assert not (workdir / "runs").exists()


def test_submit_options_are_checked(workdir, capsys):
    assert main(["slurm", "submit", "configs/neox-tiny.yml", "data_path=data/tiny_text_document"]) == 1
    assert "nodes=N is required" in capsys.readouterr().err
    assert main(["slurm", "submit", "configs/neox-tiny.yml", "nodes=2", "time=soon"]) == 1
    assert "time='soon' is not a Slurm time" in capsys.readouterr().err
    assert main(["slurm", "submit", "nodes=2"]) == 1
    assert "no config file given" in capsys.readouterr().err


def test_container_profile_needs_an_existing_image(workdir, capsys, monkeypatch):
    monkeypatch.delenv("NEOX_SIF", raising=False)
    words = ["slurm", "submit", "configs/neox-tiny.yml", "nodes=64", "data_path=data/tiny_text_document",
             "--profile", "isambard-ai", "--dry-run"]
    assert main(words) == 1
    assert "NEOX_SIF is not set" in capsys.readouterr().err
    monkeypatch.setenv("NEOX_SIF", "neox.sif")
    assert main(words) == 1
    assert f"NEOX_SIF={workdir}/neox.sif does not exist" in capsys.readouterr().err
    (workdir / "neox.sif").write_bytes(b"SIF")
    assert main(words) == 0
    run_dir = next((workdir / "runs").iterdir())
    assert f"NEOX_SIF={workdir}/neox.sif" in (run_dir / "run.env").read_text()
    assert str(workdir) not in (run_dir / "job.sbatch").read_text()
    assert os.access(run_dir / "job.sbatch", os.R_OK)


def test_split_args():
    configs, overrides, options = submit.split_args(["a.yml", "b.yml", "nodes=4", "time=2:00:00", "train_iters=5"])
    assert configs == ["a.yml", "b.yml"] and overrides == ["train_iters=5"]
    assert options == {"nodes": "4", "time": "2:00:00"}
