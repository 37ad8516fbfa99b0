"""Red-team sweep 19: an attribute schema's `format` cannot stall the server.

Attribute schemas run on fastjsonschema, which checks `format` with its own regular expressions
on Python's backtracking `re`. Those of `email` and `idn-email` take time quadratic in the
value: with `{"format": "email"}` on a principal attribute, a 64 KB value of dots held the
engine (and the GIL) about 2 s per resource of the batch, 22 s for ten; `idn-email` about 20 s
per resource. The formats whose grammar bounds their length (RFC 5321, RFC 1035) are now
checked only within it: a longer value fails at once, as its RFC says it must.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp.client._convert import request_to_proto
from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request
from pdp.model.schema import FORMAT_MAX_LENGTH

from .real_pdp import Served, pdp_serve

POLICY = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  schemas: {principal: principal.json}
  actions: {read: {scopes: []}}
  rules:
    - {id: members, actions: ["*"], effect: allow, roles: [member]}
"""
FORMATS = ("email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6")


def _policies(root: Path, draft: str = "") -> Path:
    (root / "schemas").mkdir(parents=True)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {f: {"type": "string", "format": f} for f in FORMATS},
    }
    if draft:
        schema["$schema"] = draft
    (root / "schemas" / "principal.json").write_text(json.dumps(schema))
    (root / "notes.yaml").write_text(POLICY)
    return root


def _principal(**attr: str) -> dict[str, Any]:
    return {"id": "alice", "tenant": "acme", "roles": ["member"], "attr": attr}


def _decide(engine: Engine, principal: dict[str, Any], n: int = 1) -> Any:
    body = {
        "principal": principal,
        "resources": [
            {"kind": "note", "id": f"n{i}", "tenant": "acme", "actions": ["read"]} for i in range(n)
        ],
    }
    return engine.check(parse_check_request(body)).results[0].actions["read"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(compile_policy_set(load_policy_dir(_policies(tmp_path_factory.mktemp("f")))))


# Values the draft's own expression accepts, past the RFC's length: the bound, not the
# expression, refuses them (so the expression never runs on a long value).
TOO_LONG = {
    "email": "a@" + "b" * 300 + ".com",
    "idn-email": "a@" + "b" * 300 + ".com",
    "hostname": "a." * 127 + "a",
}


@pytest.mark.parametrize("name", sorted(TOO_LONG))
def test_a_value_past_its_formats_length_is_a_schema_violation(engine: Engine, name: str) -> None:
    value = TOO_LONG[name]
    assert len(value) > FORMAT_MAX_LENGTH[name]
    decision = _decide(engine, _principal(**{name: value}))
    assert decision.reasons == ("schema_violation",), decision.message
    assert f"must be {name}" in decision.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("email", "alice@example.com"),
        ("idn-email", "alice@exämple.com"),
        ("hostname", "api.example.com"),
        ("idn-hostname", "xn--exmple-cua.com"),
        ("ipv4", "192.0.2.1"),
        ("ipv6", "2001:db8::1"),
        ("email", "a@" + "b" * 248 + ".c"),  # 254 characters: at the bound
    ],
)
def test_values_within_the_bound_are_checked_as_before(
    engine: Engine, name: str, value: str
) -> None:
    assert _decide(engine, _principal(**{name: value})).effect == "allow"
    assert _decide(engine, _principal(**{name: "no such " + name})).reasons == ("schema_violation",)


def test_an_older_draft_checks_only_the_formats_it_knows(tmp_path: Path) -> None:
    # Draft 4 knows `email`, not `idn-email`: bounding adds no check a draft did not make.
    root = _policies(tmp_path, "http://json-schema.org/draft-04/schema#")
    engine = Engine(compile_policy_set(load_policy_dir(root)))
    assert _decide(engine, _principal(**{"idn-email": "x" * 1000})).effect == "allow"
    assert _decide(engine, _principal(email=TOO_LONG["email"])).reasons == ("schema_violation",)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with pdp_serve(_policies(tmp_path_factory.mktemp("served")), "--workers", "1") as s:
        yield s


@pytest.mark.parametrize("name", ["email", "idn-email"])
def test_a_quadratic_value_in_every_resource_is_answered_not_a_stall(
    served: Served, name: str
) -> None:
    # 40 resources, each validating a 64 KB value of dots: about 80 s (`email`) or 15 min
    # (`idn-email`) of matching before; the generous cap below is no timing claim.
    value = "a@" + "." * 64_000 + "@" if name == "idn-email" else "." * 64_000
    resources = [
        {"kind": "note", "id": f"n{i}", "tenant": "acme", "actions": ["read"]} for i in range(40)
    ]
    msg = request_to_proto(_principal(**{name: value}), resources, None)
    try:
        reply = served.check(msg, timeout=60)
    except grpc.RpcError as e:
        pytest.fail(f"no answer within the cap: {e.code()}")
    for result in reply.results:
        assert list(result.actions["read"].reasons) == ["schema_violation"]


# -- `format: regex`: the caller's value is compiled as a pattern -----------------------------


def test_format_regex_is_refused_at_load_with_its_position(tmp_path: Path) -> None:
    # fastjsonschema checks `format: regex` with `re.compile(value)`: a 60 KB value of
    # bounded repeats took about 0.1 s to compile, and `re`'s cache kept 512 of them (170 MB).
    from pdp.errors import PolicyErrors

    (tmp_path / "schemas").mkdir()
    schema = {"type": "object", "properties": {"re": {"type": "string", "format": "regex"}}}
    (tmp_path / "schemas" / "principal.json").write_text(json.dumps(schema))
    (tmp_path / "notes.yaml").write_text(POLICY)
    with pytest.raises(PolicyErrors) as info:
        load_policy_dir(tmp_path)
    text = str(info.value)
    assert "principal.json:1:" in text and "`format: regex`" in text, text


def test_a_property_named_format_is_only_a_property(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    schema = {"type": "object", "properties": {"format": {"type": "string"}}}
    (tmp_path / "schemas" / "principal.json").write_text(json.dumps(schema))
    (tmp_path / "notes.yaml").write_text(POLICY)
    engine = Engine(compile_policy_set(load_policy_dir(tmp_path)))
    assert _decide(engine, _principal(format="regex")).effect == "allow"
