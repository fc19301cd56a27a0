"""One registry per concept, and the spec that names an entry of it.

A :class:`Registry` maps names to the constructors of one concept (tasks, learned optimizers,
estimators, outer optimizers, truncation schedules). A :class:`Spec` is a registry name plus
the constructor's keyword options; it is what a run config, a saved learned optimizer and the
command line (``lopt.hidden=64,64``) say::

    REGISTRY = Registry("lopt")
    REGISTRY.register("mlp", mlp_lopt)
    REGISTRY.make("mlp", hidden=(64, 64))              # mlp_lopt(hidden=(64, 64))
    REGISTRY.resolve("mlp", {"hidden": [64, 64]})      # every option, defaults filled, typed

A constructor's *options* are its parameters except the leading ``args`` the registry was
created with (``Registry("estimator", args=("problem",))``: the builder supplies the inner
problem, a spec the rest). Options are checked against the signature: an unknown name, an
unknown option, a missing required one, or a value of the wrong type raises
:class:`SpecError` (a ValueError) naming ``entry.option`` and what is allowed. Sequences are
stored as tuples, so a spec that went through JSON compares equal to the original. Values
given as text (the command line) are parsed by the option's annotation or default
(:func:`parse_text`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class SpecError(ValueError):
    """A bad name, option or value; ``key`` names it (``"lopt.hidden"``)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclasses.dataclass(frozen=True)
class Spec:
    """A registry ``name`` and keyword ``options`` for its constructor (JSON: one object)."""

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"name": name, **options}`` with tuples as lists."""
        return {"name": self.name, **{k: _jsonable(v) for k, v in self.options.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "spec") -> Spec:
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise SpecError(where, f"expected an object with a 'name' string, got {data!r}")
        return cls(data["name"], {k: _frozen(v) for k, v in data.items() if k != "name"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _frozen(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return tuple(_frozen(v) for v in value)
    return value


class Registry:
    """Constructors of one concept by name (module docstring)."""

    def __init__(self, concept: str, noun: str | None = None, args: Sequence[str] = ()):
        self.concept = concept
        self.noun = noun or concept
        self.args = tuple(args)
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``fn`` under ``name``; its options must be named parameters (no ``**kwargs``)."""
        if name in self._entries:
            raise ValueError(f"{self.concept}: {name!r} is already registered")
        params = inspect.signature(fn).parameters.values()
        if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
            raise TypeError(f"{self.concept}.{name}: a registered constructor must name every "
                            f"option (no *args / **kwargs), so that specs can be checked")
        if any(p.name == "name" for p in params):
            raise TypeError(f"{self.concept}.{name}: an option may not be called 'name' (a "
                            f"spec's 'name' is the registry name)")
        self._entries[name] = fn
        return fn

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise SpecError(self.concept, f"unknown {self.noun} {name!r}; allowed values are "
                            f"{list(self._entries)}")
        return self._entries[name]

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The option parameters of entry ``name`` (its signature minus the builder's args)."""
        sig = _signature(self.get(name))
        return {k: p for k, p in sig.parameters.items() if k not in self.args}

    def resolve(self, name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every option of ``name`` with ``options`` applied and defaults filled, type-checked."""
        params = self.options(name)
        given = dict(options or {})
        out = {}
        for key in given:
            if key not in params:
                raise SpecError(f"{name}.{key}", f"unknown option {key!r}; allowed options are "
                                f"{list(params)}")
        for key, p in params.items():
            if key in given:
                out[key] = check_value(f"{name}.{key}", _frozen(given[key]), p.annotation,
                                       p.default)
            elif p.default is inspect.Parameter.empty:
                raise SpecError(f"{name}.{key}", "required option missing")
            else:
                out[key] = p.default
        return out

    def spec(self, name: str, options: Mapping[str, Any] | None = None) -> Spec:
        """The resolved :class:`Spec` (every option present)."""
        return Spec(name, self.resolve(name, options))

    def make(self, spec: Spec | str, *args: Any, **options: Any) -> Any:
        """Build entry ``spec`` (a Spec, or a name with ``options``) with the builder ``args``."""
        if isinstance(spec, Spec):
            name, opts = spec.name, {**spec.options, **options}
        else:
            name, opts = spec, options
        if len(args) != len(self.args):
            raise TypeError(f"{self.concept}.make: expected the arguments {list(self.args)}, "
                            f"got {len(args)} positional arguments")
        given = {k: _frozen(v) for k, v in opts.items()}
        self.resolve(name, given)  # validation with clear messages
        return self._entries[name](*args, **given)

    def parse(self, name: str, key: str, text: str) -> Any:
        """Option ``key`` of entry ``name`` parsed from command-line ``text``."""
        params = self.options(name)
        if key not in params:
            raise SpecError(f"{name}.{key}", f"unknown option {key!r}; allowed options are "
                            f"{list(params)}")
        p = params[key]
        return parse_text(f"{name}.{key}", text, p.annotation, p.default)


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, TypeError):  # annotations that do not evaluate here: keep them as text
        return inspect.signature(fn)


# ----------------------------------------------------------------------------- types


def _kind(annotation: Any, default: Any) -> Any:
    """The type to check against: the annotation, else the default's type, else ``Any``."""
    if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
        return annotation
    if default is inspect.Parameter.empty or default is None:
        return Any
    if isinstance(default, tuple):
        return tuple[type(default[0]), ...] if default else tuple
    return type(default)


def _members(kind: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return None


def check_value(key: str, value: Any, annotation: Any = Any, default: Any = None) -> Any:
    """``value`` if it fits the option's type (ints accepted for floats), else SpecError."""
    kind = _kind(annotation, default)
    ok, value = _fits(value, kind)
    if not ok:
        raise SpecError(key, f"expected {_describe(kind)}, got {value!r}")
    return value


def _fits(value: Any, kind: Any) -> tuple[bool, Any]:
    members = _members(kind)
    if members is not None:
        for m in members:
            ok, v = _fits(value, m)
            if ok:
                return True, v
        return False, value
    if kind is Any or kind is object:
        return True, value
    if kind is type(None):
        return value is None, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    origin = typing.get_origin(kind) or kind
    if origin in (tuple, Sequence, list):
        if not isinstance(value, tuple | list):
            return False, value
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        if not args:
            return True, tuple(value)
        elem = args[0]
        out = []
        for v in value:
            ok, v = _fits(v, elem)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    if isinstance(kind, type):
        return isinstance(value, kind), value
    return True, value  # an annotation this checker does not model (callables, pytrees...)


def _describe(kind: Any) -> str:
    members = _members(kind)
    if members is not None:
        return " or ".join(_describe(m) for m in members)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             type(None): "none"}
    plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if kind in names:
        return names[kind]
    args = [a for a in typing.get_args(kind) if a is not Ellipsis]
    if args:
        return f"a comma-separated list of {plural.get(args[0], _describe(args[0]))}"
    return getattr(kind, "__name__", str(kind))


# ----------------------------------------------------------------------------- text


def parse_text(key: str, text: str, annotation: Any = Any, default: Any = None) -> Any:
    """Parse command-line ``text`` for an option of the given annotation / default.

    Integers, numbers (``1e-3``, ``inf`` is refused unless the type allows it later),
    ``true``/``false``, ``none``, comma-separated lists (``64,64``), strings otherwise.
    """
    kind = _kind(annotation, default)
    members = _members(kind)
    if members is not None:
        if text.strip().lower() in ("none", "null") and type(None) in members:
            return None
        errors = []
        for m in members:
            if m is type(None):
                continue
            try:
                return parse_text(key, text, m)
            except SpecError as err:
                errors.append(err)
        raise SpecError(key, f"expected {_describe(kind)}, got {text!r}")
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise SpecError(key, f"expected true/false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise SpecError(key, f"expected an integer, got {text!r}") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise SpecError(key, f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise SpecError(key, f"expected a finite number, got {text!r}")
        return value
    if kind is str:
        return text
    origin = typing.get_origin(kind) or kind
    if origin in (tuple, Sequence, list):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        elem = args[0] if args else Any
        parts = [p for p in text.strip("()[]").split(",") if p.strip()]
        return tuple(parse_text(key, p, elem) for p in parts)
    return _guess(text)


def _guess(text: str) -> Any:
    """An untyped value: int, float, bool, none, list or string, whichever parses first."""
    if "," in text:
        return tuple(_guess(p.strip()) for p in text.strip("()[]").split(",") if p.strip())
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    return text
