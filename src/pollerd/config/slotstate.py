"""Pickling of frozen slots dataclasses without ``dataclasses.fields`` on every object.

A reload of a large pollers.yaml is read by a child process, which sends the validated jobs back
pickled (``pollerd.service.reloading``). The ``__getstate__`` / ``__setstate__`` that
``@dataclass(slots=True)`` adds call ``dataclasses.fields()`` for every object: four times per
job, about a third of a second each way at 10,000 jobs. ``quick_pickle`` gives the class a state
that is the tuple of its field values in declaration order, with the field names looked up once.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from operator import attrgetter
from types import MemberDescriptorType
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


def quick_pickle(cls: type[T]) -> type[T]:
    """Decorate a frozen slots dataclass (above ``@dataclass``) to pickle its fields as a tuple.

    The state is set through each field's slot descriptor, found once: half the time of
    ``object.__setattr__`` by name (10,000 jobs unpickled by a reload, or moved to other lines
    by the reading child: ``JobConfig.moved``)."""
    names = tuple(field.name for field in fields(cls))  # type: ignore[arg-type]
    values = attrgetter(*names) if len(names) > 1 else lambda obj: (getattr(obj, names[0]),)
    setters = tuple(_slot(cls, name).__set__ for name in names)

    def __getstate__(self: Any) -> tuple[Any, ...]:
        state: tuple[Any, ...] = values(self)
        return state

    def __setstate__(self: Any, state: tuple[Any, ...]) -> None:
        for set_value, value in zip(setters, state, strict=True):
            set_value(self, value)

    setattr(cls, "__getstate__", __getstate__)  # noqa: B010 (mypy: a method may not be assigned)
    setattr(cls, "__setstate__", __setstate__)  # noqa: B010
    return cls


def _slot(cls: type, name: str) -> MemberDescriptorType:
    """The slot descriptor of ``name`` on ``cls`` or the class it inherits it from."""
    for klass in cls.__mro__:
        slot = vars(klass).get(name)
        if isinstance(slot, MemberDescriptorType):
            return slot
    raise TypeError(f"{cls.__name__}.{name} is not a slot: quick_pickle needs slots=True")
