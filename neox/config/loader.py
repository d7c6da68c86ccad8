"""Reading YAML config files and command-line overrides into one flat dict, as upstream does.

Matches ``NeoXArgs.from_ymls`` (``megatron/neox_arguments/arguments.py``):

- files are read in order; a name without ``.yml``/``.yaml``/``.json`` gets ``.yml``;
- any YAML that PyYAML reads is accepted (flow mappings, ``#`` comments, trailing commas,
  ``True``); plain JSON is YAML too;
- top-level dashes become underscores (``train-iters`` is ``train_iters``); nested keys
  (inside ``optimizer``, ``zero_optimization``...) are kept as written;
- a key may come from only one file: nested blocks are not merged;
- two files with the same basename are an error (upstream saves them side by side).

Upstream compares the *raw* key of a later file with the already *normalised* keys, so
``train_iters`` followed by ``train-iters`` slips through and silently overwrites, while the
reverse order is caught. neox compares normalised keys, so both orders are an error. A key
written twice inside one file (which PyYAML would silently resolve to the last value) is an
error too.

The loader is PyYAML's ``SafeLoader`` (no Python object tags) with one addition: scientific
notation without a dot (``3e-4``, ``1e5``) is read as a float. YAML 1.1 reads it as a string,
which upstream then passes on as a string; every user means a number.

Overrides are ``key=value`` strings applied after the files: values are YAML-typed
(``train_iters=10`` is an int, ``use_wandb=true`` a bool), dotted paths reach into nested
mappings (``optimizer.params.lr=3e-4``), and an override may set a key no file sets.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neox.errors import ConfigError

CLI = "command line"


class _Loader(yaml.SafeLoader):
    """SafeLoader plus dot-less scientific floats and duplicate-key detection."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            k = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(k, str) and k in seen:
                raise _DuplicateKey(k, line, seen[k])
            seen[k] = line
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first_line: int):
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it (``3e-4`` is a float)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


@dataclass
class RawConfig:
    """Merged values before validation, with where each key came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    """key -> 'path:line' or 'command line'"""
    raw_names: dict[str, str] = field(default_factory=dict)
    """key -> the key as written (``train-iters``)"""
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    """basename -> file text, saved with checkpoints as upstream does"""


def resolve_path(name: str | os.PathLike) -> Path:
    """Upstream's rule: a config name without a YAML/JSON suffix gets ``.yml``."""
    text = str(name)
    if not text.endswith((".yml", ".yaml", ".json")):
        text += ".yml"
    return Path(text)


def read_file(path: Path) -> tuple[list[tuple[str, Any, int]], str]:
    """The top-level (key, value, line) items of one config file, and its text."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist; check the path (a name without .yml gets .yml)")
    text = path.read_text(encoding="utf-8")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return [], text
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{path}: the file must be a mapping of keys to values ({{key: value, ...}}), not a {node.id}")
        loader.flatten_mapping(node)
        items = []
        for key_node, value_node in node.value:
            k = loader.construct_object(key_node, deep=True)
            v = loader.construct_object(value_node, deep=True)
            items.append((k, v, key_node.start_mark.line + 1))
        return items, text
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{path}:{dup.line}: key '{dup.key}' is written twice in one mapping (also line {dup.first_line}); keep one"
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the syntax there") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    finally:
        loader.dispose()


def read_files(paths: list[str | os.PathLike]) -> RawConfig:
    """Merge config files in order; a key (after dash normalisation) may come from one file only."""
    raw = RawConfig()
    for name in paths:
        path = resolve_path(name)
        items, text = read_file(path)
        base = path.name
        if base in raw.texts:
            first = next(f for f in raw.files if Path(f).name == base)
            raise ConfigError(
                f"{path}: another config file has the same name ({first}); upstream saves configs side by side "
                "with checkpoints, so rename one"
            )
        raw.files.append(str(path))
        raw.texts[base] = text
        seen_here: dict[str, int] = {}
        for k, v, line in items:
            if not isinstance(k, str):
                raise ConfigError(f"{path}:{line}: key {k!r} is not a string; config keys are names like hidden_size")
            norm = k.replace("-", "_")
            if norm in seen_here:
                first = raw.raw_names[norm]
                same = "written twice" if first == k else f"the same key as '{first}' (dashes and underscores are equal)"
                raise ConfigError(f"{path}:{line}: key '{k}' is {same}, also on line {seen_here[norm]}; keep one")
            if norm in raw.values:
                raise ConfigError(
                    f"{path}:{line}: key '{k}' is already set in {raw.sources[norm]} (as '{raw.raw_names[norm]}'); "
                    "a key may appear in only one config file, remove one of them"
                )
            seen_here[norm] = line
            raw.values[norm] = v
            raw.sources[norm] = f"{path}:{line}"
            raw.raw_names[norm] = k
    return raw


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> list[tuple[str, Any]]:
    """``["a.b=1", ...]`` or ``{"a.b": 1}`` as (dotted key, value) pairs; string values are YAML-typed."""
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{CLI}: override '{item}' is not key=value; write it like train_iters=1000")
        k, _, v = item.partition("=")
        k = k.strip()
        if not k:
            raise ConfigError(f"{CLI}: override '{item}' has no key; write it like train_iters=1000")
        pairs.append((k, parse_value(v)))
    return pairs


def apply_overrides(raw: RawConfig, overrides: list[str] | dict[str, Any] | None) -> None:
    """Apply overrides after the files; they replace file values (nested ones by dotted path)."""
    for dotted, value in parse_overrides(overrides):
        top, *rest = dotted.split(".")
        top = top.replace("-", "_")
        if not rest:
            raw.values[top] = value
        else:
            block = copy.deepcopy(raw.values.get(top))
            if block is None:
                block = {}
            if not isinstance(block, dict):
                raise ConfigError(
                    f"{CLI}: override '{dotted}' reaches into '{top}', but {top} is {block!r}, not a mapping; "
                    f"set {top} itself instead"
                )
            node = block
            for i, part in enumerate(rest[:-1]):
                nxt = node.setdefault(part, {})
                if not isinstance(nxt, dict):
                    path = ".".join([top, *rest[: i + 1]])
                    raise ConfigError(f"{CLI}: override '{dotted}': {path} is {nxt!r}, not a mapping")
                node = nxt
            node[rest[-1]] = value
            raw.values[top] = block
        raw.sources[top] = f"{CLI} ({dotted}=...)"
        raw.raw_names.setdefault(top, top)
