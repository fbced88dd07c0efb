"""The Redis broker: several nodes share presence, routing and call state (docs/deploy.md, "Several nodes").

Keys (all under the prefix, `peercall:` by default):

    u:{user}      hash   connection id -> [device, named] for each device online, on any node; `~active` -> call id
    call:{id}     string the call (JSON of core.switchboard.Call) while it rings or is answered; the Lua reader
                  follows it to its parties by the fields `CALLER_USER` and `CALLEE_USER` name. Its call-request
                  is kept without its `data`, which every change of the call would otherwise decode and rewrite
    calldata:{id} string the `data` of the call's call-request while it rings: written once, read only to ring a
                  device of the callee that connects late (expires after the ring timeout, as a safety net)
    due           zset   call id -> when it next needs a tick (ring timeout, end of a resume grace)
    callstate     hash   call id -> ringing | answered (for /metrics)
    ended:{id}    string "caller callee" of a call that ended lately (who may send its call-summary), 1 h; at most
                  the newest 10,000, as on one node (a client that places calls under ever new ids in open mode
                  left ~600 a second per address): the housekeeping deletes the others
    endedat       zset   call id -> when it ended, of each `ended:{id}` (their index, for that)
    online        zset   users online (score 0: lexical order, for `welcome` and the `directory` pages)
    seen          zset   user -> last seen (offline users, newest 1000)
    incall        set    users in an answered call
    nodes         zset   node -> lease expiry; a node renews its lease every lease/3 s
    reaping:{node} string the node reaping a dead one (expires after a lease, so another takes over)
    n:{node}      hash   connection id -> user, for the node's connections (to reap them if it dies)
    unwritten:{node} hash call id -> the `Record` (JSON) of a call the node ended and its history writer is not yet
                  done with: written in the same compare-and-set as the end, let go of once written (`recorded`);
                  if the node dies first, the node that reaps it writes them (the history keeps a call once). If the
                  connection to Redis goes while a change that ends a call is on it, the call is here if and only if
                  Redis made the change: the node looks when Redis is back and, if so, carries it out (`_settle`)
    ver           hash   key -> version, of every u:{user} and call:{id} that exists (for compare-and-set, below)
    clock         string the counter versions are made from
    to:{node}     channel frames for that node's connections
    everyone      channel for every node: presence changes with their audience, whose circles changed, and users
                  (or one sign-in of a user) whose connections every node is to close (`close_user`)
    all           channel presence changes of nodes of the previous version, for every node (read, no longer
                  written: such a node would fail on an audience or a circle change). The format of all three:
                  hub/nodeframe.py

Contacts (#15) add no key: who may see and ring whom is in the store. A user's presence is read from `online`,
`incall` and `seen` (`presences`, one Lua read); a welcome for a view reads those of the view's contacts only, in
the same Lua read as the slice of the join (`_READ_WELCOME`), and for a view of everyone at most
WELCOME_ONLINE_MAX of `online` besides, whatever the users online.

Atomicity: every state change (connect, disconnect, a call frame, a timer tick, reaping a dead node) reads the keys
of the users and calls it touches with their versions (one Lua read that follows the links itself: user -> their
call -> its other party), runs the pure `Switchboard` code on that slice, and hands the changes to one Lua script
that applies them only if none of those keys' versions moved meanwhile (compare and set, giving them new ones;
a key's version goes when the key does: see `_APPLY`). If another
node changed any of them, nothing is written and the event is replayed on the new state, so e.g. two devices of one
user on two nodes accepting at once yield one winner, and a ring timeout that every node sees due is acted on by
exactly one. The effects of a change are performed only after it was applied, by the node that made it.
(WATCH/MULTI would do the same with a connection held across more round trips: measured, 1.0 ms against 0.7 ms a
change.)

What a node knows: the read is skipped when the node already knows the slice. A node keeps (`_known`, at most
_KNOWN_MAX keys) each user's and call's value and version as it last saw them: read, written by its own changes
(`_APPLY` returns the version it gave), or told by the node that changed them. After each change, the node sends
what the change left in every key it checked (a STATE node frame, hub/nodeframe.py) to the nodes its frames go to,
ahead of those frames: the call-request to the callee's node, the accept to the caller's, the hangup to the
peer's. So the change that answers them (accept, hangup, the caller's first `offer`, whose route it carries) runs
the switchboard on what is known and sends one compare-and-set script with the versions known, and no read. If
another node moved first (or a node of an older version, which tells nothing), the versions do not match, nothing
is written, and the event is replayed on the state read, as before; a frame that what is known would refuse
(`ProtocolError`) is checked on the state read too. Correctness rests on the compare and set alone: what a node
knows only saves the read when it is still true. A key that a change deleted is remembered as deleted at that
change's version for a while (`_gone`): node frames keep their order per sending node only, so what an older change
left may be told after it, and must not bring back the route of a call that ended.

Calls a node owns: a call belongs to the node of its caller's connection (the node that placed it). After each
change of a call whose caller is connected here (the call-request first), the node keeps the slice that change ran
on, as the change left it (`_Owned`: the live switchboard, the values and versions Redis now holds), and runs the
call's next change on it: no read and no slice to build, the same compare and set with the versions it holds. It
tells the node of each device the call rings that it owns the call (an OWNER node frame, hub/nodeframe.py, ahead of
the ring), and that node asks it to carry out that device's accept, reject or hangup, or its call-request back to
the caller (glare), instead of making the change itself (ASK; the owner performs the effects and answers, ASKED,
with the route of the asker's peer frames once answered). So a call across two nodes costs the callee's node no
change of its own, and the caller's node none of the reads or STATE frames of another node's changes.
Correctness still rests on the compare and set alone: what the owner holds is what it knows. If any other change
touched the call (a device of the callee that connected on a third node and answered there; the timer of another
node; a node of the previous version, which neither says nor asks), the owner's next change fails its compare and
set and is replayed on the state read, as any change is; and a change this node makes other than on the slice
lets go of the calls it touches (`_let_go`). One change of an owned call runs at a time (`_change`). An ASK not
answered within _ASK_WITHIN s (the owner hangs, or died and its lease has not run out: the asking node then first
looks whether it was made, `_done_already`), or sent to a node that is not alive, or one the owner did not make
(`redo`: it no longer holds the connection; `down`: it could not reach Redis) is made by the asking node itself,
on Redis. A frame asked with no call id is asked, and redone, with the id of the call asked about. The owner
tells the other nodes nothing of the changes it makes on a slice (no STATE): they ask rather than read, and a node
told that another owns its user's call forgets what it knew of that user (a read costs less than a compare and set
that fails first).

Connections: the scripts of every event, the frames for other nodes and the subscription go through a lean client
(broker/resp.py: hiredis, the commands of one turn of the event loop in one write, EVALSHA), on two connections per
node: one that every command is pipelined on, one subscribed. redis-py, through a pool, does the rest (timers,
lease, reaping, gauges), and everything with a `rediss://` URL, which the lean client does not speak.

Routing: Pub/Sub, one channel per node. It is the lowest-latency path Redis has (no storage, one PUBLISH per
frame, batched in pipelines), delivers in order per publishing connection (each node publishes on one), and loses
nothing while both nodes stay connected to Redis; streams would add durability we do not need (a node that
lost its Redis connection has lost its clients' calls' signaling context anyway; they resume). A PUBLISH says how
many it reached: a message for a node that reached no one (its subscription was cut, or Redis restarted and it has
not subscribed again yet, while its other connections already work) is held by the sender and published again, in
order and ahead of what follows for that node, until it is heard (`_hold`; for _HELD_FOR s at most, within
_HELD_MAX): the moment a node takes to subscribe again costs a delay, not a callee who never rang. A message for
every node that reached fewer nodes than are alive (`nodes`, as the housekeeping last read it) is held the same
way for each live node whose own channel has no subscriber, on that channel (`_hold_unheard`): a presence change
missed is not a contact shown offline for good.

`offer`/`answer`/`candidate`, the hot path, change no state: a node remembers, per connection of its own in an
answered call, where the peer's connection is, and forwards without asking Redis, synchronously like one node
(`route`: no coroutine, no effect objects; the frame is queued for the peer's node, `send`). The node that applies
the accept learns it for its own party at once; another node reads it once, at the first frame (`receive`).
Anything that changes a call (`call-ended`, `call-resumed` to that connection) forgets it. The receiving node
handles each message as its subscription reads it (`_heard`): no queue, no task, no coroutine per frame.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from msgspec import UNSET
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.social import Screen, View
from ..core.switchboard import (
    LAST_SEEN_SHOWN,
    UNLIMITED_CALLS,
    WELCOME_ONLINE_MAX,
    Call,
    CallState,
    Close,
    Device,
    Effect,
    Forward,
    Presence,
    Record,
    Send,
    Switchboard,
    WelcomeLists,
    check_summary,
)
from ..hub import nodeframe
from ..hub.broker import BrokerEvents
from ..protocol.codes import CloseCode, ErrorCode
from ..protocol.errors import ProtocolError, SharedStateInDoubt, SharedStateUnavailable
from ..protocol.messages import CALL_CHANGED, PEER_FRAMES, Envelope
from . import resp

log = logging.getLogger("peercall.broker")
T = TypeVar("T")

_ACTIVE = "~active"  # the field of u:{user} that holds the user's call (ids cannot contain "~")
_TRIES = 100  # replays of one event under contention before giving up
_POOL_SIZE = 64  # redis-py's connections per node (not the lean client's); each command holds one for its round trip
_POOL_WAIT = 20.0  # seconds an event may wait for a free one before it is refused as service-unavailable
_TIMER_POLL = 0.25  # seconds between looks at `due` when nothing local is due sooner
_ENDED_TTL = 3600
_ENDED_KEPT = 10_000  # `ended:{id}` keys at most (the newest, as one node's switchboard keeps: `ended_calls`)
_ENDED_TRIM_MAX = 20_000  # of them deleted by one housekeeping round at most (one short script)
_SEEN_KEPT = 1000
_BATCH_MAX = 512  # frames in one Pub/Sub message at most
_SUB_PING = 2.0  # seconds between pings on the subscription, so that a Redis that went silent is noticed
_STOP_WITHIN = 8.0  # seconds `stop()` may take in all; then other nodes reap what is left when the lease runs out
# Frames for a node whose subscription is down (a PUBLISH that reached no one): held and published again, in order,
# every _HELD_RETRY s until it has subscribed again, for _HELD_FOR s at most; _HELD_MAX characters for all nodes.
_HELD_RETRY = 0.1
_HELD_FOR = 10.0
_HELD_MAX = 16 << 20

# The fields of the encoded core `Call` (msgspec JSON of the dataclass) that the Lua reader follows to a call's
# parties: `call.caller.user` and `call.callee_user`. tests/unit/test_redis_format.py checks them against `Call`.
CALLER_USER: tuple[str, ...] = ("caller", "user")
CALLEE_USER: tuple[str, ...] = ("callee_user",)

# Reads a slice of state and its versions in one round trip: the users' hashes (u:{user}, the first ARGV[1] of
# KEYS) and calls (call:{id}, the rest), and what they lead to, as the switchboard will need it: a user's call (the
# field ARGV[4]), a call's two parties. ARGV[2]: the hash of versions; ARGV[3]: the key prefix. Returns
# {key, value, version} for every key read ("0": never written); a call that is gone has no value.
_READ = """
local n, ver, prefix, active = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local users, calls, seen, out = {}, {}, {}, {}
for i, key in ipairs(KEYS) do
  if i <= n then users[#users + 1] = key else calls[#calls + 1] = key end
end
while #users > 0 or #calls > 0 do
  local next_users, next_calls = {}, {}
  for _, key in ipairs(users) do
    if not seen[key] then
      seen[key] = true
      local value = redis.call('HGETALL', key)
      out[#out + 1] = {key, value, redis.call('HGET', ver, key) or '0'}
      for j = 1, #value, 2 do
        if value[j] == active then next_calls[#next_calls + 1] = prefix .. 'call:' .. value[j + 1] end
      end
    end
  end
  for _, key in ipairs(calls) do
    if not seen[key] then
      seen[key] = true
      local raw = redis.call('GET', key)
      out[#out + 1] = {key, raw, redis.call('HGET', ver, key) or '0'}
      if raw then
        local call = cjson.decode(raw)
        next_users[#next_users + 1] = prefix .. 'u:' .. <CALLER_USER>
        next_users[#next_users + 1] = prefix .. 'u:' .. <CALLEE_USER>
      end
    end
  end
  users, calls = next_users, next_calls
end
return out
"""
_READ = _READ.replace("<CALLER_USER>", ".".join(("call", *CALLER_USER)))
_READ = _READ.replace("<CALLEE_USER>", ".".join(("call", *CALLEE_USER)))
# Compare and set: if every key read still has the version it was read at, run the commands (each as its argument
# count, then its arguments) and give every key read a new version, or none if the key is gone, and return that
# version; else change nothing and return 0. KEYS[1]: the versions hash; KEYS[2]: the counter new versions come
# from; ARGV[1]: how many keys were read (n); ARGV[2]: how many of them the change leaves in place (the first ones:
# the node knows which keys its commands delete: `_Commands.gone`); then the n keys, then their n versions, then
# the commands. One HMGET checks every version, one HSET sets the new one of the keys left, one HDEL deletes those
# of the keys gone (each of which is checked with EXISTS first: a key still there keeps a version, whatever the
# node thought). 3 Redis calls where there were 3 per key (HGET, EXISTS, HSET or HDEL).
#
# A version lives as long as its key (Redis holds what is live, not every id ever read): a user's goes with the
# last of their devices and their call, a call's with the call. A key that is gone reads as version "0", and "0"
# always means the same state (no devices and no call; a call that ended, whose id is never used again), so a
# change decided on a key read as gone is still right if it is gone again when applied. A key that exists gets a
# version never handed out before (the counter, times 100000: a node of an older version still bumps versions by
# one, and must not reach a value the counter gives), so a user who left and came back is never taken for the
# state read before they left ("ABA").
#
# Rolling upgrade: the keys, `ver` and its values are what the previous script (one HGET, EXISTS and HSET or HDEL
# per key, ARGV[1] the number of key-version pairs) wrote, so nodes running either script share one Redis; only
# the script (its SHA) and its ARGV differ.
_APPLY = """
local n, kept = tonumber(ARGV[1]), tonumber(ARGV[2])
if n > 0 then
  local held = redis.call('HMGET', KEYS[1], unpack(ARGV, 3, 2 + n))
  for i = 1, n do
    if (held[i] or '0') ~= ARGV[2 + n + i] then return 0 end
  end
end
local version = tostring(redis.call('INCR', KEYS[2])) .. '00000'
local i = 2 * n + 3
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
local set, gone = {}, {}
for j = 3, 2 + kept do
  set[#set + 1] = ARGV[j]
  set[#set + 1] = version
end
for j = 3 + kept, 2 + n do
  if redis.call('EXISTS', ARGV[j]) == 1 then
    set[#set + 1] = ARGV[j]
    set[#set + 1] = version
  else
    gone[#gone + 1] = ARGV[j]
  end
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
return version
"""
# What a `welcome` lists, read with the slice (the same script: `_READ` with this in place of its `return out`),
# which returns {out, lists}. ARGV[5]: what it lists; ARGV[6]: the newcomer; ARGV[7]: WELCOME_ONLINE_MAX;
# ARGV[8]: LAST_SEEN_SHOWN; then the number of the view's contacts and the contacts, then the number of users the
# view hides and those users.
#  - 'all' (no view: everyone's presence): {everyone online, everyone in a call, the LAST_SEEN_SHOWN + 1 seen last};
#  - 'contacts': {the contacts' states}: each {id, online 0|1, in a call 0|1, last seen or false};
#  - 'everyone': {the contacts' states, {id, in a call 0|1} of the others online (in id order, neither hidden nor
#    the newcomer nor a contact) up to WELCOME_ONLINE_MAX in all, 1 if there were more, the LAST_SEEN_SHOWN seen
#    last that are neither hidden nor the newcomer (flat, with when)}.
# Its cost grows with the contacts and the hidden users, and with WELCOME_ONLINE_MAX: never with everyone online.
_WELCOME = """
local mode, me, online_max, shown = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local online, incall, seen = prefix .. 'online', prefix .. 'incall', prefix .. 'seen'
if mode == 'all' then
  return {out, {
    redis.call('ZRANGE', online, 0, -1),
    redis.call('SMEMBERS', incall),
    redis.call('ZREVRANGE', seen, 0, shown, 'WITHSCORES'),
  }}
end
local n_contacts = tonumber(ARGV[9])
local contact, hidden, states, listed = {}, {}, {}, 0
for i = 10, 9 + n_contacts do
  local c = ARGV[i]
  contact[c] = true
  local on, when = redis.call('ZSCORE', online, c), false
  if on then listed = listed + 1 else when = redis.call('ZSCORE', seen, c) end
  states[#states + 1] = {c, on and 1 or 0, redis.call('SISMEMBER', incall, c), when}
end
for i = 11 + n_contacts, 10 + n_contacts + tonumber(ARGV[10 + n_contacts]) do hidden[ARGV[i]] = true end
if mode == 'contacts' then return {out, {states}} end
local others, more, start = {}, 0, 0
local room = online_max - listed
if room < 0 then more = 1 end
while more == 0 do
  local page = redis.call('ZRANGE', online, start, start + 255)
  for _, u in ipairs(page) do
    if u ~= me and not contact[u] and not hidden[u] then
      if #others >= room then more = 1; break end
      others[#others + 1] = {u, redis.call('SISMEMBER', incall, u)}
    end
  end
  if #page < 256 then break end
  start = start + 256
end
local recent, start = {}, 0
while #recent < 2 * shown do
  local page = redis.call('ZREVRANGE', seen, start, start + 127, 'WITHSCORES')
  for j = 1, #page, 2 do
    if page[j] ~= me and not hidden[page[j]] and #recent < 2 * shown then
      recent[#recent + 1] = page[j]
      recent[#recent + 1] = page[j + 1]
    end
  end
  if #page < 256 then break end
  start = start + 128
end
return {out, {states, others, more, recent}}
"""
_READ_WELCOME = _READ.replace("\nreturn out\n", "\n" + _WELCOME)
# Each of ARGV (after the prefix): {online 0|1, in an answered call 0|1, last seen or false}.
_PRESENCES = """
local online, incall, seen = ARGV[1] .. 'online', ARGV[1] .. 'incall', ARGV[1] .. 'seen'
local out = {}
for i = 2, #ARGV do
  local on, when = redis.call('ZSCORE', online, ARGV[i]), false
  if not on then when = redis.call('ZSCORE', seen, ARGV[i]) end
  out[#out + 1] = {on and 1 or 0, redis.call('SISMEMBER', incall, ARGV[i]), when}
end
return out
"""
# Users online from ARGV[2] (a ZRANGEBYLEX bound), at most ARGV[3], flat with whether each is in a call.
_ONLINE_PAGE = """
local incall, out = ARGV[1] .. 'incall', {}
for _, u in ipairs(redis.call('ZRANGEBYLEX', ARGV[1] .. 'online', ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))) do
  out[#out + 1] = u
  out[#out + 1] = redis.call('SISMEMBER', incall, u)
end
return out
"""
# Calls that ended lately, beyond the newest ARGV[2] or older than ARGV[3]: their `ended:{id}` keys (ARGV[1] is
# the prefix of those) deleted, at most ARGV[4] of them. KEYS[1]: `endedat`, their index (call id -> when it ended).
# Returns how many were deleted.
_TRIM_ENDED = """
local index, at = KEYS[1], ARGV[1]
local old = redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local over = math.min(redis.call('ZCARD', index) - #old - tonumber(ARGV[2]), tonumber(ARGV[4]) - #old)
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', index, #old, #old + over - 1)) do old[#old + 1] = id end
end
for _, id in ipairs(old) do redis.call('DEL', at .. id) end
if #old > 0 then redis.call('ZREMRANGEBYRANK', index, 0, #old - 1) end
return #old
"""
# A user's call, for a frame that only needs to read it (nothing is written, so no version is checked).
_READ_CALL = """
local id = redis.call('HGET', KEYS[1], ARGV[2])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)
"""

_encode = msgspec.json.encode
_decode_call = msgspec.json.Decoder(Call).decode
_decode_record = msgspec.json.Decoder(Record).decode


class _User(msgspec.Struct):
    user: str


class _Parties(msgspec.Struct):
    """Who takes part in a stored call: the fields the Lua reader follows (CALLER_USER, CALLEE_USER)."""

    caller: _User
    callee_user: str


_decode_parties = msgspec.json.Decoder(_Parties).decode
_ANSWERED = '"state":"answered"'  # in the JSON of an answered call (tests/cluster/test_redis_state.py checks it)
_RECORDED_LATER_MAX = 10_000  # written calls whose `recorded` waits for Redis to be back; any beyond stay there
_KNOWN_MAX = 50_000  # keys a node keeps as it last saw them (`_known`); the oldest are forgotten first
_GONE_MAX = 16_384  # keys a node remembers were deleted, and at what version (`_gone`); the oldest forgotten first
_IN_DOUBT_MAX = 10_000  # changes to calls that lost their reply, to settle when Redis is back (`_settle`)
_SETTLE_TRIES = 10  # housekeeping rounds that may fail to settle one before it is given up
_UNHEARD_MAX = 10_000  # messages for every node waiting to be held for nodes that did not hear them
_ASK_WITHIN = 3.0  # seconds a node waits for the owner of a call to answer an ASK; then it makes the change itself
_ASKED_OF_OWNER = frozenset(("call-accept", "call-reject", "hangup"))  # (and a call-request back to its caller)
_decode_envelope = msgspec.json.Decoder(Envelope).decode

TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
"""Redis cannot be reached. Every other `RedisError` (OOM, READONLY after a failover, a script refused) is handled
the same way wherever an event runs: the event fails as `SharedStateUnavailable` with nothing written, and what
must still happen (a disconnect) is queued and told again, like after a lost connection."""


class _Commands:
    """Redis commands gathered for `_APPLY`, written like redis-py's (so `_write` reads as plain Redis)."""

    def __init__(self) -> None:
        self.args: list[str | int | float] = []
        self.calls: dict[str, str] = {}  # call key -> the JSON it is set to (what `_left` tells other nodes)
        self.gone: set[str] = set()  # keys of users and calls read that the change deletes (`_apply_args`)

    # Each appends its argument count and its arguments in one step (no `*args` call: ~10 of them per change).

    def hset(self, key: str, field: str, value: str | bytes) -> None:
        self.args += (4, "HSET", key, field, value.decode() if isinstance(value, bytes) else value)

    def hdel(self, key: str, field: str) -> None:
        self.args += (3, "HDEL", key, field)

    def zadd(self, key: str, mapping: dict[str, float]) -> None:
        for member, score in mapping.items():
            self.args += (4, "ZADD", key, repr(float(score)), member)

    def zrem(self, key: str, member: str) -> None:
        self.args += (3, "ZREM", key, member)

    def zremrangebyrank(self, key: str, start: int, stop: int) -> None:
        self.args += (4, "ZREMRANGEBYRANK", key, start, stop)

    def sadd(self, key: str, *members: str) -> None:
        self.args += (len(members) + 2, "SADD", key, *members)

    def srem(self, key: str, *members: str) -> None:
        self.args += (len(members) + 2, "SREM", key, *members)

    def set(self, key: str, value: str | bytes, ex: int | None = None) -> None:
        value = value.decode() if isinstance(value, bytes) else value
        if ex is None:
            self.args += (3, "SET", key, value)
        else:
            self.args += (5, "SET", key, value, "EX", ex)

    def delete(self, key: str) -> None:
        self.args += (2, "DEL", key)


# A user's hash (u:{user}) parsed: {cid: device}, their call's id, {cid: the device as stored (JSON)}. Never changed
# once made: `_known` and the `_Loaded` of later changes share it.
_Parsed = tuple[dict[str, Device], str | None, dict[str, str]]


def _parse_user(user: str, value: list[str], old: _Parsed | None) -> _Parsed:
    """A user's hash as `_READ` returns it (its fields flat) parsed, with what `old` (this node's last parse of that
    hash) holds of the same devices reused: most changes of a user's hash are its call's, which leave its devices
    as they were. Raises ValueError or TypeError for a device that is not stored as `[device, named]`."""
    stored = dict(zip(value[::2], value[1::2], strict=True))
    active = stored.pop(_ACTIVE, None)
    if old is None:
        old_devices, old_stored = {}, {}
    else:
        old_devices, old_stored = old[0], old[2]
        if stored == old_stored:
            return old_devices, active, old_stored
    devices = {}
    for cid, as_stored in stored.items():
        if old_stored.get(cid) == as_stored:
            devices[cid] = old_devices[cid]
        else:
            device, named = msgspec.json.decode(as_stored)
            devices[cid] = Device(cid, user, device, named)
    return devices, active, stored


@dataclass
class _Loaded:
    """What a transaction read: the state before, to write back only what changed."""

    devices: dict[str, dict[str, Device]] = field(default_factory=dict)  # user -> cid -> device
    stored: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> cid -> the device as stored (JSON)
    active: dict[str, str | None] = field(default_factory=dict)  # user -> call id
    calls: dict[str, tuple[str, str]] = field(default_factory=dict)  # call id -> (caller, callee)
    missing: set[str] = field(default_factory=set)  # calls asked for that are gone (a stale `due` entry)
    ringing: set[str] = field(default_factory=set)  # calls that were ringing
    versions: dict[str, str] = field(default_factory=dict)  # key -> its version when read
    welcome: WelcomeLists | None = None  # what a welcome lists, read with the slice when one is sent
    recalled: bool = False  # the slice is what this node knew of it (`_known`), not read from Redis


@dataclass(slots=True)
class _InDoubt:
    """A change that ends, answers or places calls, sent to Redis on a connection that was lost before its reply
    came: made or not, Redis knows (`_settle`)."""

    effects: list[Effect]
    before: _Loaded
    ended: dict[str, str]  # id -> record (JSON) of each call it ends: in `unwritten:{node}` iff the change was made
    calls: dict[str, str]  # call key -> the JSON the change sets it to: what it holds if the change was made (and no
    # other change followed; one that did told the parties what it changed)
    tries: int = 0  # times `_settle` could not finish it (Redis failed it again)


@dataclass(frozen=True, slots=True)
class _Welcome:
    """A welcome to list with the slice read: for `user`, whose presence `view` says (None: everyone's)."""

    user: str
    view: View | None


@dataclass(frozen=True, slots=True)
class _Route:
    call_id: str
    peer: str
    peer_cid: str


@dataclass(slots=True)
class _Owned:
    """A call this node owns (its caller is connected here): the slice of its last change, kept as that change
    left it, to run the next one on (see "Calls a node owns" in the module doc)."""

    sb: Switchboard  # the call and its two parties' devices, live: changed in place by each change
    before: _Loaded  # what Redis holds of that slice (`recalled`): values and versions as the last change left them
    call_id: str
    busy: asyncio.Future[None] | None = None  # a change of it is on its way to Redis: the next one waits for it


class _Redo(Exception):
    """An ASK the owner cannot carry out for the asking node (the connection is not in Redis): it does it itself."""


class RedisBroker:
    """A `hub.broker.Broker` for a node of a cluster: its link to the shared state and to the other nodes."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        node_id: str | None = None,
        lease: float = 10.0,
        prefix: str = "peercall:",
        ring_timeout: float = 45.0,
        resume_grace: float = 20.0,
        private: bool = False,
        new_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.node = node_id or secrets.token_hex(3)
        self._new_id = new_id
        # A restarted node gets a new address, so nothing meant for its previous life reaches it.
        self.address = f"{self.node}-{secrets.token_hex(3)}"
        self.cid_prefix = f"{self.address}."
        self.lease = lease
        self.p = prefix
        # What goes to every node: presence changes with their audience, and circle changes. Not `all`, which a
        # node of the previous version reads (and would fail on these), and whose 4-field presence changes we
        # still read (`_listen`).
        self._everyone = f"{prefix}everyone"
        self.ring_timeout, self.resume_grace, self.private = ring_timeout, resume_grace, private
        # A pool that makes callers wait for a free connection: a reconnect storm of thousands of clients queues
        # up instead of failing as "Redis unreachable" when the pool is exhausted.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=_POOL_SIZE,
            timeout=_POOL_WAIT,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=5,
            # One retry on a new connection: after Redis restarts, every pooled connection is one it closed, and
            # without it each failed its next command (the health check's PING too) as "Connection closed by
            # server", answering service-unavailable at random for as long as connections sat unused (seen 30 s
            # after Redis was back, bench/soak.py --cluster --redis-restart-at).
            retry=Retry(NoBackoff(), 1),
        )
        # Typed Any: redis-py's stubs cannot know that decode_responses=True makes every reply a str.
        self.redis: Any = aioredis.Redis(connection_pool=pool)
        # The hot commands (the scripts of every transition, the frames for other nodes) go through a lean client
        # of their own, pipelined on one connection (broker/resp.py says why); redis-py for the rest, and for all
        # of it with a URL the lean client does not speak (TLS).
        self._pipe: resp.Pipe | None
        self._sub: resp.Pipe | None  # the subscription to this node's channel and every node's (`_listen`)
        try:
            self._pipe = resp.Pipe(url, timeout=5, connect_timeout=2)
            self._sub = resp.Pipe(url, timeout=5, connect_timeout=2, on_message=self._heard)
        except ValueError:
            self._pipe = self._sub = None
        self._events: BrokerEvents | None = None
        self._keep_records = False  # the hub writes a history: keep each Record in Redis until it is written
        self._unwritten = f"{prefix}unwritten:{self.address}"
        self._recorded_later: set[str] = set()  # written calls whose `recorded` Redis did not hear (retried)
        self._in_doubt: collections.deque[_InDoubt] = collections.deque()  # at most _IN_DOUBT_MAX
        self.healthy = False
        self.ops: collections.Counter[str] = collections.Counter()  # Redis round trips by kind, for /metrics
        self._users_online = 0  # gauges, refreshed by the housekeeping
        self._calls_by_state: dict[str, int] = {"ringing": 0, "answered": 0}
        self._routes: dict[str, _Route] = {}
        # The hot path: a peer frame whose route this node knows is forwarded with no coroutine (`_routed`).
        self.route: Callable[[str, Envelope], tuple[str, str] | None] = self._routed
        self._route_epoch = 0  # counts `forget_route`s
        # cid of ours -> the `_route_epoch` its route was last forgotten at. A route read is learnt only if its
        # connection's was not forgotten while the read was on its way: per connection, since with a global
        # check every change to any call in between threw away what was read (measured: 1.4 reads a call on the
        # caller's node instead of 1). Bounded by our connections: dropped at their disconnect.
        self._forgot: dict[str, int] = {}
        self._local: dict[str, tuple[str, str | None]] = {}  # cid -> (user, device asked for), to re-register
        # Calls this node owns ("Calls a node owns"): by call id, and by the user of each party. At most one per
        # connection of ours (its caller's), dropped when the call ends here or a change of it is made elsewhere.
        self._owned: dict[str, _Owned] = {}
        self._owned_by: dict[str, _Owned] = {}
        # cid of ours -> (call id, its owner's address, its caller) of a call another node owns that rings it or
        # that it answered (OWNER): its accept, reject or hangup is asked of the owner. Dropped with the route.
        self._owners: dict[str, tuple[str, str, str]] = {}
        self._asks: dict[int, asyncio.Future[str]] = {}  # ASKs of ours waiting for their answer, one per connection
        self._ask_seq = 0
        self._asked: set[asyncio.Task[None]] = set()  # ASKs of other nodes being carried out here
        # ASKs of this node by outcome (/metrics): asked, late (not answered in time), redo (made here after all)
        self.asks: collections.Counter[str] = collections.Counter()
        # What this node last saw of keys of users and calls, from its own changes and from what other nodes told
        # it (STATE frames): key -> (value as `_READ` returns it, version, the keys it leads to). See "What a node
        # knows" in the module doc. Bounded by _KNOWN_MAX; a key that is gone is dropped.
        # A user's also holds the hash parsed (`_Parsed`): read, changed here or told, with the devices it had
        # parsed before reused (`_parse_user`).
        self._known: dict[str, tuple[Any, str, Any, _Parsed | None]] = {}
        # key -> version of the change that deleted it, for the keys deleted lately (`_keep`); _GONE_MAX at most
        # (at 1,500 ended calls a second, the last ~10 s: longer than frames are held for a node, `_HELD_FOR`)
        self._gone: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._u_at, self._call_at = f"{prefix}u:", f"{prefix}call:"
        self._pending_leaves: dict[str, str] = {}  # cid -> user, disconnects Redis has not heard of yet
        # channel -> the frames queued for it, each already packed (`nodeframe.packed`): published in batches
        self._outbox: dict[str, list[str]] = {}
        self._to_at = f"{prefix}to:"
        self._own = self._to(self.address)  # this node's channel
        self._outbox_ready = asyncio.Event()
        # channel of a node -> the messages for it that reached no one yet ((when first published, message), in
        # order): its subscription was down (see `_hold`). New ones for that node wait behind them.
        self._held: dict[str, collections.deque[tuple[float, str]]] = {}
        self._held_size = 0  # characters in `_held`
        self._held_tried = 0.0  # when `_held` was last published again (monotonic)
        self._live: list[str] = []  # the nodes whose lease runs (as the housekeeping last read it)
        # Messages for every node published while some node may not hear them (`_published`), and whether one of
        # them reached fewer nodes than `_live`: to hold for the nodes that did not (`_hold_unheard`).
        self._unheard: list[str] = []
        self._short = False
        self._timer_wake = asyncio.Event()
        self._timer_at = 0.0  # when the timer looks at `due` next (wall clock), unless woken sooner
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        self._closing = False
        self._inflight = 0  # transactions under way
        self._pub_conn: Any = None  # the connection that frames for other nodes go out on
        # One flush at a time on that connection: stop() flushes what is left while the publish loop may be in the
        # middle of one (two readers of one connection: "read() called while another coroutine is waiting").
        self._publishing = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ keys

    def _u(self, user: str) -> str:
        return f"{self.p}u:{user}"

    def _call(self, call_id: str) -> str:
        return f"{self.p}call:{call_id}"

    def _calldata(self, call_id: str) -> str:
        return f"{self.p}calldata:{call_id}"

    def _n(self, address: str) -> str:
        return f"{self.p}n:{address}"

    def _to(self, address: str) -> str:
        return f"{self.p}to:{address}"

    @staticmethod
    def address_of(cid: str) -> str:
        return cid.rpartition(".")[0]

    def _slice(self) -> Switchboard:
        """A switchboard for the slice of shared state one event touches. Its call rate refuses nothing: the hub
        charged the call-request to this node's call rates (they are not shared) once, before the transaction,
        whose `run` may be replayed."""
        return Switchboard(
            ring_timeout=self.ring_timeout,
            resume_grace=self.resume_grace,
            new_id=self._new_id,
            private=self.private,
            call_rate=UNLIMITED_CALLS,
        )

    # ------------------------------------------------------------------------------------- lifecycle

    def bind(self, events: BrokerEvents) -> None:
        self._events = events
        self._keep_records = events.writes_history

    @property
    def events(self) -> BrokerEvents:
        assert self._events is not None, "bind() the broker to its hub first"
        return self._events

    def users_online(self) -> int:
        return self._users_online

    def calls_by_state(self) -> dict[str, int]:
        return dict(self._calls_by_state)

    async def start(self) -> None:
        """Join the cluster: take a lease, listen on this node's channel, run the timers. Does not wait for
        Redis: if it is down, the node starts unready and joins when it comes back."""
        with contextlib.suppress(*TRANSIENT, RedisError):
            await self._renew()
            self._live = await self.redis.zrangebyscore(f"{self.p}nodes", time.time(), "+inf")
        for job in (self._listen, self._publish_loop, self._timer_loop, self._housekeeping):
            self._tasks.append(asyncio.create_task(job(), name=f"peercall-broker-{job.__name__}"))
        log.info("node %s: sharing presence, routing and calls through Redis (lease %gs)", self.address, self.lease)

    def stop_timers(self) -> None:
        pass  # the cluster's timers: the other nodes' calls still need them, and one node runs them like any other

    async def stop(self) -> None:
        """Leave the cluster: the node's connections are already closed; give up the lease at once. Takes at most
        `_STOP_WITHIN` seconds in all: what is not done by then, the other nodes do when the lease runs out."""
        self._closing = True
        try:
            async with asyncio.timeout(_STOP_WITHIN):
                for _ in range(250):  # the disconnects of the connections that just closed are on their way
                    if not self._inflight:
                        break
                    await asyncio.sleep(0.02)
                with contextlib.suppress(*TRANSIENT, RedisError, SharedStateUnavailable):
                    await self._flush_outbox()
                    for cid, user in list(self._pending_leaves.items()):
                        await self._disconnect(cid, user, time.time())
                    await self._reap(self.address)
                    left = await self.redis.hlen(self._unwritten) if self._keep_records else 0
                    if left:  # the hub could not write them in time: the lease runs out, another node writes them
                        log.warning(
                            "node %s: %d ended calls are not written to the history yet; another node writes them "
                            "when this node's lease runs out",
                            self.address,
                            left,
                        )
                    else:
                        await self.redis.zrem(f"{self.p}nodes", self.address)
        except TimeoutError:
            log.warning(
                "node %s: could not leave the cluster within %gs; the other nodes take over its connections when "
                "its lease runs out",
                self.address,
                _STOP_WITHIN,
            )
        for task in (*self._tasks, *self._asked):
            task.cancel()
        if self._tasks:  # none if the broker was never started
            await asyncio.wait(self._tasks, timeout=2.0)  # each ends at once, or at its next turn (`_closing`)
        if self._pipe is not None:
            self._pipe.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self.redis.aclose(close_connection_pool=True)

    def hand_over(self, now: float) -> bytes | None:
        return None  # the calls are in Redis: they outlive the node (another takes them over, see `_reap`)

    def take_over(self, state: bytes) -> int:
        return 0

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.redis.ping(), 2)
        except (*TRANSIENT, RedisError, TimeoutError):
            self.healthy = False
        return self.healthy

    # --------------------------------------------------------------------------------- transactions

    async def _in_task(self, work: Awaitable[T]) -> T:
        """Await `work` inside a task if it may use redis-py. The WebSocket layer may start the hub's coroutines
        eagerly, outside any task (server/fastws.py saves a task per frame that way); redis-py's timeouts need
        one; the lean client (`self._pipe`) does not."""
        if self._pipe is None and asyncio.current_task() is None:
            return await asyncio.ensure_future(work)
        return await work

    async def _eval(self, script: str, numkeys: int, *args: Any) -> Any:
        """Run a script: through the lean client when there is one (EVALSHA), else redis-py's EVAL."""
        if self._pipe is not None:
            return await self._pipe.evalsha(script, numkeys, *args)
        return await self.redis.eval(script, numkeys, *args)

    async def _get(self, key: str) -> Any:
        return await (self.redis.get(key) if self._pipe is None else self._pipe.execute("GET", key))

    async def _transact(
        self,
        users: Iterable[str],
        call_ids: Iterable[str],
        run: Callable[[Switchboard, WelcomeLists | None], list[Effect]],
        *,
        welcome: _Welcome | None = None,
        settle: bool = True,
        owned: _Owned | None = None,
    ) -> list[Effect]:
        """Run `run` on the slice of state of `users` and `call_ids` (and of the calls and users they lead to),
        atomically: replayed if another node changed that slice before we wrote. ProtocolError passes through
        (nothing written).

        The first attempt runs on what this node knows of the slice (`_known`), if it knows all of it, without
        reading Redis; the change is then applied only if that is still the state (the same compare and set), and
        a ProtocolError on it is not trusted either: both are replayed on the state read.

        With `owned` (a call this node owns, whose `busy` its caller set: `_change`), the first attempt runs on its
        slice as the last change left it: no read, no slice to build. Any other change that touches a call this
        node owns makes it let go of it first (its slice would no longer be what Redis holds).

        Raises SharedStateInDoubt if the connection went while Redis had the change: made or not, it is settled
        when Redis is back (`_settle`) if it changed calls and `settle`; else SharedStateUnavailable."""
        if self._owned and owned is None:
            self._let_go(users, call_ids)
        self._inflight += 1
        sending = False  # the change is on its way to Redis: a lost connection leaves it in doubt
        try:
            for attempt in range(_TRIES):
                if owned is not None and attempt == 0:
                    sb, before = owned.sb, owned.before
                else:
                    if owned is not None:  # it was not what Redis holds: read, and own what the change leaves
                        self._disown(owned)
                        owned = None
                    sb, before = await self._load(set(users), set(call_ids), welcome, recall=attempt == 0)
                try:
                    effects = run(sb, before.welcome)
                except ProtocolError:
                    if not before.recalled:
                        raise
                    self.ops["retry"] += 1
                    continue
                commands = _Commands()
                self._write(commands, sb, before)
                ended: dict[str, str] = {}
                if self._keep_records:
                    for effect in effects:
                        if isinstance(effect, Record):  # kept with the change: if this node dies before it is
                            ended[effect.record.call_id] = record = _encode(effect).decode()  # written
                            commands.hset(self._unwritten, effect.record.call_id, record)
                for call_id in sb.calls.keys() - before.calls.keys():  # a new call: its key must not exist yet
                    before.versions.setdefault(self._call(call_id), "0")
                epoch = self._route_epoch
                checks = self._apply_args(before, commands.gone)
                sending = True
                applied = await self._eval(_APPLY, 2, f"{self.p}ver", f"{self.p}clock", *checks, *commands.args)
                sending = False
                if applied:
                    kept = self._keep_owned(sb, before, commands, str(applied), owned)
                    if kept is not None:
                        self._tell_owner(effects, kept)
                    else:
                        left = self._left(sb, before, commands, str(applied))
                        if owned is None:  # (the end of a call this node owned: the other nodes ask, not read)
                            self._tell(effects, left)
                    effects = await self._ring_late(effects, before)
                    self.ops["transaction"] += 1
                    self.healthy = True
                    # Wake the timer only for a deadline before its next look (it looks every _TIMER_POLL anyway):
                    # waking it after every change cost two more round trips per change.
                    for call in sb.calls.values():
                        deadline = call.deadline()
                        if deadline is not None and deadline < self._timer_at:
                            self._timer_wake.set()
                            break
                    routes = self._answered_routes(sb, before, epoch)  # before the forgets just below
                    for effect in effects:  # our connections whose call changed: forget their routes
                        if isinstance(effect, Send) and effect.message["type"] in CALL_CHANGED:
                            self.forget_route(effect.cid)
                    self._routes.update(routes)
                    return effects
                self.ops["retry"] += 1
                if attempt > 2:
                    await asyncio.sleep(random.uniform(0, 0.002 * attempt))
        except (*TRANSIENT, RedisError) as exc:
            # Not only a lost connection: Redis refusing writes (OOM, READONLY after a failover) fails the event
            # the same way. Nothing was written: `_APPLY` fails at its first write, before any other one.
            if owned is not None:  # its slice is changed, and maybe not in Redis
                self._disown(owned)
            self._unreachable(exc)
            if not sending or not isinstance(exc, TRANSIENT) or isinstance(exc, resp.NotSent):
                raise SharedStateUnavailable(str(exc)) from exc
            # The connection went while `_APPLY` was on it: Redis may have made the change before it went (seen in
            # the soak as Redis restarted: a call ended there, and nobody was told or wrote it).
            # (Without a history (`_keep_records`), an end leaves nothing to tell it by: not settled.)
            if settle and (ended or commands.calls):
                if len(self._in_doubt) < _IN_DOUBT_MAX:
                    doubt = _InDoubt(effects, before, ended, commands.calls)
                    self._in_doubt.append(doubt)
                    if not ended and self._placed(doubt):  # undone if it was made: nothing was done
                        raise SharedStateUnavailable(str(exc)) from exc
                else:
                    log.warning(
                        "node %s: %d changes in doubt already; this one is not settled", self.address, _IN_DOUBT_MAX
                    )
            raise SharedStateInDoubt(str(exc)) from exc
        except BaseException:
            if owned is not None:  # (a cancel while the change was on its way): its slice may be changed
                self._disown(owned)
            raise
        finally:
            self._inflight -= 1
        raise SharedStateUnavailable(f"gave up after {_TRIES} conflicting attempts")

    @staticmethod
    def _apply_args(before: _Loaded, gone: set[str]) -> list[str | int]:
        """`_APPLY`'s ARGV before the commands: the keys read with their versions, those the change leaves in place
        first (`gone`: those it deletes, as `_write` found)."""
        versions = before.versions
        keys = [key for key in versions if key not in gone]
        kept = len(keys)
        if gone:
            keys += [key for key in versions if key in gone]
        return [len(keys), kept, *keys, *[versions[key] for key in keys]]

    async def _ring_late(self, effects: list[Effect], before: _Loaded) -> list[Effect]:
        """Put back the `data` of the call-request of a stored call (kept apart, see `_write`) into the frames that
        ring a device of its callee that connected late. Read after the change (the data never changes), so it
        never raises: without the data, the device rings all the same."""
        late = [
            (i, e)
            for i, e in enumerate(effects)
            if isinstance(e, Forward)
            and e.env.type == "call-request"
            and e.env.data is UNSET
            and e.call_id in before.calls
        ]
        if not late:
            return effects
        try:
            keys = [self._calldata(forward.call_id) for _, forward in late]
            found = await (self.redis.mget(keys) if self._pipe is None else self._pipe.execute("MGET", *keys))
        except (*TRANSIENT, RedisError) as exc:  # the change is made: its effects must be performed all the same
            log.warning("could not read the data of a ringing call (%s); the late device rings without it", exc)
            return effects
        self.ops["read"] += 1
        effects = list(effects)
        for (i, forward), data in zip(late, found, strict=True):
            if data is not None:
                env = msgspec.structs.replace(forward.env, data=msgspec.Raw(data.encode()))
                effects[i] = msgspec.structs.replace(forward, env=env)
        return effects

    def _unreachable(self, exc: BaseException) -> None:
        if self.healthy:
            log.warning("Redis unreachable: %s", _named(exc))
        self.healthy = False

    async def _load(
        self, users: set[str], call_ids: set[str], welcome: _Welcome | None, *, recall: bool = False
    ) -> tuple[Switchboard, _Loaded]:
        """The slice of `users` and `call_ids`, and what it leads to: read from Redis (`_READ`), or, with `recall`
        and no welcome, what this node knows of it if it knows all of it (`before.recalled`)."""
        sb, before = self._slice(), _Loaded()
        user_keys, call_keys = [self._u(u) for u in sorted(users)], [self._call(c) for c in sorted(call_ids)]
        read = self._recall(user_keys, call_keys) if recall and welcome is None else None
        if read is not None:
            before.recalled = True
        else:
            keys = user_keys + call_keys
            args = [len(user_keys), f"{self.p}ver", self.p, _ACTIVE]
            if welcome is None or self.private:  # private: a welcome lists nobody
                read = await self._eval(_READ, len(keys), *keys, *args)
            else:
                read, lists = await self._eval(_READ_WELCOME, len(keys), *keys, *args, *_welcome_args(welcome))
            self.ops["read"] += 1
        keep = None if before.recalled else self._keep
        users_at, calls_at = len(self._u_at), len(self._call_at)  # where the id starts in "{p}u:{id}", "{p}call:{id}"
        for entry in read:  # from `_recall`, each also has the user's hash parsed, if this node parsed it
            key, value, version = entry[0], entry[1], entry[2]
            before.versions[key] = version
            if key.startswith(self._u_at):
                user = key[users_at:]
                parsed = entry[3] if before.recalled else None
                if parsed is None:
                    known = self._known.get(key)
                    parsed = _parse_user(user, value, None if known is None else known[3])
                devices, active, fields = parsed
                before.devices[user], before.active[user], before.stored[user] = devices, active, fields
                sb.load(list(devices.values()))
                if keep is not None:
                    keep(key, value, version, None if active is None else self._call(active), parsed)
            elif value is None:
                before.missing.add(key[calls_at:])
                if keep is not None:
                    keep(key, None, version, None)
            else:
                call = _decode_call(value)
                sb.add_call(call)
                before.calls[call.id] = (call.caller.user, call.callee_user)
                if call.state is CallState.RINGING:
                    before.ringing.add(call.id)
                if keep is not None:
                    keep(key, value, version, (self._u(call.caller.user), self._u(call.callee_user)))
        for user, active in before.active.items():
            if active is not None and active in sb.calls:
                sb.active[user] = active
        if welcome is not None and not self.private:
            before.welcome = _welcome_lists(welcome, lists)
        return sb, before

    # ------------------------------------------------------------------------- what a node knows

    def _keep(self, key: str, value: Any, version: str, links: Any, parsed: _Parsed | None = None) -> bool:
        """Remember that `key` held `value` at `version` (`links`: the keys it leads to, as `_READ` follows them;
        `parsed`: a user's hash as `_load` parses it, if at hand), unless a later version of it is known. Returns
        whether it was kept.

        A key that is gone (no value) is forgotten, and the version of the change that deleted it remembered for a
        while (`_gone`): what an older change left in it, told late by another node, is then not taken for news.
        (An ended call's STATE that came after the one of its answer brought back the route of a connection whose
        call had ended: its offers and candidates went on to the old peer.) Gone at version "0" (a read, or a node
        of the previous version) only forgets it."""
        known = self._known
        old = known.pop(key, None)
        if not value:
            if version != "0":
                gone = self._gone
                gone[key] = int(version)
                gone.move_to_end(key)
                if len(gone) > _GONE_MAX:
                    gone.popitem(last=False)
            return False
        if old is not None and int(old[1]) > int(version):
            known[key] = old
            return False
        if old is None and self._gone.get(key, 0) > int(version):
            return False  # deleted since
        known[key] = (value, version, links, parsed)
        if len(known) > _KNOWN_MAX:
            del known[next(iter(known))]  # the one changed longest ago
        return True

    def _recall(self, users: list[str], calls: list[str]) -> list[tuple[str, Any, str, _Parsed | None]] | None:
        """What `_READ` would return for these keys, from what this node knows (`_known`), each with the user's
        hash parsed if it is known so; None if it does not know every key the read would reach."""
        known, out, seen = self._known, [], set()
        pending = users + calls
        while pending:
            key = pending.pop()
            if key in seen:
                continue
            seen.add(key)
            hit = known.get(key)
            if hit is None:
                return None
            out.append((key, hit[0], hit[1], hit[3]))
            links = hit[2]  # a user's: its call's key or None; a call's: its parties' keys
            if isinstance(links, str):
                pending.append(links)
            elif links is not None:
                pending += links
        return out

    def _left(
        self, sb: Switchboard, before: _Loaded, commands: _Commands, version: str, into: _Loaded | None = None
    ) -> list[nodeframe.StateEntry]:
        """What a change applied at `version` left in every key it checked (as `_READ` reads it), remembered; and,
        with `into`, put there as `_load` would read it (the slice of a call this node owns, for its next change)."""
        left: list[nodeframe.StateEntry] = []
        users_at = len(self._u_at)
        for key in before.versions:
            if key.startswith(self._u_at):
                user = key[users_at:]
                stored = before.stored.get(user, {})
                fields: list[str] = []
                devices = sb.users.get(user, {})  # the switchboard's own, and it is done with: kept parsed as is
                if into is not None:  # it is not done with it (it goes on with the call): a copy
                    devices = dict(devices)
                if devices.keys() == stored.keys():  # most changes (a call's) connect or disconnect no device
                    now = stored
                    for item in stored.items():
                        fields += item
                else:
                    now = {}
                    for cid, device in devices.items():
                        now[cid] = as_stored = stored.get(cid) or _encode([device.device, device.named]).decode()
                        fields += (cid, as_stored)
                active = sb.active.get(user)
                if active is not None:
                    fields += (_ACTIVE, active)
                links = None if active is None else self._call(active)
                self._keep(key, fields, version, links, (devices, active, now))
                left.append((key, fields or None, version))  # gone: at this version
                if into is not None:
                    into.devices[user], into.active[user], into.stored[user] = devices, active, now
                    into.versions[key] = version
            else:
                value = commands.calls.get(key)
                call = sb.calls.get(key[len(self._call_at) :])
                if value is not None and call is not None:
                    self._keep(key, value, version, (self._u(call.caller.user), self._u(call.callee_user)))
                    left.append((key, value, version))
                    if into is not None:
                        into.calls[call.id] = (call.caller.user, call.callee_user)
                        if call.state is CallState.RINGING:
                            into.ringing.add(call.id)
                        into.versions[key] = version
                else:
                    self._keep(key, None, version, None)
                    left.append((key, None, version))  # (a node of the previous version reads "gone" only)
        return left

    def _tell(self, effects: list[Effect], left: list[nodeframe.StateEntry]) -> None:
        """Send what a change `left` to the nodes its effects go to (a STATE frame, ahead of their frames), so that
        the change they answer needs no read."""
        # Loops written out (no comprehension, no `any` generator, `address_of` inline): once per change.
        ours = self.cid_prefix
        addresses: set[str] = set()
        for e in effects:
            if isinstance(e, (Send, Forward)) and not e.cid.startswith(ours):
                addresses.add(e.cid.rpartition(".")[0])
        if not addresses:
            return
        for _, value, _ in left:
            if isinstance(value, list) and len(value) > nodeframe.MAX_STATE_FIELDS:
                return  # a user with thousands of devices: the other node reads (a call's JSON is no list of fields)
        piece = nodeframe.packed("", nodeframe.STATE, nodeframe.encode_state(left))
        for address in addresses:
            self._queue(self._to_at + address, piece)

    def _learn(self, text: str) -> None:
        """What another node's change left (a STATE frame): remember it; and where the peer of a connection of ours
        is, if that change answered its call (so that its first `offer` or `answer` needs no read). Never raises:
        what cannot be read is dropped."""
        try:
            for key, value, version in nodeframe.decode_state(text):
                if isinstance(value, list) and key.startswith(self._u_at):
                    # parsed now, from what this node parsed of the same devices before (a call's change leaves
                    # them as they were): the change that answers this one then parses nothing (`_load`)
                    known = self._known.get(key)
                    parsed = _parse_user(key[len(self._u_at) :], value, None if known is None else known[3])
                    active = parsed[1]
                    self._keep(key, value, version, None if active is None else self._call(active), parsed)
                elif value is None:
                    self._keep(key, None, version, None)  # gone, since the change at `version`
                elif not isinstance(value, str) or not key.startswith(self._call_at):
                    self._keep(key, None, "0", None)
                elif self.cid_prefix in value and _ANSWERED in value:  # a call of ours answered: where the peer is
                    call = _decode_call(value)
                    if self._keep(key, value, version, (self._u(call.caller.user), self._u(call.callee_user))):
                        self._route_answered(call)
                else:
                    parties = _decode_parties(value)
                    self._keep(key, value, version, (self._u(parties.caller.user), self._u(parties.callee_user)))
        except (nodeframe.BadNodeFrame, msgspec.MsgspecError, ValueError, TypeError, IndexError) as exc:  # newer?
            log.warning("node %s: dropped what another node said of its change: %s", self.address, exc)

    def _route_answered(self, call: Call) -> None:
        """Remember the routes of our connections in `call` if it is answered with both parties there."""
        for cid, route in _routes_of(call):
            if cid in self._local:
                self._routes[cid] = route

    def _write(self, pipe: _Commands, sb: Switchboard, before: _Loaded) -> None:
        p = self.p
        empty: dict[str, Device] = {}
        for user, old in before.devices.items():
            new = sb.users.get(user, empty)
            key = self._u_at + user
            if old.keys() != new.keys():  # most changes (a call's) connect or disconnect no device
                for cid in old.keys() - new.keys():
                    pipe.hdel(key, cid)
                    pipe.hdel(self._n(self.address_of(cid)), cid)
                for cid in new.keys() - old.keys():
                    device = new[cid]
                    pipe.hset(key, cid, _encode([device.device, device.named]))
                    pipe.hset(self._n(self.address_of(cid)), cid, user)
            if old and not new:
                pipe.zrem(f"{p}online", user)
                if user in sb.last_seen:
                    pipe.zadd(f"{p}seen", {user: sb.last_seen[user]})
                    pipe.zremrangebyrank(f"{p}seen", 0, -_SEEN_KEPT - 1)
            elif new and not old:
                pipe.zadd(f"{p}online", {user: 0})
                pipe.zrem(f"{p}seen", user)
            active = sb.active.get(user)
            if active != before.active.get(user):
                if active is None:
                    pipe.hdel(key, _ACTIVE)
                else:
                    pipe.hset(key, _ACTIVE, active)
            if active is None and not new:
                pipe.gone.add(key)  # no device and no call: the hash is gone
        for call_id in before.calls:
            if call_id not in sb.calls:  # it ended
                key = self._call_at + call_id
                pipe.gone.add(key)
                pipe.delete(key)  # its version goes with it (`_APPLY`): a call id is never used again
                if call_id in before.ringing:  # an answered call's went when it was answered (or expired)
                    pipe.delete(self._calldata(call_id))
                pipe.zrem(f"{p}due", call_id)
                pipe.hdel(f"{p}callstate", call_id)
        for call_id, (caller, callee) in sb.ended_calls.items():  # its parties may send their call-summary
            pipe.set(f"{p}ended:{call_id}", f"{caller} {callee}", ex=_ENDED_TTL)
            pipe.zadd(f"{p}endedat", {call_id: time.time()})  # (the housekeeping keeps the newest: `_TRIM_ENDED`)
        for call_id in before.missing:
            pipe.gone.add(self._call_at + call_id)
            pipe.zrem(f"{p}due", call_id)
            pipe.hdel(f"{p}callstate", call_id)
        for call_id, call in sb.calls.items():
            if call.request.data is not UNSET:  # a new call (or one a node of an older version stored whole)
                if call.state is CallState.RINGING:
                    ex = int(self.ring_timeout + self.resume_grace) + 60
                    pipe.set(self._calldata(call_id), bytes(call.request.data), ex=ex)
                # Encoded with the request swapped for one without its data, and put back (the switchboard's call
                # is read again after this: `_left`, `_answered_routes`): `dataclasses.replace` cost ~3 µs.
                request = call.request
                call.request = msgspec.structs.replace(request, data=UNSET)
                try:
                    value = _encode(call).decode()
                finally:
                    call.request = request
            else:
                if call_id in before.ringing and call.state is not CallState.RINGING:
                    pipe.delete(self._calldata(call_id))  # answered: no device will ring for it any more
                value = _encode(call).decode()
            key = self._call(call_id)
            pipe.set(key, value)
            pipe.calls[key] = value
            deadline = call.deadline()
            if deadline is None:
                pipe.zrem(f"{p}due", call_id)
            else:
                pipe.zadd(f"{p}due", {call_id: deadline})
            pipe.hset(f"{p}callstate", call_id, call.state.value)
            if call.state is CallState.ANSWERED:
                pipe.sadd(f"{p}incall", call.caller.user, call.callee_user)
        # a user is in at most one call: the one that just ended (both of its parties in one command)
        left_call = [user for user in before.devices if user not in sb.active and before.active.get(user) is not None]
        if left_call:
            pipe.srem(f"{p}incall", *left_call)

    # ------------------------------------------------------------------------------------ the events

    async def connect(
        self, cid: str, user: str, device: str | None, now: float, *, view: View | None = None
    ) -> list[Effect]:
        join = self._transact(
            [user],
            [],
            lambda sb, lists: sb.connect(cid, user, device, now, lists=lists, view=view),
            welcome=_Welcome(user, view),
            settle=False,  # the hub closes a connection whose join failed: there is nothing to finish
        )
        try:
            effects = await self._in_task(join)
        except SharedStateInDoubt:
            self._pending_leaves[cid] = user  # Redis may have registered it: taken back when Redis is back
            raise
        self._local[cid] = (user, device)
        return effects

    async def disconnect(self, cid: str, user: str, now: float, *, final: bool = False) -> list[Effect]:
        self._local.pop(cid, None)
        self.forget_route(cid)
        self._forgot.pop(cid, None)
        try:
            return await self._in_task(self._disconnect(cid, user, now, final=final))
        except SharedStateUnavailable:
            self._pending_leaves[cid] = user  # told to Redis when it is back (housekeeping)
            raise

    async def _disconnect(self, cid: str, user: str, now: float, *, final: bool = False) -> list[Effect]:
        effects = await self._transact([user], [], lambda sb, _: sb.disconnect(cid, now, final=final))
        self._pending_leaves.pop(cid, None)
        return effects

    def _routed(self, cid: str, env: Envelope) -> tuple[str, str] | None:
        """`Broker.route`: where a peer frame from `cid` goes, if this node knows its route (what `receive` forwards
        at once); None if it does not (the hub then hands it to `receive`, which reads the call)."""
        route = self._routes.get(cid)
        if route is not None and env.callId in (None, route.call_id) and env.to in (None, route.peer):
            return route.peer_cid, route.call_id
        return None

    async def receive(
        self, cid: str, user: str, env: Envelope, now: float, *, screen: Screen | None = None
    ) -> list[Effect]:
        """A valid frame from a connection of this node. Raises ProtocolError, or SharedStateUnavailable."""
        kind = env.type
        if kind in PEER_FRAMES:  # where the peer is, remembered (Redis only the first time)
            to = self._routed(cid, env)  # the hub asks this first (`route`), so mostly it is not known here
            if to is not None:
                return [Forward(to[0], env, user, to[1])]
            return await self._in_task(self._media_slow(cid, user, env, now))
        asked: str | None = None  # the call whose owner was asked and may have done it (it answered too late)
        if self._owners:  # its call is owned by another node: asked of it
            owner = self._owners.get(cid)
            if owner is not None and (
                (kind in _ASKED_OF_OWNER and env.callId in (None, owner[0]))
                or (kind == "call-request" and env.to == owner[2])
            ):
                # asked of that call, whatever comes after it (a call-request: only to answer that one, glare)
                pinned = env if env.callId is not None else msgspec.structs.replace(env, callId=owner[0])
                try:
                    done = await self._ask(owner[1], cid, user, pinned)
                except ProtocolError as exc:
                    if exc.code is not ErrorCode.NOT_IN_CALL or env.callId is not None:
                        raise
                    done = False  # the call it was pinned to is over: the frame may be about another one
                if not isinstance(done, bool):
                    return done
                if done:
                    asked = owner[0]
                    if kind != "call-request":  # (a call-request found not done places a call, as sent)
                        env = pinned
                else:  # made here: the owner no longer holds it, or is gone
                    self._owners.pop(cid, None)
        users = [user]
        if kind == "call-request" and env.to is not None:  # (charged to the call rate by the hub, once)
            users.append(env.to)

        def apply(sb: Switchboard, _: Any) -> list[Effect]:
            if cid not in sb.devices:
                # Redis no longer has this connection: another node reaped it while this node's lease could not
                # be renewed (Redis down for longer than the lease). The client connects again and is registered
                # afresh (its call resumes within the grace), as after Redis was unreachable (close 1013).
                return [Close(cid, CloseCode.TRY_AGAIN_LATER, "this node lost its registration; connect again")]
            if asked is not None and _done_already(sb, cid, env, asked):
                return []  # by the owner, which answered too late: its effects are performed there
            return sb.receive(cid, env, now, screen)

        return await self._in_task(self._receive(users, apply))

    async def decline(self, call_id: str, callee: str, now: float) -> list[Effect]:
        """Raises SharedStateUnavailable."""
        work = self._transact([callee], [call_id], lambda sb, _: sb.decline(call_id, callee, now))
        return await self._in_task(work)

    async def _media_slow(self, cid: str, user: str, env: Envelope, now: float) -> list[Effect]:
        """Read the sender's call (no transaction: nothing changes), check the frame, remember the route."""
        epoch = self._route_epoch
        try:
            raw = await self._eval(_READ_CALL, 1, self._u(user), f"{self.p}call:", _ACTIVE)
        except (*TRANSIENT, RedisError) as exc:
            self.healthy = False
            raise SharedStateUnavailable(str(exc)) from exc
        self.ops["read"] += 1
        sb = self._slice()
        sb.load([Device(cid, user, "", False)])
        if raw is not None:
            call = _decode_call(raw)
            sb.calls[call.id] = call
            sb.active[user] = call.id
        effects = sb.receive(cid, env, now)  # raises not-in-call like on one node
        if effects and self._current(cid, epoch):
            forward = effects[0]
            assert isinstance(forward, Forward)
            peer = sb.calls[forward.call_id]
            other = peer.callee_user if user == peer.caller.user else peer.caller.user
            self._routes[cid] = _Route(forward.call_id, other, forward.cid)
        return effects

    def _answered_routes(self, sb: Switchboard, before: _Loaded, epoch: int) -> dict[str, _Route]:
        """The routes of our connections in a call this change answered, to remember: their first `offer` or
        `answer` then needs no read (`_media_slow` would find the same: the call as it is now, both parties
        there). `epoch`: `_route_epoch` when the change was sent."""
        routes = {}
        for call in sb.calls.values():
            if call.id in before.ringing:
                for cid, route in _routes_of(call):
                    if self._current(cid, epoch):
                        routes[cid] = route
        return routes

    def _current(self, cid: str, epoch: int) -> bool:
        """Whether a route of `cid` read when `_route_epoch` was `epoch` may be remembered: the connection is ours
        and still here, and its route was not forgotten since."""
        return cid in self._local and self._forgot.get(cid, 0) <= epoch

    def forget_route(self, cid: str) -> None:
        self._route_epoch += 1
        self._routes.pop(cid, None)
        if self._owners:
            self._owners.pop(cid, None)
        if cid in self._local:
            self._forgot[cid] = self._route_epoch

    # ---------------------------------------------------------------------------- calls a node owns

    async def _receive(self, users: list[str], run: Callable[[Switchboard, Any], list[Effect]]) -> list[Effect]:
        """A frame of `users[0]` (about `users[1]` too, for a call-request): on the slice of the call this node owns
        for them, if it holds all of them; else on what Redis holds."""
        owned = self._owned_by.get(users[0]) if self._owned_by else None
        if owned is not None and all(u in owned.before.devices for u in users):
            return await self._change(users, [], run, owned)
        return await self._transact(users, [], run)

    def _keep_owned(
        self, sb: Switchboard, before: _Loaded, commands: _Commands, version: str, owned: _Owned | None
    ) -> _Owned | None:
        """After a change applied at `version`: if its slice holds one call and that call's caller is connected
        here, keep the slice as the change left it, to run that call's next change on (`owned`: the one it ran
        on, if any); else let go of `owned`. Remembers what the change left either way (`_left`)."""
        calls = sb.calls
        call = next(iter(calls.values())) if len(calls) == 1 else None
        caller = None if call is None else call.caller.cid
        if (
            call is None
            or caller not in self._local
            or commands.gone
            or before.missing
            or (owned is not None and self._owned.get(owned.call_id) is not owned)  # let go of while on its way
        ):
            if owned is not None:
                self._disown(owned)
            return None
        into = _carried(sb, before, version)
        if into is None:  # it connected or disconnected a device: as `_load` would parse it
            into = _Loaded(recalled=True)
            self._left(sb, before, commands, version, into)
        if owned is None:
            owned = _Owned(sb, into, call.id)
            if call.request.data is not UNSET:  # stored apart (`_write`): the next change must not store it again
                call.request = msgspec.structs.replace(call.request, data=UNSET)
        else:
            owned.before = into
        sb.ended_calls.clear()
        sb.last_seen.clear()
        self._owned[call.id] = owned
        for user, call_id in sb.active.items():
            if call_id == call.id:
                self._owned_by[user] = owned
        return owned

    def _disown(self, owned: _Owned) -> None:
        if self._owned.get(owned.call_id) is owned:
            del self._owned[owned.call_id]
        for user in owned.before.devices:
            if self._owned_by.get(user) is owned:
                del self._owned_by[user]

    def _let_go(self, users: Iterable[str], call_ids: Iterable[str]) -> None:
        """A change is about to be made on what Redis holds of `users` and `call_ids`: the calls this node owns that
        it touches are no longer what their slices hold."""
        for user in users:
            owned = self._owned_by.get(user)
            if owned is not None:
                self._disown(owned)
        for call_id in call_ids:
            owned = self._owned.get(call_id)
            if owned is not None:
                self._disown(owned)

    async def _change(
        self,
        users: list[str],
        call_ids: list[str],
        run: Callable[[Switchboard, WelcomeLists | None], list[Effect]],
        owned: _Owned,
    ) -> list[Effect]:
        """`_transact` on the slice of a call this node owns: one change of it at a time (its slice is changed in
        place: the next one runs on what this one left)."""
        while (busy := owned.busy) is not None:
            await asyncio.wait((busy,))  # (not `await busy`: a waiter cancelled would cancel it for all)
        if self._owned.get(owned.call_id) is not owned:  # let go of meanwhile
            return await self._transact(users, call_ids, run)
        owned.busy = done = asyncio.get_running_loop().create_future()
        try:
            return await self._transact(users, call_ids, run, owned=owned)
        finally:
            owned.busy = None
            done.set_result(None)

    def _tell_owner(self, effects: list[Effect], owned: _Owned) -> None:
        """Tell the node of each connection a change of a call this node owns rings that this node owns it
        (OWNER, ahead of the call-request): its accept, reject or hangup is then asked of this node."""
        ours = self.cid_prefix
        for e in effects:
            if isinstance(e, Forward) and e.env.type == "call-request" and not e.cid.startswith(ours):
                caller = owned.sb.calls[owned.call_id].caller.user
                told = f"{e.cid} {owned.call_id} {self.address} {caller}"
                self._queue(self._to_at + e.cid.rpartition(".")[0], nodeframe.packed("", nodeframe.OWNER, told))

    async def _ask(self, owner: str, cid: str, user: str, env: Envelope) -> list[Effect] | bool:
        """Have `owner`, the node that owns the call of `cid`, carry out `env` (ASK). Returns what this node
        performs (nothing: the owner did); or, if this node is to make the change itself, False when the owner did
        nothing (it is not alive, no longer holds the connection, or could not reach Redis), True when it may have
        (it did not answer within _ASK_WITHIN s, or answered what this node cannot read). Raises what the change
        raised there."""
        if owner not in self._live:
            return False
        self._ask_seq += 1
        ask = self._ask_seq
        self.asks["asked"] += 1
        loop = asyncio.get_running_loop()
        answer = self._asks[ask] = loop.create_future()
        epoch = self._route_epoch
        text = f"{ask} {cid} {user}\n{msgspec.json.encode(env).decode()}"
        self._queue(self._to_at + owner, nodeframe.packed("", nodeframe.ASK, text))
        # (a loop timer, not asyncio.timeout: the hub may run this outside any task, see `_in_task`)
        timer = loop.call_later(_ASK_WITHIN, _answer_late, answer)
        try:
            said = await answer
        finally:
            timer.cancel()
            self._asks.pop(ask, None)
        outcome, _, rest = said.partition(" ")
        if outcome == "late":
            self.asks["late"] += 1
            log.warning(
                "node %s: node %s did not answer within %gs; making the change here", self.address, owner, _ASK_WITHIN
            )
            return True
        try:
            if outcome == "ok":
                if rest:  # it answered our call: where the peer is
                    call_id, peer, peer_cid = rest.split(" ")
                    if self._current(cid, epoch):
                        self._routes[cid] = _Route(call_id, peer, peer_cid)
                return []
            if outcome == "err":
                code, message, ref, to, call_id = msgspec.json.decode(rest)
                error = ProtocolError(ErrorCode(code), message, ref=ref, to=to, call_id=call_id)
        except (ValueError, TypeError, msgspec.MsgspecError) as exc:  # (a node of a newer version)
            log.warning(
                "node %s: could not read node %s's answer (%s); making the change here", self.address, owner, exc
            )
            return True
        if outcome == "err":
            raise error
        if outcome == "doubt":
            raise SharedStateInDoubt("the call's owner lost Redis with the change on its way")
        if outcome in ("redo", "down"):  # the owner wrote nothing: this node may reach Redis
            self.asks["redo"] += 1
            return False
        self.asks["late"] += 1  # (it failed there, or a newer node's word): made or not
        return True

    def _owner_frame(self, kind: str, text: str) -> None:
        """An OWNER, ASK or ASKED frame (hub/nodeframe.py). Never raises: what cannot be read is dropped."""
        try:
            if kind == nodeframe.ASKED:
                ask, _, said = text.partition(" ")
                answer = self._asks.get(int(ask))
                if answer is not None and not answer.done():
                    answer.set_result(said)
            elif kind == nodeframe.OWNER:
                cid, call_id, owner, caller = text.split(" ")
                local = self._local.get(cid)
                if local is not None:
                    self._owners[cid] = (call_id, owner, caller)
                    if owner not in self._live:  # it just spoke: alive (it joined since the housekeeping looked)
                        self._live.append(owner)
                    # the owner tells no other node what its changes leave: what this one knows of the callee
                    # goes stale, and a read costs less than a compare and set that fails first
                    self._known.pop(self._u(local[0]), None)
            else:
                head, _, frame = text.partition("\n")
                ask, cid, user = head.split(" ")
                task = asyncio.create_task(self._carry_out(ask, cid, user, _decode_envelope(frame)))
                self._asked.add(task)
                task.add_done_callback(self._asked.discard)
        except (ValueError, TypeError, msgspec.MsgspecError) as exc:
            log.warning("node %s: dropped a frame of another node about a call it owns: %s", self.address, exc)

    async def _carry_out(self, ask: str, cid: str, user: str, env: Envelope) -> None:
        """Carry out a frame that connection `cid` of another node sent about a call this node owns (ASK), perform
        its effects, and answer (ASKED, after the frames those effects sent that node)."""
        now = time.time()
        users = [user]
        if env.type == "call-request" and env.to is not None:
            users.append(env.to)

        def apply(sb: Switchboard, _: Any) -> list[Effect]:
            if cid not in sb.devices:
                raise _Redo
            if env.type == "call-request":  # only to answer the call that rings it (glare): the asking node screens
                call = sb.calls.get(sb.active.get(user, ""))  # a new call, which it did not send here
                if call is None or call.state is not CallState.RINGING or call.caller.user != env.to:
                    raise _Redo
                if env.callId is not None and call.id != env.callId:  # asked of another call (an ASK held long)
                    raise _Redo
                env_now = msgspec.structs.replace(env, callId=None)
                return sb.receive(cid, env_now, now)
            return sb.receive(cid, env, now)

        try:
            effects = await self._receive(users, apply)
        except _Redo:
            said = "redo"
        except ProtocolError as exc:
            said = "err " + msgspec.json.encode([exc.code.value, exc.message, exc.ref, exc.to, exc.call_id]).decode()
        except SharedStateInDoubt:
            said = "doubt"
        except SharedStateUnavailable:
            said = "down"
        except Exception:  # (a bug): made or not, the asking node looks before it makes it (`_done_already`)
            log.exception("node %s: carrying out another node's %s failed", self.address, env.type)
            said = "failed"
        else:
            await self.events.perform(effects)
            said = "ok"
            owned = self._owned_by.get(user)
            call = None if owned is None else owned.sb.calls.get(owned.call_id)
            for party, route in () if call is None else _routes_of(call):
                if party == cid:  # it answered the asker's call: where its peer is
                    said = f"ok {route.call_id} {route.peer} {route.peer_cid}"
        self._queue(self._to_at + cid.rpartition(".")[0], nodeframe.packed("", nodeframe.ASKED, f"{ask} {said}"))

    async def recorded(self, call_ids: list[str]) -> None:
        if not self._keep_records or not call_ids:
            return
        try:
            await self._forget_records(call_ids)
        except (*TRANSIENT, RedisError):
            # Left in Redis until the housekeeping tries again; if this node died meanwhile, another would write
            # them again, which the history ignores (it keeps a call once). Bounded: no call ends while Redis is
            # unreachable, so only those on their way when it went can be here.
            if len(self._recorded_later) < _RECORDED_LATER_MAX:
                self._recorded_later.update(call_ids)

    async def _forget_records(self, call_ids: list[str]) -> None:
        if self._pipe is not None:
            await self._pipe.execute("HDEL", self._unwritten, *call_ids)
        else:
            await self.redis.hdel(self._unwritten, *call_ids)

    async def _adopt_records(self, address: str) -> None:
        """Write the records of the calls that node `address`, dead, ended but had not written yet: take them over
        (ours to let go of once written, as if we had ended them), then hand them to the hub. A record the dead node
        wrote just before it died is written again, which the history ignores (idempotent on the call id)."""
        theirs = f"{self.p}unwritten:{address}"
        entries = await self.redis.hgetall(theirs)
        if not entries:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            if self._keep_records:
                pipe.hset(self._unwritten, mapping=entries)
            pipe.delete(theirs)
            await pipe.execute()
        if not self._keep_records:
            return
        records: list[Effect] = []
        for call_id, value in entries.items():
            try:
                records.append(_decode_record(value))
            except (msgspec.MsgspecError, ValueError, TypeError) as exc:  # a newer node's: dropped, not fatal
                log.warning(
                    "node %s: could not read the record of call %s that node %s left: %s",
                    self.address,
                    call_id,
                    address,
                    exc,
                )
        log.warning("node %s had not written %d ended call(s) to the history: writing them", address, len(records))
        await self.events.perform(records)

    async def summary(self, cid: str, user: str, env: Envelope) -> None:
        assert env.callId is not None
        check_summary(user, env, await self.ended_call(env.callId))

    async def ended_call(self, call_id: str) -> tuple[str, str] | None:
        """The parties of a call that ended lately (on any node), or None."""
        try:
            value = await self._in_task(self._get(f"{self.p}ended:{call_id}"))
        except (*TRANSIENT, RedisError) as exc:
            raise SharedStateUnavailable(str(exc)) from exc
        self.ops["read"] += 1
        if value is None:
            return None
        caller, _, callee = value.partition(" ")
        return caller, callee

    # -------------------------------------------------------------------------------------- routing

    def send(self, cid: str, kind: str, text: str) -> None:
        """Queue a frame for a connection of another node, on that node's channel (published in batches)."""
        address = cid.rpartition(".")[0]  # address_of, inline: once per frame that crosses nodes
        if address == self.address:
            return  # ours, and already gone
        # `_queue` and `nodeframe.packed`, inline: once per frame that crosses nodes (tests/unit/test_broker_seam.py
        # checks that the piece is `packed`'s)
        piece = f"{len(cid) + len(text) + 2}:{kind}{cid}\n{text}"
        channel, outbox = self._to_at + address, self._outbox
        pieces = outbox.get(channel)
        if pieces is not None:
            pieces.append(piece)
            return
        if not outbox:
            self._outbox_ready.set()
        outbox[channel] = [piece]

    def _queue(self, channel: str, piece: str) -> None:
        """Queue a packed frame (`nodeframe.packed`, or `pack` of one) for a channel: `_publish_loop` sends it.
        `_outbox_ready` is set when the outbox was empty: `_publish_loop` clears it only as it takes the outbox
        (`_flush_outbox_now` then takes all that is queued until it is empty again)."""
        outbox = self._outbox
        pieces = outbox.get(channel)
        if pieces is not None:
            pieces.append(piece)
            return
        if not outbox:
            self._outbox_ready.set()
        outbox[channel] = [piece]

    async def presences(self, users: Collection[str]) -> dict[str, Presence]:
        """Each of `users`' presence now (one Lua read: `online`, `incall`, `seen`). Raises SharedStateUnavailable."""
        ids = list(dict.fromkeys(users))
        if not ids:
            return {}
        found = await self._read(_PRESENCES, self.p, *ids)
        return {user: _presence(user, *state) for user, state in zip(ids, found, strict=True)}

    async def online_page(self, prefix: str, after: str | None, limit: int) -> list[Presence]:
        """Users online whose id starts with `prefix`, after `after` (ZRANGEBYLEX on `online`: at most `limit`
        read). Raises SharedStateUnavailable."""
        if limit <= 0:
            return []
        start = f"({after}" if after is not None and after >= prefix else f"[{prefix}"
        flat = await self._read(_ONLINE_PAGE, self.p, start, limit)
        page = []
        for user, in_call in zip(flat[::2], flat[1::2], strict=True):
            if not user.startswith(prefix):
                break  # in id order, those with the prefix come together: the rest of the page has none
            page.append(Presence(user, "online", in_call=bool(in_call)))
        return page

    async def _read(self, script: str, *args: str | int) -> Any:
        """Run a script that only reads (nothing is checked or written)."""
        try:
            found = await self._in_task(self._eval(script, 0, *args))
        except (*TRANSIENT, RedisError) as exc:
            self._unreachable(exc)
            raise SharedStateUnavailable(str(exc)) from exc
        self.ops["read"] += 1
        return found

    def circles_changed(self, users: list[str]) -> None:
        """Tell every node (this one too) that these users' circles changed."""
        self._queue(self._everyone, nodeframe.pack([nodeframe.encode_circles(users)]))

    def close_user(self, user: str, code: int, reason: str, *, sign_in: str | None = None) -> None:
        """Have every node (this one too) close its connections of `user` (of that sign-in only, if given)."""
        self._queue(self._everyone, nodeframe.pack([nodeframe.encode_close_user(user, code, reason, sign_in)]))

    def presence(self, change: Presence) -> None:
        """Tell every node (this one too) of a presence change; each batches it for its own connections."""
        self._queue(self._everyone, nodeframe.pack([nodeframe.encode_presence(change)]))

    async def _publish_loop(self) -> None:
        while not self._closing:  # stop() cancels us too, but redis-py may turn a cancel into an error
            if self._held:  # and look again soon for the node they wait for
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_HELD_RETRY):
                        await self._outbox_ready.wait()
            else:
                await self._outbox_ready.wait()
            self._outbox_ready.clear()
            try:
                await self._flush_outbox()
            except (*TRANSIENT, RedisError) as exc:
                self.healthy = not isinstance(exc, TRANSIENT)
                lost = sum(map(len, self._outbox.values()))
                self._outbox.clear()
                log.warning("could not publish (%s): %d frames for other nodes were lost", exc, lost)
                await asyncio.sleep(0.5)

    async def _flush_outbox(self) -> None:
        """Publish what waits, one message per channel: the frames queued meanwhile for one node travel together
        (under load, the per-message cost of Pub/Sub on both sides, not Redis, is what limits a cluster)."""
        async with self._publishing:
            await self._flush_outbox_now()

    async def _flush_outbox_now(self) -> None:
        if self._held and time.monotonic() - self._held_tried >= _HELD_RETRY:  # before what follows them
            await self._publish_held()
        while self._outbox:
            outbox, self._outbox = self._outbox, {}
            held = self._held
            commands = []
            for channel, pieces in outbox.items():
                for i in range(0, len(pieces), _BATCH_MAX):
                    message = "".join(pieces[i : i + _BATCH_MAX])
                    if channel in held:  # behind what waits for that node
                        self._hold(channel, message, time.monotonic())
                    else:
                        commands.append(("PUBLISH", channel, message))
            self._published(commands, await self._publish(commands))
            if self._unheard:
                await self._hold_unheard()

    async def _publish(self, commands: list[tuple[str, str, str]]) -> list[Any]:
        """PUBLISH each of `commands`: how many subscribers each reached."""
        if not commands:
            return []
        if self._pipe is not None:  # on the connection the transitions go on: after the change they follow
            replies = await self._pipe.pipeline(commands)
            self.ops["publish"] += 1
            return replies
        # One connection of its own, written to directly: a pipeline object per batch costs more Python than the
        # round trip (and keeps the order of frames between two nodes, since one connection carries all).
        if self._pub_conn is None:
            self._pub_conn = await self.redis.connection_pool.get_connection()
        conn = self._pub_conn
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies = [await conn.read_response() for _ in commands]
        except BaseException:
            self._pub_conn = None
            await conn.disconnect()
            await self.redis.connection_pool.release(conn)
            raise
        self.ops["publish"] += 1
        return replies

    def _published(self, commands: list[tuple[str, str, str]], replies: list[Any]) -> None:
        """Hold the messages for a node that reached no one: its subscription is down for a moment (Redis cut it
        off as too slow, or its connection dropped, or Redis restarted and it has not subscribed again yet), and
        it would lose them: a call that rang the caller and never the callee. Those for every node that fewer
        nodes heard than are alive are held too, for the nodes that did not (`_hold_unheard`): a presence change
        missed was a contact shown offline for good."""
        now, everyone, live = time.monotonic(), self._everyone, len(self._live)
        for (_, channel, message), reached in zip(commands, replies, strict=True):
            if channel == everyone:
                if reached < live:
                    self._short = True
                    self._unheard.append(message)
                elif self._held:  # what waits for a node was sent before this: it must not overtake it there
                    self._unheard.append(message)
            elif reached == 0:
                self._hold(channel, message, now)

    async def _hold_unheard(self) -> None:
        """Hold the messages for every node published lately (`_unheard`), as EVERYONE node frames on its own
        channel, for each node that may not have heard them, in order with what else waits for it: a node that
        something waits for already (what it hears now would overtake that: a presence it gets late would undo a
        newer one), and, if one reached fewer nodes than are alive, each live node not listening now (its own
        channel has no subscriber: one PUBSUB NUMSUB). A node may so hear a change twice, the last one last. (A
        node that died without a word is alive until its lease runs out; what waits for it is dropped after
        _HELD_FOR. One that listens again between the PUBLISH and this look is taken for one that heard: rare, and
        it misses them, as before. A node that Redis cut off as too slow has lost what its buffer held.) Never
        raises: if Redis cannot say who listens, they wait for the next flush (at most _UNHEARD_MAX)."""
        deaf = set(self._held)
        if self._short:
            channels = [self._to_at + address for address in self._live]
            try:
                if self._pipe is not None:
                    flat = await self._pipe.execute("PUBSUB", "NUMSUB", *channels)
                    counts = list(zip(flat[::2], flat[1::2], strict=True))
                else:
                    counts = await self.redis.pubsub_numsub(*channels)
            except (*TRANSIENT, RedisError) as exc:
                if len(self._unheard) > _UNHEARD_MAX:
                    log.warning(
                        "node %s: %d messages for every node may be missed by nodes that did not hear them (%s)",
                        self.address,
                        len(self._unheard) - _UNHEARD_MAX,
                        exc,
                    )
                    del self._unheard[:-_UNHEARD_MAX]
                return
            self.ops["read"] += 1
            deaf.update(channel for channel, listening in counts if not int(listening))
        unheard, self._unheard, self._short = self._unheard, [], False
        if not deaf:
            return
        now = time.monotonic()
        for message in unheard:
            held = "".join(nodeframe.packed("", nodeframe.EVERYONE, frame) for frame in nodeframe.unpack(message))
            for channel in sorted(deaf):
                self._hold(channel, held, now)

    def _hold(self, channel: str, message: str, since: float) -> None:
        """Keep `message` for the node of `channel` until a PUBLISH of it reaches it (`_publish_held`), within
        `_HELD_MAX` characters for all nodes: beyond, that node's oldest are dropped (lost, and logged)."""
        held = self._held.get(channel)
        if held is None:
            held = self._held[channel] = collections.deque()
        held.append((since, message))
        self._held_size += len(message)
        dropped = 0
        while self._held_size > _HELD_MAX and held:
            self._held_size -= len(held.popleft()[1])
            dropped += 1
        if dropped:
            log.warning(
                "node %s: %d messages for node %s were lost: too much waits for it",
                self.address,
                dropped,
                channel[len(self._to_at) :],
            )
        if not held:
            del self._held[channel]

    async def _publish_held(self) -> None:
        """Publish again what waits for nodes whose subscription was down: for each, its oldest message first;
        once one reaches the node, all the others, in order. A node that has not subscribed again within
        `_HELD_FOR` seconds loses them (logged): it is gone, or its connections are."""
        now = self._held_tried = time.monotonic()
        for channel, held in list(self._held.items()):
            stale = 0
            while held and now - held[0][0] > _HELD_FOR:
                self._held_size -= len(held.popleft()[1])
                stale += 1
            if stale:  # a node that stopped or died (most often: its last moments' frames) is no news
                address = channel[len(self._to_at) :]
                lease = await (
                    self.redis.zscore(f"{self.p}nodes", address)
                    if self._pipe is None
                    else self._pipe.execute("ZSCORE", f"{self.p}nodes", address)
                )
                alive = lease is not None and float(lease) > time.time()
                (log.warning if alive else log.info)(
                    "node %s: %d messages for node %s were lost: it did not listen for %g s%s",
                    self.address,
                    stale,
                    address,
                    _HELD_FOR,
                    "" if alive else " (it has left the cluster)",
                )
            if not held:
                del self._held[channel]
                continue
            first = held[0][1]
            if not (await self._publish([("PUBLISH", channel, first)]))[0]:
                continue  # not yet
            self._held_size -= len(first)
            held.popleft()
            rest = [("PUBLISH", channel, message) for _, message in held]
            self._held_size -= sum(len(message) for _, message in held)
            del self._held[channel]
            self._published(rest, await self._publish(rest))  # any that reach no one wait again

    def _heard(self, channel: str, data: str) -> None:
        """A message on a channel we subscribed to (through the lean client), handled at once, from the read of the
        subscription's socket (`resp.Connection.data_received`): each of its frames is learnt (STATE) or queued to
        its connection (`Hub.deliver` never waits), so nothing piles up in this node; what it has not read yet
        waits in Redis, which drops a subscriber that falls too far behind (its pubsub output buffer limit):
        `_listen_lean` then subscribes again, and what was sent meanwhile reaches it then (its senders held it:
        `_hold`).
        Nothing a message holds raises into the reader."""
        try:
            if channel == self._own:
                self._handle_inbox(data)
            else:
                for frame in nodeframe.unpack(data):
                    self._told(frame)
        except Exception:  # one bad message must not stop every other one
            log.exception("node %s: could not handle a message from another node", self.address)

    async def _listen_lean(self, sub: resp.Pipe) -> None:
        """`_listen` through the lean client: subscribe (and ping, so that a silent Redis is noticed within its
        timeout); what is heard is handled as it is read (`_heard`)."""
        channels = (self._own, self._everyone, f"{self.p}all")
        delay = 0.1
        lost: str | None = None  # why the subscription was lost, until it is made again
        try:
            while not self._closing:
                try:
                    conn = await sub.connect()
                    await asyncio.gather(*(conn.send(("SUBSCRIBE", channel)) for channel in channels))
                    delay = 0.1
                    if lost is not None:
                        log.info("node %s: listening again (its subscription was lost: %s)", self.address, lost)
                        lost = None
                    while True:  # until the connection is lost (then `send` raises why)
                        await asyncio.wait([conn.closed], timeout=_SUB_PING)
                        await conn.send(("PING",))
                except (*TRANSIENT, RedisError) as exc:
                    self.healthy = False
                    if lost is None and not self._closing:
                        # Redis drops a subscriber that falls behind (its pubsub output buffer limit) and what its
                        # buffer held; the other nodes hold what they send meanwhile (`_hold`)
                        lost = _named(exc)
                        log.warning("node %s: lost its subscription (%s); subscribing again", self.address, lost)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            sub.close()

    def _handle_inbox(self, message: str) -> None:
        """A message on this node's channel: its frames, in order (`nodeframe.unpack_decoded`)."""
        deliver, relay, send = self.events.deliver, nodeframe.RELAY, nodeframe.SEND
        for cid, kind, text in nodeframe.unpack_decoded(message):
            if kind == relay or kind == send:  # most of them: a relayed frame (RELAY), or one of the server's
                deliver(cid, kind, text)
            elif kind == nodeframe.STATE:
                self._learn(text)
            elif kind == nodeframe.EVERYONE:  # missed on `everyone` while this node did not listen
                self._told(text)
            elif kind == nodeframe.OWNER or kind == nodeframe.ASK or kind == nodeframe.ASKED:
                self._owner_frame(kind, text)
            else:
                if kind == nodeframe.SEND_CALL_CHANGED:
                    self.forget_route(cid)
                deliver(cid, kind, text)

    async def _listen(self) -> None:
        if self._sub is not None:
            return await self._listen_lean(self._sub)
        everyone = (self._everyone, f"{self.p}all")
        delay = 0.1
        while not self._closing:  # stop() cancels us too, but redis-py may turn a cancel into an error
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._own, *everyone)
                delay = 0.1
                async for message in pubsub.listen():
                    self._heard(message["channel"], message["data"])
            except (*TRANSIENT, RedisError):
                self.healthy = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _told(self, data: str) -> None:
        """Something a node told every node: a presence change, whose circles changed, or a user to close."""
        try:
            told = nodeframe.decode_everyone(data)
        except nodeframe.BadNodeFrame as exc:  # a node of a newer version: what it says is not for us
            log.warning("node %s: dropped a frame for every node: %s", self.address, exc)
            return
        if isinstance(told, Presence):
            self.events.presence_changed(told)
        elif isinstance(told, nodeframe.Closed):
            self.events.user_closed(told.user, told.code, told.reason, sign_in=told.sign_in)
        else:
            self.events.circles_changed(told)

    # ---------------------------------------------------------------------------------------- timers

    async def _timer_loop(self) -> None:
        """Act on calls whose ring timeout or resume grace passed; every node looks, one acts on each call."""
        while not self._closing:  # stop() cancels us too, but redis-py may turn a cancel into an error
            wait = _TIMER_POLL
            try:
                await self.events.perform(await self.tick(time.time()))
                head = await self.redis.zrange(f"{self.p}due", 0, 0, withscores=True)
                self.ops["read"] += 1
                if head:
                    wait = min(_TIMER_POLL, max(0.0, head[0][1] - time.time()))
            except (*TRANSIENT, RedisError, SharedStateUnavailable):
                self.healthy = False
                wait = 0.5
            except Exception:  # a bug in one call's tick must not stop the timer for every other call
                log.exception("node %s: the call timer failed; going on", self.address)
                wait = 0.5
            self._timer_at = time.time() + wait
            self._timer_wake.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for may swallow a cancel that comes as it times out
            # (with a short wait, as often as not), and `stop()` would wait for this loop for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._timer_wake.wait()

    async def tick(self, now: float) -> list[Effect]:
        """End the calls (of the whole cluster) whose ring timeout or resume grace has passed at `now`."""
        try:
            due = await self.redis.zrangebyscore(f"{self.p}due", "-inf", now, start=0, num=100)
        except (*TRANSIENT, RedisError) as exc:
            raise SharedStateUnavailable(str(exc)) from exc
        self.ops["read"] += 1
        effects: list[Effect] = []
        for call_id in due:
            try:
                owned = self._owned.get(call_id) if self._owned else None
                if owned is not None:
                    effects += await self._change([], [call_id], lambda sb, _: sb.tick(now), owned)
                    continue
                effects += await self._transact([], [call_id], lambda sb, _: sb.tick(now))
            except SharedStateUnavailable:
                if not effects:
                    raise
                break  # those of the calls before it are made: performed all the same
        return effects

    async def _act(self, effects: Awaitable[list[Effect]]) -> None:
        await self.events.perform(await effects)

    async def _housekeeping(self) -> None:
        """Renew the lease, reap nodes whose lease ran out, catch up after a Redis outage, refresh gauges."""
        interval = max(0.2, self.lease / 3)
        while not self._closing:  # stop() cancels us too, but redis-py may turn a cancel into an error
            await asyncio.sleep(interval)
            try:
                await self._renew()
                if self._in_doubt:
                    await self._settle()
                now = time.time()
                for address in await self.redis.zrangebyscore(f"{self.p}nodes", "-inf", now):
                    # One node reaps a dead one; the claim expires, so if the reaper dies too, another takes over.
                    claim = f"{self.p}reaping:{address}"
                    lease_ms = int(self.lease * 1000)
                    if address != self.address and await self.redis.set(claim, self.address, nx=True, px=lease_ms):
                        await self._reap(address)
                        await self.redis.zrem(f"{self.p}nodes", address)
                for cid, user in list(self._pending_leaves.items()):
                    await self._act(self._disconnect(cid, user, now))
                if self._recorded_later:
                    later, self._recorded_later = self._recorded_later, set()
                    await self.recorded(list(later))
                await self.redis.eval(
                    _TRIM_ENDED,
                    1,
                    f"{self.p}endedat",
                    f"{self.p}ended:",
                    _ENDED_KEPT,
                    now - _ENDED_TTL,
                    _ENDED_TRIM_MAX,
                )
                async with self.redis.pipeline(transaction=False) as reads:
                    reads.zcard(f"{self.p}online")
                    reads.hvals(f"{self.p}callstate")
                    reads.zrangebyscore(f"{self.p}nodes", now, "+inf")
                    self._users_online, states, self._live = await reads.execute()
                self._calls_by_state = {s: states.count(s) for s in ("ringing", "answered")}
                self.ops["read"] += 4
            except (*TRANSIENT, RedisError, SharedStateUnavailable) as exc:
                if self.healthy:
                    log.warning("Redis unreachable (%s); retrying", exc)
                self.healthy = False
            except Exception:  # a bug must not stop the lease renewals: the node would be taken for dead
                log.exception("node %s: housekeeping failed; going on", self.address)

    async def _settle(self) -> None:
        """Redis is back: find out whether the changes to calls that lost their reply were made, and finish those
        that were as if the reply had come. A change that ends or answers calls (`SharedStateInDoubt`: its sender
        was told it may have been done) has its effects performed: the parties told, the history written. One that
        placed a call (its caller was told nothing was done, and nobody rang) is taken back (`_undo`).

        Whether it was made: a call this node ended is in `unwritten:{node}` with the very record the change wrote
        (its end time and all) if and only if the change was made (one script writes both; only the hub's writer,
        which has not seen it, lets go of it); a call answered or placed holds the JSON the change set, timestamps
        and all, if it was made and nothing changed the call since (a change that did told the parties itself).
        Another node that reaped this one during a long outage took over its unwritten calls and wrote them; nobody
        is told then. Raises what Redis raises: the change stays first, tried again at the next round, up to
        _SETTLE_TRIES times."""
        while self._in_doubt:
            doubt = self._in_doubt[0]  # only this task takes from the front, and `_transact` adds at the back
            doubt.tries += 1
            try:
                await self._settle_one(doubt)
            except (*TRANSIENT, RedisError, SharedStateUnavailable) as exc:
                if doubt.tries < _SETTLE_TRIES:
                    raise
                log.warning("node %s: could not settle a change in doubt (%s); giving it up", self.address, exc)
            except Exception:  # a bug must not hold every later one, nor the housekeeping, for ever
                log.exception("node %s: settling a change in doubt failed; giving it up", self.address)
            self._in_doubt.popleft()

    async def _settle_one(self, doubt: _InDoubt) -> None:
        if doubt.ended:
            ids = list(doubt.ended)
            held = await self.redis.hmget(self._unwritten, ids)
            made = any(record == doubt.ended[call_id] for call_id, record in zip(ids, held, strict=True))
        else:
            keys = list(doubt.calls)
            now = await self.redis.mget(keys)
            made = all(self._shows(doubt, key, value) for key, value in zip(keys, now, strict=True))
        self.ops["read"] += 1
        if not made:  # its sender was told that nothing was done, or that it may have been
            log.info("node %s: Redis had not made a change in doubt: nothing to carry out", self.address)
            return
        placed = [] if doubt.ended else self._placed(doubt)
        if placed:
            for call in placed:
                await self._undo(call)
            return
        log.warning(
            "node %s: Redis made a change to call(s) %s before the connection to it went: carrying it out now",
            self.address,
            ", ".join(list(doubt.ended) or [key[len(self._call_at) :] for key in doubt.calls]),
        )
        effects = await self._ring_late(doubt.effects, doubt.before)
        for effect in effects:
            if isinstance(effect, Send) and effect.message["type"] in CALL_CHANGED:
                self.forget_route(effect.cid)
        await self.events.perform(effects)

    def _shows(self, doubt: _InDoubt, key: str, value: str | None) -> bool:
        """Whether `value`, what the call `key` holds now, shows the change in doubt made: the JSON it set; or, for
        a call it placed or answered, that placement or that answer (its time, to the microsecond), which what
        followed leaves as it was (a device rung late, a party lost since)."""
        ours = doubt.calls[key]
        if value is None or value == ours:
            return value is not None
        call_id = key[len(self._call_at) :]
        if call_id not in doubt.before.calls:  # placed
            return _decode_call(value).ringing_at == _decode_call(ours).ringing_at
        if call_id in doubt.before.ringing:  # answered, if the change did
            mine, now = _decode_call(ours), _decode_call(value)
            return (
                mine.answered_at is not None
                and now.answered_at == mine.answered_at
                and now.callee is not None
                and mine.callee is not None
                and (now.callee.user, now.callee.device) == (mine.callee.user, mine.callee.device)
            )
        return False

    def _placed(self, doubt: _InDoubt) -> list[Call]:
        """The calls that a change in doubt places (a call-request's), as it would store them."""
        return [
            _decode_call(value)
            for key, value in doubt.calls.items()
            if key[len(self._call_at) :] not in doubt.before.calls
        ]

    async def _undo(self, call: Call) -> None:
        """Take back a call that Redis placed while its caller was told that nothing was done (`retract`). Raises
        SharedStateUnavailable."""
        log.warning(
            "node %s: Redis placed call %s (%s -> %s) before the connection to it went; its caller was told it was "
            "not: taking it back",
            self.address,
            call.id,
            call.caller.user,
            call.callee_user,
        )
        never_rang = set(call.ringing)
        retract = lambda sb, _: sb.retract(call.id, never_rang)  # noqa: E731
        work = self._transact([], [call.id], retract, settle=False)
        await self.events.perform(await work)

    async def _renew(self) -> None:
        added = await self.redis.zadd(f"{self.p}nodes", {self.address: time.time() + self.lease})
        self.ops["lease"] += 1
        if not self.healthy:
            log.info("node %s joined Redis (lease %gs)", self.address, self.lease)
        self.healthy = True
        if added and self._registered:
            await self._register_again()
        self._registered = True

    async def _register_again(self) -> None:
        """Our lease was gone (Redis restarted empty, or this node was cut off long enough to be reaped): tell
        Redis again who is connected here. Calls it lost are over; their audio goes on peer to peer."""
        log.warning(
            "node %s: Redis had forgotten this node; registering its %d connections again",
            self.address,
            len(self._local),
        )
        self._owned.clear()  # (their versions are those of the Redis that forgot)
        self._owned_by.clear()
        self._owners.clear()  # (and those calls are gone)
        for cid, (user, device) in list(self._local.items()):
            now = time.time()
            register = self._transact([user], [], lambda sb, _: sb.connect(cid, user, device, now), settle=False)  # noqa: B023
            effects = await register
            await self.events.perform([e for e in effects if isinstance(e, Presence)])

    async def _reap(self, address: str) -> None:
        """Disconnect every connection of a node that died without a word (its lease ran out)."""
        users_by_cid = await self.redis.hgetall(self._n(address))
        if address != self.address:
            log.warning("node %s stopped renewing its lease: its %d connections are gone", address, len(users_by_cid))
        now = time.time()
        for cid, user in users_by_cid.items():
            await self._act(self._disconnect(cid, user, now))
        await self.redis.delete(self._n(address))
        if address != self.address:
            await self._adopt_records(address)
        self.ops["reap"] += 1


def _routes_of(call: Call) -> list[tuple[str, _Route]]:
    """Where each connection of `call` sends its peer frames, if the call is answered with both parties there."""
    caller, callee = call.caller, call.callee
    if call.state is not CallState.ANSWERED or callee is None or caller.cid is None or callee.cid is None:
        return []
    return [
        (caller.cid, _Route(call.id, callee.user, callee.cid)),
        (callee.cid, _Route(call.id, caller.user, caller.cid)),
    ]


def _carried(sb: Switchboard, before: _Loaded, version: str) -> _Loaded | None:
    """The slice of a call this node owns as a change applied at `version` left it, for the call's next change,
    if the change connected or disconnected no device (most: a call's own); else None. What this node knows of its
    keys (`_known`) is left as it was, behind: a change on the slice runs on the slice, and the change that ends
    the call (`_left`) brings it up to date."""
    into = _Loaded(recalled=True)
    empty: dict[str, Device] = {}
    active = sb.active
    for user, devices in before.devices.items():
        if sb.users.get(user, empty).keys() != devices.keys():
            return None
        into.devices[user], into.stored[user], into.active[user] = devices, before.stored[user], active.get(user)
    for call in sb.calls.values():
        into.calls[call.id] = (call.caller.user, call.callee_user)
        if call.state is CallState.RINGING:
            into.ringing.add(call.id)
    into.versions = dict.fromkeys(before.versions, version)
    return into


def _done_already(sb: Switchboard, cid: str, env: Envelope, call_id: str) -> bool:
    """Whether what `env` from `cid` asked of call `call_id` needs doing no more: the owner, asked, answered too late
    (`RedisBroker._ask`) and may have done it, and this node is not to do it twice (an accept's error, a glare
    request placing a new call, another call's reject). A call that is over needs nothing (an accept or hangup that
    crossed its end gets no error, as on one node: its `call-ended` says how it ended)."""
    call = sb.calls.get(call_id)
    if call is None:
        return True
    if env.type in ("call-accept", "call-request"):  # (a call-request: back to the caller, glare)
        return call.state is CallState.ANSWERED and call.callee is not None and call.callee.cid == cid
    if call.state is CallState.RINGING:  # a reject (or busy) of one device: it rings there no more
        return cid not in call.ringing and call.caller.cid != cid
    return call.party_of(cid) is None


def _answer_late(answer: asyncio.Future[str]) -> None:
    if not answer.done():
        answer.set_result("late")


def _named(exc: BaseException) -> str:
    """An exception as a log line says it (a `NotSent` is a lost connection to whoever reads the log)."""
    kind = "ConnectionError" if isinstance(exc, resp.NotSent) else type(exc).__name__
    return f"{kind}: {exc}"


def _welcome_args(welcome: _Welcome) -> list[str | int]:
    """ARGV of `_READ_WELCOME` after `_READ`'s."""
    view = welcome.view
    head: list[str | int] = [welcome.user, WELCOME_ONLINE_MAX, LAST_SEEN_SHOWN]
    if view is None:
        return ["all", *head, 0, 0]
    contacts = sorted(view.contacts - view.hidden - {welcome.user})
    mode = "everyone" if view.everyone else "contacts"
    hidden = sorted(view.hidden) if view.everyone else []
    return [mode, *head, len(contacts), *contacts, len(hidden), *hidden]


def _welcome_lists(welcome: _Welcome, lists: list[Any]) -> WelcomeLists:
    """What the welcome lists, from what `_READ_WELCOME` read (see there)."""
    me = welcome.user
    if welcome.view is None:
        everyone, in_call, flat = lists
        here = set(everyone) - {me}
        seen = [{"id": u, "lastSeen": float(t)} for u, t in zip(flat[::2], flat[1::2], strict=True)]
        return WelcomeLists(
            sorted(here),
            sorted(u for u in in_call if u in here),
            [s for s in seen if s["id"] != me and s["id"] not in here][:LAST_SEEN_SHOWN],
        )
    states = lists[0]
    online = sorted(c for c, on, _, _ in states if on)
    in_call = {c for c, on, busy, _ in states if on and busy}
    if len(lists) == 1:  # contacts only
        offline = [(float(t), c) for c, on, _, t in states if not on and t is not None]
        offline.sort(reverse=True)  # newest first (as Switchboard.welcome_lists)
        seen = [{"id": c, "lastSeen": t} for t, c in offline[:LAST_SEEN_SHOWN]]
        return WelcomeLists(online, sorted(in_call), seen)
    _, others, more, flat = lists
    listed = online[:WELCOME_ONLINE_MAX] + [u for u, _ in others]
    in_call |= {u for u, busy in others if busy}
    seen = [{"id": u, "lastSeen": float(t)} for u, t in zip(flat[::2], flat[1::2], strict=True)]
    return WelcomeLists(listed, sorted(u for u in listed if u in in_call), seen[:LAST_SEEN_SHOWN], more=bool(more))


def _presence(user: str, online: int, in_call: int, seen: str | None) -> Presence:
    if online:
        return Presence(user, "online", in_call=bool(in_call))
    return Presence(user, "offline", last_seen=None if seen is None else float(seen))


async def close_user_everywhere(url: str, prefix: str, user: str, code: int, reason: str) -> int:
    """From outside the cluster (`peercall revoke`): have every node of the cluster at `url` and `prefix` close its
    connections of `user`. Returns how many nodes heard it (those subscribed now).

    Raises:
        RedisError, OSError: Redis cannot be reached.
    """
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    try:
        message = nodeframe.pack([nodeframe.encode_close_user(user, code, reason)])
        heard: int = await client.publish(f"{prefix}everyone", message)
        return heard
    finally:
        await client.aclose()
