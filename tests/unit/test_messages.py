"""Message validation without sockets: what a client may send, and what each mistake is called."""

from __future__ import annotations

import json

import pytest

from peercall.protocol import messages
from peercall.protocol.codes import ErrorCode
from peercall.protocol.errors import ProtocolError

OFFER = {"type": "offer", "sdp": "v=0\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


def frame(**fields: object) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "call-request", "to": "bob"},
        {"type": "call-request", "to": "bob", "callId": "c-1", "data": {"video": False}},
        {"type": "call-accept", "to": "bob"},
        {"type": "call-reject", "to": "bob", "data": {"reason": "busy"}},
        {"type": "offer", "to": "bob", "data": OFFER},
        {"type": "answer", "to": "bob", "data": {"type": "answer", "sdp": "v=0"}},
        {"type": "answer", "to": "bob", "data": {"type": "pranswer", "sdp": "v=0"}},
        {"type": "candidate", "to": "bob", "data": CANDIDATE},
        {"type": "candidate", "to": "bob", "data": None},
        {"type": "hangup", "to": "b.o-b_@x"},
        {"type": "hangup", "to": "bob", "from": "alice"},
        {"type": "media-state", "to": "bob", "data": {"muted": True, "camera": False, "screen": False}},
        {"type": "media-state", "to": "bob", "data": {}},
        {"type": "media-state", "to": "bob", "callId": "c-1", "data": {"muted": False, "raisedHand": [1]}},
    ],
)
def test_valid_frames_are_forwarded_with_from_stamped(message: dict[str, object]) -> None:
    """Every valid client frame is forwarded with the sender's own id as `from`, its data untouched."""
    out = json.loads(messages.forward(messages.parse(json.dumps(message), "alice"), "alice"))
    assert out["from"] == "alice"
    assert out["type"] == message["type"] and out["to"] == message["to"]
    assert out.get("data", "absent") == message.get("data", "absent")
    assert out.get("callId") == message.get("callId")


def test_unknown_fields_are_dropped() -> None:
    """Fields the protocol does not define never reach the other side."""
    out = json.loads(messages.forward(messages.parse(frame(type="hangup", to="bob", secret=1), "alice"), "alice"))
    assert "secret" not in out


def test_data_is_forwarded_verbatim() -> None:
    """SDP and candidates are forwarded byte for byte (key order, spacing, unicode escapes)."""
    raw = '{"type":"offer","to":"bob","data":{ "sdp" : "v=0\\u000d\\n", "type" : "offer" }}'
    out = messages.forward(messages.parse(raw, "alice"), "alice")
    assert out.endswith('"data":{ "sdp" : "v=0\\u000d\\n", "type" : "offer" }}')


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        ("{", ErrorCode.BAD_JSON, "not valid JSON"),
        ("", ErrorCode.BAD_JSON, "not valid JSON"),
        ("hello", ErrorCode.BAD_JSON, "not valid JSON"),
        ("[1,2]", ErrorCode.BAD_MESSAGE, "Expected `object`, got `array`"),
        ("42", ErrorCode.BAD_MESSAGE, "Expected `object`"),
        (frame(to="bob"), ErrorCode.BAD_MESSAGE, "missing required field `type`"),
        (frame(type=7, to="bob"), ErrorCode.BAD_MESSAGE, "$.type"),
        (frame(type="hangup"), ErrorCode.BAD_MESSAGE, "needs a 'to'"),
        (frame(type="hangup", to="alice"), ErrorCode.BAD_MESSAGE, "to yourself"),
        (frame(type="hangup", to="bad id"), ErrorCode.BAD_MESSAGE, "$.to"),
        (frame(type="hangup", to="x" * 65), ErrorCode.BAD_MESSAGE, "$.to"),
        (frame(type="hangup", to=""), ErrorCode.BAD_MESSAGE, "$.to"),
        (frame(type="hangup", to="bob", callId=""), ErrorCode.BAD_MESSAGE, "$.callId"),
        (frame(type="hangup", to="bob", callId="c" * 129), ErrorCode.BAD_MESSAGE, "$.callId"),
        (frame(type="hangup", to="bob", callId=5), ErrorCode.BAD_MESSAGE, "$.callId"),
        (
            frame(type="hangup", to="bob", **{"from": "eve"}),
            ErrorCode.BAD_MESSAGE,
            "you are 'alice', not 'eve'",
        ),
        (frame(type="welcome", to="bob"), ErrorCode.UNKNOWN_TYPE, "unknown message type 'welcome'"),
        (frame(type="OFFER", to="bob"), ErrorCode.UNKNOWN_TYPE, "a client may send call-request"),
        (frame(type="offer", to="bob"), ErrorCode.BAD_MESSAGE, "offer needs a 'data' field"),
        (frame(type="offer", to="bob", data="v=0"), ErrorCode.BAD_MESSAGE, "invalid 'data' for offer"),
        (frame(type="offer", to="bob", data={"type": "offer"}), ErrorCode.BAD_MESSAGE, "`sdp`"),
        (
            frame(type="offer", to="bob", data={"type": "answer", "sdp": ""}),
            ErrorCode.BAD_MESSAGE,
            "must be 'offer'",
        ),
        (
            frame(type="answer", to="bob", data={"type": "offer", "sdp": ""}),
            ErrorCode.BAD_MESSAGE,
            "'answer' or",
        ),
        (frame(type="candidate", to="bob"), ErrorCode.BAD_MESSAGE, "candidate needs a 'data'"),
        (frame(type="candidate", to="bob", data={"candidate": 5}), ErrorCode.BAD_MESSAGE, "$.candidate"),
        (
            frame(type="candidate", to="bob", data={**CANDIDATE, "sdpMLineIndex": -1}),
            ErrorCode.BAD_MESSAGE,
            ">= 0",
        ),
        (frame(type="candidate", to="bob", data=[]), ErrorCode.BAD_MESSAGE, "Expected `object | null`"),
        (frame(type="media-state", to="bob"), ErrorCode.BAD_MESSAGE, "media-state needs a 'data' field"),
        (frame(type="media-state", to="bob", data=None), ErrorCode.BAD_MESSAGE, "Expected `object`, got `null`"),
        (frame(type="media-state", to="bob", data=[True]), ErrorCode.BAD_MESSAGE, "Expected `object`"),
        (
            frame(type="media-state", to="bob", data={"muted": 1}),
            ErrorCode.BAD_MESSAGE,
            "`bool`, got `int` - at `$.muted`",
        ),
        (frame(type="media-state", to="bob", data={"camera": "on"}), ErrorCode.BAD_MESSAGE, "$.camera"),
        (frame(type="media-state", to="bob", data={"screen": None}), ErrorCode.BAD_MESSAGE, "$.screen"),
        (frame(type="media-state", to="bob", data={"x": "y" * 256}), ErrorCode.TOO_LARGE, "at most 256 bytes"),
    ],
)
def test_bad_frames_get_a_named_error(raw: str, code: ErrorCode, says: str) -> None:
    """Each kind of bad frame gets its stable code and a message that says what was expected."""
    with pytest.raises(ProtocolError) as info:
        messages.parse(raw, "alice")
    assert info.value.code is code
    assert says in info.value.message


def test_error_frame_echoes_what_failed() -> None:
    """An error frame names the offending type and recipient, so the client knows which request failed."""
    with pytest.raises(ProtocolError) as info:
        messages.parse(frame(type="offer", to="bob", data=1), "alice")
    out = json.loads(messages.error(info.value))
    assert out["type"] == "error" and out["code"] == "bad-message"
    assert out["ref"] == "offer" and out["to"] == "bob"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("A-z_0.9@x", True),
        ("x" * 64, True),
        ("", False),
        ("x" * 65, False),
        ("a b", False),
        ("é", False),
        ("a/b", False),
        (None, False),
        ("a\n", False),
    ],
)
def test_user_id_rule(value: str | None, ok: bool) -> None:
    """Ids are 1-64 ASCII letters, digits, `_ - . @`, nothing else."""
    assert messages.is_valid_id(value) is ok


def test_server_frames_keep_their_shape_and_key_order() -> None:
    """The server's own frames have the documented shapes, their keys in the documented order."""
    welcome = messages.encode(messages.welcome("alice", "tab", ["bob"], [], [{"id": "eve", "lastSeen": 5.0}], 45, 20))
    assert list(json.loads(welcome)) == [
        "type", "id", "device", "online", "inCall", "recent", "protocol", "version", "ringTimeout", "resumeGrace",
        "directory", "features"
    ]  # fmt: skip
    assert messages.encode(messages.call_ended("k1", "missed", "invite-timeout")) == (
        '{"type":"call-ended","callId":"k1","outcome":"missed","reason":"invite-timeout"}'
    )
    assert messages.encode(messages.call_resumed("k1", "answered", "callee", "alice")) == (
        '{"type":"call-resumed","callId":"k1","state":"answered","role":"callee","peer":"alice","polite":true}'
    )
    assert messages.encode(messages.hangup("bob", "alice", "k1", "peer-lost")) == (
        '{"type":"hangup","from":"bob","to":"alice","callId":"k1","data":{"reason":"peer-lost"}}'
    )
    assert messages.encode(messages.error_message("unavailable", "bob is not online", ref="call-request")) == (
        '{"type":"error","code":"unavailable","message":"bob is not online","ref":"call-request"}'
    )
    assert json.loads(messages.presence("bob", "offline")) == {
        "type": "presence",
        "id": "bob",
        "status": "offline",
    }


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        ("[" * 32 + "]" * 32, False),
        ("[" * 33 + "]" * 33, True),
        ('{"a":' * 33 + "1" + "}" * 33, True),
        ('["' + "[[" * 40 + '"]', False),  # brackets in a string do not nest
        ('["\\"' + "[" * 40 + '"]', False),  # nor after an escaped quote
        ("[" * 5000 + "]" * 5000, True),
        ("[]" * 5000, False),
    ],
)
def test_nesting_is_bounded_explicitly(text: str, deeper: bool) -> None:
    """`nested_deeper_than` answers for any depth, without recursion, brackets inside strings aside."""
    assert messages.nested_deeper_than(text) is deeper


def test_call_control_data_is_bounded_in_size_and_depth() -> None:
    """A call control frame's data: `too-large` past MAX_CALL_DATA bytes, `bad-message` past MAX_DEPTH levels;
    negotiation frames' data has its own fixed shape and is not counted."""
    big = json.dumps({"type": "call-request", "to": "bob", "data": "x" * messages.MAX_CALL_DATA})
    with pytest.raises(ProtocolError) as info:
        messages.parse(big, "alice")
    assert (info.value.code, info.value.ref) == (ErrorCode.TOO_LARGE, "call-request")
    deep = json.dumps(
        {
            "type": "hangup",
            "to": "bob",
            "data": {"reason": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        }
    )
    with pytest.raises(ProtocolError) as info:
        messages.parse(deep, "alice")
    assert info.value.code == ErrorCode.BAD_MESSAGE and "nested more than 32 deep" in info.value.message
    messages.parse(json.dumps({"type": "hangup", "to": "bob", "data": {"reason": "user-hangup"}}), "alice")
    offer = {
        "type": "offer",
        "sdp": "v=0\r\n" + "a=x\r\n" * 2000,
        "extra": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    }
    messages.parse(json.dumps({"type": "offer", "to": "bob", "data": offer}), "alice")


def test_what_an_error_echoes_is_cut_to_64_characters() -> None:
    """A long `type` (or a long value that msgspec quotes) is echoed cut to 64 characters with an ellipsis."""
    with pytest.raises(ProtocolError) as info:
        messages.parse(json.dumps({"type": "x" * 60_000}), "alice")
    assert info.value.ref == "x" * 63 + "…" and len(info.value.message) < 300 and "x" * 63 + "…" in info.value.message
    summary = {"type": "call-summary", "callId": "c1", "data": {"path": "y" * 60_000}}
    with pytest.raises(ProtocolError) as info:
        messages.parse(json.dumps(summary), "alice")
    assert "y" * 63 + "…" in info.value.message and len(info.value.message) < 300
    assert len(ProtocolError(ErrorCode.BAD_MESSAGE, "z" * 10_000).message) == 300
