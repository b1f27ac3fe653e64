"""record.py: NamedTuple's class syntax without typing."""

from __future__ import annotations

import pytest

from wasmbinfmt.util.record import record


@record
class Point:
    """A point."""

    x: int
    y: int = 0
    label: str | None = None

    def moved(self, dx: int) -> "Point":
        return self._replace(x=self.x + dx)

    def __str__(self) -> str:
        return f"{self.x},{self.y}"


def test_fields_defaults_methods_and_tuple_behaviour():
    p = Point(1)
    assert (p.x, p.y, p.label) == (1, 0, None) and p == (1, 0, None)
    assert Point(1, y=2) == Point(x=1, y=2, label=None)
    assert p._fields == ("x", "y", "label") and Point.__doc__ == "A point."
    assert isinstance(p.moved(2), Point) and p.moved(2).x == 3
    assert str(Point(3, 4)) == "3,4" and repr(p) == "Point(x=1, y=0, label=None)"
    assert Point.__module__ == __name__ and not hasattr(p, "__dict__")
    with pytest.raises(TypeError):
        Point()  # x has no default
    with pytest.raises(AttributeError):
        p.x = 5


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="must come first"):
        @record
        class Bad:
            a: int = 0
            b: int
