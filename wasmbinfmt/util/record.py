"""`@record`: typing.NamedTuple's class syntax without importing typing or collections.

Every start of `wasmbinfmt` and of the WASI runner would otherwise import
typing, which imports re and enum (~10 ms on our machines); dataclasses
import inspect; and collections.namedtuple costs ~1.5 ms to import plus
~0.1 ms for each class it builds with exec.

    @record
    class Origin:
        source: str
        line: int | None = None      # fields with defaults come last
        def __str__(self): ...

gives a tuple subclass with named fields (read-only), defaults, keyword
arguments, _replace, _fields, a repr, and the methods written in the class body.
"""

from __future__ import annotations

from _operator import itemgetter  # the C module: operator.py costs ~0.2 ms a start

_NOT_COPIED = frozenset(("__dict__", "__weakref__", "__annotations__"))


def record(cls: type) -> type:
    name = cls.__name__
    fields = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = {field: cls.__dict__[field] for field in fields if field in cls.__dict__}
    if any(field not in defaults for field in fields[len(fields) - len(defaults):]):
        raise TypeError(f"{name}: fields without a default must come first")
    count = len(fields)

    def bind(args: tuple, kwargs: dict) -> tuple:
        if len(args) > count:
            raise TypeError(f"{name}() takes {count} arguments ({len(args)} given)")
        values = list(args)
        for field in fields[len(args):]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in defaults:
                values.append(defaults[field])
            else:
                raise TypeError(f"{name}() missing argument {field!r}")
        if kwargs:
            raise TypeError(f"{name}() got unexpected or repeated arguments: {', '.join(kwargs)}")
        return tuple(values)

    def __new__(klass, *args, **kwargs):
        if kwargs or len(args) != count:
            args = bind(args, kwargs)
        return tuple.__new__(klass, args)

    def _replace(self, **changes):
        return tuple.__new__(type(self), bind((), {**dict(zip(fields, self)), **changes}))

    def __repr__(self) -> str:
        return f"{name}({', '.join(f'{f}={v!r}' for f, v in zip(fields, self))})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    namespace = {key: value for key, value in cls.__dict__.items()
                 if key not in _NOT_COPIED and key not in fields}
    namespace.update(__slots__=(), __new__=__new__, _replace=_replace, _fields=fields,
                     __match_args__=fields, __getnewargs__=__getnewargs__)
    namespace.setdefault("__repr__", __repr__)
    for index, field in enumerate(fields):
        namespace[field] = property(itemgetter(index), doc=f"field {index}: {field}")
    return type(name, (tuple,), namespace)
