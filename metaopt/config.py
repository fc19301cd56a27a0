"""Nested configurations made of specs, and dotted ``key=value`` overrides.

A nested config is a set of named *sections*. Each section is one of:

* :class:`SpecSection` -- a registry name plus its options (a :class:`~metaopt.spec.Spec`
  of one :class:`~metaopt.spec.Registry`), JSON ``{"name": ..., **options}``;
* :class:`MixtureSection` -- either such a spec or a weighted mixture of them,
  JSON ``{"name": "mixture", "members": [{"member": M, "weight": w, "task": {spec}}, ...]}``;
* :class:`SettingsSection` -- a frozen dataclass of typed settings, JSON ``{field: value}``.

:func:`apply_overrides` applies command-line text to the JSON form of a config::

    lopt.hidden=64,64          option of a spec section, parsed by the option's type
    lopt.name=mlp   (lopt=mlp) switch the entry: its options reset to the new entry's defaults
                               unless also given (order on the command line does not matter)
    run.outer_steps=100        a setting
    task.name=mixture          an (empty) mixture; then per member M:
    task.M.name=quadratic      add member M (weight 1) or switch its entry
    task.M.weight=0.5          its weight;  task.M.dim=20  an option;  task.M=none  drop it

Everything wrong raises :class:`~metaopt.spec.SpecError` naming the dotted key and what is
allowed (unknown section, entry or option, wrong type, a non-finite number); the command line
prints it as one line and exits with code 2.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from metaopt.spec import Registry, Spec, SpecError, check_value, parse_text

MIXTURE = "mixture"


def rekey(err: SpecError, prefix: str, key: str) -> SpecError:
    """``err`` (keyed ``entry.option`` by a registry) re-keyed as ``key.option``."""
    message = str(err).removeprefix(f"{err.key}: ")
    if err.key == prefix or "." not in err.key:
        return SpecError(f"{key}.name" if "unknown" in message else key, message)
    return SpecError(f"{key}.{err.key.split('.', 1)[1]}", message)


def check_finite(key: str, value: Any) -> None:
    """Every float in ``value`` (nested sequences too) is finite, else SpecError at ``key``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(key, f"expected a finite number, got {value!r}")
    if isinstance(value, tuple | list):
        for v in value:
            check_finite(key, v)


class SpecSection:
    """A section holding a spec of ``registry``.

    ``fallbacks`` give values for options the registry *requires* (no default), used when the
    entry is switched by name; ``hidden`` options are supplied by the builder, never by a
    config (e.g. an estimator's ``axis_name``).
    """

    def __init__(self, registry: Registry, fallbacks: Mapping[str, Any] | None = None,
                 hidden: Sequence[str] = ()):
        self.registry, self.fallbacks, self.hidden = registry, dict(fallbacks or {}), hidden

    def resolve(self, key: str, value: Spec | str | Mapping[str, Any]) -> Spec:
        """The resolved spec (every option but the hidden ones), or SpecError at ``key``."""
        if isinstance(value, str):
            value = Spec(value)
        elif not isinstance(value, Spec):
            value = Spec.from_json(value, key)
        if value.name not in self.registry:
            raise SpecError(f"{key}.name", f"unknown {self.registry.noun} {value.name!r}; "
                            f"allowed values are {list(self.registry.names())}")
        for opt in self.hidden:
            if opt in value.options:
                raise SpecError(f"{key}.{opt}", "set by the run, not an option of the config")
        try:
            options = self.registry.resolve(value.name, value.options)
        except SpecError as err:
            raise rekey(err, self.registry.concept, key) from None
        for opt, v in options.items():
            check_finite(f"{key}.{opt}", v)
        return Spec(value.name, {k: v for k, v in options.items() if k not in self.hidden})

    def to_json(self, spec: Spec) -> dict[str, Any]:
        return spec.to_json()

    def switch(self, key: str, name: str) -> dict[str, Any]:
        """The JSON of entry ``name`` with defaults (and fallbacks for required options)."""
        if name not in self.registry:
            raise SpecError(f"{key}.name", f"unknown {self.registry.noun} {name!r}; allowed "
                            f"values are {list(self.registry.names())}")
        required = [k for k, p in self.registry.options(name).items()
                    if p.default is p.empty and k in self.fallbacks]
        return {"name": name, **{k: self.fallbacks[k] for k in required}}

    def parse(self, key: str, data: Mapping[str, Any], option: str, text: str) -> Any:
        name = data.get("name")
        if option in self.hidden:
            raise SpecError(f"{key}.{option}", "set by the run, not an option of the config")
        try:
            return self.registry.parse(name, option, text)
        except SpecError as err:
            raise rekey(err, self.registry.concept, key) from None

    def override(self, key: str, data: dict[str, Any], path: list[str], text: str) -> None:
        if len(path) != 1:
            raise SpecError(f"{key}.{'.'.join(path)}", f"{key} is a {self.registry.noun} "
                            f"({data.get('name')}); its keys are {key}.name and {key}.OPTION")
        data[path[0]] = self.parse(key, data, path[0], text)


@dataclasses.dataclass(frozen=True)
class Member:
    """One family of a task mixture: its name (metric prefix), weight and task spec."""

    member: str
    weight: float
    task: Spec


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A weighted mixture of task families (``metaopt.estimators.mixture``)."""

    members: tuple[Member, ...]


class MixtureSection:
    """A spec of ``entries`` or a :class:`Mixture` of them (module docstring)."""

    def __init__(self, entries: SpecSection):
        self.entries = entries

    def resolve(self, key: str, value: Any) -> Spec | Mixture:
        if isinstance(value, Mixture):
            value = self.to_json(value)
        if not (isinstance(value, Mapping) and value.get("name") == MIXTURE):
            return self.entries.resolve(key, value)
        unknown = sorted(set(value) - {"name", "members"})
        if unknown:
            raise SpecError(f"{key}.{unknown[0]}", "unknown key of a mixture; allowed keys are "
                            "['name', 'members']")
        members, seen = [], set()
        for i, m in enumerate(value.get("members") or ()):
            name = m.get("member") if isinstance(m, Mapping) else None
            where = f"{key}.{name}" if isinstance(name, str) else f"{key}.members[{i}]"
            self._check_name(where, name, seen)
            weight = check_value(f"{where}.weight", m.get("weight", 1.0), float)
            if not (math.isfinite(weight) and weight > 0):
                raise SpecError(f"{where}.weight", f"must be a finite number > 0, got {weight}")
            if "task" not in m or set(m) - {"member", "weight", "task"}:
                raise SpecError(where, "a mixture member is {'member', 'weight', 'task'}; set "
                                f"its task with {where}.name=TASK")
            members.append(Member(name, weight, self.entries.resolve(where, m["task"])))
            seen.add(name)
        if not members:
            raise SpecError(key, f"a mixture needs at least one member; add one with "
                            f"{key}.NAME.name=TASK (TASK in {list(self.entries.registry.names())})")
        return Mixture(tuple(members))

    @staticmethod
    def _check_name(where: str, name: Any, seen: set) -> None:
        if (not isinstance(name, str) or not name.isidentifier() or name in seen
                or name in ("name", "members", "weight")):
            raise SpecError(where, f"member names must be unique identifiers other than "
                            f"name/members/weight, got {name!r}")

    def to_json(self, value: Spec | Mixture) -> dict[str, Any]:
        if isinstance(value, Spec):
            return value.to_json()
        return {"name": MIXTURE, "members": [
            {"member": m.member, "weight": m.weight, "task": m.task.to_json()}
            for m in value.members]}

    def switch(self, key: str, name: str) -> dict[str, Any]:
        return {"name": MIXTURE, "members": []} if name == MIXTURE else \
            self.entries.switch(key, name)

    def override(self, key: str, data: dict[str, Any], path: list[str], text: str) -> None:
        if data.get("name") != MIXTURE:
            if len(path) > 1:
                raise SpecError(f"{key}.{'.'.join(path)}", f"{key} is one task "
                                f"({data.get('name')}), not a mixture; give {key}.OPTION=V, or "
                                f"{key}.name=mixture first to build a mixture of members")
            return self.entries.override(key, data, path, text)
        member, rest = path[0], path[1:]
        members = data["members"]
        found = [m for m in members if m.get("member") == member]
        where = f"{key}.{member}"
        if not rest:
            if text.strip().lower() not in ("none", "null") or not found:
                raise SpecError(where, f"give {where}.name=TASK, {where}.weight=W, "
                                f"{where}.OPTION=V, or {where}=none to drop an existing member")
            members.remove(found[0])
        elif rest == ["name"]:
            self._check_name(where, member, {m["member"] for m in members if m not in found})
            task = self.entries.switch(where, text.strip())
            if found:
                found[0]["task"] = task
            else:
                members.append({"member": member, "weight": 1.0, "task": task})
        elif not found:
            raise SpecError(where, f"no mixture member {member!r}; add it with "
                            f"{where}.name=TASK (members: {[m['member'] for m in members]})")
        elif rest == ["weight"]:
            found[0]["weight"] = parse_text(f"{where}.weight", text, float)
        else:
            self.entries.override(where, found[0]["task"], rest, text)


class SettingsSection:
    """A section holding an instance of the frozen dataclass ``cls`` (typed fields)."""

    def __init__(self, cls: type):
        self.cls = cls
        self.types = typing.get_type_hints(cls)

    def resolve(self, key: str, value: Any) -> Any:
        if isinstance(value, self.cls):
            value = dataclasses.asdict(value)
        if not isinstance(value, Mapping):
            raise SpecError(key, f"expected an object of settings {list(self.types)}")
        out = {}
        for name, v in value.items():
            if name not in self.types:
                raise SpecError(f"{key}.{name}", f"unknown option {name!r}; allowed options "
                                f"are {list(self.types)}")
            out[name] = check_value(f"{key}.{name}", v, self.types[name])
            check_finite(f"{key}.{name}", out[name])
        return self.cls(**out)

    def to_json(self, value: Any) -> dict[str, Any]:
        return dataclasses.asdict(value)

    def switch(self, key: str, name: str) -> dict[str, Any]:
        raise SpecError(f"{key}.name", f"{key} has no name; its options are {list(self.types)}")

    def override(self, key: str, data: dict[str, Any], path: list[str], text: str) -> None:
        name = ".".join(path)
        if name not in self.types:
            raise SpecError(f"{key}.{name}", f"unknown option {name!r}; allowed options are "
                            f"{list(self.types)}")
        data[name] = parse_text(f"{key}.{name}", text, self.types[name])


Section = SpecSection | MixtureSection | SettingsSection


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str],
                    sections: Mapping[str, Section],
                    hints: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``data`` (a config's JSON form) with the dotted ``key=value`` overrides applied.

    Name switches (``S.name=X`` / ``S=X``, then mixture members' ``S.M.name=X``) come first,
    so that the other overrides of the same section land on the new entry. ``hints`` maps
    keys of an older flat layout to their new dotted form, for the error message.
    """
    data = copy.deepcopy(dict(data))
    items = []
    for item in overrides:
        key, eq, text = item.partition("=")
        path = [p.strip() for p in key.strip().split(".")]
        if not eq or not all(path):
            raise SpecError(item, "expected SECTION.OPTION=VALUE (e.g. lopt.hidden=64,64)")
        if path[0] not in sections:
            hint = (hints or {}).get(path[0])
            raise SpecError(path[0], f"unknown section; allowed sections are {list(sections)}"
                            + (f" (did you mean {hint}?)" if hint else ""))
        items.append((path, text.strip()))

    def rank(path):
        if path[1:] in ([], ["name"]) and not isinstance(sections[path[0]], SettingsSection):
            return 0
        return 1 if path[-1] == "name" and len(path) == 3 else 2

    for path, text in sorted(items, key=lambda it: rank(it[0])):  # stable: order kept within
        section, key = sections[path[0]], path[0]
        if rank(path) == 0:
            data[key] = section.switch(key, text)
        else:
            section.override(key, data.setdefault(key, {}), path[1:], text)
    return data
