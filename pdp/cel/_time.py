"""CEL timestamps and durations on aware `datetime` / `timedelta` (microsecond precision).

CEL specifies nanoseconds; sub-microsecond digits in literals are truncated (documented gap).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any

from pdp.cel._values import CelUint, fail, no_overload

MIN_TS = datetime(1, 1, 1, tzinfo=UTC)
MAX_TS = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MAX_DURATION = timedelta(seconds=315_576_000_000)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_US = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1000, "us": 1, "µs": 1}


def check_timestamp(t: datetime) -> datetime:
    if t < MIN_TS or t > MAX_TS:
        fail("timestamp out of range")
    return t


def check_duration(d: timedelta) -> timedelta:
    if d > MAX_DURATION or d < -MAX_DURATION:
        fail("duration out of range")
    return d


# Requests repeat the same timestamps (auth_time, a frozen time) across rules and resources.
_TIMESTAMP_CACHE_ENTRIES = 1024


@functools.lru_cache(maxsize=_TIMESTAMP_CACHE_ENTRIES)
def parse_timestamp(s: str) -> datetime:
    m = _TS_RE.match(s)
    if m is None:
        fail(f"cannot parse timestamp: `{s}`")
    y, mo, d, h, mi, sec, frac, off = m.groups()
    us = int((frac or "0").ljust(6, "0")[:6])
    if off in ("Z", "z"):
        tz: tzinfo = UTC
    else:
        sign = -1 if off[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    try:
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), us, tzinfo=tz)
        return check_timestamp(t.astimezone(UTC))
    except (ValueError, OverflowError):
        fail(f"cannot parse timestamp: `{s}`")


def parse_duration(s: str) -> timedelta:
    text = s
    neg = False
    if text[:1] in ("-", "+"):
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return timedelta(0)
    if not text:
        fail(f"cannot parse duration: `{s}`")
    total_ns = 0
    pos = 0
    while pos < len(text):
        m = _DUR_RE.match(text, pos)
        if m is None:
            fail(f"cannot parse duration: `{s}`")
        num, unit = m.groups()
        unit_ns = 1 if unit == "ns" else _UNIT_US[unit] * 1000
        if "." in num:
            whole, _, frac = num.partition(".")
            total_ns += int(whole or "0") * unit_ns
            if frac:
                total_ns += int(frac) * unit_ns // (10 ** len(frac))
        else:
            total_ns += int(num) * unit_ns
        pos = m.end()
    if neg:
        total_ns = -total_ns
    us = int(total_ns / 1000) if total_ns < 0 else total_ns // 1000
    if abs(us) > 315_576_000_000 * 1_000_000:
        fail("duration out of range")
    return timedelta(microseconds=us)


def format_timestamp(t: datetime) -> str:
    t = t.astimezone(UTC)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.year < 1000:
        base = f"{t.year:04d}" + base[base.index("-") :]
    if t.microsecond:
        base += "." + f"{t.microsecond:06d}".rstrip("0")
    return base + "Z"


def format_duration(d: timedelta) -> str:
    us = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    sign = "-" if us < 0 else ""
    us = abs(us)
    sec, frac = divmod(us, 1_000_000)
    if frac:
        return f"{sign}{sec}.{f'{frac:06d}'.rstrip('0')}s"
    return f"{sign}{sec}s"


def duration_us(d: timedelta) -> int:
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // b
    return -q if a < 0 else q


def timestamp_from_seconds(n: int) -> datetime:
    try:
        return check_timestamp(EPOCH + timedelta(seconds=n))
    except OverflowError:
        fail("timestamp out of range")


def timestamp_seconds(t: datetime) -> int:
    d = t - EPOCH
    return d.days * 86400 + d.seconds


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    if name in ("UTC", "Z", "utc"):
        return UTC
    m = re.fullmatch(r"([+-]?)(\d{1,2}):(\d{2})", name)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only for a named zone

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        fail(f"unknown time zone: `{name}`")


def _local(t: Any, tz: Any, fn: str) -> datetime:
    if not isinstance(t, datetime):
        no_overload(fn, t)
    if tz is None:
        return t.astimezone(UTC)
    if tz.__class__ is not str:
        no_overload(fn, t, tz)
    return t.astimezone(zone(tz))


def get_full_year(t: Any, tz: Any = None) -> int:
    return _local(t, tz, "getFullYear").year


def get_month(t: Any, tz: Any = None) -> int:
    return _local(t, tz, "getMonth").month - 1


def get_date(t: Any, tz: Any = None) -> int:
    return _local(t, tz, "getDate").day


def get_day_of_month(t: Any, tz: Any = None) -> int:
    return _local(t, tz, "getDayOfMonth").day - 1


def get_day_of_week(t: Any, tz: Any = None) -> int:
    return (_local(t, tz, "getDayOfWeek").weekday() + 1) % 7


def get_day_of_year(t: Any, tz: Any = None) -> int:
    return _local(t, tz, "getDayOfYear").timetuple().tm_yday - 1


def get_hours(t: Any, tz: Any = None) -> int:
    if t.__class__ is timedelta and tz is None:
        return _trunc_div(duration_us(t), 3_600_000_000)
    return _local(t, tz, "getHours").hour


def get_minutes(t: Any, tz: Any = None) -> int:
    if t.__class__ is timedelta and tz is None:
        return _trunc_div(duration_us(t), 60_000_000)
    return _local(t, tz, "getMinutes").minute


def get_seconds(t: Any, tz: Any = None) -> int:
    if t.__class__ is timedelta and tz is None:
        return _trunc_div(duration_us(t), 1_000_000)
    return _local(t, tz, "getSeconds").second


def get_milliseconds(t: Any, tz: Any = None) -> int:
    if t.__class__ is timedelta and tz is None:
        us = duration_us(t)
        return _trunc_div(us - _trunc_div(us, 1_000_000) * 1_000_000, 1000)
    return _local(t, tz, "getMilliseconds").microsecond // 1000


def to_timestamp(v: Any) -> datetime:
    cv = v.__class__
    if cv is str:
        return parse_timestamp(v)
    if isinstance(v, datetime):
        return v
    if cv is int:
        return timestamp_from_seconds(v)
    no_overload("timestamp", v)


def to_duration(v: Any) -> timedelta:
    cv = v.__class__
    if cv is str:
        return parse_duration(v)
    if cv is timedelta:
        return v  # type: ignore[no-any-return]
    # No `duration(int)`: CEL's standard library has none (the reference engine and pdp's
    # checker refuse it), and engines that add one disagree on its unit (cel-go reads
    # nanoseconds). Read as seconds it made `duration(R.attr.ttl)` a value where every
    # reference fails (a deny rule's error denies).
    no_overload("duration", v)


__all__ = ["CelUint"]
