"""The function tables the compiler checks calls against (name → implementation, arities, type)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from pdp.cel import _functions as f
from pdp.cel import _network as net
from pdp.cel import _regex as rx
from pdp.cel import _time as t
from pdp.cel._values import size


class Fn(NamedTuple):
    impl: Callable[..., Any]
    arities: frozenset[int]  # number of arguments, including the receiver for members
    kind: str | None  # static result type, when always the same
    pure: bool = True  # may be folded when all arguments are constants


def _fn(impl: Callable[..., Any], *arities: int, kind: str | None = None) -> Fn:
    return Fn(impl, frozenset(arities), kind)


GLOBALS: dict[str, Fn] = {
    "size": _fn(size, 1, kind="int"),
    "int": _fn(f.to_int, 1, kind="int"),
    "uint": _fn(f.to_uint, 1, kind="uint"),
    "double": _fn(f.to_double, 1, kind="double"),
    "string": _fn(f.to_string, 1, kind="string"),
    "bytes": _fn(f.to_bytes, 1, kind="bytes"),
    "bool": _fn(f.to_bool, 1, kind="bool"),
    "type": _fn(f.to_type, 1, kind="type"),
    "dyn": _fn(f.dyn, 1),
    "timestamp": _fn(t.to_timestamp, 1, kind="timestamp"),
    "duration": _fn(t.to_duration, 1, kind="duration"),
    "matches": _fn(rx.matches, 2, kind="bool"),
    "ip": _fn(net.parse_ip, 1, kind="ip"),
    "cidr": _fn(net.parse_cidr, 1, kind="cidr"),
    "isIP": _fn(net.is_ip, 1, kind="bool"),
    "isCIDR": _fn(net.is_cidr, 1, kind="bool"),
    "ip.isCanonical": _fn(net.is_canonical, 1, kind="bool"),
    "inCIDRs": _fn(net.in_cidrs, 2, kind="bool"),
    "hasAll": _fn(f.has_all, 2, kind="bool"),
    "hasAny": _fn(f.has_any, 2, kind="bool"),
    "intersect": _fn(f.intersect, 2, kind="list"),
    "isSubset": _fn(f.is_subset, 2, kind="bool"),
}

MEMBERS: dict[str, Fn] = {
    "size": _fn(size, 1, kind="int"),
    "contains": _fn(f.contains, 2, kind="bool"),
    "startsWith": _fn(f.starts_with, 2, kind="bool"),
    "endsWith": _fn(f.ends_with, 2, kind="bool"),
    "matches": _fn(rx.matches, 2, kind="bool"),
    "lowerAscii": _fn(f.lower_ascii, 1, kind="string"),
    "upperAscii": _fn(f.upper_ascii, 1, kind="string"),
    "split": _fn(f.split, 2, 3, kind="list"),
    "join": _fn(f.join, 1, 2, kind="string"),
    "replace": _fn(f.replace, 3, 4, kind="string"),
    "trim": _fn(f.trim, 1, kind="string"),
    "indexOf": _fn(f.index_of, 2, 3, kind="int"),
    "lastIndexOf": _fn(f.last_index_of, 2, 3, kind="int"),
    "substring": _fn(f.substring, 2, 3, kind="string"),
    "charAt": _fn(f.char_at, 2, kind="string"),
    "reverse": _fn(f.reverse, 1, kind="string"),
    "getFullYear": _fn(t.get_full_year, 1, 2, kind="int"),
    "getMonth": _fn(t.get_month, 1, 2, kind="int"),
    "getDate": _fn(t.get_date, 1, 2, kind="int"),
    "getDayOfMonth": _fn(t.get_day_of_month, 1, 2, kind="int"),
    "getDayOfWeek": _fn(t.get_day_of_week, 1, 2, kind="int"),
    "getDayOfYear": _fn(t.get_day_of_year, 1, 2, kind="int"),
    "getHours": _fn(t.get_hours, 1, 2, kind="int"),
    "getMinutes": _fn(t.get_minutes, 1, 2, kind="int"),
    "getSeconds": _fn(t.get_seconds, 1, 2, kind="int"),
    "getMilliseconds": _fn(t.get_milliseconds, 1, 2, kind="int"),
    "family": _fn(net.family, 1, kind="int"),
    "isUnspecified": _fn(net.is_unspecified, 1, kind="bool"),
    "isLoopback": _fn(net.is_loopback, 1, kind="bool"),
    "isGlobalUnicast": _fn(net.is_global_unicast, 1, kind="bool"),
    "isLinkLocalUnicast": _fn(net.is_link_local_unicast, 1, kind="bool"),
    "isLinkLocalMulticast": _fn(net.is_link_local_multicast, 1, kind="bool"),
    "containsIP": _fn(net.contains_ip, 2, kind="bool"),
    "containsCIDR": _fn(net.contains_cidr, 2, kind="bool"),
    "ip": _fn(net.cidr_ip, 1, kind="ip"),
    "masked": _fn(net.masked, 1, kind="cidr"),
    "prefixLength": _fn(net.prefix_length, 1, kind="int"),
    "containsAll": _fn(f.has_all, 2, kind="bool"),
    "containsAny": _fn(f.has_any, 2, kind="bool"),
}
