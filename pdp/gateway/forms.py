"""`_method` in a query, a form body or a JSON body: the method Rails, Laravel, Symfony and
Spring run instead of the request line's. Pure: bytes in, the values found out.

Rack's `MethodOverride`, Symfony's `http_method_override` (and Laravel on it) and Spring's
`HiddenHttpMethodFilter` read `_method` from a POST's form body, `application/x-www-form-urlencoded`
or `multipart/form-data`; Rack also parses a body without a content type as a form. pdp decides
on the request line, so it must see every `_method` the upstream could read: the body is parsed
as those frameworks parse it (never searched), and what pdp cannot parse the way they might is
refused (`FormError`) rather than guessed. Laravel also reads a JSON body's top-level
`_method` (`json_method_values`).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from array import array
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    import email.message

METHOD_PARAM = "_method"
# A body longer than this is parsed only this far and treated as cut: the work pdp does for
# one request stays bounded whatever a caller sends (gRPC's own cap is 4 MiB).
MAX_FORM_BYTES = 1 << 20
# A multipart or JSON body is parsed only this far (the rest counts as cut): `email`'s parser
# walks a multipart body line by line in Python (0.4 s of CPU per hostile MiB of short lines
# on a loaded machine), and `json` builds an object per bracket (0.15 s per MiB of `[]`),
# where the urlencoded scan is one regex pass in C (docs/GATEWAY.md has the figures).
MAX_PARSED_BYTES = 256 << 10
# Parts of a multipart body pdp parses; a form with more is refused (a parser bomb otherwise).
MAX_PARTS = 1000
# Urlencoded fields spelled like `_method` pdp decodes; a body with more is refused: two
# already refuse a form (the upstream picks a copy), so only a hostile body has more.
MAX_METHOD_FIELDS = 16
# JSON nesting pdp parses; a deeper JSON body is refused. PHP's `json_decode` (Laravel) gives
# up at 512 and reads no `_method`; Node's `JSON.parse` goes deeper and reads it, so a deeper
# body cannot be called harmless, and Python's parser recurses in C up to its stack limit.
MAX_JSON_DEPTH = 512

URLENCODED = "urlencoded"
MULTIPART = "multipart"

# A key that may decode to `_method` as `_is_method_name` reads it: spaces, then `_` (or `.`,
# `[`, a space), then `method`, each byte literal or `%XX`-escaped. Found in C over the whole
# text, so a 1 MiB form of junk fields costs a regex scan, not a Python loop per field
# (0.45 s of CPU for `%41=&` * 200k before); each hit is then checked exactly.
_SP = r"(?: |\+|%20)"
_FIRST = r"(?:[_.\[ +]|%5[fFbB]|%2[eE]|%20)"
_CANDIDATE = re.compile(
    "&"  # the text is searched with a `&` in front: a literal start is found at C speed
    + _SP
    + "*"
    + _FIRST
    + "".join(f"(?:{c}|%{ord(c) >> 4:X}[{ord(c) & 15:x}{ord(c) & 15:X}])" for c in "method")
)


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
    field `_CANDIDATE` finds is split and decoded, so a large form costs one regex scan;
    more than `MAX_METHOD_FIELDS` such fields are refused (`FormError`)."""
    text = "&" + (text.replace(also, "&") if also else text)
    values = []
    for n, hit in enumerate(_CANDIDATE.finditer(text)):
        if n >= MAX_METHOD_FIELDS:
            raise FormError(f"more than {MAX_METHOD_FIELDS} fields spelled like `{METHOD_PARAM}`")
        start = hit.start() + 1
        end = text.find("&", start)
        pair = text[start : None if end < 0 else end]
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key, encoding="latin-1")
        if _is_method_name(key):
            values.append(unquote_plus(value, encoding="latin-1"))
    return values


def is_json(content_type: str | None) -> bool:
    """Whether Laravel reads the body as JSON: its `Request::isJson()` is
    `Str::contains($this->header('CONTENT_TYPE'), ['/json', '+json'])` over the whole header
    (laravel/framework, src/Illuminate/Http/Request.php). Compared here without case, so
    `Application/JSON` counts too (Express's `type-is` ignores case)."""
    if content_type is None:
        return False
    lowered = content_type.lower()
    return "/json" in lowered or "+json" in lowered


def json_method_values(body: bytes) -> list[str]:
    """The top-level `_method` values of a JSON body, once per copy (a key given twice is two
    values: PHP and JSON.parse keep the last, other parsers the first). A value that is not a
    string shows as its JSON text, so it never equals a method name.

    Laravel's `Request::createFromBase` makes `getInputSource()` the request's parameter bag,
    which is `json()` for a JSON request: `new ParameterBag((array) json_decode($content,
    true))`, and Symfony's `getMethod()` reads `_method` from that bag. A body that is not
    JSON decodes to null there, an empty bag, no `_method`: so here too, a body that does not
    parse names no method. To keep "does not parse" no wider than theirs, the parse is
    lenient where they are: bytes that are not UTF-8 are replaced (Node's body-parser does),
    a BOM is dropped, control characters in strings and huge integers (Python refuses over
    4300 digits, PHP reads a float) pass. Nesting deeper than `MAX_JSON_DEPTH` is refused."""
    text = body.decode(json.detect_encoding(body), "replace").removeprefix("\ufeff")
    if not text.lstrip(" \t\r\n").startswith("{"):
        return []  # an array, a scalar or no JSON: no top-level key
    if METHOD_PARAM not in text and "\\u" not in text:
        return []  # no key can be `_method`: spelled out, or with `\u` escapes
    _check_depth(text)
    try:
        # `list` keeps every pair of an object (duplicates too), in C; nested objects become
        # lists of pairs as well, which nothing here reads.
        pairs = json.loads(text, object_pairs_hook=list, parse_int=float, strict=False)
    except RecursionError:
        raise FormError(f"a JSON body nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        return []
    if not isinstance(pairs, list):
        return []
    values = []
    for key, value in pairs:
        if key == METHOD_PARAM:
            values.append(value if isinstance(value, str) else json.dumps(value)[:64])
    return values


# A value no method can equal: a top-level `_method` whose value a cut body does not hold.
CUT_VALUE = "(cut)"


def json_prefix_method_values(body: bytes) -> list[str]:
    """The top-level `_method` values of a JSON body pdp got only the start of (cut at Envoy's
    `max_request_bytes`, or past `MAX_PARSED_BYTES`), read key by key as far as it goes.

    What the start of a JSON object holds is settled by that start: a top-level key read
    there is a top-level key of the whole text, whatever follows. So each top-level key is
    read (`json`'s own string scanner, escapes and all) and its value skipped (`json`'s own
    value scanner, in C); a `_method` found is a value as in `json_method_values`, and one
    whose value the cut runs through (`"_method": "DEL`) is `CUT_VALUE`, a method nobody
    asked for, as a form cut at `_method=DEL` names `DEL`. A key the cut runs through
    (`"_met`) is not seen, as in a cut form. Where the text stops being JSON, the keys read
    before it are kept: the whole body would not parse (Laravel would read no `_method`), but
    a cut body cannot say so, and keeping them only refuses a request that names another
    method in the start of a broken body. Nesting deeper than `MAX_JSON_DEPTH` is refused."""
    text = body.decode(json.detect_encoding(body), "replace").removeprefix("\ufeff")
    if not text.lstrip(" \t\r\n").startswith("{"):
        return []
    if METHOD_PARAM not in text and "\\u" not in text:
        return []  # no key can be `_method`: spelled out, or with `\u` escapes
    _check_depth(text)
    values: list[str] = []
    # One C call per step, and one Python turn per top-level pair (~1 µs: a 256 KiB body of
    # `"a":1,` pairs costs ~40 ms, bench/body_parse.py).
    step = _FIRST_KEY.match(text)
    while step is not None:
        try:
            key, pos = _scanstring(text, step.end(), False)
        except ValueError:
            return values  # the cut runs through a key: the rest is not seen, as in a form
        colon = _COLON.match(text, pos)
        if colon is None:
            if key == METHOD_PARAM and not text[pos:].strip(" \t\n\r"):
                values.append(CUT_VALUE)  # cut before its value
            return values
        try:
            value, pos = _scan_value(text, colon.end())
        except RecursionError:
            raise FormError(f"a JSON body nested deeper than {MAX_JSON_DEPTH} levels") from None
        except (StopIteration, ValueError):
            if key == METHOD_PARAM:
                values.append(CUT_VALUE)
            return values
        if key == METHOD_PARAM:
            # A number the cut may have shortened is no method either way.
            values.append(value if isinstance(value, str) else json.dumps(value)[:64])
        step = _NEXT_KEY.match(text, pos)
    return values


# Lenient as `json_method_values`' parse: control characters in strings, integers of any length.
# `scan_once` is the decoder's C scanner (`raw_decode` without its Python wrapper); it raises
# StopIteration where no value starts.
_scan_value = json.JSONDecoder(object_pairs_hook=list, parse_int=float, strict=False).scan_once
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
_FIRST_KEY = re.compile(r'[ \t\n\r]*\{[ \t\n\r]*"')
_COLON = re.compile(r"[ \t\n\r]*:[ \t\n\r]*")
_NEXT_KEY = re.compile(r'[ \t\n\r]*,[ \t\n\r]*"')


# A string, closed or running to the end of the text (a cut body, or no JSON at all): one
# token either way. A lone `"` as a token of its own made every escaped quote of an
# unterminated string start a new scan to the end: 128 KiB of `\"` cost ~55 s of CPU.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?|[^\[\]{}"]+', re.DOTALL)
_DEPTH_STEP = str.maketrans({"[": "\x01", "{": "\x01", "]": "\xff", "}": "\xff"})


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than `MAX_JSON_DEPTH`, in C-speed steps: fewer brackets than
    that cannot nest deeper; else strings and other characters are dropped and the running
    sum of +1 per opener, -1 per closer is taken."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    brackets = _JSON_STRING.sub("", text).translate(_DEPTH_STEP)
    steps = array("b", brackets.encode("latin-1"))
    if steps and max(itertools.accumulate(steps)) > MAX_JSON_DEPTH:
        raise FormError(f"a JSON body nested deeper than {MAX_JSON_DEPTH} levels")


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


def multipart_method_values(
    content_type: str, body: bytes, complete: bool, *, shrink: bool = True
) -> list[str]:
    """The values of every part named `_method` (by `name`, or RFC 2231 `name*`) in a multipart
    body. A complete body that does not parse cleanly (no boundary, a missing start or close
    delimiter, a part without headers) is refused: another parser may find parts this one
    did not. A cut body (`complete` false) parses as far as it goes."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in content_type):
        raise FormError("header `content-type` holds a control character")
    # Here, not at import: `email` costs every server's start-up ~10 ms, multipart bodies are rare.
    import email.parser
    import email.policy
    import email.utils

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
    parsed = _shrunk(body, boundary) if shrink and boundary else body
    message = parser.parsebytes(root + parsed)
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


# The payload of a part that may be `_method` handed to the parser whole up to this many bytes;
# a longer one is cut (and read as naming another method), or a `_method` part of short lines
# would cost as much as the whole body did.
MAX_METHOD_PAYLOAD = 1024
# What `email`'s parser reads as a delimiter line (its `boundaryre`, on lines split at CRLF, CR
# or LF), a header line (`headerRE`), and one line.
_HEADER_LINES = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\r\n]*(?:\r\n|\r|\n|\Z))*")
_ONE_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")


def _shrunk(body: bytes, boundary: str) -> bytes:
    """`body` as `email`'s parser needs it to find the parts, their names and their defects:
    every delimiter line, and of the text between two, the header lines that say something
    (`_shrunk_headers`) and the line after them (a blank separator, or the line whose
    presence is a defect). The rest of a part's
    payload is dropped unless its headers say `method` (in any case), where a `_method`
    part's name is: the payload is its value (cut past `MAX_METHOD_PAYLOAD`, ending in a NUL
    line: another method). The parser walks a body line by line in Python (~0.1 s per 256
    KiB of short lines); the delimiter lines are found here in one C scan.

    A part named `_method` whose headers do not spell `method` (RFC 2231 `%6D…`, quoted
    pairs) loses its payload: its value reads `""` (or, with no blank line after its
    headers, its first line and a NUL line), another method than the request's, so it is
    refused, never passed."""
    delimiter = re.compile(
        rb"(?:(?<=[\r\n])|\A)--"
        + re.escape(boundary.encode("utf-8", "surrogateescape"))
        + rb"(?:--)?[ \t]*(?:\r\n|\r|\n|\Z)"
    )
    out = []
    pos = 0
    for m in delimiter.finditer(body):
        out.append(_shrunk_part(body, pos, m.start()))
        out.append(m.group(0))
        pos = m.end()
    out.append(_shrunk_part(body, pos, len(body)))
    return b"".join(out)


def _shrunk_part(body: bytes, start: int, end: int) -> bytes:
    headers = _HEADER_LINES.match(body, start, end)
    assert headers is not None  # matches the empty string
    line = _ONE_LINE.match(body, headers.end(), end)
    assert line is not None
    block = _shrunk_headers(body[start : headers.end()])
    first = body[headers.end() : line.end()]
    if b"method" not in block.lower():
        if first.strip(b"\r\n"):
            # No blank line after the headers (a defect, refused in a complete body): `first`
            # is payload, and the parse of the whole (cut) body reads every line after it as
            # well. A part named `_method` in a way its headers do not spell (RFC 2231
            # `name*0`/`name*1`) would read `POST` there alone; a NUL line keeps it another
            # method, as the whole value is.
            return block + first + b"\x00\r\n"
        return block + first
    if end - line.end() <= MAX_METHOD_PAYLOAD:
        return block + body[headers.end() : end]
    # Longer than any method name, however padded: cut, and ended with a line no method
    # name holds, so the value read is another method whatever the rest said.
    return block + body[headers.end() : line.end() + MAX_METHOD_PAYLOAD] + b"\x00\r\n"


def _shrunk_headers(block: bytes) -> bytes:
    """A part's header lines with every header but `Content-Disposition` (its name) and
    `Content-Transfer-Encoding` (how its value decodes) dropped, continuation lines and all:
    parts are read as text whatever else they say. A block the parser reads with defects
    or by position (a first line that is a continuation, a `From ` or `:` line) is kept
    whole."""
    if not block or block[:1] in b" \t" or _POSITIONAL_HEADER.search(block):
        return block
    # Never none where there were some: a part of no lines at all would make the delimiter
    # lines around it one run, which the parser reads as one delimiter.
    return _OTHER_HEADER.sub(b"", block) or b"X:\r\n"


_POSITIONAL_HEADER = re.compile(rb"(?:(?<=[\r\n])|\A)(?:From |:)")
_OTHER_HEADER = re.compile(
    rb"(?:(?<=[\r\n])|\A)(?!(?:content-disposition|content-transfer-encoding):)"
    rb"[\x21-\x39\x3b-\x7e]+:[^\r\n]*(?:\r\n|\r|\n|\Z)(?:[\t ][^\r\n]*(?:\r\n|\r|\n|\Z))*",
    re.IGNORECASE,
)


def _form_class(token: str) -> type[email.message.Message]:
    """The parser's message class: the form itself (the message whose `X-Pdp-Form` header is
    the per-call `token`, which no part can guess) as usual, its parts as text whatever their
    content type. A part declaring itself `multipart/mixed` or `message/rfc822` is not parsed
    into, so it cannot be a parser bomb (800 KB of nested parts cost seconds); form parsers
    do not look inside either."""
    import email.message

    class FormMessage(email.message.Message):
        def get_content_maintype(self) -> str:
            return super().get_content_maintype() if self.get(_ROOT) == token else "text"

        def get_content_type(self) -> str:
            return super().get_content_type() if self.get(_ROOT) == token else "text/plain"

    return FormMessage


_ROOT = "X-Pdp-Form"
