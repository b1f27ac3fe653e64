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


def test_arguments_are_checked_as_a_function_s_would_be():
    with pytest.raises(TypeError, match="takes 3 arguments"):
        Point(1, 2, "a", 4)
    with pytest.raises(TypeError, match="repeated arguments: x"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="unexpected or repeated arguments: z"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="unexpected or repeated arguments: z"):
        Point(1)._replace(z=3)
    assert Point(1, 2)._replace(label="a") == Point(1, 2, "a")


def test_copies_pickles_and_patterns_as_a_tuple_with_names():
    import copy
    import pickle

    p = Point(1, 2, "a")
    assert pickle.loads(pickle.dumps(p)) == p and type(pickle.loads(pickle.dumps(p))) is Point
    assert copy.copy(p) == p and copy.deepcopy(p) == p
    match p:
        case Point(x, y, label):
            assert (x, y, label) == (1, 2, "a")
    match p:
        case Point(x=1, label=found):
            assert found == "a"

