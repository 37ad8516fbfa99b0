"""Masking: what an operator marks sensitive, and credentials, never reach a decision-log sink.

Masking works on the JSON shape of a request (the shape `parse_check_request` accepts), so the
masked request stays replayable. Two layers:

- **Always**: keys that carry credentials (`authorization`, `cookie`, `token`, `password`, ...)
  are dropped from every attribute object, at any depth, however they are spelt (`accessToken`,
  `ACCESS-TOKEN`, `access.token`) and with any prefix (`sessionToken`, `X-Auth-Token`), as are
  keys holding a credential; string values that are or hold a credential anywhere in them
  (what `redact_credentials` finds in free text: `Bearer ...`, `Basic dXNl...`, `Digest ...`,
  a JWT) are replaced by the placeholder, wherever they are. No configuration turns this off.
- **Operator paths**: `principal.attr.email`, `resources[*].attr.ssn`, `context.attr.token`,
  `principal.actor.attr.*`. A path targets a value inside an `attr` object (any JSON value,
  replaced by the placeholder) or one of the scalar identity fields listed in
  `_MASKABLE_FIELDS`. A key of a path matches attribute keys case-insensitively, and a run of
  its keys matches one key holding dots (`principal.attr.user.email` masks `{"user.email": x}`
  too). Structural fields (kinds, actions, roles, scopes) cannot be masked: the
  record would no longer say what was decided, and the request would no longer parse.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pdp.telemetry._confusables import SOURCES, TARGETS

# What a masked value becomes. A string, so a masked attribute is still valid JSON and still
# parses as an attribute value on replay.
MASKED = "[masked]"

# Keys dropped from every attribute object, compared normalised (`_normal_key`: lower case,
# separators removed), so a camelCase, dotted or padded spelling of one is dropped too.
# These name credentials; a decision log is read by far more people than a credential may be.
ALWAYS_DROPPED_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "x_api_key",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "bearer",
        "jwt",
        "password",
        "passwd",
        "secret",
        "client_secret",
    }
)

# A key whose normalised form ends with one of these names a credential as well, whatever
# names it first: `sessionToken`, `X-Auth-Token`, `csrf_token`, `db_password`, `private_key`.
_DROPPED_SUFFIXES = (
    "token",
    "password",
    "passwd",
    "apikey",
    "secretkey",
    "privatekey",
    "authorization",
    "cookie",
    "cookies",
)
# What `_normal_key` removes: everything but ASCII letters and digits, once `_fold` has mapped
# the other spellings of a letter onto it (separators, `:`, zero-width and soft hyphens too).
_KEY_SEPARATORS = re.compile(r"[^a-z0-9]+")
# Letters of other scripts drawn like Latin ones (Unicode's confusables, pdp.telemetry.
# _confusables: Cyrillic, Greek, Armenian, Cherokee, Lisu, Coptic, Latin extended, ...), read
# before casefolding (a Greek capital Eta is an `H`; folded first it would be an `n`-like eta)
# and again after it; then these Cyrillic and Greek small letters, and an ASCII `l` as `i`: a
# capital I and a small l are one glyph, and the confusables read every lookalike of
# either as `i`. Both sides of every comparison are read so, so this merges, never splits.
_LOOKALIKES = str.maketrans(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u04bb\u043a\u043c\u0442\u0432\u043d"
    "\u03b1\u03b5\u03bf\u03c1\u03b9\u03ba\u03c4\u03c5\u03bd\u03c7" + SOURCES + "l",
    "aeopcyxijsdhkmtbhaeopiktuvx" + TARGETS + "i",
)

# A compact JWS/JWT's first part is base64url of its header, a JSON object: `{"` is `eyJ`
# (in that case: base64 is case-sensitive, and `EYJ` or `eyj` decodes to no JSON). JSON lets
# whitespace follow the `{`: then its first three bytes (`{`, a space, tab, LF or CR, and
# another or the `"`) are four characters of `_JWT_HEAD`: `{ "` is `eyAi`, `{\n  ` `ewog`,
# `{\t"` `ewki`, `{\r\n` `ew0K`. The pre-filters look for `_JWT_OPENINGS`, which start them
# all. Whitespace before the `{` is not read: such a token passes unmasked.
_JWT_HEAD = r"(?-i:eyJ|eyA[gJKNi]|ew[ko0][gJKNi])"
_JWT_OPENINGS = ("eyJ", "eyA", "ewo", "ewk", "ew0")
# A string that is a credential, whatever key holds it: a `Bearer` header value or a compact
# JWS/JWT (three base64url parts, the first opening a JSON object). The other schemes are
# English words too (`Basic plan`): `holds_credential` reads them with a credential's shape.
# `Bearer` and `DPoP` take the next word whatever it is: a word is a valid bearer token (RFC
# 6750's b64token), so `the Bearer of bad news` loses a word to the mask rather than risk a
# token that reads as one reaching the log.
_JWT = _JWT_HEAD + r"[\w-]*\.[\w-]+\.[\w-]*"
# The same searched for inside a text: tried only where a run of `[\w-]` starts, the head
# (`_JWT_HEAD`) it holds after a word boundary (group `jwt`) found by a lookahead. `\beyJ`
# tried at every start made `eyJ-eyJ-…` cost its length squared (every `eyJ` scanned the
# run to its end for a `.`: 64 Ki characters ~15 s of CPU, in a caller's attribute): every
# head of one run reaches the same end, so the first one's fate is the run's. The first two
# parts are possessive: `[\w-]` holds no `.`, so giving characters back never finds one.
_JWT_IN_TEXT = r"(?<![\w-])(?=[\w-]*?\b(?P<jwt>" + _JWT_HEAD + r"))[\w-]*+\.[\w-]++\.[\w-]*"
_CREDENTIAL_VALUE = re.compile(r"^\s*(?:bearer\s+\S|" + _JWT + ")", re.IGNORECASE)
# One that holds a credential further in: `token=Bearer ...`, `Authorization: Bearer ...`, a
# JWT in a URL. Both are searched for only past `may_hold_credential`'s pre-filter (a
# case-insensitive search over every logged string costs ten times the anchored match).
_INNER_CREDENTIAL = re.compile(r"\bbearer\s+\S|" + _JWT_IN_TEXT, re.IGNORECASE)


# Scalar identity fields an operator may mask, and what they become. `context.ip` must stay
# an IP address to parse, so it becomes empty (= unknown); the others become the placeholder.
_MASKABLE_FIELDS: dict[tuple[str, ...], str] = {
    ("principal", "id"): MASKED,
    ("principal", "tenant"): MASKED,
    ("principal", "actor", "id"): MASKED,
    ("principal", "actor", "type"): MASKED,
    ("resources", "*", "id"): MASKED,
    ("resources", "*", "tenant"): MASKED,
    ("context", "ip"): "",
    ("context", "country"): "",
    ("request_id",): MASKED,
}

_SEGMENT = re.compile(r"^(?P<key>[^.\[\]]+)(?P<index>\[(?:\*|\d+)\])?$")


class MaskPathError(ValueError):
    """An operator mask path that is malformed or targets a field that cannot be masked."""


@dataclass(frozen=True, slots=True)
class _Path:
    text: str
    # Each step is a dict key, `*` (every key / every list item) or an int list index.
    steps: tuple[str | int, ...]
    replacement: str


def _parse_path(text: str) -> _Path:
    steps: list[str | int] = []
    for seg in text.strip().split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise MaskPathError(f"mask path `{text}`: bad segment `{seg}`")
        steps.append(m["key"])
        if m["index"]:
            inner = m["index"][1:-1]
            steps.append("*" if inner == "*" else int(inner))
    shape = tuple("*" if isinstance(s, int) else s for s in steps)
    if shape in _MASKABLE_FIELDS:
        return _Path(text, tuple(steps), _MASKABLE_FIELDS[shape])
    if "attr" in shape:
        owner = shape[: shape.index("attr")]
        if owner in {("principal",), ("principal", "actor"), ("resources", "*"), ("context",)}:
            if len(shape) > len(owner) + 1:
                return _Path(text, tuple(steps), MASKED)
            raise MaskPathError(
                f"mask path `{text}` masks a whole `attr` object; name its keys (or `.*`)"
            )
    raise MaskPathError(
        f"mask path `{text}` is not an attribute path (`principal.attr.KEY`, "
        f"`resources[*].attr.KEY`, `context.attr.KEY`, ...) nor a maskable identity field"
    )


# Masked strings shorter than this are not redacted from free text (messages, errors): "a"
# or "eu" would blank out unrelated words and say more about the value than it hides.
MIN_REDACTED_LENGTH = 3


@dataclass(frozen=True, slots=True)
class Masked:
    request: dict[str, Any]  # the masked deep copy
    secrets: frozenset[str]  # original strings that were masked, to redact from free text

    def redact(self, text: str) -> str:
        """Blank masked values out of free text (engine messages, CEL and request errors)."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASKED)
        return text


class Masker:
    """Applies the always-on credential scrub and the operator's paths to a request dict."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._paths = tuple(_parse_path(p) for p in paths if p.strip())

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p.text for p in self._paths)

    def mask_request(self, request: dict[str, Any]) -> Masked:
        """Mask a deep copy of a JSON-shaped request; `request` itself is left untouched."""
        secrets: set[str] = set()
        out = {k: _scrub(v, secrets) if k in _HOLDERS else v for k, v in request.items()}
        for path in self._paths:
            _apply(out, path.steps, path.replacement, secrets)
        return Masked(out, frozenset(s for s in secrets if len(s) >= MIN_REDACTED_LENGTH))

    def redact_refused(self, message: str) -> str:
        """The message of a request refused before it parsed, which quotes the bad value
        (`context.ip: `eyJ…` is not an IP address`) with no parsed request to learn masked
        values from: a quoted value that is a credential, every quoted value of a field an
        operator path masks, and any `Bearer …` or JWT left in the text become the placeholder."""
        # `context.ip: `x` is ...` (gRPC, pdp.v1) or `` `context.ip` `x` is ... `` (AuthZEN).
        lead = _QUOTED.match(message)
        if lead and not _FIELD_NAME.match(lead.group(1)):
            lead = None  # a quoted value first, not a field name
        field = lead.group(1) if lead else message.partition(":")[0].strip()
        start = lead.end() if lead else 0
        covered = any(_covers(p.steps, field) for p in self._paths)
        rest = _QUOTED.sub(
            lambda m: f"`{MASKED}`" if covered or _is_credential_value(m.group(1)) else m.group(0),
            message[start:],
        )
        message = message[:start] + rest
        return redact_credentials(message)


# Top-level request keys whose subtrees are scrubbed. Their own fixed keys (`id`, `tenant`,
# `kind`, `actions`, `ip`, ...) never collide with `ALWAYS_DROPPED_KEYS`, so dropping keys at
# any depth below them only ever touches free-form attribute keys.
_HOLDERS = frozenset({"principal", "resources", "context", "request_id"})


# A value an error message quotes (`pdp.model.request` quotes them in backticks).
_QUOTED = re.compile(r"`([^`]*)`")
# A credential in free text, outside quotes: an HTTP auth scheme and what follows it, or a
# JWT. `Bearer`/`DPoP`: the next word, whatever it is (see `_CREDENTIAL_VALUE`). The other
# schemes are also English words (`basic`, `digest`), so they need a credential's shape after
# them: auth-params (`Digest username="a", response="..."`, `AWS4-HMAC-SHA256 Credential=...,
# Signature=...`) or a token68, which after `Basic` must decode to `user:password` (at any
# length: `Basic YTpi` is `a:b`) and after the others must be 8 characters or more (`Basic
# validation failed` and `Negotiate with them` are no credential; `Basic dXNlcjpwYXNz` is).
_AUTH_PARAM = r"[\w.-]+=(?:\"[^\"]*\"|[^\s,\"`=][^\s,\"`]*)"
_CREDENTIAL_SPAN = re.compile(
    r"\b(?:bearer|dpop)\s+[^\s`]+|"
    + _JWT_IN_TEXT
    + r"|\b(?P<scheme>basic|digest|negotiate|ntlm|oauth|hoba|mutual|vapid|scram-sha-(?:1|256)"
    r"|aws4-hmac-sha256|gnap)\s+"
    rf"(?:(?P<params>{_AUTH_PARAM}(?:\s*,\s*{_AUTH_PARAM})*)"
    r"|(?P<token>[\w.~+/-]+=*))",
    re.IGNORECASE,
)
# A token68 after a scheme other than `Basic` is a credential from this length on.
_MIN_TOKEN68 = 8


def _is_credential(m: re.Match[str]) -> bool:
    """Whether a match of `_CREDENTIAL_SPAN` is a credential, not a scheme's name in prose."""
    token = m.group("token")
    if token is None:
        return True
    if m.group("scheme").lower() == "basic":
        return _basic_pair(token)
    return len(token) >= _MIN_TOKEN68


def _spans(text: str) -> list[tuple[int, int]]:
    """Where `_CREDENTIAL_SPAN` finds a credential in `text`. A match that is none (`Basic
    Negotiate`) gives way one character on, so a credential it swallowed as its token
    (`Basic Negotiate YIIx…`, `Basic Bearer abc`) is still found."""
    out: list[tuple[int, int]] = []
    pos = 0
    while (m := _CREDENTIAL_SPAN.search(text, pos)) is not None:
        if _is_credential(m):
            # A JWT's match starts where its run does (`_JWT_IN_TEXT`); the span at its head.
            out.append((m.start("jwt") if m.group("jwt") is not None else m.start(), m.end()))
            pos = m.end()
        else:
            pos = m.start() + 1
    return out


def _redact_spans(text: str) -> str:
    """`text` with every credential span replaced by the placeholder, with no pre-filter."""
    spans = _spans(text)
    if not spans:
        return text
    parts = []
    last = 0
    for start, end in spans:
        parts.append(text[last:start])
        parts.append(MASKED)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _basic_pair(token: str) -> bool:
    """Whether a `Basic` token is base64 of `user:password` (RFC 7617), in either base64
    alphabet: a client that encoded it URL-safe sent a credential all the same."""
    import base64
    import binascii

    token = token.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def may_hold_credential(text: str) -> bool:
    """The cheap pre-filter of every logged string: False only when `text` cannot hold a
    credential (a span of `_CREDENTIAL_SPAN`, `_CREDENTIAL_VALUE`, `_INNER_CREDENTIAL`).
    Each is a JWT (one of `_JWT_OPENINGS`, case and all) or a scheme, whitespace and a token;
    every whitespace character but the ASCII space is unprintable. Substring tests and one
    scan in C: an
    id, a tenant, a kind or a one-word attribute (most of a record's strings) stop there; a
    message or a note (`principal tenant `a` differs from …`) then needs a scheme's name in it
    (`_names_a_scheme`, a quarter of the search's cost) to be searched. `_scrub` and the
    decision log's `_text` inline this test: keep them the same."""
    return (
        "eyJ" in text
        or "eyA" in text
        or ("ew" in text and ("ewo" in text or "ewk" in text or "ew0" in text))
        or ((" " in text or not text.isprintable()) and _names_a_scheme(text))
    )


# What every scheme pattern starts with, as `_names_a_scheme` reads text.
_SCHEME_NAMES = (
    "bearer", "dpop", "basic", "digest", "negotiate", "ntlm", "oauth", "hoba", "mutual",
    "vapid", "scram-sha-", "aws4-hmac-sha256", "gnap",
)  # fmt: skip


def _names_a_scheme(text: str) -> bool:
    """Whether `text` holds one of `_SCHEME_NAMES` in any case, as the patterns'
    `re.IGNORECASE` reads it: casefolding maps the long s and the Kelvin sign onto `s` and `k`;
    the dotted capital and the dotless small i, which that flag reads as `i`, are mapped here."""
    low = text.casefold()
    if "\u0131" in low or "\u0307" in low:
        low = low.replace("\u0131", "i").replace("\u0307", "")
    return any(name in low for name in _SCHEME_NAMES)


def holds_credential(text: str) -> bool:
    """Whether `redact_credentials` would change `text` (a credential anywhere in it)."""
    return may_hold_credential(text) and bool(_spans(text))


def redact_credentials(text: str) -> str:
    """`text` with every credential span (`_CREDENTIAL_SPAN`) replaced by the placeholder."""
    if not may_hold_credential(text):
        return text
    return _redact_spans(text)


_FIELD_NAME = re.compile(r"^[a-z_]+(?:\[(?:\d+|\*)\])?(?:\.[^\s`]+)*$")
_FIELD_STEP = re.compile(r"[^.\[\]]+|\[(\d+|\*)\]")


def _is_credential_value(value: str) -> bool:
    return bool(
        _CREDENTIAL_VALUE.match(value)
        or _INNER_CREDENTIAL.search(value)
        or redact_credentials(value) != value
    )


def _covers(steps: tuple[str | int, ...], field: str) -> bool:
    """Whether a mask path names `field` (`resources[2].attr.SSN`) or a field inside it."""
    got: list[str] = []
    for m in _FIELD_STEP.finditer(field):
        got.append(m.group(1) if m.group(1) is not None else m.group(0))
    if len(got) < len(steps):
        return False
    for want, have in zip(steps, got):
        if want == "*" or str(want) == have or _fold(str(want)) == _fold(have):
            continue
        return False
    return True


def _scrub(value: Any, secrets: set[str]) -> Any:
    """Deep-copy `value`, dropping credential keys and replacing credential-looking strings."""
    # `type(...) is` rather than isinstance: this runs on every node of every logged request,
    # and request values are exactly JSON types (parse_check_request built them).
    t = type(value)
    if t is str:
        # A credential anywhere in the string masks all of it: a note, a URL, an id quoting
        # `Authorization: Bearer …` or `Basic dXNl…` mid-text, at any depth.
        # The pre-filter (`may_hold_credential`) inline and first: each pattern needs a JWT's
        # opening or whitespace, and most strings of a record (ids, tenants, roles) have neither.
        if (
            "eyJ" in value
            or "eyA" in value
            or ("ew" in value and ("ewo" in value or "ewk" in value or "ew0" in value))
            or ((" " in value or not value.isprintable()) and _names_a_scheme(value))
        ) and (_CREDENTIAL_VALUE.match(value) or _INNER_CREDENTIAL.search(value) or _spans(value)):
            secrets.add(value)
            return MASKED
        return value
    if t is dict:
        out = {}
        for k, v in value.items():
            if _is_dropped_key(k):
                _collect_strings(v, secrets)
            else:
                out[k] = _scrub(v, secrets)
        return out
    if t is list:
        return [_scrub(v, secrets) for v in value]
    return value


# Attribute keys repeat from request to request; remembering the verdict for this many
# distinct keys saves normalising each one every time, while bounding the memory a caller
# sending random keys can make it use.
MAX_KEY_CACHE = 10_000
_key_verdicts: dict[str, bool] = {}


@functools.lru_cache(maxsize=MAX_KEY_CACHE)
def _fold(key: str) -> str:
    """One spelling of a key: `%`-decoded, compatibility forms (full-width letters) read as ASCII,
    case folded, accents and format characters (zero-width space, soft hyphen) dropped,
    Cyrillic and Greek lookalikes read as Latin. Keys are the caller's: each of these
    spellings named a credential or a masked attribute and reached the log verbatim.
    Lookalikes are read before casefolding as well as after (`_LOOKALIKES`)."""
    for _ in range(3):  # `%2561` is `%61` is `a`
        decoded = unquote(key)
        if decoded == key:
            break
        key = decoded
    key = unicodedata.normalize("NFKC", key).translate(_LOOKALIKES).casefold()
    key = unicodedata.normalize("NFKD", key)
    key = "".join(c for c in key if unicodedata.category(c) not in ("Mn", "Cf"))
    return key.translate(_LOOKALIKES)


def _normal_key(key: str) -> str:
    """`accessToken`, `ACCESS-TOKEN`, `access.token`, `access_token `, `access%5Ftoken` and
    one with a Cyrillic a all
    read `accesstoken`."""
    return _KEY_SEPARATORS.sub("", _fold(key))


_DROPPED = frozenset(_normal_key(k) for k in ALWAYS_DROPPED_KEYS)
_SUFFIXES = tuple(_normal_key(k) for k in _DROPPED_SUFFIXES)  # read as the keys are


def _is_dropped_key(key: str) -> bool:
    verdict = _key_verdicts.get(key)
    if verdict is None:
        normal = _normal_key(key)
        # A key that holds a credential (`{"Bearer eyJ…": true}`) is dropped as one naming it.
        verdict = normal in _DROPPED or normal.endswith(_SUFFIXES) or _is_credential_value(key)
        if len(_key_verdicts) < MAX_KEY_CACHE:
            _key_verdicts[key] = verdict
    return verdict


def _collect_strings(value: Any, secrets: set[str]) -> None:
    if isinstance(value, str):
        secrets.add(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_strings(v, secrets)
    elif isinstance(value, list):
        for v in value:
            _collect_strings(v, secrets)


def _apply(
    node: Any,
    steps: tuple[str | int, ...],
    replacement: str,
    secrets: set[str],
    in_attr: bool = False,
) -> None:
    """Mask what `steps` name under `node`. `in_attr`: `node` is inside an `attr` object, whose
    keys a path names loosely (`_attribute_keys`); the request's own fields are named exactly."""
    if not steps:
        return
    step = steps[0]
    if step == "*":
        if isinstance(node, dict):
            keys: Iterable[tuple[Any, int]] = [(k, 1) for k in node]
        elif isinstance(node, list):
            keys = [(i, 1) for i in range(len(node))]
        else:
            return
    elif isinstance(step, int):
        if not isinstance(node, list) or step >= len(node):
            return
        keys = ((step, 1),)
    elif not isinstance(node, dict):
        return
    elif in_attr:
        keys = _attribute_keys(node, steps)
    else:
        keys = ((step, 1),) if step in node else ()
    for k, used in keys:
        rest = steps[used:]
        if rest:
            _apply(node[k], rest, replacement, secrets, in_attr or step == "attr")
        elif node[k] is not None and node[k] != "":
            _collect_strings(node[k], secrets)
            node[k] = replacement


def _attribute_keys(node: dict[str, Any], steps: tuple[str | int, ...]) -> list[tuple[str, int]]:
    """The attribute keys of `node` that the path's next step(s) name, each with the number of
    steps it takes: the step in any case (`email` names `EMAIL`: the operator marked the value
    sensitive, not one spelling of its key), or a run of steps joined by dots (`user` then
    `email` name `user.email`, a key no path segment can spell)."""
    step = steps[0]
    assert isinstance(step, str)
    folded = _fold(step)
    out = []
    for k in node:
        if k == step or _fold(k) == folded:  # `EMAIL`, `em%61il`, full width, a Cyrillic a
            out.append((k, 1))
        elif "." in (fk := _fold(k)):
            parts = fk.split(".")
            run = steps[: len(parts)]
            if len(run) == len(parts) and all(
                isinstance(s, str) and s != "*" and _fold(s) == p for s, p in zip(run, parts)
            ):
                out.append((k, len(parts)))
    return out
