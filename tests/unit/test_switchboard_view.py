"""What a welcome lists under a `View` (core/social.py), and the presence queries the `directory` frame uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peercall.core import switchboard
from peercall.core.social import View
from peercall.core.switchboard import WELCOME_ONLINE_MAX, Presence

from .board import Board

NAMES = ["me", *(f"u{i}_" for i in range(10))]


class CountingList(list[str]):
    """The switchboard's sorted online list, counting the ids a full iteration hands out."""

    looked_at = 0

    def __iter__(self) -> Iterator[str]:
        for item in super().__iter__():
            CountingList.looked_at += 1
            yield item


def populated() -> Board:
    """alice, bob (in a call with erin), carol and dave online; frank and gina seen lately (gina last)."""
    b = Board()
    for user in ("alice", "bob", "carol", "dave", "erin", "frank", "gina"):
        b.connect(f"{user}1", user)
    b.answered("bob1", "erin1")
    b.advance(10)
    b.disconnect("frank1")
    b.advance(10)
    b.disconnect("gina1")
    return b


def test_a_contacts_view_lists_only_online_contacts() -> None:
    """online, inCall and recent hold only the view's contacts, never the hidden, never the user."""
    b = populated()
    view = View(frozenset({"bob", "dave", "frank", "gina", "zed"}), everyone=False, hidden=frozenset({"dave", "gina"}))
    welcome = b.connect("alice2", "alice", view=view)
    assert welcome["online"] == ["bob"]
    assert welcome["inCall"] == ["bob"]
    assert [r["id"] for r in welcome["recent"]] == ["frank"]
    assert "more" not in welcome
    lists = b.sb.welcome_lists("alice", View(frozenset({"gina", "frank", "carol", "alice"}), everyone=False))
    assert lists.online == ["carol"] and lists.in_call == [] and not lists.more
    assert [r["id"] for r in lists.last_seen] == ["gina", "frank"]  # newest first
    assert lists.last_seen[0]["lastSeen"] == b.now


def test_a_contacts_view_does_not_look_at_everyone_online() -> None:
    """With 5,000 users online, a contacts-only welcome never walks the online list."""
    b = Board()
    for i in range(5000):
        b.sb.load([switchboard.Device(f"c{i}", f"u{i:04}", "d", False)])
    b.sb._online = CountingList(b.sb._online)
    CountingList.looked_at = 0
    lists = b.sb.welcome_lists("u0000", View(frozenset({"u0007", "u4999", "nobody"}), everyone=False))
    assert lists.online == ["u0007", "u4999"] and CountingList.looked_at == 0


def test_everyone_lists_contacts_first_then_others_in_id_order() -> None:
    b = populated()
    view = View(frozenset({"erin", "dave"}), everyone=True, hidden=frozenset({"carol", "gina"}))
    lists = b.sb.welcome_lists("alice", view)
    assert lists.online == ["dave", "erin", "bob"]
    assert lists.in_call == ["bob", "erin"]
    assert [r["id"] for r in lists.last_seen] == ["frank"] and not lists.more


@pytest.mark.parametrize("extra", [0, 1, 3])
def test_everyone_is_cut_at_the_maximum_and_says_more(extra: int) -> None:
    """Exactly WELCOME_ONLINE_MAX others: all listed, no `more`; one more: cut, `more`, contacts kept."""
    b = Board()
    b.connect("me1", "me")
    count = WELCOME_ONLINE_MAX + extra
    for i in range(count):
        b.sb.load([switchboard.Device(f"c{i}", f"u{i:04}", "d", False)])
    contact = f"u{count - 1:04}"  # the last in id order: listed only because it is a contact
    view = View(frozenset({contact}), everyone=True)
    welcome = b.connect("me2", "me", view=view)
    assert len(welcome["online"]) == WELCOME_ONLINE_MAX and welcome["online"][0] == contact
    assert welcome["online"][1:] == [f"u{i:04}" for i in range(WELCOME_ONLINE_MAX - 1)]
    assert welcome.get("more", False) is (extra > 0)


def test_everyone_looks_at_no_more_than_it_lists() -> None:
    """With 10,000 online, an everyone-welcome walks at most WELCOME_ONLINE_MAX + contacts + hidden + 1 ids."""
    b = Board()
    for i in range(10_000):
        b.sb.load([switchboard.Device(f"c{i}", f"u{i:05}", "d", False)])
    b.sb._online = CountingList(b.sb._online)
    CountingList.looked_at = 0
    contacts = frozenset(f"u{i:05}" for i in range(0, 100, 2))
    hidden = frozenset(f"u{i:05}" for i in range(1, 100, 2))
    lists = b.sb.welcome_lists("u00100", View(contacts, everyone=True, hidden=hidden))
    assert lists.more and len(lists.online) == WELCOME_ONLINE_MAX
    assert "u00100" not in lists.online and not hidden & set(lists.online)
    assert CountingList.looked_at <= WELCOME_ONLINE_MAX + len(contacts) + len(hidden) + 2


def test_without_a_view_the_welcome_is_unchanged() -> None:
    b = populated()
    welcome = b.connect("alice2", "alice")
    assert welcome["online"] == ["bob", "carol", "dave", "erin"] and welcome["inCall"] == ["bob", "erin"]
    assert [r["id"] for r in welcome["recent"]] == ["gina", "frank"]


def test_private_mode_lists_nothing_whatever_the_view() -> None:
    b = populated()
    b.sb.private = True
    welcome = b.connect("alice2", "alice", view=View(frozenset({"bob"}), everyone=True))
    assert (welcome["online"], welcome["inCall"], welcome["recent"]) == ([], [], [])


def test_presences() -> None:
    """Online (in a call or not), offline with when last seen, or offline unknown."""
    b = populated()
    got = b.sb.presences(["bob", "carol", "frank", "nobody"])
    assert got == {
        "bob": Presence("bob", "online", in_call=True),
        "carol": Presence("carol", "online"),
        "frank": Presence("frank", "offline", last_seen=b.now - 10),
        "nobody": Presence("nobody", "offline"),
    }


def test_online_page() -> None:
    """Pages by id prefix, after a cursor, at most `limit`, in id order, with whether each is in a call."""
    b = Board()
    for user in ("al", "alice", "alina", "bert", "bob", "bobby", "carl"):
        b.connect(f"{user}1", user)
    b.answered("bob1", "carl1")
    page = b.sb.online_page

    def ids(presences: list[Presence]) -> list[str]:
        return [p.user for p in presences]

    assert ids(page("b", None, 2)) == ["bert", "bob"]
    assert ids(page("b", "bob", 2)) == ["bobby"]
    assert ids(page("b", "bobby", 2)) == []
    assert ids(page("al", "a", 10)) == ["al", "alice", "alina"]  # a cursor before the prefix starts at it
    assert ids(page("al", "al", 10)) == ["alice", "alina"]
    assert ids(page("", None, 3)) == ["al", "alice", "alina"]
    assert ids(page("z", None, 3)) == [] and ids(page("a", "zzz", 3)) == []
    assert [(p.user, p.in_call) for p in page("bo", None, 5)] == [("bob", True), ("bobby", False)]


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.sampled_from(NAMES), max_size=12),
    st.sets(st.sampled_from(NAMES), max_size=6),
    st.sets(st.sampled_from(NAMES), max_size=4),
    st.booleans(),
    st.integers(min_value=1, max_value=5),
)
def test_lists_handed_in_are_restricted_as_the_own_ones(
    online: set[str], contacts: set[str], hidden: set[str], everyone: bool, cut: int
) -> None:
    """A switchboard holding a slice of shared state is handed everyone's lists (`connect(lists=...)`); restricted
    to a view they say what a switchboard holding all the state says itself."""
    b = Board()
    for name in NAMES:  # everyone connects; some leave (seen lately); two pairs talk
        b.connect(f"{name}1", name)
    b.answered("u0_1", "u1_1")
    b.answered("u4_1", "u7_1")
    for name in NAMES:
        if name not in online and name != "me":
            b.advance(1)
            b.disconnect(f"{name}1")
    view = View(frozenset(contacts), everyone, frozenset(hidden))
    handed = b.sb.welcome_lists("me")  # everyone's
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(switchboard, "WELCOME_ONLINE_MAX", cut)
        own = b.sb.welcome_lists("me", view)
        b.apply(b.sb.connect("me2", "me", None, b.now, lists=handed, view=view))
    welcome = b.last("me2", "welcome")
    assert (welcome["online"], welcome["inCall"], welcome["recent"], welcome.get("more", False)) == (
        own.online,
        own.in_call,
        own.last_seen,
        own.more,
    )
