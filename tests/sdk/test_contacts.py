"""Contacts from the SDK and from `peercall contacts …`, against a real server: requests, accept and decline,
remove, rename, block, the ring setting, the directory, and the errors a user can meet."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from peercall.client import CallPhase, Client, ContactError, Contacts, ContactsChanged, IncomingCall
from tests.conftest import SCALE, ServerProcess, run_server

from .conftest import WAIT, MakeClient, next_incoming
from .test_docs import example, run


@pytest.fixture(scope="module")
def strict_server() -> Iterator[ServerProcess]:
    """Presence for contacts only (as token mode), a short ring timeout, and room for many contact operations."""
    with run_server(PEERCALL_DIRECTORY="contacts", PEERCALL_RING_TIMEOUT="1.5", PEERCALL_CONTACT_RATE="1000") as srv:
        yield srv


async def until(client: Client, condition: Any, what: str) -> Contacts:
    """`client`'s contacts once `condition` holds of them (at most WAIT seconds)."""
    try:
        return await asyncio.wait_for(client.wait_contacts(condition), WAIT)
    except TimeoutError:
        raise AssertionError(f"{client.id}: {what}; contacts are {client.contacts}") from None


def online(contacts: Contacts, user: str) -> bool:
    contact = contacts.contact(user)
    return contact is not None and contact.online


async def befriend(a: Client, b: Client) -> None:
    await a.add_contact(b.id)
    await until(b, lambda c: c.has_incoming(a.id), f"no request from {a.id}")
    assert (await b.add_contact(a.id)).is_contact(a.id)
    await until(a, lambda c: c.is_contact(b.id), f"{b.id} did not become a contact")


async def test_request_accept_presence_and_events(sdk: MakeClient, uid: Any) -> None:
    """A request waits in outgoing/incoming until accepted; then each sees the other's presence as it changes."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    first = await until(alice, None, "no contacts after connecting")
    assert (first.contacts, first.incoming, first.outgoing, first.blocked) == ((), (), (), ())
    assert first.calls_from is None and first.directory == "all"  # no contacts frame came: all empty
    assert first.default_calls_from == "everyone" and first.ring_setting == "everyone"  # as welcome says
    async with alice.events() as events:
        mine = await alice.add_contact(bob.id, "Bob (work)")
        assert mine.has_outgoing(bob.id) and not mine.is_contact(bob.id)
        theirs = await until(bob, lambda c: c.has_incoming(alice.id), "alice's request did not arrive")
        assert not theirs.is_contact(alice.id)
        theirs = await bob.add_contact(alice.id, "Alice (work)")
        assert theirs.is_contact(alice.id) and not theirs.incoming
        named = theirs.contact(alice.id)
        assert named is not None and named.name == "Alice (work)" and named.label == "Alice (work)"
        mine = await until(alice, lambda c: c.is_contact(bob.id), "bob's acceptance did not arrive")
        contact = mine.contact(bob.id)
        assert contact is not None and contact.name == "Bob (work)" and contact.label == "Bob (work)"
        assert contact.online and not contact.in_call and not mine.outgoing
        changes = []
        async with asyncio.timeout(WAIT):
            async for event in events:
                if isinstance(event, ContactsChanged):
                    changes.append(event)
                    if event.contacts.is_contact(bob.id):
                        break
        assert changes[0].contacts.has_outgoing(bob.id) and changes[-1].previous is not None
    await bob.close()
    gone = await until(alice, lambda c: not online(c, bob.id), "bob's going offline was not seen")
    last_seen = gone.contact(bob.id).last_seen  # type: ignore[union-attr]
    assert last_seen is not None and last_seen > 0


async def test_decline_remove_and_rename(sdk: MakeClient, uid: Any) -> None:
    """Declining tells the requester nothing; removing is mutual; names are one's own."""
    alice, bob, carol = await sdk(uid("alice")), await sdk(uid("bob")), await sdk(uid("carol"))
    await carol.add_contact(alice.id)
    await until(alice, lambda c: c.has_incoming(carol.id), "carol's request did not arrive")
    assert not (await alice.decline_contact(carol.id)).incoming
    await asyncio.sleep(0.3)
    assert carol.contacts is not None and carol.contacts.has_outgoing(alice.id)  # not told
    await befriend(alice, bob)
    renamed = await alice.rename_contact(bob.id, "Bobby")
    assert renamed.contact(bob.id).name == "Bobby"  # type: ignore[union-attr]
    assert bob.contacts is not None and bob.contacts.contact(alice.id).name is None  # type: ignore[union-attr]
    assert (await alice.rename_contact(bob.id, None)).contact(bob.id).name is None  # type: ignore[union-attr]
    assert not (await bob.remove_contact(alice.id)).contacts
    await until(alice, lambda c: not c.is_contact(bob.id), "the removal did not reach alice")


async def test_block_looks_offline_and_unblock_restores(sdk: MakeClient, uid: Any) -> None:
    """A blocked contact's call ends as if we were offline and never rings here; unblocking makes it ring again."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    await befriend(alice, bob)
    async with bob.events() as events:
        blocked = await bob.block(alice.id)
        assert blocked.is_blocked(alice.id) and not blocked.is_contact(alice.id)
        mine = await until(alice, lambda c: not online(c, bob.id), "bob still looks online")
        assert mine.is_contact(bob.id)  # alice keeps bob, always offline
        call = await alice.call(bob.id)
        end = await asyncio.wait_for(call.wait_ended(), WAIT)
        assert (end.outcome, end.reason) == ("unavailable", "user-unavailable")
        await asyncio.sleep(0.5)
        events.close()
        assert not [e async for e in events if isinstance(e, IncomingCall)]
    restored = await bob.unblock(alice.id)
    assert restored.is_contact(alice.id) and not restored.blocked
    call = await alice.call(bob.id)
    assert call.phase is CallPhase.REQUESTING
    await call.hangup()


async def test_ring_setting_nobody_silences_calls(strict_server: ServerProcess, sdk: MakeClient, uid: Any) -> None:
    """With callsFrom nobody a call never rings; the caller's call rings out as missed at the ring timeout."""
    alice, bob = await sdk(uid("alice"), strict_server), await sdk(uid("bob"), strict_server)
    await befriend(alice, bob)
    quiet = await bob.set_calls_from("nobody")
    assert quiet.calls_from == "nobody" and quiet.ring_setting == "nobody"
    async with bob.events() as events:
        call = await alice.call(bob.id)
        assert call.phase is CallPhase.REQUESTING
        end = await asyncio.wait_for(call.wait_ended(), WAIT)
        assert (end.outcome, end.reason) == ("missed", "invite-timeout")
        events.close()
        assert not [e async for e in events if isinstance(e, IncomingCall)]
    back = await bob.set_calls_from(None)
    assert back.calls_from is None and back.ring_setting == back.default_calls_from
    with pytest.raises(ValueError, match="everyone, contacts, nobody or default"):
        await bob.set_calls_from("friends")


async def test_directory_pages(sdk: MakeClient, uid: Any) -> None:
    """In `all` mode the directory pages through who is online, in id order, leaving out a blocker."""
    stem = uid("dir").replace("-", "")
    a, b, c = [await sdk(f"{stem}-{n}") for n in "abc"]
    searcher = await sdk(uid("searcher"))
    first = await searcher.directory(stem, limit=2)
    assert [u.id for u in first.users] == [a.id, b.id] and first.next == b.id
    last = await searcher.directory(stem, after=first.next, limit=2)
    assert [u.id for u in last.users] == [c.id] and last.next is None
    await c.block(searcher.id)
    assert [u.id for u in (await searcher.directory(stem)).users] == [a.id, b.id]
    with pytest.raises(ValueError, match="1-200"):
        await searcher.directory(stem, limit=500)


async def test_errors(strict_server: ServerProcess, server: ServerProcess, sdk: MakeClient, uid: Any) -> None:
    """Refusals raise ContactError with the protocol's code: not-allowed, too-many, rate-limited; bad input
    raises ValueError before anything is sent."""
    alice = await sdk(uid("alice"), strict_server)
    with pytest.raises(ContactError) as refused:
        await alice.directory()
    assert refused.value.code == "not-allowed" and refused.value.answered
    for n in range(100):
        await alice.add_contact(f"{alice.id[:50]}-to-{n}")
    with pytest.raises(ContactError) as full:
        await alice.add_contact(uid("one-too-many"))
    assert full.value.code == "too-many"
    assert len(alice.contacts.outgoing) == 100  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="yourself"):
        await alice.add_contact(alice.id)
    with pytest.raises(ValueError, match="at most 64"):
        await alice.add_contact("bob", "x" * 65)
    with pytest.raises(ValueError, match="user id"):
        await alice.block("not an id")
    # The shared server: PEERCALL_CONTACT_RATE is 60 a minute, a bucket of 60 refilled one a second, so on a busy
    # machine a few more than 60 frames pass before the refusal; far fewer than 200 do.
    busy = await sdk(uid("busy"))
    sent = 0
    with pytest.raises(ContactError) as limited:
        for sent in range(200):
            await busy.block(f"{busy.id[:50]}-b{sent}")
    assert limited.value.code == "rate-limited" and limited.value.retryable
    assert sent >= 60, f"refused after {sent} contact frames, before the 60 a minute were spent"


# ---- the command ------------------------------------------------------------------------------------------------


async def contacts(srv: ServerProcess, user: str, *args: str) -> tuple[int, str, str]:
    """Run `peercall contacts ARGS --url … --id USER`; its status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "peercall",
        "contacts",
        *args,
        "--url",
        srv.ws,
        "--id",
        user,
        "--connect-timeout",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30 * SCALE)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"peercall contacts {' '.join(args)} did not finish") from None
    return proc.returncode or 0, out.decode(), err.decode()


async def test_contacts_command(server: ServerProcess, sdk: MakeClient, uid: Any) -> None:
    """`peercall contacts add/list/rename/calls-from/block/unblock/remove/decline/directory` do what they say."""
    alice, bob, carol = uid("alice"), await sdk(uid("bob")), uid("carol")
    status, out, err = await contacts(server, alice, "add", carol)
    assert (status, out.strip(), err) == (
        0,
        f"asked {carol} to be your contact; the request waits for their answer",
        "",
    )
    await bob.add_contact(alice)
    status, out, err = await contacts(server, alice, "add", bob.id, "--name", "Bob (work)")
    assert (status, out.strip(), err) == (0, f"{bob.id} is your contact", "")
    status, out, _ = await contacts(server, alice, "list")
    assert status == 0 and f"{bob.id}  online" in out and '"Bob (work)"' in out, out
    assert f"your requests waiting for theirs (1):\n  {carol}  since " in out, out
    assert "who may ring you: everyone (the server's default)" in out, out
    status, out, _ = await contacts(server, alice, "list", "--json")
    listed = json.loads(out)
    assert [c["id"] for c in listed["contacts"]] == [bob.id] and listed["contacts"][0]["status"] == "online"
    assert (await contacts(server, alice, "rename", bob.id, "Bobby"))[1].strip() == f'{bob.id} is called "Bobby"'
    status, out, _ = await contacts(server, alice, "calls-from", "nobody")
    assert (status, out.strip()) == (0, "who may ring you: nobody")
    assert (await contacts(server, alice, "block", bob.id))[:2] == (0, f"blocked {bob.id}\n")
    assert (await contacts(server, alice, "unblock", bob.id))[:2] == (0, f"unblocked {bob.id}\n")
    assert (await contacts(server, alice, "remove", bob.id))[0] == 0
    await until(bob, lambda c: not c.is_contact(alice), "the command's removal did not arrive")
    await bob.add_contact(alice)
    status, out, _ = await contacts(server, alice, "decline", bob.id)
    assert (status, out.strip()) == (0, f"declined {bob.id}'s request")
    status, out, _ = await contacts(server, alice, "directory", bob.id, "--limit", "5")
    assert status == 0 and out.splitlines() == [bob.id], out


async def test_contacts_command_errors(strict_server: ServerProcess, uid: Any) -> None:
    """Refusals and bad input: exit status 1; an unreachable server: 2, as for the other commands; the reason on
    stderr, nothing on stdout."""
    alice = uid("alice")
    status, out, err = await contacts(strict_server, alice, "directory")
    assert (status, out) == (1, "") and "not-allowed" in err, err
    status, out, err = await contacts(strict_server, alice, "add", alice)
    assert (status, out) == (1, "") and "yourself" in err, err
    status, out, err = await contacts(strict_server, alice, "rename", "bob", "x" * 65)
    assert (status, out) == (1, "") and "at most 64" in err, err
    gone = ServerProcess(strict_server.proc, 9)  # nothing listens on port 9
    status, out, err = await contacts(gone, alice, "list")
    assert (status, out) == (2, "") and "could not connect" in err, err


async def test_contacts_example_runs_as_written(
    server: ServerProcess, sdk: MakeClient, uid: Any, tmp_path: Any
) -> None:
    """The doc's contacts example accepts bob's request under its own name for him, prints his presence, sets its
    ring setting and declines the other requests."""
    alice = uid("alice")
    bob, dave = await sdk(uid("bob")), await sdk(uid("dave"))
    await bob.add_contact(alice)
    await dave.add_contact(alice)
    code = example("contacts").replace("ws://127.0.0.1:8080/ws", server.ws)
    code = code.replace('"alice"', f'"{alice}"').replace('"bob"', f'"{bob.id}"')
    status, out = await run(code, tmp_path)
    assert (status, out.strip()) == (0, "Bob (work) online"), out
    assert (await until(bob, lambda c: c.is_contact(alice), "alice did not accept")).contact(alice) is not None
    assert dave.contacts is not None and dave.contacts.has_outgoing(alice)  # declined: dave is not told
    async with Client(server.ws, alice) as again:
        after = await asyncio.wait_for(again.wait_contacts(), WAIT)
    assert after.calls_from == "contacts" and not after.incoming and after.is_contact(bob.id)


async def test_a_contacts_call_shows_in_their_presence(sdk: MakeClient, uid: Any) -> None:
    """A contact's answered call shows in our snapshot (in_call) and goes when it ends: presence frames keep it."""
    alice, bob, carol = await sdk(uid("alice")), await sdk(uid("bob")), await sdk(uid("carol"))
    await befriend(alice, bob)

    def in_call(contacts: Contacts) -> bool:
        contact = contacts.contact(bob.id)
        return contact is not None and contact.in_call

    call = await carol.call(bob.id)
    await (await next_incoming(bob)).accept()
    await until(alice, in_call, "bob's call did not show")
    await call.hangup()
    after = await until(alice, lambda c: not in_call(c), "bob's call did not end for alice")
    assert online(after, bob.id)


@pytest.fixture(scope="module")
def token_server() -> Iterator[ServerProcess]:
    """Token mode (contacts only, its default): tokens carry display names."""
    from tests.integration.test_security import SECRET

    with run_server(PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET=SECRET, PEERCALL_CALLS_FROM="everyone") as srv:
        yield srv


async def test_display_names_reach_the_sdk(token_server: ServerProcess, sdk: MakeClient, uid: Any) -> None:
    """A requester's and a contact's display names are in `Contacts`, a caller's in `IncomingCall`, and
    `Client.display_name` keeps what the server told; a contact's label is our name, else theirs, else the id."""
    from tests.integration.test_security import token

    a, b = uid("alice"), uid("bob")
    alice = await sdk(a, token_server, token=token(a, 600, name="Alice B"))
    bob = await sdk(b, token_server, token=token(b, 600, name="Bob"))
    await alice.add_contact(b)
    asked = await until(bob, lambda c: c.has_incoming(a), "alice's request did not arrive")
    assert [(p.id, p.display_name) for p in asked.incoming] == [(a, "Alice B")]
    assert (await alice.wait_contacts()).outgoing[0].display_name is None  # asking tells nothing of the id
    await bob.add_contact(a)
    mine = await until(alice, lambda c: c.is_contact(b), "bob's acceptance did not arrive")
    contact = mine.contact(b)
    assert contact is not None and (contact.display_name, contact.label) == ("Bob", "Bob")
    assert alice.display_name(b) == "Bob" and alice.display_name("nobody") is None

    async with bob.events() as events:
        await alice.call(b)
        async with asyncio.timeout(WAIT):
            async for event in events:
                if isinstance(event, IncomingCall):
                    assert (event.call.peer, event.display_name) == (a, "Alice B")
                    break
