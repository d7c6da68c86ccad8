"""Chat conversations -> tokens and per-token labels (SFT loss masks) with the model's own template.

A conversation (``[{"role", "content"}, ...]``) is rendered with the tokenizer's chat template
(``transformers`` ``apply_chat_template``, from the tokenizer directory's
``tokenizer_config.json``) and tokenized once as a whole, so the tokens are exactly what the
model sees at inference. Labels are the token id where the model is trained and -100 elsewhere,
aligned with the tokens (not shifted), as upstream GPT-NeoX's
``preprocess_data_with_chat_template.py`` writes them.

Where the turns are: the template is rendered for the first i+1 turns (with the generation
prompt when the next turn is the trained role), which upstream also does; each rendering must
extend the previous one. The characters a rendering adds belong to turn i, so the generation
prompt (``<|im_start|>assistant\\n``) counts as the previous turn's and is masked, and a token
is trained when its first character lies in a trained turn. Unlike upstream this needs no
``{% generation %}`` markers and does not tokenize turn by turn (which can split a token at a
turn boundary differently from the whole text).

As upstream: EOS is appended, labelled EOS when the token before it is trained; ``only_last``
trains only the final turn; ``for_rm`` masks everything but the appended EOS.
A conversation whose labels come out all -100 or all trained is refused (:class:`DataError`):
both silently ruin an SFT run.
"""

from __future__ import annotations

from neox.errors import DataError

IGNORE = -100


def load_chat_tokenizer(path: str):
    """A ``transformers`` fast tokenizer with a chat template, from a local directory or hub name."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise DataError(f"--tokenizer-path {path}: cannot load a Hugging Face tokenizer ({str(err).splitlines()[0]}); "
                        "give a directory with tokenizer.json and tokenizer_config.json") from None
    if not getattr(tok, "chat_template", None):
        raise DataError(f"tokenizer {path} has no chat_template (tokenizer_config.json); "
                        "use a chat model's tokenizer or add a template")
    if not getattr(tok, "is_fast", False):
        raise DataError(f"tokenizer {path} is a slow (Python) tokenizer; a fast one (tokenizer.json) is needed "
                        "for character offsets")
    return tok


def _render(tok, turns, add_generation_prompt: bool) -> str:
    return tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=add_generation_prompt)


def check_conversation(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError("expected a non-empty list of {{'role', 'content'}} messages, "
                        f"got {type(messages).__name__}")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"message {k} must be an object with 'role' and 'content'")


def build_chat(tok, messages, *, generation_role: str = "assistant", only_last: bool = False,
               mask: bool = True, for_rm: bool = False) -> tuple[list[int], list[int]]:
    """(tokens, labels) for one conversation; DataError messages leave the location to the caller."""
    check_conversation(messages)
    spans: list[tuple[int, int, bool]] = []  # (start char, end char, trained)
    prev = ""
    for i, turn in enumerate(messages):
        nxt_is_gen = i + 1 < len(messages) and messages[i + 1]["role"] == generation_role
        text = _render(tok, messages[: i + 1], nxt_is_gen)
        if not text.startswith(prev):
            raise DataError(f"the chat template does not render turn by turn (rendering {i + 1} turns "
                            "changes the text of earlier turns), so turns cannot be located")
        trained = turn["role"] == generation_role and (not only_last or i == len(messages) - 1)
        spans.append((len(prev), len(text), trained))
        prev = text
    enc = tok(prev, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = []
    k = 0
    for tid, (start, _end) in zip(ids, enc["offset_mapping"]):
        while k + 1 < len(spans) and start >= spans[k][1]:
            k += 1
        trained = spans[k][2] and not for_rm
        labels.append(tid if (trained or not mask) else IGNORE)
    eos = tok.eos_token_id
    if eos is not None:
        last_trained = bool(labels) and labels[-1] != IGNORE
        ids.append(eos)
        labels.append(eos if (last_trained or for_rm or not mask) else IGNORE)
    elif for_rm:
        raise DataError("--for-rm: the tokenizer has no EOS token to put the reward on")
    if mask:
        trained = sum(1 for x in labels if x != IGNORE)
        if trained == 0:
            raise DataError(f"no token is trained (no '{generation_role}' turn with content); "
                            "fix the conversation or --generation-role")
        if trained == len(labels) and not for_rm:
            raise DataError(f"every token is trained (the mask is all ones); the template puts no text "
                            f"outside '{generation_role}' turns, check the conversation roles")
    return ids, labels


def colour_sample(tok, ids: list[int], labels: list[int]) -> str:
    """Masked tokens dim red, trained tokens bold green (ANSI), for ``--print-sample``."""
    out, run, state = [], [], None
    for tid, lab in zip(ids, labels):
        s = lab != IGNORE
        if state is not None and s != state:
            out.append(_paint(tok.decode(run), state))
            run = []
        run.append(tid)
        state = s
    if run:
        out.append(_paint(tok.decode(run), state))
    return "".join(out)


def _paint(text: str, trained: bool) -> str:
    return f"\x1b[1;32m{text}\x1b[0m" if trained else f"\x1b[2;31m{text}\x1b[0m"
