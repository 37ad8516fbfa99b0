"""Hostile requests get the same answer in process and over gRPC: the same refusal (status and
field) or the same decisions, never an allow where the other path denies.

Issue 19, point 10: attribute keys had no length limit (a 3,000,000-character key was
accepted). They now have one, `MAX_KEY_LENGTH`, enforced on every path. The hypothesis test
generates hostile request JSON (huge keys, deep nesting, too many values, long strings, type
confusion, duplicate keys, non-finite numbers, lone surrogates, unknown fields, client times)
and sends each through `load_json_request` + `parse_check_request` + `Engine.check` and, as
protobuf's JSON parser makes it, through a real `pdp serve` started with the same limits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.cli._common import load_and_compile
from pdp.client import Client
from pdp.engine import Engine
from pdp.errors import LimitExceeded, RequestError
from pdp.model.request import (
    MAX_KEY_LENGTH,
    Limits,
    load_json_request,
    parse_check_request,
)
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.convert import response_from_proto

from .real_pdp import Served, pdp_serve

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: doc
  actions:
    read: {}
    edit: {scopes: ["docs:write"]}
  rules:
    - id: owner
      actions: ["*"]
      effect: allow
      condition: resource.attr.owner == principal.id
    - id: level
      actions: [read]
      effect: allow
      condition: principal.attr.level + 1 >= 3
    - id: tagged
      actions: [read]
      effect: allow
      condition: >-
        has(resource.attr.tags) && "public" in resource.attr.tags
    - id: frozen
      actions: [edit]
      effect: deny
      condition: has(resource.attr.frozen) && resource.attr.frozen != false
"""

# Small limits, the same on both sides, so that generated requests reach them.
LIMIT_FLAGS = {
    "max_checks": 6,
    "max_resources": 3,
    "max_attr_depth": 5,
    "max_attr_values": 40,
    "max_string_length": 64,
    "max_id_length": 24,
}
LIMITS = Limits(**LIMIT_FLAGS, allow_client_time=False)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits")
    (root / "docs.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    return root


@pytest.fixture(scope="module")
def engine(policy_dir: Path) -> Engine:
    return Engine(load_and_compile(policy_dir)[1])


@pytest.fixture(scope="module")
def served(policy_dir: Path) -> Iterator[Served]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in LIMIT_FLAGS.items()]
    with pdp_serve(policy_dir, "--decision-cache", "0", *flags) as s:
        yield s


@pytest.fixture(scope="module")
def served_defaults(policy_dir: Path) -> Iterator[Served]:
    with pdp_serve(policy_dir) as s:
        yield s


# -- the two paths ----------------------------------------------------------------------------


def summary(resp: Any) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    return {
        (r.kind, r.id, action): (d.effect, d.policy, d.rule, d.reasons, d.errors)
        for r in resp.results
        for action, d in r.actions.items()
    }


def in_process(engine: Engine, text: str, limits: Limits = LIMITS) -> Any:
    try:
        request = parse_check_request(load_json_request(text), limits)
    except LimitExceeded as e:
        return ("RESOURCE_EXHAUSTED", e.field, e.message)
    except RequestError as e:
        return ("INVALID_ARGUMENT", e.field, e.message)
    return summary(engine.check(request))


def over_grpc(served: Served, text: str) -> Any:
    """None when protobuf's JSON parser refuses the text (nothing reaches the server)."""
    try:
        msg = json_format.Parse(text, pb.CheckRequest())
    except json_format.ParseError:
        return None
    try:
        return summary(response_from_proto(served.check(msg, timeout=20)))
    except grpc.RpcError as e:
        field, _, message = (e.details() or "").partition(": ")
        return (e.code().name, field, message)


def agree(mine: Any, theirs: Any, text: str) -> None:
    if theirs is None:
        # Refused before the wire (type confusion, duplicate keys, surrogates): pdp must
        # refuse it too, never decide it.
        assert isinstance(mine, tuple), f"in process decided what gRPC cannot carry: {text[:300]}"
        return
    if isinstance(mine, dict) or isinstance(theirs, dict):
        assert mine == theirs, f"{text[:300]}\nin process: {mine}\ngRPC: {theirs}"
        return
    assert mine[0] == theirs[0], f"{text[:300]}\nin process: {mine}\ngRPC: {theirs}"
    if "attribute values" in mine[2]:  # which value exhausts the budget depends on order
        return
    assert same_place(mine[1], theirs[1]), f"{text[:300]}\nin process: {mine}\ngRPC: {theirs}"


def same_place(a: str, b: str) -> bool:
    """The same field, up to what neither path can order.

    protobuf's JSON parser reads `"actor": []` as an empty Actor, refused one level deeper
    (`principal.actor.id`). And when two keys of one attribute object are both bad, which is
    named first depends on key order, which JSON objects and protobuf maps do not have: the
    paths then part inside that object, never before it.
    """
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    if long.startswith(short + "."):
        return True
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(short))
    obj = a[: a.rfind(".", 0, n)]
    return ".attr" in obj and a.startswith(obj + ".") and b.startswith(obj + ".")


# -- the 3,000,000-character key, every path --------------------------------------------------

HUGE = "k" * 3_000_000


def request_with_attr(where: str, attr: dict[str, Any]) -> dict[str, Any]:
    req: dict[str, Any] = {
        "principal": {"id": "alice", "tenant": "t", "scopes": ["docs:write"]},
        "resources": [
            {
                "kind": "doc",
                "id": "d1",
                "tenant": "t",
                "attr": {"owner": "alice"},
                "actions": ["read"],
            }
        ],
        "context": {"ip": "10.0.0.1"},
    }
    if where == "principal":
        req["principal"]["attr"] = attr
    elif where == "resource":
        req["resources"][0]["attr"] = {**req["resources"][0]["attr"], **attr}
    else:
        req["context"]["attr"] = attr
    return req


@pytest.mark.parametrize(
    ("where", "attr", "field"),
    [
        ("principal", {HUGE: 1}, "principal.attr"),
        ("resource", {"nested": {HUGE: "x"}}, "resources[0].attr.nested"),
        ("context", {"list": [{HUGE: True}]}, "context.attr.list[0]"),
    ],
)
def test_huge_key_refused_on_every_path(
    engine: Engine, served_defaults: Served, policy_dir: Path, where: str, attr: Any, field: str
) -> None:
    obj = request_with_attr(where, attr)
    text = json.dumps(obj)
    defaults = Limits()
    # In process.
    got = in_process(engine, text, defaults)
    assert got[:2] == ("INVALID_ARGUMENT", field)
    assert f"key longer than {MAX_KEY_LENGTH} characters" in got[2]
    # Raw gRPC, with the server's default limits (the message fits in its 4 MiB).
    theirs = over_grpc(served_defaults, text)
    assert theirs is not None and theirs[:2] == ("INVALID_ARGUMENT", field)
    # The client library refuses it before sending, naming the same field.
    with Client(served_defaults.address, timeout=20) as client, pytest.raises(RequestError) as e:
        client.check(obj["principal"], obj["resources"], obj["context"])
    assert e.value.field == field
    # pdp check.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp.cli.main",
            "check",
            "--policies",
            str(policy_dir),
            "--request",
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and f"{field}: has a key longer than" in out.stderr


def test_key_limit_boundary(engine: Engine, served_defaults: Served) -> None:
    for n, refused in ((MAX_KEY_LENGTH, False), (MAX_KEY_LENGTH + 1, True)):
        text = json.dumps(request_with_attr("principal", {"k" * n: 1}))
        mine, theirs = in_process(engine, text, Limits()), over_grpc(served_defaults, text)
        assert mine == theirs
        assert isinstance(mine, tuple) == refused


def test_empty_actor_is_refused_by_the_client_as_by_the_server(served_defaults: Served) -> None:
    """Issue 19, point 8: the client used to drop `actor: {}` and get an allow for delete."""
    principal = {"id": "alice", "tenant": "t", "scopes": ["docs:write"]}
    doc = {"kind": "doc", "id": "d1", "tenant": "t", "attr": {"owner": "alice"}}
    for actor in ({}, {"id": "", "type": "", "scopes": [], "attr": {}}):
        with Client(served_defaults.address, timeout=20) as client:
            assert client.is_allowed(principal, doc, "edit")  # the premise: allowed without one
            with pytest.raises(RequestError) as e:
                client.is_allowed({**principal, "actor": actor}, doc, "edit")
        assert e.value.field == "principal.actor.id"
        # pdp check's parser and raw gRPC: the same field.
        text = json.dumps(
            {
                "principal": {**principal, "actor": actor},
                "resources": [{**doc, "actions": ["edit"]}],
            }
        )
        with pytest.raises(RequestError) as local:
            parse_check_request(load_json_request(text))
        assert local.value.field == "principal.actor.id"
        theirs = over_grpc(served_defaults, text)
        assert theirs is not None and theirs[:2] == ("INVALID_ARGUMENT", "principal.actor.id")


# -- generated hostile requests ---------------------------------------------------------------

keys = st.text(alphabet="abcé日_.[]", min_size=0, max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1.0, -0.0, 2**53 + 1, 1e300, "public", "alice", "bob", "", "2"])
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)


def deep(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = {"d": leaf} if i % 2 else [leaf]
    return leaf


# One hostile thing (a path into the request, the values put there), on top of random noise.
HOSTILE: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("principal", "attr", "k"), st.integers(2, 6).map(lambda d: deep(d, 1))),
    (("resources", 0, "attr", "x"), st.integers(2, 6).map(lambda d: deep(d, "a"))),
    (("context", "attr", "many"), st.integers(20, 60).map(lambda n: list(range(n)))),
    (("principal", "attr", "long"), st.integers(60, 70).map(lambda n: "s" * n)),
    (("principal", "attr", "K" * (MAX_KEY_LENGTH + 1)), st.just(1)),
    (("principal", "id"), st.sampled_from(["", "i" * 25, 5, None, ["a"], {"a": 1}])),
    (("principal", "roles"), st.sampled_from(["admin", [1], [""], ["r" * 25], None])),
    (("principal", "actor"), st.sampled_from([{}, {"id": ""}, {"id": "a"}, [], "a"])),
    (("resources", 0, "actions"), st.sampled_from([[], "read", ["read"] * 7, list("abcdefg")])),
    (("resources",), st.sampled_from([[], {}, None])),
    (("context", "time"), st.sampled_from(["2020-01-01T00:05:00Z", "nope", 5])),
    (("context", "ip"), st.sampled_from(["10.0.0.1", "999.1.1.1", "::1", 7])),
    (("explain",), st.sampled_from([True, "yes", 1, None])),
    (("principal", "bogus"), st.just(1)),
    (("principal", "attr", "level"), st.sampled_from([2, 2.0, 2.5, True, "2", 1e308, 2**53 + 1])),
    (("resources", 0, "attr", "frozen"), st.sampled_from([True, False, 0, 0.0, None, "false"])),
    (("resources", 0, "attr", "s"), st.just("\ud800")),
    (("principal", "attr", "\udfff"), st.just(1)),
    (("resources", 0, "attr", "tags"), json_values),
    (("principal", "attr"), json_values),
]


def put(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


@st.composite
def hostile_requests(draw: st.DrawFn) -> str:
    req: dict[str, Any] = {
        "principal": {
            "id": draw(st.sampled_from(["alice", "bob"])),
            "tenant": "t",
            "scopes": draw(st.sampled_from([[], ["docs:write"]])),
            "attr": draw(st.dictionaries(keys, json_values, max_size=3)),
        },
        "resources": [
            {
                "kind": "doc",
                "id": "d1",
                "tenant": "t",
                "attr": {"owner": "alice", **draw(st.dictionaries(keys, json_values, max_size=3))},
                "actions": draw(st.sampled_from([["read"], ["read", "edit"], ["edit"]])),
            }
        ],
        "context": {"attr": draw(st.dictionaries(keys, json_values, max_size=2))},
    }
    path, values = HOSTILE[draw(st.integers(0, len(HOSTILE) - 1))]
    put(req, path, draw(values))
    text = json.dumps(req)
    if draw(st.sampled_from([False] * 7 + [True])) and '"tenant": "t"' in text:
        # A duplicate key, which parsers resolve differently (first wins, last wins, refuse).
        text = text.replace('"tenant": "t"', '"tenant": "t", "tenant": "u"', 1)
    return text


@settings(
    max_examples=int(os.environ.get("PDP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=hostile_requests())
def test_hostile_requests_get_one_answer(engine: Engine, served: Served, text: str) -> None:
    agree(in_process(engine, text), over_grpc(served, text), text)
