"""CEL value representation on plain Python values, and the core operators.

    CEL type     Python
    int          int (never bool: checks use `x.__class__ is int`)
    uint         CelUint (an int subclass, so it compares numerically but keeps its type)
    double       float
    bool         bool
    string       str
    bytes        bytes
    null         None
    list         list (tuple accepted)
    map          dict
    timestamp    aware datetime (microsecond precision; CEL has nanoseconds)
    duration     timedelta (microsecond precision)
    type         CelType
    net.IP       ipaddress.IPv4Address / IPv6Address
    net.CIDR     ipaddress.IPv4Interface / IPv6Interface (keeps the host bits, like CEL)

Errors are Python exceptions; the generated code turns them into error values where CEL
absorbs errors (`&&`, `||`, macros).
"""

from __future__ import annotations

import ipaddress
import math
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from pdp.errors import CelEvalError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


class CelUint(int):
    """A CEL uint: numerically an int, but a distinct CEL type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value, as returned by `type(x)`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return other.__class__ is CelType and other.name == self.name  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("CelType", self.name))

    def __repr__(self) -> str:
        return self.name


T_INT = CelType("int")
T_UINT = CelType("uint")
T_DOUBLE = CelType("double")
T_BOOL = CelType("bool")
T_STRING = CelType("string")
T_BYTES = CelType("bytes")
T_NULL = CelType("null_type")
T_LIST = CelType("list")
T_MAP = CelType("map")
T_TIMESTAMP = CelType("google.protobuf.Timestamp")
T_DURATION = CelType("google.protobuf.Duration")
T_TYPE = CelType("type")
T_IP = CelType("net.IP")
T_CIDR = CelType("net.CIDR")

TYPE_NAMES: dict[str, CelType] = {
    "int": T_INT,
    "uint": T_UINT,
    "double": T_DOUBLE,
    "bool": T_BOOL,
    "string": T_STRING,
    "bytes": T_BYTES,
    "null_type": T_NULL,
    "list": T_LIST,
    "map": T_MAP,
    "type": T_TYPE,
    "google.protobuf.Timestamp": T_TIMESTAMP,
    "google.protobuf.Duration": T_DURATION,
    "net.IP": T_IP,
    "net.CIDR": T_CIDR,
}

_TYPE_OF: dict[type, CelType] = {
    int: T_INT,
    CelUint: T_UINT,
    float: T_DOUBLE,
    bool: T_BOOL,
    str: T_STRING,
    bytes: T_BYTES,
    type(None): T_NULL,
    list: T_LIST,
    tuple: T_LIST,
    dict: T_MAP,
    datetime: T_TIMESTAMP,
    timedelta: T_DURATION,
    CelType: T_TYPE,
    ipaddress.IPv4Address: T_IP,
    ipaddress.IPv6Address: T_IP,
    ipaddress.IPv4Interface: T_CIDR,
    ipaddress.IPv6Interface: T_CIDR,
}

NUMERIC = frozenset({int, CelUint, float})
ORDERED_SAME = frozenset({str, bytes, bool, datetime, timedelta})
LISTS = frozenset({list, tuple})


# The longest string or bytes, and the longest list, an evaluation may build. Request strings
# are at most 64 KiB; without a bound, `cel.bind(a, s + s, cel.bind(b, a + a, ...))` or
# `s.replace('', s).replace('', s)` doubles or multiplies its way to gigabytes in a few steps.
MAX_BUILT_SIZE = 1024 * 1024


def check_built_size(n: int, fn: str) -> None:
    """Refuse to build a value of `n` characters, bytes or items (call before building)."""
    if n > MAX_BUILT_SIZE:
        fail(f"`{fn}` would build a value of length {n}, over the limit of {MAX_BUILT_SIZE}")


class CelError(CelEvalError):
    """An evaluation error raised by the runtime (a CelEvalError, so callers need no mapping)."""


def fail(message: str) -> NoReturn:
    raise CelError(message)


def no_overload(fn: str, *args: Any) -> NoReturn:
    kinds = ", ".join(type_name(a) for a in args)
    raise CelError(f"no matching overload for `{fn}` applied to ({kinds})")


def type_of(v: Any) -> CelType:
    t = _TYPE_OF.get(v.__class__)
    if t is None:
        if isinstance(v, dict):
            return T_MAP
        if isinstance(v, list | tuple):
            return T_LIST
        if isinstance(v, datetime):
            return T_TIMESTAMP
        fail(f"unsupported value of Python type `{v.__class__.__name__}`")
    return t


def type_name(v: Any) -> str:
    t = _TYPE_OF.get(v.__class__)
    return t.name if t is not None else v.__class__.__name__


# --- equality -------------------------------------------------------------------------------


def eq(a: Any, b: Any) -> bool:
    ca = a.__class__
    cb = b.__class__
    if ca is cb:
        if ca is list or ca is tuple:
            return _list_eq(a, b)
        if ca is dict:
            return _map_eq(a, b)
        return bool(a == b)
    if ca in NUMERIC and cb in NUMERIC:
        return bool(a == b)
    if ca in LISTS and cb in LISTS:
        return _list_eq(a, b)
    if ca is datetime or cb is datetime:
        return isinstance(a, datetime) and isinstance(b, datetime) and a == b
    if ca is bool or cb is bool:
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return _map_eq(a, b)
    return False


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def _list_eq(a: Any, b: Any) -> bool:
    if len(a) != len(b):
        return False
    return all(eq(x, y) for x, y in zip(a, b))


def _map_eq(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    for k, v in a.items():
        found, w = map_lookup(b, k)
        if not found or not eq(v, w):
            return False
    return True


def map_lookup(m: dict[Any, Any], k: Any) -> tuple[bool, Any]:
    """Lookup with CEL key semantics: bools never match numbers, numbers match across types."""
    ck = k.__class__
    if ck is str:
        if k in m:
            return True, m[k]
        return False, None
    if ck is bool or ck in NUMERIC:
        if ck is float and not k.is_integer():
            return False, None
        # One hash probe, not a scan: a number or bool looked up in a request's map of 10,000
        # string keys, once per iteration of a comprehension, was 10^8 steps the budget
        # charged as 10^4. Python's 1, 1u, 1.0 and True hash and compare equal, so a dict holds
        # at most one key equal to `k`; only when `k` is 0 or 1 can that key be of the other
        # kind (a bool for a number, a number for a bool), and the scan finds which it is.
        try:
            w = m[k]
        except KeyError:
            return False, None
        if ck is not bool and k != 0 and k != 1:
            return True, w
        for mk in m:
            if mk == k:
                return (True, w) if (mk.__class__ is bool) is (ck is bool) else (False, None)
        return False, None
    if ck is bytes or k is None or ck is datetime or ck is timedelta:
        # Not valid CEL map key types; a lookup is an error rather than a silent miss.
        no_overload("_[_]", m, k)
    if k in m:
        return True, m[k]
    return False, None


# --- ordering -------------------------------------------------------------------------------


def lt(a: Any, b: Any) -> bool:
    ca = a.__class__
    cb = b.__class__
    if ca is cb and (ca in NUMERIC or ca in ORDERED_SAME):
        return bool(a < b)
    if ca in NUMERIC and cb in NUMERIC:
        if ca is float or cb is float:
            return float(a) < float(b)
        return bool(a < b)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a < b
    no_overload("_<_", a, b)


def le(a: Any, b: Any) -> bool:
    ca = a.__class__
    cb = b.__class__
    if ca is cb and (ca in NUMERIC or ca in ORDERED_SAME):
        return bool(a <= b)
    if ca in NUMERIC and cb in NUMERIC:
        if ca is float or cb is float:
            return float(a) <= float(b)
        return bool(a <= b)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a <= b
    no_overload("_<=_", a, b)


def gt(a: Any, b: Any) -> bool:
    ca = a.__class__
    cb = b.__class__
    if ca is cb and (ca in NUMERIC or ca in ORDERED_SAME):
        return bool(a > b)
    if ca in NUMERIC and cb in NUMERIC:
        if ca is float or cb is float:
            return float(a) > float(b)
        return bool(a > b)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a > b
    no_overload("_>_", a, b)


def ge(a: Any, b: Any) -> bool:
    ca = a.__class__
    cb = b.__class__
    if ca is cb and (ca in NUMERIC or ca in ORDERED_SAME):
        return bool(a >= b)
    if ca in NUMERIC and cb in NUMERIC:
        if ca is float or cb is float:
            return float(a) >= float(b)
        return bool(a >= b)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a >= b
    no_overload("_>=_", a, b)


# --- membership, indexing, selection --------------------------------------------------------


def in_(x: Any, c: Any) -> bool:
    cc = c.__class__
    if cc is list or cc is tuple:
        if x.__class__ is str:
            return x in c
        return any(eq(x, e) for e in c)
    if cc is dict or isinstance(c, dict):
        return map_lookup(c, x)[0]
    if isinstance(c, list | tuple):
        return any(eq(x, e) for e in c)
    no_overload("@in", x, c)


def index(c: Any, i: Any) -> Any:
    cc = c.__class__
    if cc is list or cc is tuple:
        ci = i.__class__
        if ci is int or ci is CelUint:
            pass
        elif ci is float:
            if not i.is_integer():
                fail(f"invalid list index: `{i}`")
            i = int(i)
        else:
            no_overload("_[_]", c, i)
        if i < 0 or i >= len(c):
            fail(f"index out of range: {i}")
        return c[i]
    if cc is dict or isinstance(c, dict):
        found, v = map_lookup(c, i)
        if not found:
            fail(f"no such key: `{i}`")
        return v
    no_overload("_[_]", c, i)


def select(c: Any, field: str) -> Any:
    """Field selection when the fast path (`c[field]`) raised: produce the CEL error."""
    if isinstance(c, dict):
        if field in c:
            return c[field]
        fail(f"no such key: `{field}`")
    fail(f"no such field `{field}` on a value of type `{type_name(c)}`")


def has(c: Any, field: str) -> bool:
    if c.__class__ is dict or isinstance(c, dict):
        return field in c
    fail(f"has() applied to a value of type `{type_name(c)}`, want a map")


def not_(x: Any) -> bool:
    if x is True:
        return False
    if x is False:
        return True
    no_overload("!_", x)


def logic_error(op: str, *vals: Any) -> NoReturn:
    """No operand of `&&`/`||` absorbed the others: raise the first error (or non-bool)."""
    for x in vals:
        if isinstance(x, BaseException):
            raise x
    for x in vals:
        if x.__class__ is not bool:
            no_overload(op, x)
    raise AssertionError("logic_error called with bools only")


def cond_error(c: Any) -> NoReturn:
    no_overload("_?_:_", c)


def want_bool(v: Any) -> bool:
    if v.__class__ is bool:
        return v  # type: ignore[no-any-return]
    fail(f"condition yields a value of type `{type_name(v)}`, want bool")


# --- arithmetic -----------------------------------------------------------------------------


def _check_int(r: int) -> int:
    if r < INT64_MIN or r > INT64_MAX:
        fail("integer overflow")
    return r


def _check_uint(r: int) -> CelUint:
    if r < 0 or r > UINT64_MAX:
        fail("unsigned integer overflow")
    return CelUint(r)


def add(a: Any, b: Any) -> Any:
    ca = a.__class__
    cb = b.__class__
    if ca is cb:
        if ca is int:
            return _check_int(a + b)
        if ca is float:
            return a + b
        if ca is str or ca is bytes:
            check_built_size(len(a) + len(b), "_+_")
            return a + b
        if ca is CelUint:
            return _check_uint(a + b)
        if ca is list or ca is tuple:
            check_built_size(len(a) + len(b), "_+_")
            return [*a, *b]
        if ca is timedelta:
            from pdp.cel._time import check_duration

            return check_duration(a + b)
    if ca in LISTS and cb in LISTS:
        check_built_size(len(a) + len(b), "_+_")
        return [*a, *b]
    if (ca is timedelta and isinstance(b, datetime)) or (
        cb is timedelta and isinstance(a, datetime)
    ):
        from pdp.cel._time import check_timestamp

        try:
            return check_timestamp(a + b)
        except OverflowError:
            fail("timestamp overflow")
    no_overload("_+_", a, b)


def sub(a: Any, b: Any) -> Any:
    ca = a.__class__
    cb = b.__class__
    if ca is cb:
        if ca is int:
            return _check_int(a - b)
        if ca is float:
            return a - b
        if ca is CelUint:
            return _check_uint(a - b)
        if ca is timedelta:
            from pdp.cel._time import check_duration

            return check_duration(a - b)
    if isinstance(a, datetime):
        from pdp.cel._time import check_duration, check_timestamp

        if isinstance(b, datetime):
            d = a - b
            # The reference engines hold a timestamp difference in int64 nanoseconds.
            if abs(d.days) > 106_751:
                fail("duration out of range")
            return check_duration(d)
        if cb is timedelta:
            try:
                return check_timestamp(a - b)
            except OverflowError:
                fail("timestamp overflow")
    no_overload("_-_", a, b)


def mul(a: Any, b: Any) -> Any:
    ca = a.__class__
    if ca is b.__class__:
        if ca is int:
            return _check_int(a * b)
        if ca is float:
            return a * b
        if ca is CelUint:
            return _check_uint(a * b)
    no_overload("_*_", a, b)


def div(a: Any, b: Any) -> Any:
    ca = a.__class__
    if ca is b.__class__:
        if ca is int:
            if b == 0:
                fail("division by zero")
            q = abs(a) // abs(b)
            return _check_int(q if (a < 0) == (b < 0) else -q)
        if ca is float:
            if b == 0.0:
                if a == 0.0 or math.isnan(a):
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
        if ca is CelUint:
            if b == 0:
                fail("division by zero")
            return CelUint(a // b)
    no_overload("_/_", a, b)


def mod(a: Any, b: Any) -> Any:
    ca = a.__class__
    if ca is b.__class__:
        if ca is int:
            if b == 0:
                fail("modulus by zero")
            if a == INT64_MIN and b == -1:
                fail("integer overflow")  # as in the reference engines: INT64_MIN / -1 overflows
            r = abs(a) % abs(b)
            return -r if a < 0 else r
        if ca is CelUint:
            if b == 0:
                fail("modulus by zero")
            return CelUint(a % b)
    no_overload("_%_", a, b)


def neg(a: Any) -> Any:
    ca = a.__class__
    if ca is int:
        return _check_int(-a)
    if ca is float:
        return -a
    if ca is timedelta:
        return -a
    no_overload("-_", a)


def size(v: Any) -> int:
    cv = v.__class__
    if cv is str or cv is bytes or cv is list or cv is tuple or cv is dict:
        return len(v)
    if isinstance(v, dict | list | tuple):
        return len(v)
    no_overload("size", v)


def now_of(act: Any) -> datetime:
    n = act.get("now")
    if n is None:
        return datetime.now(UTC)
    if not isinstance(n, datetime):
        fail("activation `now` is not a timestamp")
    return n
