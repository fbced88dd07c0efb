"""The seam between the hub and its brokers: picked by URL, no Redis in the hub, one node-frame format."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import msgspec
import pytest

from peercall.broker import open_broker
from peercall.broker.memory import MemoryBroker
from peercall.core.social import Screening
from peercall.core.switchboard import Call, Party, Presence
from peercall.hub import nodeframe
from peercall.protocol import messages


def test_importing_the_hub_imports_no_redis_client() -> None:
    """One node needs no Redis client: the hub, the broker package and the memory broker import none."""
    code = (
        "import sys, peercall.hub.router, peercall.broker, peercall.broker.memory, peercall.server.app;"
        "sys.exit('redis' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_broker_is_picked_by_url_scheme() -> None:
    """`memory://` is one node; a Redis URL is a cluster (its client made, not connected); anything else fails."""
    assert isinstance(open_broker("memory://"), MemoryBroker)
    redis = open_broker("redis://127.0.0.1:1/0", node_id="n7")
    assert redis.shared and redis.node == "n7"
    assert redis.route is not None  # a route a node knows is taken at once; one it does not know is not known:
    candidate = '{"type":"candidate","to":"bob","data":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}'
    assert redis.route("n7-abc.1", messages.parse(candidate, "alice")) is None  # the hub then asks `receive`
    with pytest.raises(ValueError, match="unknown broker URL 'mongodb://x'"):
        open_broker("mongodb://x")


def test_the_lua_reader_follows_fields_the_encoded_call_has() -> None:
    """The Redis reader walks `call.caller.user` and `call.callee_user` of the encoded core Call: renaming either
    field in core/switchboard.py fails here, not silently in a cluster."""
    from peercall.broker.redis import _READ, CALLEE_USER, CALLER_USER

    env = messages.parse('{"type":"call-request","to":"bob"}', "alice")
    call = Call("k1", Party("alice", "d-1", "c1"), "bob", env, 1.0, 46.0)
    encoded = json.loads(msgspec.json.encode(call))
    found = [encoded, encoded]
    for i, path in enumerate((CALLER_USER, CALLEE_USER)):
        for name in path:
            found[i] = found[i][name]
    assert found == ["alice", "bob"]
    assert "call.caller.user" in _READ and "call.callee_user" in _READ


def test_a_call_is_stored_as_it_was() -> None:
    """The JSON of a call in Redis keeps its names (`conn` included), so that nodes of two versions share calls."""
    env = messages.parse('{"type":"call-request","to":"bob"}', "alice")
    call = Call("k1", Party("alice", "d", "c1"), "bob", env, 1.0, 2.0)
    stored = (
        b'{"id":"k1","caller":{"user":"alice","device":"d","conn":"c1","lost_until":null},"callee_user":"bob",'
        b'"request":{"type":"call-request","to":"bob","callId":null,"from":null},"ringing_at":1.0,'
        b'"ring_deadline":2.0,"state":"ringing","ringing":{},"callee":null,"answered_at":null,"silent":false,'
        b'"screened":null,"pushed":false}'
    )
    assert msgspec.json.encode(call) == stored
    assert msgspec.json.decode(stored, type=Call) == call
    older = stored.replace(b',"silent":false', b"")  # as a node from before private mode's silent calls stored it
    older = older.replace(b',"screened":null', b"")  # and from before contacts' screened calls
    older = older.replace(b',"pushed":false', b"")  # and from before Web Push
    assert msgspec.json.decode(older, type=Call) == call
    blocked = msgspec.json.decode(stored.replace(b'"screened":null', b'"screened":"blocked"'), type=Call)
    assert blocked.screened is Screening.BLOCKED


def test_node_frames_round_trip() -> None:
    """A node frame and a batch of them come back as they went, whatever characters the text holds."""
    frames = [
        nodeframe.encode("n1-ab.7", nodeframe.kind_of("call-ended"), '{"type":"call-ended"}'),
        nodeframe.encode("n1-ab.8", nodeframe.kind_of("offer"), "with\nnewlines: and 12:colons"),
        nodeframe.encode("n1-ab.9", nodeframe.CLOSE, nodeframe.close_text(4501, "replaced by a newer connection")),
    ]
    assert nodeframe.unpack(nodeframe.pack(frames)) == frames
    assert [nodeframe.decode(f)[:2] for f in frames] == [("n1-ab.7", "e"), ("n1-ab.8", "s"), ("n1-ab.9", "c")]
    assert nodeframe.decode(frames[1])[2] == "with\nnewlines: and 12:colons"
    assert nodeframe.parse_close(nodeframe.decode(frames[2])[2]) == (4501, "replaced by a newer connection")
    # What a sender queues per frame (`packed`) and a receiver reads in one pass (`unpack_decoded`): the same bytes,
    # so nodes of either version read each other's messages; the text may hold anything, non-ASCII too.
    parts = [("n1-ab.7", "e", '{"type":"call-ended"}'), ("", nodeframe.STATE, "[]"), ("n1-ab.8", "s", "é\n1:日")]
    message = "".join(nodeframe.packed(cid, kind, text) for cid, kind, text in parts)
    assert message == nodeframe.pack([nodeframe.encode(*part) for part in parts])
    assert nodeframe.unpack_decoded(message) == parts
    sender = open_broker("redis://127.0.0.1:1/0", node_id="n0")  # the Redis broker packs them inline: the same
    for cid, kind, text in parts:
        sender.send(cid, kind, text)
    queued = sender._outbox  # type: ignore[attr-defined]
    assert "".join(queued["peercall:to:n1-ab"]) == nodeframe.packed(*parts[0]) + nodeframe.packed(*parts[2])
    change = Presence("bob", "offline", False, 12.5)
    assert nodeframe.decode_presence(nodeframe.encode_presence(change)) == change


def test_a_presence_change_keeps_its_display_name_between_nodes() -> None:
    """A change with a display name travels with it, with or without an audience; one without stays in the
    four-field form of the previous version."""
    from peercall.core.social import Audience

    plain = Presence("bob", "online", True)
    assert nodeframe.encode_presence(plain) == '["bob","online",true,null]'
    for change in (
        Presence("bob", "online", display_name="Bob <b>"),
        Presence("bob", "online", audience=Audience(frozenset({"alice"}), frozenset({"eve"})), display_name="Bob"),
    ):
        assert nodeframe.decode_presence(nodeframe.encode_presence(change)) == change


def test_a_user_or_one_sign_in_to_close_travels_between_nodes() -> None:
    """A user to close keeps the previous version's `K` form; one sign-in of theirs travels as an `S` frame, which
    a node of the previous version cannot read (it drops it rather than close all the user's connections)."""
    assert nodeframe.encode_close_user("bob", 4401, "signed out") == 'K["bob",4401,"signed out"]'
    assert nodeframe.decode_everyone(nodeframe.encode_close_user("bob", 4401, "signed out")) == nodeframe.Closed(
        "bob", 4401, "signed out"
    )
    one = nodeframe.encode_close_user("bob", 4401, "signed out", "0123456789abcdef")
    assert one == 'S["bob","0123456789abcdef",4401,"signed out"]'
    assert nodeframe.decode_everyone(one) == nodeframe.Closed("bob", 4401, "signed out", "0123456789abcdef")
    with pytest.raises(ValueError, match="at most 64"):
        nodeframe.encode_close_user("bob", 4401, "signed out", "s" * 65)
    for bad in ('S["bob",4401,"signed out"]', 'S["bob","' + "s" * 65 + '",4401,"x"]', 'S["bob","s",99,"x"]'):
        with pytest.raises(nodeframe.BadNodeFrame, match="not a sign-in to close"):
            nodeframe.decode_everyone(bad)


def test_a_told_users_hash_is_kept_parsed_with_the_devices_it_had() -> None:
    """What another node tells of a user's hash is kept parsed, the devices this node had parsed reused (a call's
    change leaves them as they were), a new device parsed, and a hash that cannot be read dropped."""
    from peercall.broker.redis import RedisBroker

    node = RedisBroker("redis://127.0.0.1:1/0", node_id="n1")
    key = node._u("bob")
    phone, laptop = '["phone",true]', '["laptop",false]'

    def tell(version: str, *fields: str) -> None:
        node._learn(nodeframe.encode_state([(key, list(fields), version)]))

    def parsed() -> tuple[dict[str, Any], str | None, dict[str, str]]:
        kept = node._known[key][3]
        assert kept is not None
        return kept

    tell("100000", "n2-a.1", phone)
    devices, active, stored = parsed()
    assert (devices["n2-a.1"].device, devices["n2-a.1"].named, active) == ("phone", True, None)
    tell("200000", "n2-a.1", phone, "~active", "k1")  # a call rings: the same device
    again, active, _ = parsed()
    assert again is devices and active == "k1" and node._known[key][2] == node._call("k1")
    tell("300000", "n2-a.1", phone, "n2-a.2", laptop, "~active", "k1")  # a second device connects
    more, _, stored = parsed()
    assert more["n2-a.1"] is devices["n2-a.1"] and more["n2-a.2"].device == "laptop"
    assert stored == {"n2-a.1": phone, "n2-a.2": laptop}
    tell("250000", "n2-a.1", phone)  # older than what is known: ignored
    assert node._known[key][1] == "300000"
    tell("400000", "n2-a.1", '"not a device"')  # a newer node's format? dropped, what was known kept
    assert node._known[key][1] == "300000"


def test_what_an_answer_left_told_after_the_calls_end_brings_back_no_route() -> None:
    """Node frames from two nodes keep each one's order, not the order between them: the STATE of the accept (from
    the callee's node) may come after the end of the call (from a third node, or this one). It brought back the
    route that the call's end had forgotten, and the caller's offers and candidates went on to the callee's old
    connection with no call between them (one node answers them `not-in-call`). The end is remembered at its
    version, and the older answer is not taken for news."""
    from peercall.broker.redis import RedisBroker, _encode
    from peercall.core.switchboard import CallState

    class Heard:
        writes_history = False

        def __init__(self) -> None:
            self.delivered: list[tuple[str, str, str]] = []

        def deliver(self, cid: str, kind: str, text: str) -> None:
            self.delivered.append((cid, kind, text))

    node = RedisBroker("redis://127.0.0.1:1/0", node_id="n1")
    heard = Heard()
    node.bind(heard)  # type: ignore[arg-type]
    caller, callee = node.cid_prefix + "1", "n2-abcdef.7"
    node._local[caller] = ("mallory", None)
    request = messages.parse('{"type":"call-request","to":"victim"}', "mallory")
    call = Call("k1", Party("mallory", "d", caller), "victim", request, 1.0, 46.0)
    answered = dataclasses.replace(call, state=CallState.ANSWERED, callee=Party("victim", "d", callee))
    key = node._call("k1")

    def told(*frames: str) -> None:
        node._handle_inbox(nodeframe.pack(list(frames)))

    told(nodeframe.encode("", nodeframe.STATE, nodeframe.encode_state([(key, None, "600000")])))  # the end
    told(nodeframe.encode(caller, nodeframe.SEND_CALL_CHANGED, '{"type":"call-ended","callId":"k1"}'))
    assert heard.delivered and node._routes.get(caller) is None
    late = nodeframe.encode_state([(key, _encode(answered).decode(), "500000")])  # the accept, told late
    told(nodeframe.encode("", nodeframe.STATE, late))
    assert node._routes.get(caller) is None
    candidate = messages.parse('{"type":"candidate","to":"victim","data":{"candidate":"c"}}', "mallory")
    assert node.route(caller, candidate) is None  # not known here: the node reads the call, which is over
    assert node._recall([], [key]) is None  # what is known gone is read again before a change
    told(nodeframe.encode("", nodeframe.STATE, nodeframe.encode_state([(key, _encode(answered).decode(), "700000")])))
    assert node._routes.get(caller) is not None  # (what is newer than the end is news: the test can fail)


async def test_a_node_takes_over_what_a_node_of_either_version_handed_over() -> None:
    """The memory broker's hand-over holds the calls under way and those that ended lately (whose parties may still
    send a call-summary); the next start takes either that or the bare list of calls an earlier version kept."""
    before = MemoryBroker()
    before.switchboard.ended_calls["k9"] = ("alice", "bob")
    request = messages.parse('{"type":"call-request","to":"dave"}', "carol")
    ringing = Call("k1", Party("carol", "d-c1", "c1"), "dave", request, 10.0, 55.0)
    before.switchboard.take_over([ringing])
    state = before.hand_over(20.0)
    assert state is not None
    after = MemoryBroker()
    assert after.take_over(state) == 1
    assert after.switchboard.ended_calls == {"k9": ("alice", "bob")}
    older = MemoryBroker()
    assert older.take_over(msgspec.json.encode([ringing])) == 1
    for broker in (before, after, older):
        broker.stop_timers()  # (the call's ring timeout is long past: no hub is there to act on it)
    with pytest.raises(ValueError, match="not the calls a node handed over"):
        MemoryBroker().take_over(b'{"calls": 3}')
