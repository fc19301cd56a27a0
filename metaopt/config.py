"""Typed, frozen run configurations and ``key=value`` overrides.

A config is a frozen dataclass whose fields have simple types (``int``, ``float``, ``str``,
``bool``, ``tuple[int, ...]``). :func:`apply_overrides` parses ``key=value`` strings by the
field's declared type; anything wrong raises :class:`ConfigError` naming the key and what is
allowed, which the command line prints as one line (exit code 2).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value: ``key`` names the field."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse(key: str, text: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _parse(key, text, args[0])
    if origin is tuple:
        (elem, *_rest) = typing.get_args(typ)
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        return tuple(_parse(key, p.strip(), elem) for p in parts)
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected a boolean (true/false), got {text!r}")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {text!r}") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {text!r}") from None
    if typ is str:
        return text
    raise ConfigError(key, f"cannot parse a value of type {typ}")


def apply_overrides(config, overrides: Iterable[str]):
    """Return ``config`` with each ``key=value`` in ``overrides`` applied (types checked)."""
    types_ = _field_types(type(config))
    changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in types_:
            raise ConfigError(key, f"unknown key; allowed keys are {sorted(types_)}")
        changes[key] = _parse(key, text.strip(), types_[key])
    return dataclasses.replace(config, **changes)


def check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"unknown value {value!r}; allowed values are {list(allowed)}")


def check_positive(key: str, value: float | int, integer: bool = True) -> None:
    if not value > 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(key, f"must be {kind}, got {value!r}")


def to_dict(config) -> dict[str, Any]:
    """A JSON-ready dict of the config (tuples become lists)."""
    items = dataclasses.asdict(config).items()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def from_dict(cls, data: dict[str, Any]):
    """Rebuild a config from :func:`to_dict` output (lists back to tuples)."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; allowed keys are {sorted(types_)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)
