"""The request path pdp decides on: canonicalized once, or refused.

Authorising one path while the upstream serves another is how path-confusion bypasses work
(`/users/bob/c1%2f..%2f..%2falice` decided as bob's, served as alice's). So the request target
is brought to one RFC 3986 normal form — percent-escapes of unreserved characters decoded,
every other escape kept and upper-cased — and anything an upstream could resolve to a
*different* resource is refused rather than guessed at: encoded `/` or `\\`, `.`/`..`
segments (raw or encoded), empty segments (`//`), `;` path parameters, control characters,
invalid escapes or UTF-8, double encoding, Unicode that NFKC folds into something else, and
oversized paths. The segments the routes match are the canonical path split on `/`, then
percent-decoded; none of them can contain `/` or be `.`/`..`.

Envoy configured as docs/GATEWAY.md says (`normalize_path`, `merge_slashes`,
`path_with_escaped_slashes_action: REJECT_REQUEST`) does most of this before pdp is asked and
forwards the same path it sent to pdp; this module is what holds when it does not.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MAX_PATH_CHARS = 8192  # the whole request target, query included
MAX_SEGMENTS = 128

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# pchar = unreserved / pct-encoded / sub-delims / ":" / "@" (RFC 3986 §3.3), minus `;`.
_PCHAR = _UNRESERVED | frozenset("!$&'()*+,=:@")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_QUERY_OK = re.compile(r"^[\x21-\x7e]*$")  # printable ASCII, no space


class PathError(ValueError):
    """A path pdp will not decide on; `reason` is the code sent back in the 400 body."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True, slots=True)
class CanonicalPath:
    path: str  # canonical, still percent-encoded, no query
    segments: tuple[str, ...]  # decoded; a trailing slash adds no segment
    query: str  # raw, as received

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def canonicalize(target: str) -> CanonicalPath:
    """The canonical form of a request target (`/a/b?q`), or `PathError`."""
    if len(target) > MAX_PATH_CHARS:
        raise PathError("path_too_long", f"the request target is over {MAX_PATH_CHARS} characters")
    path, sep, query = target.partition("?")
    if "#" in target:
        raise PathError("path_invalid_char", "a request target has no fragment (`#`)")
    if sep and not _QUERY_OK.match(query):
        raise PathError("path_invalid_char", "the query string has characters that need escaping")
    if not path.startswith("/"):
        raise PathError("path_not_absolute", "the path must start with `/`")
    if path == "/":
        return CanonicalPath("/", (), query)
    raw_parts = path[1:].split("/")
    if len(raw_parts) > 1 and raw_parts[-1] == "":
        raw_parts.pop()  # one trailing slash names the same resource
        trailing = True
    else:
        trailing = False
    if len(raw_parts) > MAX_SEGMENTS:
        raise PathError("path_too_long", f"the path has over {MAX_SEGMENTS} segments")
    parts: list[str] = []
    segments: list[str] = []
    for raw in raw_parts:
        part = _canonical_segment(raw)
        parts.append(part)
        segments.append(_decoded_segment(part))
    return CanonicalPath("/" + "/".join(parts) + ("/" if trailing else ""), tuple(segments), query)


def _canonical_segment(raw: str) -> str:
    if raw == "":
        raise PathError("path_empty_segment", "the path has an empty segment (`//`)")
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == "%":
            hex2 = raw[i + 1 : i + 3]
            if len(hex2) != 2 or not set(hex2) <= _HEX:
                raise PathError("path_bad_escape", "`%` must start a two-digit hex escape")
            char = chr(int(hex2, 16))
            if char in "/\\":
                raise PathError("path_encoded_slash", "the path has an encoded `/` or `\\`")
            if char in _UNRESERVED:
                out.append(char)  # RFC 3986 §6.2.2.2: decode unreserved characters
            else:
                out.append("%" + hex2.upper())  # §6.2.2.1: hex digits upper case
            i += 3
            continue
        if ch == ";":
            raise PathError("path_parameter", "the path has a `;` parameter")
        if ch == "\\":
            raise PathError("path_backslash", "the path has a `\\`")
        if ch not in _PCHAR:
            if ord(ch) < 0x20 or ch == "\x7f":
                raise PathError("path_control_char", "the path has a control character")
            raise PathError("path_invalid_char", "the path has a character that needs escaping")
        out.append(ch)
        i += 1
    return "".join(out)


def _decoded_segment(part: str) -> str:
    try:
        text = unquote_to_bytes(part).decode("utf-8")  # `part` holds only pchars and %XX
    except UnicodeDecodeError:
        raise PathError("path_bad_escape", "the escapes in the path are not UTF-8") from None
    if text in (".", ".."):
        raise PathError("path_dot_segment", "the path has a `.` or `..` segment")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise PathError("path_control_char", "the path has an encoded control character")
    if "%" in text and _ESCAPE.search(text):
        raise PathError("path_double_encoding", "the path has a double-encoded escape (`%25XX`)")
    if not text.isascii() and unicodedata.normalize("NFKC", text) != text:
        # An upstream that NFKC-folds (fullwidth solidus U+FF0F → `/`) would see another path.
        raise PathError("path_unicode_form", "the path has characters NFKC normalizes away")
    return text
