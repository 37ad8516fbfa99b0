"""The decision cache of a real `pdp serve` never answers one request with another's decision.

Attacks tried (nothing found, pinned here): requests that must decide differently but differ
only in the principal (each rule's obligations go back to its own principal), in Unicode
normalisation (an owner `é` in NFC and in NFD), in the type of an attribute (`true` and
`"true"`, `1` and `"1"`), and requests that must decide alike though their bytes differ (`0.0`
and `-0.0`, one attribute map in two key orders). Each is sent many times, interleaved, with
the cache on (the default): every answer is the one the request alone gets on a server with
the cache off.
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

POLICY = """
    apiVersion: pdp/v1
    kind: ResourcePolicy
    metadata: {id: docs}
    spec:
      resource: doc
      actions:
        read: {}
      rules:
        - id: flagged
          actions: [read]
          effect: deny
          condition: >-
            (has(R.attr.flag) && R.attr.flag == true) ||
            (has(R.attr.level) && R.attr.level == 1)
          reason: flagged
        - id: owner
          actions: [read]
          effect: allow
          condition: R.attr.owner == P.id
          reason: owner
          obligations: {audit: false, who: owner}
        - id: auditors
          actions: [read]
          effect: allow
          roles: [auditor]
          reason: auditor
          obligations: {audit: true, who: auditors}
"""
CHECK = "/pdp.v1.DecisionService/Check"
NFC = unicodedata.normalize("NFC", "ren\u00e9")
NFD = unicodedata.normalize("NFD", NFC)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def request(pid: str, roles: list[str], attr: dict[str, Any], reverse: bool = False) -> bytes:
    """A serialized Check request; with `reverse`, the attribute map's entries are written in
    the reverse order (protobuf writes maps sorted): other bytes, the same message."""
    msg = pb.CheckRequest(request_id="same-id")
    msg.principal.id, msg.principal.tenant = pid, "acme"
    msg.principal.roles.extend(roles)
    resource = pb.Resource(kind="doc", id="d1", tenant="acme", actions=["read"])
    entries = [
        struct_pb2.Struct(fields={k: json_format.ParseDict(v, struct_pb2.Value())})
        for k, v in attr.items()
    ]
    struct = b"".join(e.SerializeToString() for e in (entries[::-1] if reverse else entries))
    resource_bytes = resource.SerializeToString() + _field(0x22, struct)  # attr: field 4
    return msg.SerializeToString() + _field(0x1A, resource_bytes)  # resources: field 3


CASES: list[tuple[str, bytes]] = [
    ("auditor", request("ann", ["auditor"], {"owner": "bob"})),
    ("owner", request("bob", [], {"owner": "bob"})),
    ("nfc", request(NFC, [], {"owner": NFC})),
    ("nfd", request(NFC, [], {"owner": NFD})),
    ("flag-bool", request("bob", [], {"owner": "bob", "flag": True})),
    ("flag-text", request("bob", [], {"owner": "bob", "flag": "true"})),
    ("level-int", request("bob", [], {"owner": "bob", "level": 1})),
    ("level-text", request("bob", [], {"owner": "bob", "level": "1"})),
    ("zero", request("bob", [], {"owner": "bob", "level": 0.0})),
    ("minus-zero", request("bob", [], {"owner": "bob", "level": -0.0})),
    ("order-a", request("rene", [], {"owner": "rene", "a": 1, "b": 2})),
    ("order-b", request("rene", [], {"owner": "rene", "a": 1, "b": 2}, reverse=True)),
]
assert len({data for _, data in CASES}) == len(CASES)  # every request is its own cache key
assert pb.CheckRequest.FromString(CASES[10][1]) == pb.CheckRequest.FromString(CASES[11][1])


def answer(served: Served, data: bytes) -> tuple[str, str, dict[str, Any]]:
    call = served.channel.unary_unary(CHECK, response_deserializer=pb.CheckResponse.FromString)
    got = call(data, timeout=10).results[0].actions["read"]
    return pb.Effect.Name(got.effect), got.rule, json_format.MessageToDict(got.obligations)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache17")
    (root / "docs.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    return root


@pytest.fixture(scope="module")
def uncached(policies: Path) -> dict[str, tuple[str, str, dict[str, Any]]]:
    with pdp_serve(policies, "--decision-cache", "0") as s:
        return {name: answer(s, msg) for name, msg in CASES}


@pytest.fixture(scope="module")
def cached(policies: Path) -> Iterator[Served]:
    with pdp_serve(policies) as s:
        yield s


def test_the_cases_decide_apart_without_a_cache(
    uncached: dict[str, tuple[str, str, dict[str, Any]]],
) -> None:
    assert uncached["auditor"] == ("EFFECT_ALLOW", "auditors", {"audit": True, "who": "auditors"})
    assert uncached["owner"] == ("EFFECT_ALLOW", "owner", {"audit": False, "who": "owner"})
    assert uncached["nfc"][0] == "EFFECT_ALLOW" and uncached["nfd"][0] == "EFFECT_DENY"
    assert uncached["flag-bool"][:2] == ("EFFECT_DENY", "flagged")
    assert uncached["flag-text"][:2] == ("EFFECT_ALLOW", "owner")
    assert uncached["level-int"][:2] == ("EFFECT_DENY", "flagged")
    assert uncached["level-text"][:2] == ("EFFECT_ALLOW", "owner")
    assert uncached["zero"] == uncached["minus-zero"] == uncached["owner"]
    assert uncached["order-a"] == uncached["order-b"]


def test_the_cache_answers_each_request_as_it_alone_is_answered(
    cached: Served, uncached: dict[str, tuple[str, str, dict[str, Any]]]
) -> None:
    for round_ in range(6):
        order = CASES if round_ % 2 == 0 else CASES[::-1]
        for name, msg in order:
            assert answer(cached, msg) == uncached[name], (round_, name)
