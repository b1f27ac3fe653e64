"""`@record`: typing.NamedTuple's class syntax without importing typing.

Every start of `wasmbinfmt` and of the WASI runner would otherwise import
typing, which imports re and enum: ~10 ms on our machines, a quarter of the
start-up budget. Dataclasses cost more still (dataclasses imports inspect).

    @record
    class Origin:
        source: str
        line: int | None = None      # fields with defaults come last
        def __str__(self): ...

gives a tuple subclass with named fields, defaults, _replace, and the
methods written in the class body.
"""

from __future__ import annotations

from collections import namedtuple

_NOT_COPIED = frozenset(("__dict__", "__weakref__", "__annotations__"))


def record(cls: type) -> type:
    fields = list(cls.__dict__.get("__annotations__", {}))
    defaults = [cls.__dict__[name] for name in fields if name in cls.__dict__]
    if any(name not in cls.__dict__ for name in fields[len(fields) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: fields without a default must come first")
    base = namedtuple(cls.__name__, fields, defaults=defaults, module=cls.__module__)
    namespace = {key: value for key, value in cls.__dict__.items()
                 if key not in _NOT_COPIED and key not in fields}
    namespace["__slots__"] = ()
    return type(cls.__name__, (base,), namespace)
