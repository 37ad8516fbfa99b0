"""`_method` in a query or a form body: the method Rails, Laravel, Symfony and Spring run instead
of the request line's. Pure: bytes in, the values found out.

Rack's `MethodOverride`, Symfony's `http_method_override` (and Laravel on it) and Spring's
`HiddenHttpMethodFilter` read `_method` from a POST's form body, `application/x-www-form-urlencoded`
or `multipart/form-data`; Rack also parses a body without a content type as a form. pdp decides
on the request line, so it must see every `_method` the upstream could read: the body is parsed
as those frameworks parse it (never searched), and what pdp cannot parse the way they might is
refused (`FormError`) rather than guessed.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import secrets
from urllib.parse import unquote_plus

METHOD_PARAM = "_method"
# A body longer than this is parsed only this far and treated as cut: the work pdp does for
# one request stays bounded whatever a caller sends (gRPC's own cap is 4 MiB).
MAX_FORM_BYTES = 1 << 20
# Parts of a multipart body pdp parses; a form with more is refused (a parser bomb otherwise).
MAX_PARTS = 1000

URLENCODED = "urlencoded"
MULTIPART = "multipart"


class FormError(ValueError):
    """A body pdp cannot read the way the upstream may; the message says why."""


def method_views(text: str) -> list[list[str]]:
    """The `_method` values of an urlencoded form or query, once per way upstreams split it:
    at `&`, and when the text holds a `;`, at `&` and `;` (Rack before 3, Python before 3.9.2).
    Each view is a list of every value found, so a repeated `_method` shows as two."""
    views = [method_values(text)]
    if ";" in text:
        views.append(method_values(text, ";"))
    return views


def method_values(text: str, also: str = "") -> list[str]:
    """Every value a lenient upstream may take for `_method` from an urlencoded text split at
    `&` (and at `also`), as `parse_qsl` splits and decodes it.

    Parsed, not searched: `%5Fmethod` is `_method` once decoded. Names are compared as PHP
    registers them (leading spaces dropped, `.` and ` ` read as `_`, `_method[]` and
    `_method[x]` as `_method`): a spelling some upstream reads as `_method` counts. Only a
    name that may be `_method` has its value decoded, so a large form costs one split."""
    if also:
        text = text.replace(also, "&")
    values = []
    for pair in text.split("&"):
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key, encoding="latin-1")
        if _is_method_name(key):
            values.append(unquote_plus(value, encoding="latin-1"))
    return values


def _is_method_name(key: str) -> bool:
    name = key.lstrip(" ")
    bracket = name.find("[")
    if bracket >= 0 and "]" in name[bracket:]:
        name = name[:bracket]
    return name.replace(".", "_").replace(" ", "_").replace("[", "_") == METHOD_PARAM


def form_kind(content_type: str | None) -> str:
    """`URLENCODED`, `MULTIPART`, or "" for a body no framework reads `_method` from.

    The media type is compared without case and up to the first `;`, `,` or space, as PHP
    does (`application/X-WWW-Form-Urlencoded ;charset=utf-8` is a form). A header naming
    several media types (a repeated `Content-Type`, joined with commas) where one is a form
    is refused: the upstream picks one, and pdp cannot know which."""
    if content_type is None:
        return ""
    pieces = [p for p in _split_commas(content_type) if p.strip()]
    kinds = [_kind(p) for p in pieces]
    if len(pieces) > 1 and any(kinds):
        raise FormError("header `content-type` names more than one media type, one of them a form")
    return kinds[0] if kinds else ""


def _kind(piece: str) -> str:
    media = piece.strip().lower()
    for stop in (";", " ", "\t"):
        media = media.partition(stop)[0]
    if media == "application/x-www-form-urlencoded":
        return URLENCODED
    if media.startswith("multipart/"):  # Rack parses any multipart/* with a boundary
        return MULTIPART
    return ""


def _split_commas(value: str) -> list[str]:
    """`value` split at commas outside quoted strings (a boundary may be quoted with one)."""
    out, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    return out


def multipart_method_values(content_type: str, body: bytes, complete: bool) -> list[str]:
    """The values of every part named `_method` (by `name`, or RFC 2231 `name*`) in a multipart
    body. A complete body that does not parse cleanly (no boundary, a missing start or close
    delimiter, a part without headers) is refused: another parser may find parts this one
    did not. A cut body (`complete` false) parses as far as it goes."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in content_type):
        raise FormError("header `content-type` holds a control character")
    head = b"Content-Type: " + content_type.encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    # compat32: the modern policy's header objects cost ~15x more per part.
    boundary = (
        email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head).get_boundary()
    )
    # Counted before the body is parsed: every delimiter line starts with `--boundary`.
    if boundary and body.count(b"--" + boundary.encode("utf-8", "surrogateescape")) > MAX_PARTS + 1:
        raise FormError(f"a multipart body of more than {MAX_PARTS} parts")
    token = secrets.token_hex(16)
    root = f"{_ROOT}: {token}\r\n".encode() + head
    parser = email.parser.BytesParser(_class=_form_class(token), policy=email.policy.compat32)
    message = parser.parsebytes(root + body)
    if not message.is_multipart() or not boundary:
        if body.strip():
            raise FormError("a multipart body without a boundary pdp can parse")
        return []
    parts = message.get_payload()
    assert isinstance(parts, list)
    defects = list(message.defects)
    for part in parts:
        defects += part.defects
    if complete and defects:
        raise FormError(f"a multipart body pdp cannot parse cleanly ({type(defects[0]).__name__})")
    values = []
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        if _is_method_name(email.utils.collapse_rfc2231_value(name)):
            raw = part.get_payload(decode=False)
            value = raw if isinstance(raw, str) else ""
            decoded = part.get_payload(decode=True)
            values.append(value)
            # A Content-Transfer-Encoding (base64, quoted-printable) some parser applies: a
            # copy that reads differently decoded is a second value.
            if isinstance(decoded, bytes) and decoded.decode("latin-1") != value:
                values.append(decoded.decode("latin-1"))
    return values


def _form_class(token: str) -> type[email.message.Message]:
    """The parser's message class: the form itself (the message whose `X-Pdp-Form` header is
    the per-call `token`, which no part can guess) as usual, its parts as text whatever their
    content type. A part declaring itself `multipart/mixed` or `message/rfc822` is not parsed
    into, so it cannot be a parser bomb (800 KB of nested parts cost seconds); form parsers
    do not look inside either."""

    class FormMessage(email.message.Message):
        def get_content_maintype(self) -> str:
            return super().get_content_maintype() if self.get(_ROOT) == token else "text"

        def get_content_type(self) -> str:
            return super().get_content_type() if self.get(_ROOT) == token else "text/plain"

    return FormMessage


_ROOT = "X-Pdp-Form"
