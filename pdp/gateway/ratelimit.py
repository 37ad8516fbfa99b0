"""`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, driven by the bundle's limits.

Envoy's rate limit filter sends descriptors: lists of key/value entries its route actions
produce (a `generic_key`, a request header, the `remote_address`). Each descriptor stands for
one (kind, action) call; its entries fill the same activation a Check would give the limit's
CEL (`principal.tenant`, `actor.id`, `context.ip`, ...), so the limits written in a
`LimitPolicy` are the ones enforced here, with the same keys and buckets as in Check.

Entries: `kind` and `action` (required: a descriptor without them matches no limit, as an
unconfigured descriptor does in Envoy's own service); `pdp.limit` restricts to one limit id
(one the bundle does not have for that kind and action is OVER_LIMIT, not a way around it);
`principal.id`, `principal.tenant`, `principal.roles` (comma-separated), `actor.id`,
`actor.type`, `resource.id`, `resource.tenant`, `context.ip` (or Envoy's `remote_address`),
`context.country`; any other key becomes `context.attr.<key>` (a whole number as a number). `hits_addend` (of the
descriptor, else of the request) replaces the limit's cost. All descriptors of one call take
their quota together: when one is over its limit, none is consumed. A key or value with a
control character or surrounding whitespace, an empty or oversized key, an oversized value, a
`context.ip` that is no IP address or a `context.country` that is no country code is
OVER_LIMIT with a JSON body naming the entry (`descriptors[0].entries[1].value`), as are more
than 64 descriptors or 32 entries, and a key given twice in one descriptor (`context.ip` and
`remote_address` are one key): which of the two counts would be a guess, and whoever sets one
of them could shadow the other (give each `generic_key` action its own `descriptor_key`).
A request that is no protobuf message is OVER_LIMIT too, naming the entry when it is a key or
value that is not UTF-8: Envoy passes a header's bytes (`\xff` is a valid HTTP header byte)
into a descriptor unchecked, and protobuf refuses the message. Not INVALID_ARGUMENT: Envoy
reads an error from the service as `failure_mode_deny` says, and its default lets the request
through, so an error would hand anyone who can bend a descriptor's header an unlimited bucket.

Place the rate limit filter after ext_authz: a call pdp denies never reaches it, so a denied
call uses no quota here either.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from pdp.engine.counters import CounterStoreError, Outcome, Take
from pdp.engine.limits import LIMITS_LOG, CompiledLimit, takes_for
from pdp.errors import NoPoliciesError
from pdp.gateway._gen.envoy.config.core.v3 import base_pb2
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.model.request import (
    MAX_KEY_LENGTH,
    canonical_ip,
    country_problem,
    id_problem,
    is_ip_address,
)
from pdp.ratelog import printable
from pdp.server.hooks import Registrar, Service, Unary
from pdp.server.status import Aborted, Status, StatusCode

if TYPE_CHECKING:
    from pdp.engine import EngineHolder

SERVICE_NAME = rls.DESCRIPTOR.services_by_name["RateLimitService"].full_name

# A gateway sends a handful of descriptors per call; more is not a rate-limit request.
MAX_DESCRIPTORS = 64
MAX_ENTRIES = 32
MAX_VALUE_LENGTH = 4096

_UNITS = {
    1.0: rls.RateLimitResponse.RateLimit.SECOND,
    60.0: rls.RateLimitResponse.RateLimit.MINUTE,
    3600.0: rls.RateLimitResponse.RateLimit.HOUR,
    86400.0: rls.RateLimitResponse.RateLimit.DAY,
}


_WHOLE = re.compile(r"^-?[0-9]{1,18}$")
# Keys that fill the same slot of the activation.
_ALIASES = {"remote_address": "context.ip"}


class DescriptorError(ValueError):
    """A descriptor that is no rate-limit question; `field` is relative to the descriptor
    (`entries[1].value`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _entry_problem(key: str, value: str) -> tuple[str, str]:
    """(which part, why) when an entry cannot be read, else ("", "").

    A value names a bucket: `"alice "` or `"alice\\u0000"` (alice, to whatever trims or stops at
    a NUL upstream) would be a fresh bucket for a caller the clean spelling already limits, and a
    key with a space is not the key it looks like (its value lands in `context.attr`, leaving
    the real one empty). So what `id_problem` refuses in an id (a control character, surrounding
    whitespace) is refused in every key and value, and the fields a Check validates
    (`context.ip`, `context.country`) are validated alike.
    """
    if not key:
        return "key", "must not be empty"
    if len(key) > MAX_KEY_LENGTH:
        return "key", f"is longer than {MAX_KEY_LENGTH} characters"
    problem = id_problem(key)
    if problem:
        return "key", problem
    if len(value) > MAX_VALUE_LENGTH:
        return "value", f"is longer than {MAX_VALUE_LENGTH} characters (entry `{key[:64]}`)"
    problem = id_problem(value)
    if not problem and value:
        if key in ("context.ip", "remote_address") and not is_ip_address(value):
            problem = f"`{value[:64]}` is not an IP address"
        elif key == "context.country":
            problem = country_problem(value)
    if problem:
        return "value", f"{problem} (entry `{key[:64]}`)"
    return "", ""


@dataclass(frozen=True, slots=True)
class DescriptorCall:
    """One descriptor, read as the (kind, action) call it stands for."""

    kind: str
    action: str
    only: str  # `pdp.limit`, or ""
    activation: dict[str, Any]
    hits: int | None


def read_descriptor(
    entries: list[tuple[str, str]], hits: int | None, now: datetime
) -> DescriptorCall:
    principal: dict[str, Any] = {
        "id": "",
        "tenant": "",
        "roles": [],
        "scopes": [],
        "attr": {},
        "actor": None,
    }
    resource: dict[str, Any] = {"kind": "", "id": "", "tenant": "", "attr": {}}
    context: dict[str, Any] = {"ip": "", "country": "", "attr": {}}
    kind = action = only = ""
    if len(entries) > MAX_ENTRIES:
        raise DescriptorError("entries", f"more than {MAX_ENTRIES} entries in a descriptor")
    seen: dict[str, int] = {}  # slot -> index of the entry that filled it
    for j, (key, value) in enumerate(entries):
        part, problem = _entry_problem(key, value)
        if problem:
            raise DescriptorError(f"entries[{j}].{part}", problem)
        # A key given twice is ambiguous, and whoever controls one of the two entries (a
        # request header) would shadow the other (`principal.tenant` from the route): refused,
        # as is `context.ip` beside its alias `remote_address`.
        slot = _ALIASES.get(key, key)
        if slot in seen:
            first = seen[slot]
            raise DescriptorError(
                f"entries[{j}].key",
                f"`{key[:64]}` repeats the key of entries[{first}] (`{entries[first][0][:64]}`)",
            )
        seen[slot] = j
        if key == "kind":
            kind = resource["kind"] = value
        elif key == "action":
            action = value
        elif key == "pdp.limit":
            only = value
        elif key in ("principal.id", "principal.tenant"):
            principal[key.split(".")[1]] = value
        elif key == "principal.roles":
            principal["roles"] = [r.strip() for r in value.split(",") if r.strip()]
        elif key in ("actor.id", "actor.type"):
            actor = principal["actor"] or {"id": "", "type": "", "scopes": [], "attr": {}}
            actor[key.split(".")[1]] = value
            principal["actor"] = actor
        elif key in ("resource.id", "resource.tenant"):
            resource[key.split(".")[1]] = value
        elif key in ("context.ip", "remote_address"):
            context["ip"] = canonical_ip(value) or ""  # checked by `_entry_problem` already
        elif key == "context.country":
            context["country"] = value.upper()
        else:
            # Descriptor values are all strings; a whole number is read as one, so a limit's
            # `cost: context.attr.tokens` works from a header as from a Check.
            context["attr"][key] = int(value) if _WHOLE.match(value) else value
    activation = {
        "principal": principal,
        "resource": resource,
        "action": action,
        "context": context,
        "now": now,
    }
    return DescriptorCall(kind, action, only, activation, hits)


def _status(limit: CompiledLimit | None, outcome: Outcome, i: int, takes: list[Take]):
    code = (
        rls.RateLimitResponse.OVER_LIMIT if outcome.refused == i >= 0 else rls.RateLimitResponse.OK
    )
    status = rls.RateLimitResponse.DescriptorStatus(code=code)
    if limit is not None:
        status.current_limit.name = limit.id
        status.current_limit.requests_per_unit = min(limit.limit, 2**32 - 1)
        status.current_limit.unit = _UNITS.get(limit.per_seconds, 0)  # type: ignore[assignment]
        status.limit_remaining = max(0, min(math.floor(outcome.remaining[i]), 2**32 - 1))
        status.duration_until_reset.seconds = max(1, math.ceil(outcome.reset_after(takes, i)))
    return status


class RateLimitServicer:
    def __init__(self, holder: EngineHolder, clock: Callable[[], datetime] | None = None) -> None:
        self._holder = holder
        self._clock = clock or (lambda: datetime.now(UTC))

    def ShouldRateLimit(self, request: rls.RateLimitRequest, context: Any):
        try:
            engine = self._holder.require()
        except NoPoliciesError as exc:
            raise Aborted(Status(StatusCode.UNAVAILABLE, str(exc))) from None
        if len(request.descriptors) > MAX_DESCRIPTORS:
            return _invalid(request, f"descriptors: more than {MAX_DESCRIPTORS}")
        now = self._clock()
        index: Mapping[tuple[str, str], tuple[CompiledLimit, ...]] = engine.policy_set.limits
        pairs: list[tuple[CompiledLimit, Take]] = []
        spans: list[range] = []  # per descriptor: its takes in `pairs`
        for i, desc in enumerate(request.descriptors):
            hits = desc.hits_addend.value if desc.HasField("hits_addend") else None
            if hits is None and request.hits_addend:
                hits = request.hits_addend
            try:
                call = read_descriptor([(e.key, e.value) for e in desc.entries], hits, now)
            except DescriptorError as exc:
                return _invalid(request, f"descriptors[{i}].{exc}")
            limits = index.get((call.kind, call.action), ())
            if call.only:
                limits = tuple(lim for lim in limits if lim.id == call.only)
                if not limits:
                    # A typo in a route's `pdp.limit`, or a limit renamed in the bundle, would
                    # otherwise turn the limit off without a word: refused, naming it.
                    j = next(j for j, e in enumerate(desc.entries) if e.key == "pdp.limit")
                    return _invalid(
                        request,
                        f"descriptors[{i}].entries[{j}].value: `{call.only[:64]}` is no limit "
                        f"of `{call.kind[:64]}`/`{call.action[:64]}` in the active bundle",
                    )
            found, error = takes_for(limits, call.activation, call.hits)
            if error:  # a limit that cannot be evaluated does not let the call through
                LIMITS_LOG.log(
                    logging.WARNING,
                    "rls-eval",
                    f"rate limit not evaluable, over limit: {printable(error)}",
                )
                return _all(request, OVER, b'{"error":"rate_limit_error"}')
            spans.append(range(len(pairs), len(pairs) + len(found)))
            pairs.extend(found)
        if not pairs:
            return _all(request, OK)
        takes = [t for _, t in pairs]
        try:
            outcome = engine.counters.take(takes, now.timestamp())
        except CounterStoreError as exc:
            LIMITS_LOG.log(logging.WARNING, "store", f"rate-limit counters unavailable: {exc}")
            closed = any(not lim.fail_open for lim, _ in pairs)
            return _all(request, OVER if closed else OK)
        statuses = []
        for span in spans:
            shown = outcome.refused if outcome.refused in span else (span[0] if span else -1)
            limit = pairs[shown][0] if shown >= 0 else None
            statuses.append(_status(limit, outcome, shown, takes))
        response = rls.RateLimitResponse(
            overall_code=OK if outcome.granted else OVER, statuses=statuses
        )
        if outcome.granted:
            return response
        limit = pairs[outcome.refused][0]
        retry = max(1, math.ceil(outcome.retry_after))
        response.response_headers_to_add.append(
            base_pb2.HeaderValue(key="retry-after", value=str(retry))
        )
        response.raw_body = json.dumps(
            {"error": "rate_limited", "limit": limit.id, "retry_after_s": retry}
        ).encode()
        return response


OK = rls.RateLimitResponse.OK
OVER = rls.RateLimitResponse.OVER_LIMIT


def _all(request: rls.RateLimitRequest, code: int, body: bytes = b"") -> rls.RateLimitResponse:
    """Every descriptor answered alike (no limit applies, or the store or a limit failed)."""
    statuses = [rls.RateLimitResponse.DescriptorStatus(code=code) for _ in request.descriptors]  # type: ignore[arg-type]
    return rls.RateLimitResponse(overall_code=code, statuses=statuses, raw_body=body)  # type: ignore[arg-type]


def _invalid(request: rls.RateLimitRequest, message: str) -> rls.RateLimitResponse:
    """A descriptor pdp cannot read: over the limit (fail closed), the body naming the entry."""
    LIMITS_LOG.log(
        logging.WARNING, "rls-invalid", f"rate limit descriptor refused: {printable(message)}"
    )
    body = {"error": "invalid_descriptor", "message": message}
    return _all(request, OVER, json.dumps(body).encode())


def _raw_request_class() -> type[Message]:
    """`RateLimitRequest` with its strings (`domain`, each entry's `key` and `value`) as bytes:
    the same wire format, read without UTF-8 checks, to name the entry protobuf refused."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="pdp/gateway/rls_raw.proto", package="pdp.rls_raw", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        m = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            added = m.field.add(name=field_name, number=number, type=kind, label=f.LABEL_OPTIONAL)
            if type_name:  # a message: repeated here
                added.type_name, added.label = type_name, f.LABEL_REPEATED

    message("Entry", ("key", 1, f.TYPE_BYTES, ""), ("value", 2, f.TYPE_BYTES, ""))
    message("Descriptor", ("entries", 1, f.TYPE_MESSAGE, ".pdp.rls_raw.Entry"))
    message(
        "Request",
        ("domain", 1, f.TYPE_BYTES, ""),
        ("descriptors", 2, f.TYPE_MESSAGE, ".pdp.rls_raw.Descriptor"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pdp.rls_raw.Request"))


_RawRequest = _raw_request_class()


def _not_utf8(data: bytes) -> tuple[str, int]:
    """Why a request protobuf refused cannot be read, and its number of descriptors."""
    try:
        raw: Any = _RawRequest.FromString(data)
    except DecodeError:
        return "request: is not a valid protobuf message", 0
    n = len(raw.descriptors)
    if n > MAX_DESCRIPTORS:
        return f"descriptors: more than {MAX_DESCRIPTORS}", n
    for i, desc in enumerate(raw.descriptors):
        for j, entry in enumerate(desc.entries):
            for part in ("key", "value"):
                try:
                    getattr(entry, part).decode("utf-8")
                except UnicodeDecodeError:
                    where = f"descriptors[{i}].entries[{j}].{part}"
                    if part == "key":
                        return f"{where}: is not UTF-8 text", n
                    return f"{where}: is not UTF-8 text (entry `{entry.key.decode()[:64]}`)", n
    try:
        raw.domain.decode("utf-8")
    except UnicodeDecodeError:
        return "domain: is not UTF-8 text", n
    return "request: is not a valid protobuf message", n


class RateLimitRegistrar(Registrar):
    """The rate-limit service for a server (`build_server`'s or `NativeServer`'s
    `extra_services`; called with a grpc server, it registers there).

    The servicer reads its own request bytes: a request protobuf refuses must be answered
    OVER_LIMIT (module docstring), where the generated deserializer ends the call in an
    error (INVALID_ARGUMENT, as pdp's handlers decode) that Envoy's default lets through."""

    def __init__(self, holder: EngineHolder) -> None:
        self._holder = holder

    def service(self) -> Service:
        servicer = RateLimitServicer(self._holder)

        def should_rate_limit(data: bytes, context: Any) -> Any:
            try:
                request = rls.RateLimitRequest.FromString(data)
            except DecodeError:
                message, n = _not_utf8(data)
                empty = rls.RateLimitRequest(descriptors=[{}] * n)
                return _invalid(empty, message)
            return servicer.ShouldRateLimit(request, context)

        serialize = rls.RateLimitResponse.SerializeToString
        return Service(SERVICE_NAME, {"ShouldRateLimit": Unary(should_rate_limit, None, serialize)})


def rate_limit_registrar(holder: EngineHolder) -> RateLimitRegistrar:
    """For `pdp.server.build_server(..., extra_services=[rate_limit_registrar(holder)])`."""
    return RateLimitRegistrar(holder)
