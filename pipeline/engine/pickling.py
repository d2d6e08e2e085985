"""How the engine's state classes pickle into checkpoints: the same compiled or not.

A compiled (mypyc native) class can only be made by calling its constructor, so pickle's
default (a bare instance, then its attributes) does not apply to it. Each state class whose
constructor takes arguments says how to make it again in `__reduce__`: `by_fields(self)` for a
dataclass (its fields are its constructor's arguments), `by_attributes(self, args)` for the
others (the constructor's arguments, then every attribute by name; a name the class no longer
has is skipped, so a restore never fails on one — whether a restored state is used is
`Engine.resumes`'s call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

_NAMES: dict[type, tuple[str, ...]] = {}
_GETTERS: dict[type, Callable[[Any], Any]] = {}  # one attribute: its value, not a tuple


def attribute_names(cls: type) -> tuple[str, ...]:
    """The attributes of a state class: its `__slots__` (else its annotations), which mypyc
    keeps as `__mypyc_attrs__`."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(
            getattr(cls, "__mypyc_attrs__", None) or getattr(cls, "__slots__", None) or cls.__annotations__
        )
    return names


def _values(obj: object, names: tuple[str, ...]) -> tuple[Any, ...]:
    """The object's attributes `names` (its class's), in order."""
    cls = type(obj)
    getter = _GETTERS.get(cls)
    if getter is None:
        getter = _GETTERS[cls] = attrgetter(*names)
    values = getter(obj)
    return values if len(names) > 1 else (values,)


def by_fields(obj: object) -> tuple[Any, ...]:
    """`__reduce__` of a dataclass: its constructor called with its fields, in order."""
    return (type(obj), _values(obj, attribute_names(type(obj))))


def by_attributes(obj: object, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`__reduce__` of another class: its constructor called with `args`, then its attributes
    (their names are one tuple per class, which pickle writes once per checkpoint)."""
    names = attribute_names(type(obj))
    return (restore, (type(obj), args, names, _values(obj, names)))


def restore(cls: type, args: tuple[Any, ...], names: tuple[str, ...], values: tuple[Any, ...]) -> object:
    obj = cls(*args)
    known = attribute_names(cls)
    pairs: Iterable[tuple[str, Any]] = zip(names, values, strict=True)
    if names != known:  # written by another version: only the names this class still has
        kept = set(known)
        pairs = [(name, value) for name, value in pairs if name in kept]
    for name, value in pairs:
        setattr(obj, name, value)
    return obj
