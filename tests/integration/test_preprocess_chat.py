"""Chat-template preprocessing: tokens from transformers' own template, assistant-only labels,
refusals, and the label file used as the loss mask in training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neox.data import build_datasets, get_batch
from neox.data.chat import build_chat, load_chat_tokenizer
from neox.data.indexed import IndexedDataset
from neox.errors import DataError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "datasets" / "preprocess_data_with_chat_template.py"
TOK_DIR = REPO / "tests" / "assets" / "data" / "chat-tokenizer"


def _conv(i: int) -> list[dict]:
    m = [{"role": "system", "content": "Answer briefly."}] if i % 2 else []
    m += [{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"It is {2 * i}."}]
    if i % 3 == 0:
        m += [{"role": "user", "content": "Are you sure?"}, {"role": "assistant", "content": "Yes, quite sure."}]
    return m


@pytest.fixture(scope="module")
def tok():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return load_chat_tokenizer(str(TOK_DIR))


def _run(*args, ok=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"}, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr
    return proc


def test_labels_train_exactly_the_assistant_turns(tok):
    msgs = _conv(3)
    ids, labels = build_chat(tok, msgs)
    assert ids == tok.apply_chat_template(msgs, tokenize=True, return_dict=False) + [tok.eos_token_id]
    trained = tok.decode([t for t, lab in zip(ids, labels) if lab != -100])
    assert trained == "It is 6.<|im_end|>\nYes, quite sure.<|im_end|>\n<|endoftext|>"
    assert all(lab in (-100, t) for t, lab in zip(ids, labels))
    _, last = build_chat(tok, msgs, only_last=True)
    assert tok.decode([t for t, lab in zip(ids, last) if lab != -100]) == "Yes, quite sure.<|im_end|>\n<|endoftext|>"


def test_refuses_all_ones_and_empty_masks(tok):
    with pytest.raises(DataError, match="every token is trained"):
        build_chat(tok, [{"role": "assistant", "content": "Hello there."}])
    with pytest.raises(DataError, match="no token is trained"):
        build_chat(tok, [{"role": "user", "content": "Hello?"}])
    with pytest.raises(DataError, match="message 0 must be an object with 'role' and 'content'"):
        build_chat(tok, [{"text": "x"}])


def test_script_outputs_workers_and_training_mask(tmp_path, tok):
    convs = [{"messages": _conv(i), "id": i} for i in range(60)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    common = ["--input", tmp_path / "chat.jsonl", "--tokenizer-path", TOK_DIR, "--jsonl-keys", "messages"]
    s1, err = _run(*common, "--output-prefix", tmp_path / "a", "--print-sample", 1)
    _run(*common, "--output-prefix", tmp_path / "b", "--workers", 2)
    for name in ("messages_document", "messages_label_document"):
        for ext in (".bin", ".idx"):
            assert (tmp_path / f"a_{name}{ext}").read_bytes() == (tmp_path / f"b_{name}{ext}").read_bytes()
    assert "\x1b[1;32mIt is 0." in err and "\x1b[2;31m<|im_start|>user" in err
    text, labels = IndexedDataset(tmp_path / "a_messages_document"), IndexedDataset(tmp_path / "a_messages_label_document")
    assert text.dtype == labels.dtype == np.int32 and len(text) == 60 and s1["documents"] == 60
    for i in (0, 1, 59):
        ids, lab = build_chat(tok, convs[i]["messages"])
        assert list(text[i]) == ids and list(labels[i]) == lab
    assert s1["trained_tokens"] == int((labels.tokens() != -100).sum())

    # Training reads the label file as the loss mask.
    cfg = SimpleNamespace(train_data_paths=[str(tmp_path / "a_messages_document")], valid_data_paths=[],
                          test_data_paths=[], train_label_data_paths=[str(tmp_path / "a_messages_label_document")],
                          seq_length=48, seed=1, pack_impl="unpacked", allow_chopped=True, train_iters=4,
                          train_batch_size=8, eval_iters=0, eval_interval=100, use_shared_fs=True,
                          eod_mask_loss=False)
    train = build_datasets(cfg)[0]
    batch = {k: torch.from_numpy(np.stack([train[i][k] for i in range(4)])) for k in ("text", "label")}
    tokens, targets, mask = get_batch(batch, cfg, eod=0)
    assert torch.equal(mask, (batch["label"][:, 1:] >= 0).float())
    assert torch.equal(targets[mask.bool()], batch["text"][:, 1:][mask.bool()])
    assert 0 < mask.sum() < mask.numel()


def _main(argv, capsys):
    """The script's main() in this process (no new interpreter to import transformers again)."""
    import importlib.util

    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("chat_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, (json.loads(out.out.strip().splitlines()[-1]) if rc == 0 else None), out.err.strip().splitlines()


def test_script_refusal_skip_and_no_mask(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    rows = [{"messages": _conv(1)}, {"messages": [{"role": "user", "content": "only a question"}]}, {"messages": _conv(2)}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--input", tmp_path / "c.jsonl", "--tokenizer-path", TOK_DIR, "--jsonl-keys", "messages"]
    rc, _, err = _main([*common, "--output-prefix", tmp_path / "x"], capsys)
    assert rc == 1
    assert err == [
        f"preprocess_data_with_chat_template: error: {tmp_path / 'c.jsonl'}:2: no token is trained "
        "(no 'assistant' turn with content); fix the conversation or --generation-role"]
    assert not list(tmp_path.glob("x_*"))
    rc, s, _ = _main([*common, "--output-prefix", tmp_path / "y", "--skip-invalid"], capsys)
    assert rc == 0 and s["documents"] == 2 and s["skipped"] == 1
    rc, s, _ = _main([*common, "--output-prefix", tmp_path / "z", "--no-mask"], capsys)
    assert rc == 0 and s["documents"] == 3 and not list(tmp_path.glob("z_*label*"))
