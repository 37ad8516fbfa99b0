"""Standard CEL functions (conversions, strings) and pdp's set helpers."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

from pdp.cel import _time
from pdp.cel._values import (
    INT64_MAX,
    INT64_MIN,
    LISTS,
    T_DOUBLE,
    UINT64_MAX,
    CelType,
    CelUint,
    check_built_size,
    eq,
    fail,
    in_,
    no_overload,
    type_of,
)

# --- conversions ----------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d+\Z")


def to_int(v: Any) -> int:
    cv = v.__class__
    if cv is int:
        return v  # type: ignore[no-any-return]
    if cv is bool:
        return int(v)
    if cv is CelUint:
        if v > INT64_MAX:
            fail("integer overflow")
        return int(v)
    if cv is float:
        if math.isnan(v) or not (-9.223372036854776e18 < v < 9.223372036854776e18):
            fail("integer overflow")
        return int(v)
    if cv is str:
        if not _INT_RE.match(v):
            fail(f"cannot convert `{v}` to int")
        r = int(v)
        if r < INT64_MIN or r > INT64_MAX:
            fail("integer overflow")
        return r
    if isinstance(v, datetime):
        return _time.timestamp_seconds(v)
    no_overload("int", v)


def to_uint(v: Any) -> CelUint:
    cv = v.__class__
    if cv is CelUint:
        return v  # type: ignore[no-any-return]
    if cv is int:
        if v < 0:
            fail("unsigned integer overflow")
        return CelUint(v)
    if cv is float:
        if math.isnan(v) or not (-1.0 < v < 1.8446744073709552e19):
            fail("unsigned integer overflow")
        return CelUint(int(v))
    if cv is str:
        if not re.fullmatch(r"\+?\d+", v):
            fail(f"cannot convert `{v}` to uint")
        r = int(v)
        if r > UINT64_MAX:
            fail("unsigned integer overflow")
        return CelUint(r)
    no_overload("uint", v)


def to_double(v: Any) -> float:
    cv = v.__class__
    if cv is float:
        return v  # type: ignore[no-any-return]
    if cv is int or cv is CelUint:
        return float(v)
    if cv is str:
        try:
            return float(v)
        except ValueError:
            fail(f"cannot convert `{v}` to double")
    no_overload("double", v)


def _fmt_double(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'g', -1, 64), which the reference engines use."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0.0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    from decimal import Decimal  # only for `string(double)`

    sign, digits, exponent = Decimal(repr(v)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    exp10 = len(ds) + int(exponent) - 1
    neg = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 >= len(ds) - 1:
        return neg + ds + "0" * (exp10 - len(ds) + 1)
    if exp10 >= 0:
        return f"{neg}{ds[: exp10 + 1]}.{ds[exp10 + 1 :]}"
    return f"{neg}0.{'0' * (-exp10 - 1)}{ds}"


def to_string(v: Any) -> str:
    cv = v.__class__
    if cv is str:
        return v  # type: ignore[no-any-return]
    if cv is int or cv is CelUint:
        return str(int(v))
    if cv is bool:
        return "true" if v else "false"
    if cv is float:
        return _fmt_double(v)
    if cv is bytes:
        try:
            return v.decode()  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            fail("invalid UTF-8 in bytes")
    if isinstance(v, datetime):
        return _time.format_timestamp(v)
    if cv is timedelta:
        return _time.format_duration(v)
    from pdp.cel import _network

    s = _network.to_string(v)
    if s is not None:
        return s
    no_overload("string", v)


def to_bytes(v: Any) -> bytes:
    cv = v.__class__
    if cv is bytes:
        return v  # type: ignore[no-any-return]
    if cv is str:
        return v.encode()  # type: ignore[no-any-return]
    no_overload("bytes", v)


def to_bool(v: Any) -> bool:
    cv = v.__class__
    if cv is bool:
        return v  # type: ignore[no-any-return]
    if cv is str:
        if v in ("true", "True", "TRUE", "t", "1"):
            return True
        if v in ("false", "False", "FALSE", "f", "0"):
            return False
        fail(f"cannot convert `{v}` to bool")
    no_overload("bool", v)


def to_type(v: Any) -> CelType:
    return type_of(v)


def dyn(v: Any) -> Any:
    return v


# --- strings --------------------------------------------------------------------------------


def _str(fn: str, *vals: Any) -> None:
    for v in vals:
        if v.__class__ is not str:
            no_overload(fn, *vals)


def contains(s: Any, sub: Any) -> bool:
    _str("contains", s, sub)
    return sub in s  # type: ignore[no-any-return]


def starts_with(s: Any, p: Any) -> bool:
    _str("startsWith", s, p)
    return s.startswith(p)  # type: ignore[no-any-return]


def ends_with(s: Any, p: Any) -> bool:
    _str("endsWith", s, p)
    return s.endswith(p)  # type: ignore[no-any-return]


def lower_ascii(s: Any) -> str:
    _str("lowerAscii", s)
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in s) if not s.isascii() else s.lower()


def upper_ascii(s: Any) -> str:
    _str("upperAscii", s)
    return "".join(c.upper() if "a" <= c <= "z" else c for c in s) if not s.isascii() else s.upper()


def _int_arg(fn: str, v: Any) -> int:
    if v.__class__ is not int:
        no_overload(fn, v)
    return v  # type: ignore[no-any-return]


def split(s: Any, sep: Any, n: Any = None) -> list[str]:
    _str("split", s, sep)
    limit = -1 if n is None else _int_arg("split", n)
    if limit == 0:
        return []
    if sep == "":
        chars = list(s)
        if limit > 0 and len(chars) > limit:
            chars = [*chars[: limit - 1], "".join(chars[limit - 1 :])]
        return chars
    return s.split(sep, limit - 1) if limit > 0 else s.split(sep)  # type: ignore[no-any-return]


def join(lst: Any, sep: Any = "") -> str:
    if lst.__class__ not in LISTS or sep.__class__ is not str:
        no_overload("join", lst, sep)
    size = len(sep) * max(len(lst) - 1, 0)
    for x in lst:
        if x.__class__ is not str:
            no_overload("join", lst, sep)
        size += len(x)
    check_built_size(size, "join")
    return sep.join(lst)  # type: ignore[no-any-return]


def replace(s: Any, old: Any, new: Any, n: Any = None) -> str:
    _str("replace", s, old, new)
    limit = -1 if n is None else _int_arg("replace", n)
    if len(new) > len(old):
        count = s.count(old) if old else len(s) + 1
        count = count if limit < 0 else min(count, limit)
        check_built_size(len(s) + count * (len(new) - len(old)), "replace")
    return s.replace(old, new, limit)  # type: ignore[no-any-return]


_WS = (
    " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def trim(s: Any) -> str:
    _str("trim", s)
    return s.strip(_WS)  # type: ignore[no-any-return]


def index_of(s: Any, sub: Any, start: Any = None) -> int:
    _str("indexOf", s, sub)
    st = 0 if start is None else _int_arg("indexOf", start)
    if st < 0 or st > len(s):
        fail(f"index out of range: {st}")
    return s.find(sub, st)  # type: ignore[no-any-return]


def last_index_of(s: Any, sub: Any, end: Any = None) -> int:
    _str("lastIndexOf", s, sub)
    if end is None:
        return s.rfind(sub)  # type: ignore[no-any-return]
    e = _int_arg("lastIndexOf", end)
    if e < 0 or e >= len(s):
        fail(f"index out of range: {e}")
    return s.rfind(sub, 0, e + len(sub))  # type: ignore[no-any-return]


def substring(s: Any, start: Any, end: Any = None) -> str:
    _str("substring", s)
    a = _int_arg("substring", start)
    b = len(s) if end is None else _int_arg("substring", end)
    if a < 0 or a > len(s):
        fail(f"index out of range: {a}")
    if b < 0 or b > len(s):
        fail(f"index out of range: {b}")
    if a > b:
        fail(f"invalid substring range. start: {a}, end: {b}")
    return s[a:b]  # type: ignore[no-any-return]


def char_at(s: Any, i: Any) -> str:
    _str("charAt", s)
    n = _int_arg("charAt", i)
    if n < 0 or n > len(s):
        fail(f"index out of range: {n}")
    return s[n : n + 1]  # type: ignore[no-any-return]


def reverse(s: Any) -> str:
    _str("reverse", s)
    return s[::-1]  # type: ignore[no-any-return]


# --- sets -----------------------------------------------------------------------------------


def _lists(fn: str, a: Any, b: Any) -> None:
    if a.__class__ not in LISTS or b.__class__ not in LISTS:
        no_overload(fn, a, b)


# The set helpers ask CEL's `in` of each element of one list against the other. Done as written
# that is len(a) x len(b) comparisons outside any comprehension budget: two request lists of
# 9,000 numbers each (200 KB, within the request limits) kept one evaluation of
# `P.attr.groups.containsAny(R.attr.groups)` busy for 18 s with the GIL held. So the scanned
# list is indexed once by `_key`, a hashable stand-in equal for two values exactly when CEL's
# `==` says they are, and each lookup is one hash probe: linear in both lists.
_NEVER = object()  # the key of a value equal to nothing (one holding a NaN)
# Values that are their own key: no two of them are equal in Python unless CEL says so, and a
# list of only these is indexed and probed by C loops (`set(a)`, `isdisjoint`), the common case
# of ids or group names, checked once per resource and action against the principal's list.
_PLAIN = frozenset({str, int, CelUint})


def _key(x: Any) -> Any:
    c = x.__class__
    if c is str or c is int or c is CelUint:
        return x  # 1 == 1u == 1.0, as Python's numbers hash and compare
    if c is bool:
        return ("b", x)  # never equal to a number, as in CEL (in Python True == 1)
    if c is float:
        return x if x == x else _NEVER
    if c is list or c is tuple:
        keys = tuple(_key(e) for e in x)
        return _NEVER if _NEVER in keys else ("l", keys)
    if isinstance(x, dict):
        pairs = [(_key(k), _key(w)) for k, w in x.items()]
        return _NEVER if any(_NEVER in p for p in pairs) else ("m", frozenset(pairs))
    if isinstance(x, datetime):
        return ("t", x)
    if x is None:
        return ("z",)
    return ("o", c, x)  # bytes, durations, types, addresses: equal only to their own class


def _plain(lst: Any) -> bool:
    return set(map(type, lst)) <= _PLAIN


def _index(lst: Any) -> set[Any]:
    return set(lst) if _plain(lst) else {_key(e) for e in lst}


def _has(keys: set[Any], x: Any) -> bool:
    k = _key(x)
    return k is not _NEVER and k in keys


# Below this many comparisons the plain scan is cheaper than building an index.
_FEW = 64


def has_all(a: Any, b: Any) -> bool:
    _lists("hasAll", a, b)
    if len(a) * len(b) <= _FEW:
        return all(in_(x, a) for x in b)
    keys = _index(a)
    return keys.issuperset(b) if _plain(b) else all(_has(keys, x) for x in b)


def has_any(a: Any, b: Any) -> bool:
    _lists("hasAny", a, b)
    if len(a) * len(b) <= _FEW:
        return any(in_(x, a) for x in b)
    keys = _index(a)
    return not keys.isdisjoint(b) if _plain(b) else any(_has(keys, x) for x in b)


def intersect(a: Any, b: Any) -> list[Any]:
    _lists("intersect", a, b)
    if len(a) * len(b) <= _FEW:
        return [x for x in a if in_(x, b)]
    keys = _index(b)
    return [x for x in a if x in keys] if _plain(a) else [x for x in a if _has(keys, x)]


def is_subset(a: Any, b: Any) -> bool:
    _lists("isSubset", a, b)
    if len(a) * len(b) <= _FEW:
        return all(in_(x, b) for x in a)
    keys = _index(b)
    return keys.issuperset(a) if _plain(a) else all(_has(keys, x) for x in a)


__all__ = ["T_DOUBLE", "eq"]
