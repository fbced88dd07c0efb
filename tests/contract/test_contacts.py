"""The ContactBook contract, run against every backend: memory, SQLite (file and :memory:), PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

import peercall.store.memory
import peercall.store.sql
from peercall.core.records import CallRecord, Outcome, Reason
from peercall.core.social import (
    MAX_CONTACTS,
    MAX_INCOMING,
    MAX_OUTGOING,
    REQUEST_TTL,
    CallsFrom,
    Circle,
    Contact,
    Screening,
)
from peercall.store import Store, open_history
from peercall.store.base import ContactBook, ContactChange, ContactLimit

NOW = 1_764_151_200.5
DAY = 86400.0
C = ContactChange


def book_of(url: str) -> Any:
    """The store at `url`, not yet opened (its private engine is reached for by the query-plan test)."""
    store: Store = open_history(url)
    return store


@pytest.fixture
async def book(url: str) -> AsyncIterator[ContactBook]:
    """An opened contact book on `url`, closed after the test."""
    store = book_of(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def circle(book: ContactBook, user: str, now: float = NOW) -> Circle:
    return await book.circle(user, now=now)


async def connect(book: ContactBook, a: str, b: str, now: float = NOW) -> None:
    assert await book.add(a, b, now=now) is C.REQUESTED
    assert await book.add(b, a, now=now + 1) is C.CONNECTED


# -- requests and contacts ----------------------------------------------------------------------------------


async def test_a_new_user_has_an_empty_circle(book: ContactBook) -> None:
    """A user nobody knows has no contacts, requests, blocks or setting (ids are never checked for use)."""
    assert await circle(book, "nobody") == Circle(user="nobody")


async def test_request_then_accept_makes_mutual_contacts(book: ContactBook) -> None:
    """alice asks bob (a request on both sides), bob accepts: both list the other, with the same `since`, each
    under the name they gave (alice's given with her request)."""
    assert await book.add("alice", "bob", now=NOW, name="Bob (work)") is C.REQUESTED
    a, b = await circle(book, "alice"), await circle(book, "bob")
    assert a.outgoing == {"bob": NOW} and a.contacts == {} and a.incoming == {}
    assert b.incoming == {"alice": NOW} and b.contacts == {} and b.outgoing == {}

    assert await book.add("bob", "alice", now=NOW + 5, name="Alice") is C.CONNECTED

    a, b = await circle(book, "alice", NOW + 6), await circle(book, "bob", NOW + 6)
    assert b.contacts == {"alice": Contact("alice", "Alice", NOW + 5)}
    assert a.contacts == {"bob": Contact("bob", "Bob (work)", NOW + 5)}
    assert (a.incoming, a.outgoing, b.incoming, b.outgoing) == ({}, {}, {}, {})


async def test_the_name_given_with_a_request_is_kept_until_it_is_accepted(book: ContactBook) -> None:
    """Asking again with another name replaces the request's name (UNCHANGED, the request keeps its time),
    asking again with none keeps it, and bob's acceptance gives alice's contact the latest one."""
    assert await book.add("alice", "bob", now=NOW, name="Bob") is C.REQUESTED
    assert await book.add("alice", "bob", now=NOW + 10, name="Bob (work)") is C.UNCHANGED
    assert await book.add("alice", "bob", now=NOW + 20) is C.UNCHANGED
    assert (await circle(book, "bob", NOW + 21)).incoming == {"alice": NOW}

    assert await book.add("bob", "alice", now=NOW + 30) is C.CONNECTED
    assert (await circle(book, "alice", NOW + 31)).contacts == {"bob": Contact("bob", "Bob (work)", NOW + 30)}
    assert (await circle(book, "bob", NOW + 31)).contacts == {"alice": Contact("alice", None, NOW + 30)}


async def test_the_name_of_a_declined_or_blocked_request_reaches_the_contact(book: ContactBook) -> None:
    """A request bob declined, or hid by blocking alice, still carries her name (renamed meanwhile) when he
    accepts it later."""
    await book.add("alice", "bob", now=NOW, name="Bob")
    await book.decline("bob", "alice")
    assert await book.add("alice", "bob", now=NOW + 1, name="Bobby") is C.UNCHANGED
    await book.add("carol", "bob", now=NOW, name="B.")
    await book.block("bob", "carol", now=NOW + 1)

    assert await book.add("bob", "alice", now=NOW + 2) is C.CONNECTED
    assert await book.add("bob", "carol", now=NOW + 3) is C.CONNECTED
    assert (await circle(book, "alice", NOW + 4)).contacts["bob"].name == "Bobby"
    assert (await circle(book, "carol", NOW + 4)).contacts["bob"].name == "B."


async def test_the_name_of_an_expired_request_is_not_reused(book: ContactBook) -> None:
    """A request made anew after the old one expired has only the name given with it; a name never reaches
    anyone else's contact, and an import between the two drops the request and its name."""
    await book.add("alice", "bob", now=NOW, name="Bob")
    later = NOW + REQUEST_TTL + 1
    assert await book.add("alice", "bob", now=later) is C.REQUESTED
    await book.add("alice", "carol", now=later, name="Carol")
    await book.add("carol", "alice", now=later + 1, name="Alice")
    assert await book.add("bob", "alice", now=later + 2) is C.CONNECTED

    a = await circle(book, "alice", later + 3)
    assert a.contacts["bob"].name is None and a.contacts["carol"].name == "Carol"
    assert (await circle(book, "carol", later + 3)).contacts["alice"].name == "Alice"

    await book.add("dave", "erin", now=later, name="Erin")
    assert await book.import_contacts([("dave", "erin")], now=later + 1) == 1
    assert (await circle(book, "dave", later + 2)).contacts["erin"].name is None


async def test_add_is_idempotent(book: ContactBook) -> None:
    """Asking twice keeps one request and its time; adding a contact is UNCHANGED but sets a name given."""
    assert await book.add("alice", "bob", now=NOW) is C.REQUESTED
    assert await book.add("alice", "bob", now=NOW + 60) is C.UNCHANGED
    assert (await circle(book, "bob")).incoming == {"alice": NOW}
    assert await book.add("bob", "alice", now=NOW + 61) is C.CONNECTED

    assert await book.add("bob", "alice", now=NOW + 62) is C.UNCHANGED
    assert await book.add("bob", "alice", now=NOW + 63, name="Al") is C.UNCHANGED
    assert (await circle(book, "bob")).contacts["alice"] == Contact("alice", "Al", NOW + 61)
    assert (await circle(book, "alice")).contacts["bob"].name is None


async def test_bad_ids_and_names_raise_value_error(book: ContactBook) -> None:
    """Yourself as peer, an empty id or a name outside 1-64 characters is refused, and nothing changes."""
    with pytest.raises(ValueError, match="own contact"):
        await book.add("alice", "alice", now=NOW)
    with pytest.raises(ValueError, match="non-empty"):
        await book.block("alice", "", now=NOW)
    with pytest.raises(ValueError, match="1 to 64"):
        await book.add("alice", "bob", now=NOW, name="x" * 65)
    with pytest.raises(ValueError, match="1 to 64"):
        await book.rename("alice", "bob", "")
    assert await circle(book, "alice") == Circle(user="alice")
    assert await circle(book, "bob") == Circle(user="bob")


async def test_decline_hides_the_request_from_the_recipient_only(book: ContactBook) -> None:
    """A declined request leaves bob's incoming; alice still sees it waiting (she is not told), asking again
    changes nothing, and bob may still accept it later."""
    await book.add("alice", "bob", now=NOW)
    assert await book.decline("bob", "alice") is C.REMOVED
    assert await book.decline("bob", "alice") is C.UNCHANGED
    assert await book.decline("bob", "carol") is C.UNCHANGED

    assert (await circle(book, "bob")).incoming == {}
    assert (await circle(book, "alice")).outgoing == {"bob": NOW}
    assert await book.add("alice", "bob", now=NOW + 10) is C.UNCHANGED
    assert (await circle(book, "bob")).incoming == {}

    assert await book.add("bob", "alice", now=NOW + 20) is C.CONNECTED
    assert "alice" in (await circle(book, "bob")).contacts
    assert (await circle(book, "alice")).outgoing == {}


async def test_remove_takes_the_contact_from_both_sides(book: ContactBook) -> None:
    """Either side removing ends the contact for both; a second remove is UNCHANGED."""
    await connect(book, "alice", "bob")
    assert await book.remove("bob", "alice") is C.REMOVED
    assert (await circle(book, "alice")).contacts == {}
    assert (await circle(book, "bob")).contacts == {}
    assert await book.remove("bob", "alice") is C.UNCHANGED
    assert await book.remove("alice", "bob") is C.UNCHANGED


async def test_remove_withdraws_an_own_request_but_not_the_others(book: ContactBook) -> None:
    """remove withdraws the user's own request; a request they received stays (declining is another frame)."""
    await book.add("alice", "bob", now=NOW)
    await book.add("carol", "alice", now=NOW)
    assert await book.remove("alice", "bob") is C.REMOVED
    assert await book.remove("alice", "carol") is C.UNCHANGED
    a = await circle(book, "alice")
    assert a.outgoing == {} and a.incoming == {"carol": NOW}
    assert (await circle(book, "bob")).incoming == {}


async def test_rename_sets_the_owners_name_only(book: ContactBook) -> None:
    """rename changes the renamer's name for the contact, not the other's; not a contact: UNCHANGED."""
    await connect(book, "alice", "bob")
    assert await book.rename("alice", "bob", "Bobby") is C.UPDATED
    assert await book.rename("alice", "bob", "Bobby") is C.UNCHANGED
    assert (await circle(book, "alice")).contacts["bob"].name == "Bobby"
    assert (await circle(book, "bob")).contacts["alice"].name is None
    assert await book.rename("alice", "bob", None) is C.UPDATED
    assert (await circle(book, "alice")).contacts["bob"].name is None
    assert await book.rename("alice", "carol", "Carol") is C.UNCHANGED
    assert "carol" not in (await circle(book, "alice")).contacts


# -- blocking -----------------------------------------------------------------------------------------------


async def test_block_removes_the_contact_from_the_blockers_side_only(book: ContactBook) -> None:
    """After alice blocks bob, bob is in her `blocked`, not her contacts; bob keeps alice as a contact, and the
    server knows she blocked him (`blocked_by`). Blocking again is UNCHANGED."""
    await connect(book, "alice", "bob")
    assert await book.block("alice", "bob", now=NOW + 10) is C.UPDATED
    assert await book.block("alice", "bob", now=NOW + 20) is C.UNCHANGED

    a, b = await circle(book, "alice"), await circle(book, "bob")
    assert a.contacts == {} and a.blocked == {"bob": NOW + 10}
    assert "alice" in b.contacts and b.blocked_by.keys() == {"alice"} and b.blocked == {}


async def test_block_drops_requests_on_the_blockers_side(book: ContactBook) -> None:
    """Blocking drops the blocker's request to them, and hides (not drops) theirs: it stays in their outgoing."""
    await book.add("alice", "bob", now=NOW)
    await book.add("carol", "alice", now=NOW)
    await book.block("alice", "bob", now=NOW + 1)
    await book.block("alice", "carol", now=NOW + 1)

    a = await circle(book, "alice")
    assert a.outgoing == {} and a.incoming == {}
    assert (await circle(book, "bob")).incoming == {}
    assert (await circle(book, "carol")).outgoing == {"alice": NOW}


async def test_a_request_to_a_blocker_is_stored_but_never_seen(book: ContactBook) -> None:
    """bob, blocked by alice, asks her: REQUESTED as for anyone, in his outgoing, never in her incoming."""
    await book.block("alice", "bob", now=NOW)
    assert await book.add("bob", "alice", now=NOW + 1) is C.REQUESTED
    assert await book.add("bob", "alice", now=NOW + 2) is C.UNCHANGED
    assert (await circle(book, "bob")).outgoing == {"alice": NOW + 1}
    assert (await circle(book, "alice")).incoming == {}


async def test_unblock_restores_the_contact_with_its_name_and_since(book: ContactBook) -> None:
    """Unblocking brings the contact back as it was (name, since) while the other side still has it."""
    await connect(book, "alice", "bob")
    await book.rename("alice", "bob", "Bob")
    await book.block("alice", "bob", now=NOW + 10)
    assert await book.unblock("alice", "bob") is C.REMOVED
    assert await book.unblock("alice", "bob") is C.UNCHANGED

    a = await circle(book, "alice")
    assert a.contacts == {"bob": Contact("bob", "Bob", NOW + 1)} and a.blocked == {}
    assert (await circle(book, "bob")).blocked_by == {}


async def test_unblock_does_not_restore_a_contact_the_other_removed(book: ContactBook) -> None:
    """If bob removed alice while she blocked him, unblocking leaves them strangers."""
    await connect(book, "alice", "bob")
    await book.block("alice", "bob", now=NOW + 10)
    assert await book.remove("bob", "alice") is C.REMOVED
    await book.unblock("alice", "bob")
    assert (await circle(book, "alice")).contacts == {}
    assert (await circle(book, "bob")).contacts == {}


async def test_unblock_shows_a_hidden_request_again(book: ContactBook) -> None:
    """A request hidden by the block is back in the blocker's incoming after unblock, if not expired."""
    await book.add("bob", "alice", now=NOW)
    await book.block("alice", "bob", now=NOW + 1)
    await book.unblock("alice", "bob")
    assert (await circle(book, "alice")).incoming == {"bob": NOW}


async def test_add_lifts_the_block_first(book: ContactBook) -> None:
    """Adding someone one blocked unblocks them: a former contact comes back, a stranger gets a request."""
    await connect(book, "alice", "bob")
    await book.block("alice", "bob", now=NOW + 10)
    await book.block("alice", "carol", now=NOW + 10)

    assert await book.add("alice", "bob", now=NOW + 20) is C.CONNECTED
    assert await book.add("alice", "carol", now=NOW + 20) is C.REQUESTED
    a = await circle(book, "alice", NOW + 21)
    assert a.blocked == {} and set(a.contacts) == {"bob"} and a.outgoing == {"carol": NOW + 20}
    assert (await circle(book, "carol", NOW + 21)).incoming == {"alice": NOW + 20}


async def test_add_accepts_a_request_hidden_by_a_block(book: ContactBook) -> None:
    """alice blocked bob, who had asked her; adding him lifts the block and accepts his request."""
    await book.add("bob", "alice", now=NOW)
    await book.block("alice", "bob", now=NOW + 1)
    assert await book.add("alice", "bob", now=NOW + 2) is C.CONNECTED
    assert "alice" in (await circle(book, "bob")).contacts


async def test_remove_of_a_blocked_contact_is_final(book: ContactBook) -> None:
    """The blocker removing the blocked user takes the contact from both sides: unblock restores nothing."""
    await connect(book, "alice", "bob")
    await book.block("alice", "bob", now=NOW + 10)
    assert await book.remove("alice", "bob") is C.REMOVED
    assert (await circle(book, "bob")).contacts == {}
    await book.unblock("alice", "bob")
    assert (await circle(book, "alice")).contacts == {}


# -- settings -----------------------------------------------------------------------------------------------


async def test_ring_setting_is_kept_and_reset(book: ContactBook) -> None:
    """set_calls_from stores the setting (UPDATED), again is UNCHANGED, None goes back to the default."""
    assert await book.set_calls_from("alice", CallsFrom.NOBODY) is C.UPDATED
    assert await book.set_calls_from("alice", CallsFrom.NOBODY) is C.UNCHANGED
    assert (await circle(book, "alice")).calls_from is CallsFrom.NOBODY
    assert await book.set_calls_from("alice", CallsFrom.CONTACTS) is C.UPDATED
    assert (await circle(book, "alice")).calls_from is CallsFrom.CONTACTS
    assert (await circle(book, "bob")).calls_from is None
    assert await book.set_calls_from("alice", None) is C.UPDATED
    assert await book.set_calls_from("alice", None) is C.UNCHANGED
    assert (await circle(book, "alice")).calls_from is None


# -- bounds -------------------------------------------------------------------------------------------------


async def test_outgoing_requests_are_bounded(book: ContactBook) -> None:
    """The request beyond MAX_OUTGOING raises ContactLimit and changes nothing; an expired one frees a place."""
    for i in range(MAX_OUTGOING):
        await book.add("alice", f"u{i:03}", now=NOW - REQUEST_TTL + 10 + i)
    with pytest.raises(ContactLimit, match="requests"):
        await book.add("alice", "late", now=NOW)
    assert len((await circle(book, "alice")).outgoing) == MAX_OUTGOING
    assert (await circle(book, "late")).incoming == {}

    assert await book.add("alice", "late", now=NOW + 11) is C.REQUESTED  # u000 expired
    assert len((await circle(book, "alice", NOW + 11)).outgoing) == MAX_OUTGOING


async def test_contacts_are_bounded_on_both_sides(book: ContactBook) -> None:
    """Accepting with MAX_CONTACTS contacts, or accepting someone who has them, raises ContactLimit."""
    await book.import_contacts([("alice", f"u{i:03}") for i in range(MAX_CONTACTS)], now=NOW)
    await book.add("bob", "alice", now=NOW)
    with pytest.raises(ContactLimit, match="contacts"):
        await book.add("alice", "bob", now=NOW + 1)
    await book.add("alice", "carol", now=NOW)  # asking is fine: only connecting is bounded
    with pytest.raises(ContactLimit, match="contacts"):
        await book.add("carol", "alice", now=NOW + 1)

    assert len((await circle(book, "alice")).contacts) == MAX_CONTACTS
    assert (await circle(book, "bob")).contacts == {} and (await circle(book, "carol")).contacts == {}
    await book.remove("alice", "u000")
    assert await book.add("alice", "bob", now=NOW + 2) is C.CONNECTED


async def test_incoming_requests_keep_the_newest(book: ContactBook) -> None:
    """Beyond MAX_INCOMING requests to one user the oldest is dropped (from the sender's outgoing too), but
    requests the user cannot see (declined, from someone blocked) never push out the others."""
    await book.add("declined", "bob", now=NOW - 10)
    await book.decline("bob", "declined")
    await book.block("bob", "blocked", now=NOW - 10)
    await book.add("blocked", "bob", now=NOW - 9)
    for i in range(MAX_INCOMING + 1):
        assert await book.add(f"u{i:03}", "bob", now=NOW + i) is C.REQUESTED

    b = await circle(book, "bob", NOW + 1000)
    assert sorted(b.incoming) == [f"u{i:03}" for i in range(1, MAX_INCOMING + 1)]
    assert (await circle(book, "u000", NOW + 1000)).outgoing == {}
    assert (await circle(book, "declined", NOW + 1000)).outgoing == {"bob": NOW - 10}
    assert (await circle(book, "blocked", NOW + 1000)).outgoing == {"bob": NOW - 9}


@pytest.fixture
def few_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """MAX_BLOCKED made 5 in every backend (the real 1,000 would take thousands of transactions)."""
    for module in (peercall.store.memory, peercall.store.sql):
        monkeypatch.setattr(module, "MAX_BLOCKED", 5)
    return 5


async def test_blocks_are_bounded(few_blocks: int, book: ContactBook) -> None:
    """The block beyond MAX_BLOCKED raises ContactLimit and changes nothing; blocked_by keeps the newest."""
    for i in range(few_blocks):
        await book.block("alice", f"u{i}", now=NOW + i)
    with pytest.raises(ContactLimit, match="blocked"):
        await book.block("alice", "late", now=NOW)
    assert len((await circle(book, "alice")).blocked) == few_blocks
    assert (await circle(book, "late")).blocked_by == {}

    for i in range(few_blocks + 2):
        await book.block(f"b{i}", "mallory", now=NOW + i)
    assert (await circle(book, "mallory")).blocked_by.keys() == {f"b{i}" for i in range(2, few_blocks + 2)}


# -- expiry -------------------------------------------------------------------------------------------------


async def test_requests_expire_after_the_ttl(book: ContactBook) -> None:
    """A request older than REQUEST_TTL is out of both circles, cannot be accepted, and asking again renews it."""
    await book.add("alice", "bob", now=NOW)
    later = NOW + REQUEST_TTL
    assert (await circle(book, "bob", later)).incoming == {"alice": NOW}  # exactly the TTL: not older yet
    later += 1
    assert (await circle(book, "bob", later)).incoming == {}
    assert (await circle(book, "alice", later)).outgoing == {}

    assert await book.add("bob", "alice", now=later) is C.REQUESTED  # not an acceptance
    assert await book.add("alice", "bob", now=later + 1) is C.CONNECTED
    await book.add("alice", "carol", now=NOW)
    assert await book.add("alice", "carol", now=later) is C.REQUESTED
    assert (await circle(book, "carol", later)).incoming == {"alice": later}


async def test_delete_expired_requests_in_bounded_batches(book: ContactBook) -> None:
    """delete_expired_requests deletes the expired ones only, at most `limit` at a time."""
    for i in range(5):
        await book.add(f"old{i}", "bob", now=NOW - REQUEST_TTL - 10 + i)
    await book.add("fresh", "bob", now=NOW)
    assert await book.delete_expired_requests(NOW, limit=3) == 3
    assert await book.delete_expired_requests(NOW, limit=3) == 2
    assert await book.delete_expired_requests(NOW) == 0
    assert (await circle(book, "bob")).incoming == {"fresh": NOW}
    assert (await circle(book, "old4", NOW - REQUEST_TTL)).outgoing == {}
    with pytest.raises(ValueError):
        await book.delete_expired_requests(NOW, limit=0)


# -- import -------------------------------------------------------------------------------------------------


async def test_import_makes_pairs_contacts_once(book: ContactBook) -> None:
    """import_contacts connects every pair both ways, counts only new pairs, and drops requests between them."""
    await connect(book, "alice", "bob")
    await book.add("carol", "dave", now=NOW)
    pairs = [("alice", "bob"), ("carol", "dave"), ("dave", "carol"), ("alice", "carol")]
    assert await book.import_contacts(pairs, now=NOW + 100) == 2
    assert await book.import_contacts(pairs, now=NOW + 200) == 0

    assert set((await circle(book, "alice")).contacts) == {"bob", "carol"}
    c = await circle(book, "carol")
    assert set(c.contacts) == {"alice", "dave"} and c.outgoing == {}
    assert c.contacts["dave"] == Contact("dave", None, NOW + 100)
    assert (await circle(book, "dave")).incoming == {}


async def test_import_respects_blocks(book: ContactBook) -> None:
    """An imported pair where one blocked the other leaves the blocker's side out, until they unblock."""
    await book.block("alice", "mallory", now=NOW)
    assert await book.import_contacts([("alice", "mallory")], now=NOW) == 1
    assert (await circle(book, "alice")).contacts == {}
    assert "alice" in (await circle(book, "mallory")).contacts
    await book.unblock("alice", "mallory")
    assert "mallory" in (await circle(book, "alice")).contacts


async def test_import_of_a_bad_pair_changes_nothing(book: ContactBook) -> None:
    """A pair naming one user twice raises ValueError before anything is written."""
    with pytest.raises(ValueError, match="own contact"):
        await book.import_contacts([("alice", "bob"), ("carol", "carol")], now=NOW)
    assert (await circle(book, "alice")).contacts == {}


async def test_import_of_a_large_graph(book: ContactBook) -> None:
    """Thousands of pairs (more than one statement's worth) are all imported, beyond MAX_CONTACTS too."""
    pairs = [(f"u{i}", f"u{j}") for i in range(40) for j in range(i + 1, 40)]  # 780 pairs
    pairs += [("hub", f"v{i}") for i in range(MAX_CONTACTS + 10)]
    assert await book.import_contacts(pairs, now=NOW) == len(pairs)
    assert len((await circle(book, "u7")).contacts) == 39
    assert len((await circle(book, "hub")).contacts) == MAX_CONTACTS + 10


# -- concurrency and durability -----------------------------------------------------------------------------


# -- display names ---------------------------------------------------------------------------------------------


async def test_display_names_show_to_contacts_and_to_those_asked(book: ContactBook) -> None:
    """A display name shows in the circle of the user's contacts and of those they asked (incoming), never in the
    circle of someone who asked them (outgoing): asking tells nothing of whether an id is used."""
    assert await book.set_display_name("alice", "Alice B") is C.UPDATED
    assert await book.set_display_name("bob", "Bob <b>") is C.UPDATED
    assert await book.set_display_name("carol", "Carol") is C.UPDATED
    await connect(book, "alice", "bob")
    await book.add("carol", "alice", now=NOW)  # carol asks alice
    await book.add("alice", "dave", now=NOW)  # alice asks dave, who has no name
    await book.add("bob", "erin", now=NOW)  # erin has a name but was only asked
    await book.set_display_name("erin", "Erin")

    a = await circle(book, "alice")
    assert a.display_names == {"bob": "Bob <b>", "carol": "Carol"}
    assert (await circle(book, "bob")).display_names == {"alice": "Alice B"}
    assert (await circle(book, "dave")).display_names == {"alice": "Alice B"}
    assert (await circle(book, "carol")).display_names == {}  # carol asked alice: alice's name is not hers to see
    assert (await circle(book, "erin")).display_names == {"bob": "Bob <b>"}


async def test_a_display_name_changes_and_goes(book: ContactBook) -> None:
    """Setting the same name again is UNCHANGED; a new one replaces it; None removes it; all in `names`."""
    await connect(book, "alice", "bob")
    assert await book.set_display_name("alice", "Alice") is C.UPDATED
    assert await book.set_display_name("alice", "Alice") is C.UNCHANGED
    assert await book.set_display_name("alice", "Alice B") is C.UPDATED
    assert (await circle(book, "bob")).display_names == {"alice": "Alice B"}
    assert await book.names(["alice", "bob", "nobody", "alice"]) == {"alice": "Alice B"}
    assert await book.set_display_name("alice", None) is C.UPDATED
    assert await book.set_display_name("alice", None) is C.UNCHANGED
    assert await book.names(["alice"]) == {}
    assert (await circle(book, "bob")).display_names == {}
    assert await book.names([]) == {}


async def test_display_names_are_checked_and_asked_for_in_bounds(book: ContactBook) -> None:
    """A display name is 1-64 characters; `names` takes at most MAX_NAMES_ASKED ids (nothing changes on refusal)."""
    from peercall.store.base import MAX_NAMES_ASKED

    for bad in ("", "x" * 65):
        with pytest.raises(ValueError, match="display name"):
            await book.set_display_name("alice", bad)
    with pytest.raises(ValueError, match="user id"):
        await book.set_display_name("", "Alice")
    await book.set_display_name("u0", "x" * 64)
    many = [f"u{i}" for i in range(MAX_NAMES_ASKED)]
    assert await book.names(many) == {"u0": "x" * 64}
    with pytest.raises(ValueError, match=str(MAX_NAMES_ASKED)):
        await book.names([*many, "one-more"])


async def test_the_hub_writes_a_display_name_only_when_it_changes(book: ContactBook) -> None:
    """hub/social.py keeps a user's name in the store on their first connection and on a change, never again for
    the same name (a cache), and names who must be shown the change: the user, contacts and those asked."""
    from peercall.hub.social import Social

    writes: list[tuple[str, str | None]] = []
    store_write = book.set_display_name

    async def counted(user: str, name: str | None) -> ContactChange:
        writes.append((user, name))
        return await store_write(user, name)

    book.set_display_name = counted  # type: ignore[method-assign]
    await connect(book, "alice", "bob")
    await book.add("alice", "carol", now=NOW)
    social = Social(book, clock=lambda: NOW)
    assert await social.set_display_name("alice", "Alice B") == ["alice", "bob", "carol"]
    assert await social.set_display_name("alice", "Alice B") == []
    assert await social.set_display_name("alice", "Alice C") == ["alice", "bob", "carol"]
    assert writes == [("alice", "Alice B"), ("alice", "Alice C")]
    social.forget(["alice"])  # another node changed it: read it again once
    assert await social.set_display_name("alice", "Alice C") == []
    assert await social.set_display_name("alice", "Alice C") == []
    assert len(writes) == 3
    assert await social.names(["alice", "bob", "alice"]) == {"alice": "Alice C"}


async def test_display_names_outlive_the_store(durable_url: str) -> None:
    """A display name written by one store instance is read by the next."""
    first = book_of(durable_url)
    await first.open()
    try:
        await first.set_display_name("alice", "Alice B")
    finally:
        await first.close()
    again = book_of(durable_url)
    await again.open()
    try:
        assert await again.names(["alice"]) == {"alice": "Alice B"}
    finally:
        await again.close()


async def test_concurrent_adds_from_both_sides_connect_once(durable_url: str) -> None:
    """Two users adding each other at the same moment, through two stores (two servers), end up contacts: one
    add is the request, the other the acceptance."""
    stores = [book_of(durable_url) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        for i in range(8):
            a, b = f"a{i}", f"b{i}"
            results = await asyncio.gather(stores[0].add(a, b, now=NOW), stores[1].add(b, a, now=NOW))
            assert sorted(results) == sorted([C.REQUESTED, C.CONNECTED])
            ca, cb = await stores[0].circle(a, now=NOW), await stores[1].circle(b, now=NOW)
            assert set(ca.contacts) == {b} and set(cb.contacts) == {a}
            assert (ca.incoming, ca.outgoing, cb.incoming, cb.outgoing) == ({}, {}, {}, {})
    finally:
        for store in stores:
            await store.close()


async def test_concurrent_requests_to_one_user_keep_the_bound(
    durable_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many users asking one user at once, through two stores, leave exactly MAX_INCOMING requests (made 5)."""
    for module in (peercall.store.memory, peercall.store.sql):
        monkeypatch.setattr(module, "MAX_INCOMING", 5)
    stores = [book_of(durable_url) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        await asyncio.gather(*(stores[i % 2].add(f"u{i:02}", "bob", now=NOW + i) for i in range(60)))
        assert len((await stores[0].circle("bob", now=NOW + 100)).incoming) == 5
        senders = [f"u{i:02}" for i in range(60)]
        waiting = [u for u in senders if "bob" in (await stores[1].circle(u, now=NOW + 100)).outgoing]
        assert len(waiting) == 5  # the circle shows at most 5: count the senders' side
    finally:
        for store in stores:
            await store.close()


async def test_concurrent_adds_in_one_store_connect_once(book: ContactBook) -> None:
    """The same race inside one store (one server, several devices) also connects exactly once."""
    results = await asyncio.gather(book.add("alice", "bob", now=NOW), book.add("bob", "alice", now=NOW))
    assert sorted(results) == sorted([C.REQUESTED, C.CONNECTED])
    assert set((await circle(book, "alice")).contacts) == {"bob"}


async def test_contacts_outlive_the_store(durable_url: str) -> None:
    """Contacts, blocks and settings written by one store are read by the next one on the same database."""
    store = book_of(durable_url)
    await store.open()
    await connect(store, "alice", "bob")
    await store.block("alice", "mallory", now=NOW)
    await store.set_calls_from("alice", CallsFrom.CONTACTS)
    await store.add("alice", "carol", now=NOW, name="Carol")
    await store.close()

    again = book_of(durable_url)
    await again.open()
    try:
        a = await again.circle("alice", now=NOW)
        assert set(a.contacts) == {"bob"} and set(a.blocked) == {"mallory"} and a.calls_from is CallsFrom.CONTACTS
        assert await again.add("carol", "alice", now=NOW + 1) is ContactChange.CONNECTED
        assert (await again.circle("alice", now=NOW + 2)).contacts["carol"].name == "Carol"
    finally:
        await again.close()


async def test_a_v3_database_is_upgraded_keeping_its_calls(
    durable_url: str, monkeypatch: pytest.MonkeyPatch, run_sql: Callable[[str, str], Awaitable[None]]
) -> None:
    """A database written by the previous peercall (schema v3) keeps its calls, gains the contact book, and
    reads its old calls back as not screened."""
    with monkeypatch.context() as old:
        old.setattr(peercall.store.sql, "MIGRATIONS", peercall.store.sql.MIGRATIONS[:3])
        old.setattr(peercall.store.sql, "SCHEMA_VERSION", 3)
        store = book_of(durable_url)
        await store.open()
        await store.close()
    # The v3 store could not write the new column: put a call in with v3's columns only.
    await run_sql(
        durable_url,
        "INSERT INTO calls (call_id, caller, callee, caller_device, ringing_at, ended_at, outcome, reason, "
        "missed_taken) VALUES ('old', 'alice', 'bob', 'tab', 1.5, 2.5, 'missed', 'invite-timeout', FALSE)",
    )

    store = book_of(durable_url)
    await store.open()
    try:
        (rec,), _ = await store.calls_for("bob")
        assert rec.call_id == "old" and rec.screened is None
        assert [r.call_id for r in (await store.take_missed("bob"))[0]] == ["old"]
        await connect(store, "alice", "bob")
        assert set((await store.circle("bob", now=NOW)).contacts) == {"alice"}
        await store.record(_screened_call())
        (rec, _old), _ = await store.calls_for("bob")
        assert rec.screened is not None
    finally:
        await store.close()


def _screened_call() -> CallRecord:
    return CallRecord(
        call_id="new",
        caller="carol",
        callee="bob",
        caller_device="tab",
        answered_device=None,
        ringing_at=10.0,
        answered_at=None,
        ended_at=55.0,
        outcome=Outcome.MISSED,
        reason=Reason.INVITE_TIMEOUT,
        hung_up_by=None,
        screened=Screening.SILENCED,
    )


async def test_sqlite_answers_every_contact_query_from_an_index(tmp_path: Path) -> None:
    """No statement of the contact book scans a table (SQLite's query plans): a circle costs a few index reads
    whatever the number of users."""
    path = tmp_path / "plans.sqlite3"
    store = book_of(f"sqlite:///{path}")
    seen: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((statement, parameters))

    await store.open()
    event.listen(store._engine.sync_engine, "before_cursor_execute", remember)
    try:
        await connect(store, "alice", "bob")
        await store.add("carol", "alice", now=NOW)
        await store.decline("alice", "carol")
        await store.add("alice", "dave", now=NOW)
        await store.add("alice", "dave", now=NOW + 1, name="Dave")
        await store.rename("alice", "bob", "Bob")
        await store.block("alice", "mallory", now=NOW)
        await store.unblock("alice", "mallory")
        await store.block("alice", "bob", now=NOW)
        await store.unblock("alice", "bob")
        await store.set_calls_from("alice", CallsFrom.NOBODY)
        await store.remove("alice", "dave")
        await store.set_display_name("alice", "Alice")
        await store.set_display_name("alice", "Alice B")
        await store.set_display_name("alice", None)
        await store.set_display_name("bob", "Bob")
        await store.names(["alice", "bob"])
        await store.circle("alice", now=NOW)
        await store.import_contacts([("alice", "erin"), ("bob", "erin")], now=NOW)
        await store.delete_expired_requests(NOW + 2 * REQUEST_TTL)
    finally:
        await store.close()

    tables = ("contacts", "contact_requests", "blocks", "user_settings", "display_names")
    checked = 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        for statement, parameters in seen:
            if not any(f" {table}" in statement for table in tables):
                continue
            checked += 1
            plan = [row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
            scans = [step for step in plan if step.startswith("SCAN") and "CONSTANT ROW" not in step]
            assert not scans, f"{statement}\n{plan}"
    assert checked > 20
