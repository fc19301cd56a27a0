"""Argument checks shared by task constructors: clear ValueErrors naming the field."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int > 0, else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: must be a positive integer (>= 1), got {value!r}")
    return value


def positive_ints(name: str, values: Sequence[object]) -> tuple[int, ...]:
    """Every entry of ``values`` must be a positive int (e.g. hidden widths)."""
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{name}: must be a sequence of positive integers, got {values!r}")
    for i, v in enumerate(items):
        positive_int(f"{name}[{i}]", v)
    return items  # type: ignore[return-value]


def positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name}: must be a positive number, got {value!r}")
    return float(value)


def in_range(name: str, value: object, lo: float, hi: float) -> float:
    """``lo <= value <= hi`` or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"{name}: must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def one_of(name: str, value: object, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; allowed values are {allowed}")
    return value  # type: ignore[return-value]


def batch_fits(name: str, batch_size: int, split: str, split_size: int) -> int:
    """A batch may not be larger than the split it samples from."""
    positive_int(name, batch_size)
    if batch_size > split_size:
        raise ValueError(
            f"{name}: {batch_size} is larger than the {split!r} split ({split_size} examples); "
            f"allowed values are 1..{split_size}"
        )
    return batch_size
