"""`Circle.is_empty` (core/social.py) tells a circle with nothing in it, as a fresh `Circle(user)` is, from one with
anything at all: the join takes the shortcuts of an empty circle (no contacts frame, the shared view) on it."""

from __future__ import annotations

from typing import Any

import pytest

from peercall.core.social import CallsFrom, Circle, Contact

FILLED: dict[str, Any] = {
    "contacts": {"bob": Contact("bob", None, 1.0)},
    "incoming": {"bob": 1.0},
    "outgoing": {"bob": 1.0},
    "blocked": {"bob": 1.0},
    "blocked_by": {"bob": 1.0},
    "calls_from": CallsFrom.EVERYONE,
    "display_names": {"bob": "Bob"},
}


def test_a_fresh_circle_is_empty() -> None:
    """A user nobody relates to has an empty circle."""
    assert Circle("alice").is_empty()
    assert Circle("alice", contacts={}, incoming={}, blocked_by={}).is_empty()


@pytest.mark.parametrize("field", sorted(FILLED))
def test_anything_in_a_circle_makes_it_not_empty(field: str) -> None:
    """One contact, request, block, ring setting or display name is enough: the circle is no longer empty."""
    filled = Circle("alice", **{field: FILLED[field]})
    assert not filled.is_empty()
    assert filled != Circle("alice")


def test_every_field_of_a_circle_is_tried() -> None:
    """A field added to `Circle` must be added to `is_empty` and to FILLED above."""
    assert set(FILLED) == set(Circle.__struct_fields__) - {"user"}
