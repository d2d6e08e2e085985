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

from collections.abc import Callable
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


def by_fields(obj: object) -> tuple[Any, ...]:
    """`__reduce__` of a dataclass: its constructor called with its fields, in order."""
    cls = type(obj)
    return (cls, tuple([getattr(obj, name) for name in attribute_names(cls)]))


def by_attributes(obj: object, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`__reduce__` of another class: its constructor called with `args`, then its attributes
    (their names are one tuple per class, which pickle writes once per checkpoint)."""
    cls = type(obj)
    names = attribute_names(cls)
    getter = _GETTERS.get(cls)
    if getter is None:
        getter = _GETTERS[cls] = attrgetter(*names)
    values = getter(obj)
    return (restore, (cls, args, names, values if len(names) > 1 else (values,)))


def restore(cls: type, args: tuple[Any, ...], names: tuple[str, ...], values: tuple[Any, ...]) -> object:
    obj = cls(*args)
    known = attribute_names(cls)
    for name, value in zip(names, values, strict=True):
        if name in known:
            setattr(obj, name, value)
    return obj
