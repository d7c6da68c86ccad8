"""How a config key is declared, and what can be asked about it.

Every key of the schema is a dataclass field declared with :func:`key`. The field's metadata
holds the one-line doc, the allowed values, whether neox implements the upstream feature
behind it, and whether the value is derived. :func:`describe` turns a section class into
:class:`KeyInfo` records, so documentation, validation and ``neox config show --doc KEY``
all read the same declaration.

Types come from the annotation and follow upstream's ``validate_types``: ``None`` is always
accepted (a key may be left unset), an int is accepted where a float is expected but a bool
is not accepted as an int, and ``Literal`` choices are matched case-insensitively.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints


@dataclass(frozen=True)
class KeyInfo:
    """Everything the schema knows about one key."""

    name: str
    section: str
    default: Any
    type: Any
    doc: str
    choices: tuple[str, ...] | None
    implemented: bool
    """False: the key belongs to an upstream feature neox does not implement; only its default is accepted."""
    unimplemented_values: tuple[str, ...]
    """Allowed upstream values (of ``choices``) that neox does not implement."""
    hint: str
    """What to do instead, for keys or values neox does not implement."""
    derived: bool
    """Computed by ``neox.config.derived``; a value given in a file must agree with the computed one."""
    upstream: bool
    """The key exists in upstream GPT-NeoX (False for values only neox derives, like ``head_dim``)."""

    def type_name(self) -> str:
        return type_name(self.type)


def key(
    default: Any = None,
    doc: str = "",
    *,
    implemented: bool = True,
    unimplemented_values: tuple[str, ...] = (),
    hint: str = "",
    derived: bool = False,
    upstream: bool = True,
) -> Any:
    """Declare one config key (a dataclass field) with its upstream default and a one-line doc."""
    meta = {
        "doc": doc,
        "implemented": implemented,
        "unimplemented_values": tuple(unimplemented_values),
        "hint": hint,
        "derived": derived,
        "upstream": upstream,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"neox": meta})
    return dataclasses.field(default=default, metadata={"neox": meta})


def describe(section_name: str, cls: type) -> list[KeyInfo]:
    """The :class:`KeyInfo` of every key a section dataclass declares (not inherited ones)."""
    hints = get_type_hints(cls)
    own = cls.__dict__.get("__annotations__", {})
    infos = []
    for f in dataclasses.fields(cls):
        if f.name not in own:
            continue
        meta = f.metadata["neox"]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        ann = hints[f.name]
        infos.append(
            KeyInfo(
                name=f.name,
                section=section_name,
                default=default,
                type=ann,
                doc=meta["doc"],
                choices=literal_choices(ann),
                implemented=meta["implemented"],
                unimplemented_values=meta["unimplemented_values"],
                hint=meta["hint"],
                derived=meta["derived"],
                upstream=meta["upstream"],
            )
        )
    return infos


def _members(tp: Any) -> tuple[Any, ...]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        return get_args(tp)
    return (tp,)


def literal_choices(tp: Any) -> tuple[str, ...] | None:
    for member in _members(tp):
        if get_origin(member) is Literal:
            return tuple(get_args(member))
    return None


def type_name(tp: Any) -> str:
    names = []
    for member in _members(tp):
        if member is type(None):
            continue
        if get_origin(member) is Literal:
            names.append("one of " + ", ".join(str(c) for c in get_args(member)))
        else:
            names.append(_PLAIN_NAMES.get(member, getattr(member, "__name__", str(member))))
    return " or ".join(names)


_PLAIN_NAMES = {int: "an integer", float: "a number", bool: "true/false", str: "a string", list: "a list", dict: "a mapping"}


class TypeMismatch(Exception):
    """Raised by :func:`coerce`; the validator turns it into a one-line ConfigError."""


def coerce(value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` like upstream; return it in canonical form.

    Canonical form: a Literal choice is returned in its declared spelling (``"Cosine"`` becomes
    ``"cosine"``). Anything else is returned unchanged. Raises :class:`TypeMismatch`.
    """
    if value is None:
        return None
    for member in _members(tp):
        if member is type(None):
            continue
        if get_origin(member) is Literal:
            if isinstance(value, str):
                for choice in get_args(member):
                    if isinstance(choice, str) and choice.lower() == value.lower():
                        return choice
            continue
        if member is Any:
            return value
        if member is float and type(value) in (int, float):
            return value
        if type(value) is member:
            return value
    raise TypeMismatch(type_name(tp))
