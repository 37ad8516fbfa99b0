"""Request bodies as strict JSON: UTF-8, one object, no duplicate keys, finite numbers.

The HTTP face's answer to I-JSON (RFC 7493), which AuthZEN asks of its callers: a body that a
JSON parser could read two ways (a repeated key, an unpaired surrogate, NaN) is refused with
a `BodyError` rather than guessed at. Size is bounded by the reader before this runs.
"""

from __future__ import annotations

import json
from typing import Any

from pdp.errors import RequestError


class BodyError(RequestError):
    """A body that is not one strict JSON object (400, field `body` or the offending key)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyError(key, "duplicate key in a JSON object")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise BodyError("body", f"`{name}` is not a JSON number")


_decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant)


def _check_surrogates(text: str) -> None:
    # json accepts "\ud800" escapes and yields a lone surrogate, which cannot be encoded again
    # (the decision log would fail) and which I-JSON forbids.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError("body", "string holds an unpaired surrogate") from None


def parse_json_object(data: bytes) -> dict[str, Any]:
    """The body as a dict, or `BodyError` naming what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("body", f"not UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        obj = _decoder.decode(text)
    except BodyError:
        raise
    except json.JSONDecodeError as exc:
        raise BodyError(
            "body", f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg.lower()}"
        ) from None
    except RecursionError:
        raise BodyError("body", "JSON nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise BodyError("body", f"bad JSON number: {str(exc)[:80].lower()}") from None
    if not isinstance(obj, dict):
        raise BodyError("body", "must be a JSON object")
    if "\\ud" in text or "\\uD" in text:
        _check_surrogates(json.dumps(obj, ensure_ascii=False))
    return obj
