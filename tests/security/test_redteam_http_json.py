"""`POST /v1/check` (pdp.v1 in protobuf's JSON mapping) with wrongly typed fields, against a real
`pdp serve --http-listen`: each is a 400 whose `field` names the field, as every other
endpoint's errors do, not the whole `body`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, assert_error, pdp_serve

RESOURCE = {"kind": "document", "id": "d-1", "tenant": "acme", "actions": ["read"]}
VALID: dict[str, Any] = {"principal": {"id": "alice", "tenant": "acme"}, "resources": [RESOURCE]}


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve() as p:
        yield p


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"explain": "yes"}, "explain"),
        ({"explain": 1}, "explain"),
        ({"principal": {"id": 5}}, "principal.id"),
        ({"principal": {"id": "a", "roles": "admin"}}, "principal.roles"),
        ({"principal": {"id": "a", "attr": [1]}}, "principal.attr"),
        ({"principal": {"id": "a", "actor": {"id": "b", "scopes": [1]}}}, "principal.actor.scopes"),
        ({"resources": {"kind": "document"}}, "resources"),
        ({"resources": [{**RESOURCE, "actions": [None]}]}, "resources[0].actions[0]"),
        ({"resources": [RESOURCE, {**RESOURCE, "kind": 1}]}, "resources.kind"),
        ({"context": {"time": 12}}, "context.time"),
        ({"context": {"ip": ["10.0.0.1"]}}, "context.ip"),
    ],
)
def test_a_wrongly_typed_field_is_named(pdp: Pdp, change: dict[str, Any], field: str) -> None:
    body = {**VALID, **change}
    reply = pdp.request("POST", "/v1/check", raw=json.dumps(body).encode(), headers={})
    err = assert_error(reply, 400, field)
    assert "Traceback" not in err["message"]


EVALUATION = {
    "subject": {"type": "user", "id": "alice", "properties": {"tenant": "acme"}},
    "action": {"name": "read"},
    "resource": {"type": "document", "id": "d-1", "properties": {"tenant": "acme"}},
}


@pytest.mark.parametrize(
    "ctype",
    ["application/json; charset=iso-8859-1", "application/json;charset=utf-16", "text/json"],
)
def test_a_body_declared_in_another_charset_is_refused(pdp: Pdp, ctype: str) -> None:
    # `Ã©` to a proxy reading the declared latin-1, `é` to a UTF-8 reader: refused, not guessed.
    data = json.dumps(EVALUATION).encode()
    reply = pdp.request("POST", "/access/v1/evaluation", raw=data, headers={"Content-Type": ctype})
    assert_error(reply, 400, "Content-Type")


@pytest.mark.parametrize(
    "ctype",
    ["application/json", "Application/JSON; charset=UTF-8", 'application/json; charset="utf-8"'],
)
def test_json_in_utf8_is_decided(pdp: Pdp, ctype: str) -> None:
    data = json.dumps(EVALUATION).encode()
    reply = pdp.request("POST", "/access/v1/evaluation", raw=data, headers={"Content-Type": ctype})
    assert reply.status == 200, reply.body
    assert reply.json["decision"] is False  # no scope: the answer is the policies', not a 400
