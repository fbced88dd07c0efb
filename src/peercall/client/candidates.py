"""Which of the peer's ICE candidates a call may check, and how many: the SDK's guard against a caller who would use
a bot (the echo service first) to send connectivity checks into the networks of the machine it runs on.

aiortc sends STUN binding requests to every remote candidate it is given, from this machine. A stranger who calls a
bot can therefore name any address and port, in trickled `candidate` frames or in `a=candidate` lines of the offer,
and have this machine probe it. The guard has two parts, both applied before aiortc sees a candidate:

- **a bound**: a call checks at most `max_candidates` distinct remote candidates; further ones are dropped (one log
  line per call). Candidates that arrive before the remote description wait in a queue that the bound also bounds.
- **an address policy**, coturn's `allowed-peer-ip` / `denied-peer-ip` model: ordered rules, each an address range
  and a verdict; the first rule that contains the address decides, and an address that no rule contains is allowed.
  `CandidatePolicy.public_service()` builds the rules of a bot that answers strangers (the echo): your own allowed
  ranges, then your own denied ranges, then loopback and this machine's own interface subnets (allowed), then the
  private and reserved ranges (denied). Global unicast addresses match no rule, so they are allowed.

**mDNS candidates** (`<uuid>.local`, browsers' way of hiding a host address) are resolved by aioice by multicast on
this machine's LAN, and the address that comes back never passes through the SDK, so no rule could judge it. A
policy with rules therefore drops them (`mdns=False`). A caller on the same LAN loses nothing by it: it also sends
checks to our own candidates, and aioice answers those and learns the caller's address as peer-reflexive. (Browsers
use mDNS names only when the page has no microphone permission, which a caller always has.) The default policy of
`Client`, with no rules, passes them on.

**What stays open**: aioice answers and checks back the source of any STUN request that carries the call's
credentials (a peer-reflexive candidate): that is the caller's real address, not one it named. Loopback and the
local subnets stay reachable by design (so that "Test my audio" works on a local or LAN server); there, at most
`max_candidates` ports a call receive a STUN binding request.

Imports the standard library and `ifaddr` (aioice's own dependency, for the interface subnets) only; must not import
aiortc, the rest of the client, nor anything of the server.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("peercall.client")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_CANDIDATES = 50
"""Remote candidates a call checks at most, by default (a browser on a busy laptop offers about 10-20)."""

SERVICE_MAX_CANDIDATES = 20
"""Remote candidates a call to a public service (the echo) checks at most."""

LOOPBACK = ("127.0.0.0/8", "::1/128")
"""Allowed by `public_service()`: a caller on this machine."""

RESERVED = (
    # IPv4: RFC 6890 special-purpose ranges that are not global unicast (loopback is allowed before these).
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # RFC 1918 private
    "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # RFC 1918 private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # TEST-NET-1
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  # RFC 1918 private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
    # IPv6 (an IPv4-mapped address ::ffff:a.b.c.d is judged as a.b.c.d)
    "::/96",  # unspecified, and the deprecated IPv4-compatible addresses
    "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): may embed private IPv4 addresses
    "100::/64",  # discard-only
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)
"""Denied by `public_service()`, after loopback and the local subnets were allowed."""


def parse_network(text: str, what: str = "an address range") -> Network:
    """An address range from `10.0.0.0/8`, `fd00::/8` or a single address (`192.0.2.7`: that address only).

    Host bits are allowed (`10.1.2.3/8` is `10.0.0.0/8`).

    Args:
        text: the range, in CIDR notation, or an address.
        what: how to name the value in the error (e.g. the option or variable it came from).

    Returns:
        The network.

    Raises:
        ValueError: `text` is neither, e.g. `10.0.0.0/33` or `localhost`.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{what}: expected an address range such as 10.0.0.0/8 or fd00::/8 (or one address), but got {text!r}"
        ) from None


def parse_networks(values: Iterable[str], what: str) -> tuple[Network, ...]:
    """Every range of `values`, each of which may itself be a comma-separated list; empty items are skipped.

    Args:
        values: e.g. `["10.1.0.0/16", "192.0.2.7,fd00::/8"]`.
        what: how to name the values in an error.

    Returns:
        The ranges, in order.

    Raises:
        ValueError: one of them is not a range (the message names it and `what`).
    """
    return tuple(parse_network(item, what) for value in values for item in value.split(",") if item.strip())


def local_subnets() -> tuple[Network, ...]:
    """The subnets of this machine's network interfaces (link-local ones left out: they stay denied).

    Returns:
        e.g. `(IPv4Network('192.168.1.0/24'), IPv6Network('fd12:3456::/64'))`; empty if they cannot be listed.
    """
    try:
        import ifaddr
    except ImportError:  # pragma: no cover - aioice depends on it
        return ()
    found: list[Network] = []
    try:
        adapters = ifaddr.get_adapters()
    except OSError as exc:  # pragma: no cover - depends on the machine
        log.warning("cannot list this machine's network interfaces (%s): no local subnet is allowed", exc)
        return ()
    for adapter in adapters:
        for ip in adapter.ips:
            host = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                net = ipaddress.ip_network(f"{host}/{ip.network_prefix}", strict=False)
            except ValueError:
                continue
            shortest = 8 if net.version == 4 else 16  # a broader "subnet" is a misconfiguration, not a LAN
            if net.is_link_local or net.is_loopback or net.prefixlen < shortest or net in found:
                continue
            found.append(net)
    return tuple(found)


@dataclass(frozen=True)
class Rule:
    """One rule of a policy: addresses in `network` are allowed (`allow`) or denied."""

    network: Network
    allow: bool

    def __str__(self) -> str:
        return f"{'allow' if self.allow else 'deny'} {self.network}"


@dataclass(frozen=True)
class CandidatePolicy:
    """Which remote candidates a call may check, and how many. Pure data: share one among all calls.

    Attributes:
        rules: in order; the first whose range contains a candidate's address decides. No match: allowed.
        max_candidates: distinct remote candidates a call checks at most (further ones are dropped).
        mdns: whether `.local` candidates are passed on to aioice (which resolves them on the LAN).
    """

    rules: tuple[Rule, ...] = ()
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    mdns: bool = True

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates: expected at least 1, but got {self.max_candidates}")

    @classmethod
    def public_service(
        cls,
        allow: Iterable[Network] = (),
        deny: Iterable[Network] = (),
        *,
        max_candidates: int = SERVICE_MAX_CANDIDATES,
        subnets: Iterable[Network] | None = None,
    ) -> CandidatePolicy:
        """The policy of a bot that answers strangers, such as the echo service.

        Rules, in order: `allow`, `deny` (yours: they win over the defaults), loopback and this machine's interface
        subnets (allowed), then `RESERVED` (denied). Anything else (global unicast) is allowed. To allow only what
        you list, deny everything else: `deny=[ip_network("0.0.0.0/0"), ip_network("::/0")]`.

        Args:
            allow: ranges to allow even if a later rule denies them.
            deny: ranges to deny even if a default allows them (e.g. this machine's own subnet).
            max_candidates: distinct remote candidates a call checks at most.
            subnets: the local subnets to allow; None: this machine's (`local_subnets()`).

        Returns:
            The policy; mDNS candidates are dropped (see the module's docstring).
        """
        local = local_subnets() if subnets is None else tuple(subnets)
        rules = (
            *(Rule(n, True) for n in allow),
            *(Rule(n, False) for n in deny),
            *(Rule(ipaddress.ip_network(n), True) for n in LOOPBACK),
            *(Rule(n, True) for n in local),
            *(Rule(ipaddress.ip_network(n), False) for n in RESERVED),
        )
        return cls(rules=rules, max_candidates=max_candidates, mdns=False)

    def __str__(self) -> str:
        """The rules in a line, the default reserved ranges counted rather than listed."""
        reserved = {ipaddress.ip_network(n) for n in RESERVED}
        listed = [str(rule) for rule in self.rules if rule.allow or rule.network not in reserved]
        hidden = sum(1 for rule in self.rules if not rule.allow and rule.network in reserved)
        text = ", ".join(listed + ([f"deny the {hidden} private and reserved ranges"] if hidden else []))
        mdns = "passed on" if self.mdns else "dropped"
        rules = f"{text}, else allow" if text else "any address"
        return f"{rules}; at most {self.max_candidates} a call; mDNS names {mdns}"

    def allows(self, host: str) -> bool:
        """Whether a candidate whose address is `host` may be checked (the bound aside).

        Args:
            host: an IPv4 or IPv6 address, or an mDNS name (`<uuid>.local`).

        Returns:
            The verdict of the first rule that contains the address; True if none does. An mDNS name: `mdns`. Any
            other name: False (aioice would refuse it anyway).
        """
        try:
            address: Address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return self.mdns and host.lower().rstrip(".").endswith(".local")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for rule in self.rules:
            if address.version == rule.network.version and address in rule.network:
                return rule.allow
        return True


@dataclass
class RemoteCandidates:
    """One call's remote candidates: which were let through, and the lines it has logged. Made by `Call`.

    Args:
        policy: the policy to apply.
        who: names the call in log lines (e.g. `call 3f2a from mallory`).
    """

    policy: CandidatePolicy
    who: str = "a call"
    _admitted: set[tuple[str, str, str]] = field(default_factory=set)
    _denied_logged: bool = False
    _bound_logged: bool = False
    dropped: int = 0
    """How many candidates were dropped (denied, over the bound, malformed or not UDP)."""

    @property
    def admitted(self) -> int:
        """How many distinct candidates were let through."""
        return len(self._admitted)

    def admit(self, text: str, debug: Callable[[str], None] | None = None) -> bool:
        """Whether a candidate may be handed to aiortc; counts it against the bound if so.

        The same candidate again (same address, port and component) gets the same answer and is not counted twice.
        Only admitted candidates are remembered (at most `max_candidates`), so a flood costs no memory.

        Args:
            text: the candidate attribute, `candidate:<foundation> <component> <transport> <priority> <address>
                <port> typ <type> ...` (the `candidate:` prefix optional).
            debug: where to say why a candidate was dropped, when it is not worth a log line of its own.

        Returns:
            True to hand it on, False to drop it.
        """
        parts = text.strip().removeprefix("a=").removeprefix("candidate:").split()
        if len(parts) < 8 or parts[6] != "typ":
            return self._drop(f"malformed candidate {text!r:.80}", debug)
        component, transport, host, port = parts[1], parts[2].lower(), parts[4], parts[5]
        if transport != "udp":  # aiortc gathers UDP only: a TCP candidate would never be paired nor checked
            return self._drop(f"{transport} candidate {host}:{port} (only UDP is checked)", debug)
        key = (host.lower(), port, component)
        if key in self._admitted:
            return True
        if not self.policy.allows(host):
            if not self._denied_logged:
                self._denied_logged = True
                log.info("%s: dropped candidate %s:%s: the candidate policy denies its address", self.who, host, port)
            return self._drop(f"candidate {host}:{port} denied", debug)
        if len(self._admitted) >= self.policy.max_candidates:
            if not self._bound_logged:
                self._bound_logged = True
                log.warning(
                    "%s: the peer sent more than %d candidates; dropping the rest",
                    self.who,
                    self.policy.max_candidates,
                )
            return self._drop(f"candidate {host}:{port} over the bound", debug)
        self._admitted.add(key)
        return True

    def filter_sdp(self, sdp: str, debug: Callable[[str], None] | None = None) -> str:
        """The SDP without the `a=candidate` lines that `admit()` drops (line endings kept).

        Args:
            sdp: a session description from the peer.
            debug: as for `admit()`.

        Returns:
            The same SDP, minus dropped candidate lines.
        """
        lines = sdp.splitlines(keepends=True)
        return "".join(line for line in lines if not line.startswith("a=candidate:") or self.admit(line, debug))

    def _drop(self, why: str, debug: Callable[[str], None] | None) -> bool:
        self.dropped += 1
        if debug is not None:
            debug(f"dropped {why}")
        return False
