"""The CEL network extension (`ip`, `cidr`, ...), `inCIDRs` and the geoip `country` table."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from pdp.cel._values import CelError, fail, no_overload

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
Cidr = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)
_CIDR_TYPES = (ipaddress.IPv4Interface, ipaddress.IPv6Interface)
_V4_LINK_LOCAL_MC = ipaddress.IPv4Network("224.0.0.0/24")
_V6_LINK_LOCAL_MC = ipaddress.IPv6Network("ff02::/16")
_V4_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def parse_ip(s: Any) -> IPAddr:
    if s.__class__ is not str:
        no_overload("ip", s)
    if "%" in s:
        fail("IP Address with zone value is not allowed")
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        fail(f"IP Address '{s}' parse error during conversion from string")
    if a.version == 6 and a.ipv4_mapped is not None:
        if "." in s:
            fail("IPv4-mapped IPv6 address is not allowed")
        return a.ipv4_mapped
    return a


def parse_cidr(s: Any) -> Cidr:
    if s.__class__ is not str:
        no_overload("cidr", s)
    if "%" in s:
        fail("CIDR with zone value is not allowed")
    addr, sep, plen = s.partition("/")
    if not sep or not plen.isdigit():
        fail("network address parse error during conversion from string")
    try:
        ip = ipaddress.ip_address(addr)
        if ip.version == 6 and ip.ipv4_mapped is not None and "." in addr:
            fail("IPv4-mapped IPv6 address is not allowed")
        return ipaddress.ip_interface(s)
    except ValueError:
        fail("network address parse error during conversion from string")


def is_ip(s: Any) -> bool:
    if s.__class__ is not str:
        no_overload("isIP", s)
    try:
        parse_ip(s)
        return True
    except Exception:
        return False


def is_cidr(s: Any) -> bool:
    if s.__class__ is not str:
        no_overload("isCIDR", s)
    try:
        parse_cidr(s)
        return True
    except Exception:
        return False


def is_canonical(s: Any) -> bool:
    a = parse_ip(s)
    return str(a) == s


def _ip(fn: str, a: Any) -> IPAddr:
    if not isinstance(a, _IP_TYPES):
        no_overload(fn, a)
    return a


def _cidr(fn: str, a: Any) -> Cidr:
    if not isinstance(a, _CIDR_TYPES):
        no_overload(fn, a)
    return a


def family(a: Any) -> int:
    return _ip("family", a).version


def is_unspecified(a: Any) -> bool:
    return _ip("isUnspecified", a).is_unspecified


def is_loopback(a: Any) -> bool:
    return _ip("isLoopback", a).is_loopback


def is_link_local_unicast(a: Any) -> bool:
    ip = _ip("isLinkLocalUnicast", a)
    return ip.is_link_local and not ip.is_multicast


def is_link_local_multicast(a: Any) -> bool:
    ip = _ip("isLinkLocalMulticast", a)
    net = _V4_LINK_LOCAL_MC if ip.version == 4 else _V6_LINK_LOCAL_MC
    return ip in net


def is_global_unicast(a: Any) -> bool:
    # Go's net.IP.IsGlobalUnicast: private ranges count as global unicast.
    ip = _ip("isGlobalUnicast", a)
    if ip.version == 4 and ip == _V4_BROADCAST:
        return False
    return not (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local)


def contains_ip(c: Any, a: Any) -> bool:
    net = _cidr("containsIP", c).network
    ip = parse_ip(a) if a.__class__ is str else _ip("containsIP", a)
    return ip.version == net.version and ip in net


def contains_cidr(c: Any, other: Any) -> bool:
    net = _cidr("containsCIDR", c).network
    o = parse_cidr(other) if other.__class__ is str else _cidr("containsCIDR", other)
    return o.version == net.version and o.network.subnet_of(net)  # type: ignore[arg-type]


def cidr_ip(c: Any) -> IPAddr:
    return _cidr("ip", c).ip


def masked(c: Any) -> Cidr:
    cc = _cidr("masked", c)
    return ipaddress.ip_interface(str(cc.network))


def prefix_length(c: Any) -> int:
    return _cidr("prefixLength", c).network.prefixlen


def to_string(v: Any) -> str | None:
    if isinstance(v, _IP_TYPES):
        return str(v)
    if isinstance(v, _CIDR_TYPES):
        return str(v)
    return None


# --- inCIDRs and country ------------------------------------------------------------------


def _parse_ip_or_none(s: Any) -> IPAddr | None:
    if s.__class__ is not str:
        no_overload("inCIDRs", s)
    return _parse_ip_str(s)


# One request tests the same client IP against many fences (every guard, every resource):
# parsing it once per distinct string saves ~10 µs per test. Bounded: an attacker cycling
# addresses only evicts entries. Parse errors are not cached (lru_cache does not keep raises).
_IP_CACHE_ENTRIES = 4096


@functools.lru_cache(maxsize=_IP_CACHE_ENTRIES)
def _parse_ip_str(s: str) -> IPAddr:
    # Client addresses vary call to call (the cache misses): a dotted quad is read by the C
    # library's inet_pton, which accepts exactly the strings IPv4Address does, at a tenth of
    # its cost; anything else by ipaddress.
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, s))
    except (OSError, ValueError):
        pass
    if "%" in s:
        # As `ip()` refuses it. `ipaddress` reads `fe80::1%<zone>` with a zone of any length,
        # so `inCIDRs(R.attr.addr, ['fe80::/10'])` allowed `fe80::1%` + 60 KB of anything, and
        # this cache kept each such string and its zone copy: 116 KB a call, ~480 MB a worker.
        # Without a zone a valid address is at most 45 characters, and only those are kept.
        fail("IP Address with zone value is not allowed")
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        fail(f"IP Address '{s}' parse error during conversion from string")
    if a.version == 6 and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


class CidrSet:
    """A precompiled list of networks: merged, sorted intervals per family, searched by bisect."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, cidrs: Iterable[Any]) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for c in cidrs:
            if c.__class__ is not str:
                if isinstance(c, _CIDR_TYPES):
                    c = str(c)
                else:
                    no_overload("inCIDRs", c)
            try:
                net = ipaddress.ip_network(c, strict=False)
            except ValueError:
                fail(f"invalid CIDR `{c}`")
            (v4 if net.version == 4 else v6).append(
                (int(net.network_address), int(net.broadcast_address))
            )
        self._v4 = _merge(v4)
        self._v6 = _merge(v6)

    def contains(self, ip: Any) -> bool:
        a = _parse_ip_or_none(ip) if ip.__class__ is str else _ip("inCIDRs", ip)
        table = self._v4 if a is not None and a.version == 4 else self._v6
        n = int(a)  # type: ignore[arg-type]
        starts, ends = table
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= ends[i]


def _merge(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    ranges.sort()
    starts: list[int] = []
    ends: list[int] = []
    for s, e in ranges:
        if ends and s <= ends[-1] + 1:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(s)
            ends.append(e)
    return starts, ends


def in_cidrs(ip: Any, cidrs: Any) -> bool:
    if cidrs.__class__ not in (list, tuple):
        no_overload("inCIDRs", ip, cidrs)
    return CidrSet(cidrs).contains(ip)


class GeoTable:
    """data["geoip"] = {"ranges": [{"cidr": ..., "country": ...}]} as sorted disjoint intervals."""

    __slots__ = ("_tables",)

    def __init__(self, geo: Mapping[str, Any] | None) -> None:
        rows: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for r in (geo or {}).get("ranges", []) if isinstance(geo, Mapping) else []:
            net = ipaddress.ip_network(str(r["cidr"]), strict=False)
            rows[net.version].append(
                (int(net.network_address), int(net.broadcast_address), str(r["country"]))
            )
        self._tables: dict[int, tuple[list[int], list[int], list[str]]] = {}
        for v, rs in rows.items():
            self._tables[v] = _flatten(rs)

    def lookup(self, ip: Any) -> str:
        if ip.__class__ is not str:
            if not isinstance(ip, _IP_TYPES):
                no_overload("country", ip)
            a: Any = ip
        else:
            try:
                a = _parse_ip_str(ip)  # memoized, maps IPv4-mapped IPv6 to IPv4
            except CelError:
                return ""
        if a.version == 6 and a.ipv4_mapped is not None:
            a = a.ipv4_mapped
        starts, ends, countries = self._tables[a.version]
        n = int(a)
        i = bisect.bisect_right(starts, n) - 1
        return countries[i] if i >= 0 and n <= ends[i] else ""


def _flatten(rs: list[tuple[int, int, str]]) -> tuple[list[int], list[int], list[str]]:
    """CIDR ranges nest or are disjoint: sweep them into disjoint segments, innermost wins."""
    rs.sort(key=lambda t: (t[0], -t[1]))
    starts: list[int] = []
    ends: list[int] = []
    countries: list[str] = []

    def emit(a: int, b: int, c: str) -> None:
        if a <= b:
            starts.append(a)
            ends.append(b)
            countries.append(c)

    stack: list[tuple[int, int, str]] = []
    cur = 0
    for s, e, c in rs:
        while stack and stack[-1][1] < s:
            _, te, tc = stack.pop()
            emit(cur, te, tc)
            cur = max(cur, te + 1)
        if stack:
            emit(cur, s - 1, stack[-1][2])
        cur = s
        stack.append((s, e, c))
    while stack:
        _, te, tc = stack.pop()
        emit(cur, te, tc)
        cur = max(cur, te + 1)
    return starts, ends, countries
