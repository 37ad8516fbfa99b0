"""Red team, session 26: the decision path, by answers that must agree.

One hypothesis-generated request stream (unicode look-alikes and normalisation forms, `-0.0`
and `0`, numbers past 2**53 and 2**63, NaN, empty strings, null and absent fields, nested
attributes, IPv4-mapped addresses) is decided five ways, which must agree decision for
decision: the engine called directly (the oracle), a real `pdp serve` on the native transport
with the decision cache on (the default), a real one on grpcio with `--decision-cache 0`, and
AuthZEN and the pdp.v1 JSON mirror over HTTP. The cached server also gets each request twice
more, once as the same bytes (a hit) and once re-encoded as bytes protobuf decodes equal
(map entries in another order, a field given twice with the last value winning, an unknown
field, a length written as a non-canonical varint): a cache keyed on bytes must still answer
each with the decision of the request it decodes to.

A bad request is an error on every path (INVALID_ARGUMENT, HTTP 400), never an allow.

Also here: the protobuf and JSON converters at tight limits; an AuthZEN batch against single
evaluations; a request id given twice (a hole: fixed, `holds_request_id`); a hit's
`evaluated_at` (fixed); every example case from the cache; refusals' statuses on both
transports; obligation numbers (fixed: past 2**53 a load error, integral ones ints on every
path); concurrent callers. Found nothing else. `RT26_EXAMPLES=N RT26_SEED=1 pytest ...
--hypothesis-seed=S` runs the hypothesis tests longer and with other draws (runs of 500-2000
examples over several seeds were clean). Two real servers make the file ~6 s.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import textwrap
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, pdp_serve

from pdp.engine import Engine, compile_policy_set
from pdp.errors import RequestError
from pdp.http.authzen import SEMANTICS
from pdp.model.decision import BundleInfo
from pdp.model.loader import load_policy_dir, load_policy_files
from pdp.model.request import Limits, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

CHECK = "/pdp.v1.DecisionService/Check"

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: diff}
spec:
  resource: doc
  tenancy: tenant
  actions:
    read: {}
    edit: {}
    share: {scopes: ["doc:share"]}
  rules:
    - id: blocked
      actions: [read, edit]
      effect: deny
      condition: (has(R.attr.s) && R.attr.s == "blocked") || (has(R.attr.n) && R.attr.n == -1)
      reason: blocked
    - id: ratio
      actions: [edit]
      effect: deny
      condition: has(R.attr.q) && R.attr.n / R.attr.q > 2
      reason: ratio
    - id: boom
      actions: [edit]
      effect: deny
      condition: '"boom" in R.attr.tags && R.attr.tags.all(a, R.attr.tags.all(b, R.attr.tags.all(c, c == a)))'
      reason: boom
    - id: boom-allow
      actions: [read]
      effect: allow
      condition: '"boom" in R.attr.tags && R.attr.tags.all(a, R.attr.tags.all(b, R.attr.tags.all(c, c == a)))'
      reason: boom
    - id: owner
      actions: [read, edit]
      effect: allow
      condition: R.attr.owner == P.id
      reason: owner
    - id: admins
      actions: [edit]
      effect: allow
      roles: [admin]
      reason: admin
    - id: nfc
      actions: [read]
      effect: allow
      condition: R.attr.s == "caf\\u00e9"
      reason: nfc
    - id: prefix
      actions: [read]
      effect: allow
      condition: R.attr.s.startsWith("adm") && size(R.attr.s) < 6
      reason: prefix
    - id: huge
      actions: [read]
      effect: allow
      condition: R.attr.n >= 9007199254740992
      reason: huge
    - id: zero
      actions: [read]
      effect: allow
      condition: R.attr.n == 0 && R.attr.f == 0.0
      reason: zero
    - id: whole
      actions: [read]
      effect: allow
      condition: int(R.attr.f) == 3
      reason: whole
    - id: tagged
      actions: [read]
      effect: allow
      condition: '"x" in R.attr.tags || size(R.attr.tags) > 3'
      reason: tagged
    - id: pair
      actions: [read]
      effect: allow
      condition: 'R.attr.tags == ["a", "b"] || R.attr.m == {"a": true}'
      reason: pair
    - id: mapped
      actions: [edit]
      effect: allow
      condition: R.attr.m.exists(k, k == "a" && R.attr.m[k] == true) || has(R.attr.m.d.e)
      reason: mapped
    - id: same-key
      actions: [read]
      effect: allow
      condition: context.attr.k != "" && context.attr.k == P.attr.k
      reason: same-key
    - id: sharer
      actions: [share]
      effect: allow
      condition: R.attr.owner == P.id
      reason: sharer
    - id: leveled
      actions: [edit]
      effect: allow
      condition: context.attr.action.level == 1
      reason: leveled
    - id: office
      actions: [edit]
      effect: allow
      condition: context.ip == "10.0.0.1" && R.attr.s < "b"
      reason: office
"""

NFC = unicodedata.normalize("NFC", "caf\u00e9")
NFD = unicodedata.normalize("NFD", NFC)
STRINGS = st.sampled_from(
    ["", "a", "b", "blocked", "blocked\u200b", NFC, NFD, "\uff43\uff41\uff46\u00e9", "adm",
     "admin", "adm\u0430", "ADM", "\u212b", "\u00c5", "x", "\U0001f600"]
)  # fmt: skip
NUMBERS = st.sampled_from(
    [0, -0.0, 0.0, 1, -1, 2, 3, 3.0, 3.5, 0.5, -1.0, 2**53, 2**53 + 1, 2**63, 2**64 + 1,
     -(2**63) - 1, 1e300, -1e300, 5e-324, 2.5]
)  # fmt: skip
# NaN cannot be carried by JSON text pdp accepts, nor be an attribute: every path refuses it.
NAN = st.just(math.nan)
SCALARS = st.one_of(STRINGS, NUMBERS, st.booleans(), st.none())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(["a", "b", "d", "e", NFC, NFD]), inner, max_size=3),
    ),
    max_leaves=8,
)
ABSENT = object()


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, or the key absent altogether."""
    return st.one_of(st.just(ABSENT), strategy)


def _attrs(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({k: _maybe(v) for k, v in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not ABSENT}
    )


PRINCIPALS = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["alice", "bob", NFC, NFD, "adm"]),
        "tenant": st.sampled_from(["t1", "t1", "t1", "t1", "t2", ""]),
        "roles": st.lists(st.sampled_from(["admin", "user", "Admin"]), max_size=2, unique=True),
        "scopes": st.lists(st.sampled_from(["doc:share", "doc:Share", "doc:read"]), max_size=2),
        "attr": _attrs(k=st.one_of(STRINGS, NUMBERS)),
        # An acting agent: the action's scopes must be its too.
        "actor": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "id": st.sampled_from(["agent", "agent", "agent", "agent\u200b"]),
                    "scopes": st.lists(st.sampled_from(["doc:share", "doc:read"]), max_size=1),
                }
            ),
        ),
    }
)
RESOURCE_ATTRS = _attrs(
    s=STRINGS,
    n=st.one_of(*[NUMBERS] * 16, STRINGS, st.none(), NAN),
    f=NUMBERS,
    q=NUMBERS,
    owner=st.sampled_from(["alice", "bob", NFC, NFD, ""]),
    # 50 elements: three nested comprehensions over them pass the evaluation's work budget,
    # an error inside a decision (a deny rule denies, an allow rule does not allow).
    tags=st.one_of(st.lists(STRINGS, max_size=5), VALUES, st.just(["boom"] * 50)),
    m=VALUES,
)
CONTEXTS = st.fixed_dictionaries(
    {
        "ip": st.one_of(
            st.sampled_from(["", "10.0.0.1", "::ffff:10.0.0.1", "::FFFF:a00:1", "10.1.0.1"]),
            st.sampled_from(["", "10.0.0.1", "::ffff:10.0.0.1", "::FFFF:a00:1", "10.1.0.1"]),
            st.sampled_from(["10.0.0.01", "fe80::1%eth0", "10.0.0.1 ", "\uff11\uff10.0.0.1"]),
        ),
        "attr": _attrs(k=st.one_of(STRINGS, NUMBERS)),
    }
)
RESOURCES = st.builds(
    lambda rid, tenant, attr, actions: {
        "kind": "doc", "id": rid, "tenant": tenant, "attr": attr, "actions": actions
    },
    st.sampled_from(["d1", "d1", "d2"]),
    st.sampled_from(["t1", "t1", "t1", "t2"]),
    RESOURCE_ATTRS,
    st.lists(
        st.sampled_from(["read", "edit", "read", "edit", "share"]),
        min_size=1,
        max_size=3,
        unique=True,
    ),
)  # fmt: skip
# A batch of up to three resources (the same one twice, too): the batch path of the engine
# and the server, and AuthZEN evaluations each overriding the resource.
REQUESTS = st.builds(
    lambda p, resources, ctx: {"principal": p, "resources": resources, "context": ctx},
    PRINCIPALS,
    st.lists(RESOURCES, min_size=1, max_size=3),
    CONTEXTS,
)

# What every path can say about one action: its effect, reasons and rule, or that the request
# was refused as malformed.
Outcome = tuple[str, ...] | str
REFUSED = "refused"


# --- the servers and the oracle ------------------------------------------------------------


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rt26-policies")
    (root / "diff.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    return root


@pytest.fixture(scope="module")
def engine(policies: Path) -> Engine:
    return Engine(compile_policy_set(load_policy_dir(policies)), BundleInfo("rt26", "1", "1"))


class _Http:
    """One kept-alive HTTP connection to a server's `--http-listen`."""

    def __init__(self, pdp: Pdp) -> None:
        self.pdp = pdp
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = self.pdp.connection()
            try:
                self.conn.request(
                    "POST", path, body=body, headers={"Content-Type": "application/json"}
                )
                resp = self.conn.getresponse()
                return resp.status, json.loads(resp.read())
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class _Side:
    def __init__(self, pdp: Pdp) -> None:
        self.pdp = pdp
        self.channel = grpc.insecure_channel(pdp.grpc_address)
        self.check = self.channel.unary_unary(CHECK)
        # Requests compressed (the native transport inflates them before the cache sees them).
        self.gzip_channel = grpc.insecure_channel(
            pdp.grpc_address, compression=grpc.Compression.Gzip
        )
        self.gzip_check = self.gzip_channel.unary_unary(CHECK)
        self.http = _Http(pdp)

    def close(self) -> None:
        self.channel.close()
        self.gzip_channel.close()
        if self.http.conn is not None:
            self.http.conn.close()


@pytest.fixture(scope="module")
def cached(policies: Path) -> Iterator[_Side]:
    with pdp_serve("--transport", "native", "--workers", "1", policies=policies) as pdp:
        side = _Side(pdp)
        yield side
        side.close()


@pytest.fixture(scope="module")
def uncached(policies: Path) -> Iterator[_Side]:
    flags = ("--transport", "grpcio", "--workers", "1", "--decision-cache", "0")
    with pdp_serve(*flags, policies=policies) as pdp:
        side = _Side(pdp)
        yield side
        side.close()


# --- encodings ------------------------------------------------------------------------------


def _value(v: Any) -> Any:
    """A JSON value as a protobuf `Value` (what the gRPC client would send)."""
    from google.protobuf import struct_pb2

    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int | float):
        out.number_value = float(v)
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, list):
        out.list_value.SetInParent()
        out.list_value.values.extend(_value(x) for x in v)
    else:
        out.struct_value.SetInParent()
        for k, x in v.items():
            out.struct_value.fields[k].CopyFrom(_value(x))
    return out


def _struct(target: Any, attr: dict[str, Any]) -> None:
    target.SetInParent()  # `attr: {}` given, as in the JSON (it counts as one value)
    for k, x in attr.items():
        target.fields[k].CopyFrom(_value(x))


def to_proto(req: dict[str, Any]) -> pb.CheckRequest:
    msg = pb.CheckRequest(request_id="rt26")
    p = req["principal"]
    msg.principal.id, msg.principal.tenant = p["id"], p["tenant"]
    msg.principal.roles.extend(p["roles"])
    msg.principal.scopes.extend(p.get("scopes", ()))
    _struct(msg.principal.attr, p["attr"])
    if p.get("actor") is not None:
        msg.principal.actor.id = p["actor"]["id"]
        msg.principal.actor.scopes.extend(p["actor"]["scopes"])
    for r in req["resources"]:
        res = msg.resources.add(kind=r["kind"], id=r["id"], tenant=r["tenant"])
        res.actions.extend(r["actions"])
        _struct(res.attr, r["attr"])
    ctx = req["context"]
    msg.context.ip = ctx["ip"]
    _struct(msg.context.attr, ctx["attr"])
    return msg


def _varint(n: int, pad: int = 0) -> bytes:
    """`n` as a varint; `pad` extra continuation bytes make it non-canonical (same value)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n or pad:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
        if not n:
            for _ in range(pad - 1):
                out.append(0x80)
            out.append(0x00)
            break
    return bytes(out)


def _ld(field: int, payload: bytes, pad: int = 0) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload), pad) + payload


def reencoded(msg: pb.CheckRequest) -> bytes:
    """Other bytes that protobuf decodes to `msg`: the request id first (as every encoder
    writes it), then the principal given twice (a decoy id and no tenant first: embedded
    messages merge and the last scalar wins), the resources with their attribute maps in
    reverse order, each key given first with a decoy value (a map keeps a key's last entry),
    the context under a padded length, and an unknown field at the end."""
    # The decoy carries only a scalar the real principal sets again (repeated fields would
    # be appended, not replaced).
    decoy = pb.Principal(id="mallory")
    out = _ld(1, msg.request_id.encode()) + _ld(2, decoy.SerializeToString())
    out += _ld(2, msg.principal.SerializeToString())
    for res in msg.resources:
        body = b""
        for name, value in [(f.name, v) for f, v in res.ListFields() if f.name != "attr"]:
            if name == "actions":
                body += b"".join(_ld(5, a.encode()) for a in value)
            else:
                number = pb.Resource.DESCRIPTOR.fields_by_name[name].number
                body += _ld(number, value.encode())
        if res.HasField("attr"):
            entries = b""
            decoy = _value("blocked").SerializeToString()
            for key in reversed(list(res.attr.fields)):
                # Each key first with a decoy value: a map keeps the last entry of a key.
                entries += _ld(1, _ld(1, key.encode()) + _ld(2, decoy))
                entry = _ld(1, key.encode()) + _ld(2, res.attr.fields[key].SerializeToString())
                entries += _ld(1, entry)
            attr_number = pb.Resource.DESCRIPTOR.fields_by_name["attr"].number
            body += _ld(attr_number, entries)
        out += _ld(3, body)
    if msg.HasField("context"):
        out += _ld(4, msg.context.SerializeToString(), pad=2)
    out += _varint(999 << 3 | 0) + _varint(7)  # unknown field 999, varint 7
    decoded = pb.CheckRequest.FromString(out)
    decoded.DiscardUnknownFields()
    assert decoded == msg, "the re-encoding must decode equal"
    return out


# --- the five answers -----------------------------------------------------------------------


def _asked(req: dict[str, Any]) -> list[tuple[int, str]]:
    return [(i, a) for i, r in enumerate(req["resources"]) for a in r["actions"]]


def _refused(req: dict[str, Any]) -> dict[tuple[int, str], Outcome]:
    return dict.fromkeys(_asked(req), REFUSED)


def oracle(engine: Engine, req: dict[str, Any]) -> dict[tuple[int, str], Outcome]:
    try:
        parsed = parse_check_request(req, Limits(allow_client_time=False))
    except RequestError:
        return _refused(req)
    results = engine.check(parsed).results
    out: dict[tuple[int, str], Outcome] = {}
    for i, a in _asked(req):
        d = results[i].actions[a]
        out[i, a] = (d.effect, *d.reasons, d.rule)
    return out


def over_grpc(call: Any, data: bytes, req: dict[str, Any]) -> dict[tuple[int, str], Outcome]:
    try:
        reply = pb.CheckResponse.FromString(call(data, timeout=30))
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        return _refused(req)
    effect = {pb.EFFECT_ALLOW: "allow", pb.EFFECT_DENY: "deny"}
    out: dict[tuple[int, str], Outcome] = {}
    for i, a in _asked(req):
        d = reply.results[i].actions[a]
        out[i, a] = (effect[d.effect], *d.reasons, d.rule)
    return out


def _json(req: dict[str, Any]) -> bytes:
    # NaN is written as the `NaN` token Python reads back (not JSON): it must still be refused.
    return json.dumps(req, ensure_ascii=False).encode()


def over_mirror(side: _Side, req: dict[str, Any]) -> dict[tuple[int, str], Outcome]:
    status, body = side.http.post("/v1/check", _json(req))
    if status == 400:
        return _refused(req)
    assert status == 200, (status, body)
    out: dict[tuple[int, str], Outcome] = {}
    for i, a in _asked(req):
        d = body["results"][i]["actions"][a]
        effect = d["effect"].removeprefix("EFFECT_").lower()
        out[i, a] = (effect, *d.get("reasons", ()), d.get("rule", ""))
    return out


def over_authzen(side: _Side, req: dict[str, Any]) -> dict[tuple[int, str], Outcome]:
    """One evaluation per resource and action, each overriding the resource."""
    p, c = req["principal"], req["context"]
    subject = {
        "type": "user",
        "id": p["id"],
        "properties": {
            **p["attr"], "tenant": p["tenant"], "roles": p["roles"], "scopes": p["scopes"]
        },
    }  # fmt: skip
    if p["actor"] is not None:
        subject["properties"]["actor"] = {
            "id": p["actor"]["id"],
            "properties": {"scopes": p["actor"]["scopes"]},
        }
    evaluations = []
    for i, a in _asked(req):
        r = req["resources"][i]
        resource = {
            "type": r["kind"],
            "id": r["id"],
            "properties": {**r["attr"], "tenant": r["tenant"]},
        }
        evaluations.append({"resource": resource, "action": {"name": a}})
    body = {"subject": subject, "context": {**c["attr"], "ip": c["ip"]}, "evaluations": evaluations}
    status, answer = side.http.post("/access/v1/evaluations", _json(body))
    if status == 400:
        return _refused(req)
    assert status == 200, (status, answer)
    out: dict[tuple[int, str], Outcome] = {}
    for key, ev in zip(_asked(req), answer["evaluations"]):
        ctx = ev["context"]
        effect = "allow" if ev["decision"] else "deny"
        out[key] = (effect, *ctx.get("reasons", ()), ctx.get("rule", ""))
    return out


@settings(
    max_examples=int(__import__("os").environ.get("RT26_EXAMPLES", "60")),
    deadline=None,
    derandomize="RT26_SEED" not in __import__("os").environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(req=REQUESTS)
def test_every_path_decides_as_the_engine(
    req: dict[str, Any], engine: Engine, cached: _Side, uncached: _Side
) -> None:
    want = oracle(engine, req)
    msg = to_proto(req)
    data = msg.SerializeToString()
    answers = {
        "native, cached (miss)": over_grpc(cached.check, data, req),
        "native, cached (hit)": over_grpc(cached.check, data, req),
        "native, cached (re-encoded)": over_grpc(cached.check, reencoded(msg), req),
        "native, cached (gzip)": over_grpc(cached.gzip_check, data, req),
        "grpcio, uncached": over_grpc(uncached.check, data, req),
        "grpcio, uncached (re-encoded)": over_grpc(uncached.check, reencoded(msg), req),
        "pdp.v1 JSON": over_mirror(cached, req),
        "AuthZEN": over_authzen(uncached, req),
    }
    for path, got in answers.items():
        assert got == want, f"{path}: {got} != engine {want} for {req!r}"


# --- the two converters at their limits, in process ------------------------------------------

TIGHT = Limits(
    max_attr_values=6, max_attr_depth=3, max_string_length=3, max_id_length=5,
    allow_client_time=False,
)  # fmt: skip
TIGHT_STRINGS = st.sampled_from(["", "a", "abc", "abcd", NFD, "\U0001f600\U0001f600"])
TIGHT_VALUES = st.recursive(
    st.one_of(TIGHT_STRINGS, st.sampled_from([0, -0.0, 2**53 + 1, 1.5, True, None])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=6,
)
TIGHT_REQUESTS = st.builds(
    lambda pid, pattr, rid, rattr, cattr: {
        "principal": {"id": pid, "tenant": "", "roles": [], "attr": pattr},
        "resources": [
            {"kind": "doc", "id": rid, "tenant": "t1", "attr": rattr, "actions": ["read"]}
        ],
        "context": {"ip": "", "attr": cattr},
    },
    st.sampled_from(["al", "alice", "alices", " al", "a\u0085"]),
    st.dictionaries(st.sampled_from(["k", "x" * 1025]), TIGHT_VALUES, max_size=2),
    st.sampled_from(["d1", "d12345"]),
    st.dictionaries(st.sampled_from(["s", "m"]), TIGHT_VALUES, max_size=2),
    st.dictionaries(st.sampled_from(["k"]), TIGHT_VALUES, max_size=1),
)


def _converted(convert: Any, arg: Any) -> Any:
    try:
        r = convert(arg)
    except RequestError:  # LimitExceeded is one too
        # Which of several bad fields is named first may differ: a protobuf map is not read
        # in the order its entries were written.
        return "refused"
    return (r.principal, [x.resource for x in r.resources], r.context, r.request_id)


@settings(max_examples=300, deadline=None, derandomize="RT26_SEED" not in __import__("os").environ)
@given(req=TIGHT_REQUESTS)
def test_the_protobuf_and_json_converters_agree_at_the_limits(req: dict[str, Any]) -> None:
    """The gRPC converter's fast paths (a string leaf read without `_value`) and the JSON
    parser count the same budget, depth, lengths and keys: the same request, the same value
    or the same refusal naming the same field, on both."""
    from pdp.server.convert import request_from_proto

    json_side = _converted(lambda r: parse_check_request({**r, "request_id": "rt26"}, TIGHT), req)
    proto_side = _converted(lambda m: request_from_proto(m, TIGHT), to_proto(req))
    assert proto_side == json_side, req


# --- a request id given twice ----------------------------------------------------------------


def test_a_request_id_given_twice_is_answered_as_protobuf_reads_it(
    cached: _Side, uncached: _Side
) -> None:
    """The cache keys a request by its bytes after a leading request id, and answers a hit
    with that leading id. A request carrying a second request id after it (protobuf: the last
    one wins) was stored under a key holding that second id, so the same bytes behind another
    leading id were answered as that id (or refused, when it is not a valid id) where every
    decoder reads the second: the cache on and off answered differently."""
    msg = to_proto(
        {
            "principal": {"id": "alice", "tenant": "t1", "roles": [], "attr": {}},
            "resources": [
                {"kind": "doc", "id": "d1", "tenant": "t1", "attr": {"owner": "alice"},
                 "actions": ["read"]}
            ],
            "context": {"ip": "", "attr": {}},
        }
    )  # fmt: skip
    msg.ClearField("request_id")
    rest = _ld(1, b"second") + msg.SerializeToString()
    sent = [_ld(1, b"second") + rest, _ld(1, b"first") + rest, _ld(1, b"bad\x00id") + rest]
    for side in (uncached, cached):
        for data in [sent[0], *sent]:  # the first twice: stored, then a hit
            reply = pb.CheckResponse.FromString(side.check(data, timeout=30))
            assert reply.request_id == "second", (side.pdp.grpc_address, data[:20])
            assert reply.results[0].actions["read"].effect == pb.EFFECT_ALLOW


@settings(max_examples=100, deadline=None, derandomize=True)
@given(req=REQUESTS, at=st.integers(0, 3), rid=st.sampled_from(["", "r", "second"]))
def test_holds_request_id_finds_a_request_id_among_the_top_level_fields(
    req: dict[str, Any], at: int, rid: str
) -> None:
    """What a key may be stored under: no top-level field 1 (nested ones, the principal's id
    among them, are other fields), wherever a second one is put."""
    from pdp.server.cache import holds_request_id

    msg = to_proto(req)
    msg.ClearField("request_id")
    fields = [f.SerializeToString() for f in _top_level(msg)]
    assert not holds_request_id(b"".join(fields))
    fields.insert(min(at, len(fields)), _ld(1, rid.encode()))
    assert holds_request_id(b"".join(fields))
    assert holds_request_id(b"".join(fields)[:-1])  # cut short: unsure


def _top_level(msg: pb.CheckRequest) -> list[pb.CheckRequest]:
    """`msg` as one message per top-level field value (their bytes concatenate to it)."""
    out = [pb.CheckRequest(principal=msg.principal)]
    out += [pb.CheckRequest(resources=[r]) for r in msg.resources]
    if msg.HasField("context"):
        out.append(pb.CheckRequest(context=msg.context))
    if msg.explain:
        out.append(pb.CheckRequest(explain=True))
    return out


# --- AuthZEN batches against single evaluations ------------------------------------------------

SUBJECTS = st.builds(
    lambda pid, tenant, roles: {
        "type": "user",
        "id": pid,
        "properties": {"tenant": tenant, "roles": roles},
    },
    st.sampled_from(["alice", "bob"]),
    st.sampled_from(["t1", "t2"]),
    st.lists(st.sampled_from(["admin", "user"]), max_size=1),
)
AZ_RESOURCES = st.builds(
    lambda rid, owner, s: {
        "type": "doc",
        "id": rid,
        "properties": {"tenant": "t1", "owner": owner, "s": s},
    },
    st.sampled_from(["d1", "d2"]),
    st.sampled_from(["alice", "bob"]),
    st.sampled_from(["adm", "blocked", "a"]),
)
AZ_ACTIONS = st.builds(
    lambda name, props: {"name": name} if props is None else {"name": name, "properties": props},
    st.sampled_from(["read", "edit", "share"]),
    st.one_of(st.none(), st.just({}), st.fixed_dictionaries({"level": st.sampled_from([0, 1])})),
)
AZ_CONTEXTS = st.one_of(
    st.just({}), st.fixed_dictionaries({"ip": st.sampled_from(["10.0.0.1", "10.1.0.1"])})
)
OVERRIDES = st.fixed_dictionaries(
    {
        "subject": _maybe(SUBJECTS),
        "resource": _maybe(AZ_RESOURCES),
        "action": _maybe(AZ_ACTIONS),
        "context": _maybe(AZ_CONTEXTS),
    }
).map(lambda d: {k: v for k, v in d.items() if v is not ABSENT})
BATCHES = st.fixed_dictionaries(
    {
        "subject": SUBJECTS,
        "resource": AZ_RESOURCES,
        "action": AZ_ACTIONS,
        "context": _maybe(AZ_CONTEXTS),
        "evaluations": st.lists(OVERRIDES, min_size=1, max_size=5),
        "options": st.fixed_dictionaries(
            {"evaluations_semantic": st.sampled_from(list(SEMANTICS))}
        ),
    }
).map(lambda d: {k: v for k, v in d.items() if v is not ABSENT})


def _decided(ev: dict[str, Any]) -> tuple[Any, ...]:
    ctx = ev["context"]
    return (ev["decision"], tuple(ctx.get("reasons", ())), ctx.get("rule"), ctx.get("policy"))


@settings(
    max_examples=int(__import__("os").environ.get("RT26_EXAMPLES", "40")),
    deadline=None,
    derandomize="RT26_SEED" not in __import__("os").environ,
)
@given(body=BATCHES)
def test_an_authzen_batch_decides_each_evaluation_as_it_alone_is_decided(
    body: dict[str, Any], uncached: _Side
) -> None:
    """Evaluations sharing their subject, context and action properties are decided in one
    engine call (`group_key`), the first one's action properties in the context; the rest each
    alone. Whatever the grouping and semantic, each answer is the single evaluation's."""
    singles = []
    for item in body["evaluations"]:
        one = {k: item.get(k, body.get(k)) for k in ("subject", "resource", "action", "context")}
        one = {k: v for k, v in one.items() if v is not None}
        status, answer = uncached.http.post("/access/v1/evaluation", _json(one))
        assert status == 200, (status, answer)
        singles.append(_decided(answer))
    semantic = body["options"]["evaluations_semantic"]
    if semantic != "execute_all":
        stop_on = semantic == "permit_on_first_permit"
        cut = next((i + 1 for i, d in enumerate(singles) if d[0] is stop_on), len(singles))
        singles = singles[:cut]
    status, answer = uncached.http.post("/access/v1/evaluations", _json(body))
    assert status == 200, (status, answer)
    assert [_decided(ev) for ev in answer["evaluations"]] == singles, body


def test_a_hit_writes_its_time_as_a_miss_does(cached: _Side) -> None:
    """`evaluated_at` of a decision that did not read the clock: the server's time at
    millisecond precision (the engine's clock), on a miss and on a hit alike; a hit wrote
    microseconds, so a caller comparing or parsing the text saw the cache."""
    import re

    msg = to_proto(
        {
            "principal": {"id": "bob", "tenant": "t1", "roles": [], "attr": {}},
            "resources": [
                {"kind": "doc", "id": "d9", "tenant": "t1", "attr": {}, "actions": ["read"]}
            ],
            "context": {"ip": "", "attr": {}},
        }
    )
    data = msg.SerializeToString()
    stamps = [pb.CheckResponse.FromString(cached.check(data, timeout=30)).evaluated_at
              for _ in range(3)]  # fmt: skip
    for stamp in stamps:  # the first a miss, then hits
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp), stamps


# --- the example policies, every case a miss then a hit --------------------------------------


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Engine, list[Any]]:
    from pdp.cli._common import load_and_compile
    from pdp.engine.suites import iter_case_requests
    from tests.examples import examples_without_limits

    root = examples_without_limits(tmp_path_factory.mktemp("rt26-examples"))
    source, policy_set = load_and_compile(root)
    cases = [
        (f"{suite.id}/{case.name}", raw)
        for suite, case, raw in iter_case_requests(source.test_suites)
    ]
    return root, Engine(policy_set), cases


def test_every_example_case_is_answered_alike_from_the_cache(
    examples: tuple[Path, Engine, list[Any]],
) -> None:
    """The example suites' cases (schemas, derived roles, guards, cross-tenant rules, scopes,
    actors; each fixing its time, so each decision may be cached) against a native server
    with the cache on: each case asked, then all asked again in reverse order (hits, each
    answered from another entry than its neighbour's), then again under another request id.
    Every answer is the in-process decision."""
    from google.protobuf import json_format

    from .test_one_answer import in_process, outcome, raw_grpc

    root, engine, cases = examples
    assert len(cases) >= 100
    from .real_pdp import pdp_serve as serve_grpc

    with serve_grpc(root, "--allow-client-time", "--transport", "native") as served:
        want = {name: outcome(in_process(engine, json.dumps(obj))) for name, obj in cases}
        order = [*cases, *reversed(cases)]
        order += [
            (name, {**obj, "request_id": f"again-{i}"}) for i, (name, obj) in enumerate(cases)
        ]
        for name, obj in order:
            text = json.dumps(obj)
            json_format.Parse(text, pb.CheckRequest())  # the case is a valid request
            assert outcome(raw_grpc(served, text)) == want[name], name


# --- obligation numbers a gRPC answer cannot carry -------------------------------------------

OBLIGED = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: obliged}}
spec:
  resource: doc
  tenancy: global
  actions:
    read: {{}}
  rules:
    - id: r
      actions: [read]
      effect: allow
      obligations: {{max_rows: {value}, nested: [{{at: 1}}]}}
"""


@pytest.mark.parametrize("value", ["9007199254740993", "-9007199254740993", "1234567890123456789"])
def test_an_obligation_integer_past_2_53_is_a_load_error(value: str) -> None:
    """An obligation travels in a protobuf Struct over gRPC, where every number is a double:
    `max_rows: 9007199254740993` reached a gRPC caller as 9007199254740992 while AuthZEN, the
    JSON mirror and `pdp check` said 9007199254740993 (one policy, two answers). Refused at
    load with its position, as a number JSON cannot carry is."""
    from pdp.errors import PolicyErrors
    from pdp.model.loader import load_policy_files

    with pytest.raises(PolicyErrors) as caught:
        load_policy_files({"p.yaml": OBLIGED.format(value=value).encode()})
    assert "p.yaml:14:31:" in str(caught.value), str(caught.value)  # the number itself
    assert "2**53" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("value", ["9007199254740992", "-9007199254740992", "3", "1e300", "0x10"])
def test_an_obligation_number_a_double_carries_loads_and_reads_the_same_on_grpc(
    value: str,
) -> None:
    from pdp.model.loader import load_policy_files
    from pdp.server.convert import response_to_proto

    policy_set = compile_policy_set(
        load_policy_files({"p.yaml": OBLIGED.format(value=value).encode()})
    )
    engine = Engine(policy_set, BundleInfo("rt26", "1", "1"))
    req = parse_check_request(
        {"principal": {"id": "a"}, "resources": [{"kind": "doc", "id": "1", "actions": ["read"]}]}
    )
    response = engine.check(req)
    want = response.results[0].actions["read"].obligations["max_rows"]
    got = response_to_proto(response).results[0].actions["read"].obligations["max_rows"]
    assert got == want


# --- refusals: one status on both transports --------------------------------------------------


def _refusals() -> dict[str, bytes]:
    good = to_proto(
        {
            "principal": {"id": "alice", "tenant": "t1", "roles": [], "attr": {}},
            "resources": [
                {"kind": "doc", "id": "d1", "tenant": "t1", "attr": {}, "actions": ["read"]}
            ],
            "context": {"ip": "", "attr": {}},
        }
    )
    out: dict[str, bytes] = {"undecodable": b"\x0a\xff", "truncated": good.SerializeToString()[:-3]}
    out["invalid utf-8"] = _ld(1, b"\xc0\x80") + good.SerializeToString()[len(_ld(1, b"rt26")) :]
    bad = pb.CheckRequest()
    bad.CopyFrom(good)
    bad.ClearField("principal")
    out["no principal"] = bad.SerializeToString()
    bad.CopyFrom(good)
    bad.resources[0].attr.fields["n"].number_value = math.nan
    out["NaN"] = bad.SerializeToString()
    bad.CopyFrom(good)
    bad.resources[0].id = "x" * 600
    out["long id"] = bad.SerializeToString()
    bad.CopyFrom(good)
    for _ in range(600):
        bad.resources.add().CopyFrom(good.resources[0])
    out["too many resources"] = bad.SerializeToString()
    bad.CopyFrom(good)
    bad.context.ip = "10.0.0.01"
    out["bad ip"] = bad.SerializeToString()
    bad.CopyFrom(good)
    bad.request_id = "id\n"
    out["bad request id"] = bad.SerializeToString()
    return out


def test_a_refused_request_gets_the_same_status_on_both_transports(
    cached: _Side, uncached: _Side
) -> None:
    """The same refusal, code and details, whichever transport (and cache) answers it, on
    the first ask and the second (which the cache never holds: nothing refused is stored)."""
    for name, data in _refusals().items():
        seen = set()
        for side in (cached, uncached, cached):
            with pytest.raises(grpc.RpcError) as caught:
                side.check(data, timeout=30)
            seen.add((caught.value.code(), caught.value.details()))
        assert len(seen) == 1, (name, seen)
        [(code, details)] = seen
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (
            name,
            code,
        )
        assert details, name


def test_obligations_read_back_from_grpc_are_the_numbers_the_engine_gave() -> None:
    """A gRPC answer's obligations go through a Struct (doubles); read back (pdp.client, and
    the decision log of a gRPC call, both decode the reply) an integral number was a float:
    `max_rows: 10` came back `10.0`, where AuthZEN, the JSON mirror and in process say 10. The
    requests' number rule now applies to answers too, and to obligations as loaded: integral
    within +-2**53 is an int."""
    from pdp.server.convert import response_from_proto, response_to_proto

    text = OBLIGED.format(value="10").replace(
        "nested: [{at: 1}]", "nested: [{at: 1, half: 0.5}], big: 9007199254740992, f: 2.0"
    )
    engine = Engine(
        compile_policy_set(load_policy_files({"p.yaml": text.encode()})),
        BundleInfo("rt26", "1", "1"),
    )
    req = parse_check_request(
        {"principal": {"id": "a"}, "resources": [{"kind": "doc", "id": "1", "actions": ["read"]}]}
    )
    response = engine.check(req)
    here = dict(response.results[0].actions["read"].obligations)
    back = response_from_proto(response_to_proto(response)).results[0].actions["read"]
    # `f: 2.0` is the int 2 on every path (requests' rule: the spelling never decides).
    want = {"max_rows": 10, "nested": [{"at": 1, "half": 0.5}], "big": 2**53, "f": 2}
    assert json.dumps(here, sort_keys=True) == json.dumps(want, sort_keys=True)
    assert json.dumps(dict(back.obligations), sort_keys=True) == json.dumps(want, sort_keys=True)


# --- many callers at once ---------------------------------------------------------------------


def test_concurrent_callers_each_get_their_own_answer_and_ids(
    engine: Engine, cached: _Side
) -> None:
    """Eight callers at once against the cached native server (four decision threads), each
    sending requests that differ from their neighbours' in one attribute byte, under its own
    request ids, misses and hits interleaved: each reply is that request's decision and
    carries that call's request id (a hit appends the ids of the call it answers)."""
    import random
    import threading

    variants = []
    for pid in ("alice", "alicf"):
        for owner in ("alice", "alicf"):
            for rid in range(5):
                req = {
                    "principal": {"id": pid, "tenant": "t1", "roles": [], "attr": {}},
                    "resources": [
                        {"kind": "doc", "id": f"d{rid}", "tenant": "t1",
                         "attr": {"owner": owner}, "actions": ["read", "edit"]}
                    ],
                    "context": {"ip": "", "attr": {}},
                }  # fmt: skip
                variants.append((req, oracle(engine, req)))
    failures: list[str] = []

    def caller(n: int) -> None:
        rng = random.Random(n)
        for k in range(120):
            req, want = rng.choice(variants)
            msg = to_proto(req)
            msg.request_id = f"c{n}-{k}"
            reply = pb.CheckResponse.FromString(cached.check(msg.SerializeToString(), timeout=60))
            got = {
                (0, a): ("allow" if d.effect == pb.EFFECT_ALLOW else "deny", *d.reasons, d.rule)
                for a, d in reply.results[0].actions.items()
            }
            if reply.request_id != msg.request_id or got != want:
                failures.append(f"{msg.request_id}: {reply.request_id} {got} != {want}")

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures[:5]
