"""Services are public (core/social.py): the operator's reserved ids (the echo behind "Test my audio") are seen and
may be rung by everyone, in every directory; nothing else of anyone changes."""

from __future__ import annotations

import pytest

from peercall.core.social import (
    Audience,
    CallsFrom,
    Circle,
    Contact,
    Directory,
    Screen,
    Screening,
    audience,
    screen,
    sees,
    view,
)

SERVICES = frozenset({"echo"})


def circle(user: str, *, contacts: tuple[str, ...] = (), **more: object) -> Circle:
    return Circle(user, contacts={c: Contact(c, None, 0.0) for c in contacts}, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize("directory", list(Directory))
def test_everyone_sees_a_service_and_a_service_is_told_to_everyone(directory: Directory) -> None:
    alice = circle("alice")
    assert view(alice, directory, SERVICES).includes("echo")
    assert sees(alice, "echo", directory, SERVICES)
    assert audience(circle("echo"), directory, SERVICES) == Audience(None)


def test_without_services_a_stranger_sees_no_one_in_a_contacts_directory() -> None:
    """The rule the services are the exception to (and what changes nothing for real users)."""
    alice = circle("alice")
    assert not view(alice, Directory.CONTACTS).includes("echo")
    assert not sees(alice, "echo", Directory.CONTACTS)
    assert audience(circle("echo"), Directory.CONTACTS) == Audience(frozenset())


def test_a_service_learns_nothing_new_of_real_users() -> None:
    """The echo's own view and the audience of a real user are what they were: services widen only their own
    presence."""
    echo, bob = circle("echo"), circle("bob", contacts=("carol",))
    assert view(echo, Directory.CONTACTS, SERVICES).contacts == frozenset()
    assert not view(echo, Directory.CONTACTS, SERVICES).includes("bob")
    assert audience(bob, Directory.CONTACTS, SERVICES) == Audience(frozenset({"carol"}))
    assert screen(echo, bob, directory=Directory.CONTACTS, default=CallsFrom.CONTACTS, services=SERVICES) == Screen(
        False, Screening.SILENCED
    )


def test_a_block_still_hides_a_service() -> None:
    """A user who blocked the echo (or whom it blocked) does not see it."""
    assert not view(circle("alice", blocked={"echo": 1.0}), Directory.CONTACTS, SERVICES).includes("echo")
    assert not sees(circle("alice", blocked_by={"echo": 1.0}), "echo", Directory.CONTACTS, SERVICES)


@pytest.mark.parametrize("setting", list(CallsFrom))
def test_anyone_may_ring_a_service_and_knows_whether_it_is_online(setting: CallsFrom) -> None:
    """Whatever the directory and the service's ring setting: the call rings, and the caller may know the echo is
    offline or busy (a call to it ends `unavailable` or `busy`, not as a call nobody answers)."""
    echo = circle("echo", calls_from=setting)
    got = screen(circle("alice"), echo, directory=Directory.CONTACTS, default=CallsFrom.CONTACTS, services=SERVICES)
    assert got == Screen(True, None)


def test_the_operators_rule_and_private_mode_still_apply_to_services() -> None:
    alice, echo = circle("alice"), circle("echo")
    refused = screen(
        alice, echo, directory=Directory.CONTACTS, default=CallsFrom.CONTACTS, allowed=False, services=SERVICES
    )
    assert refused.screening is Screening.REFUSED
    private = screen(
        alice, echo, directory=Directory.CONTACTS, default=CallsFrom.CONTACTS, private=True, services=SERVICES
    )
    assert private == Screen(False, None)  # it rings, but nothing of its presence is told
