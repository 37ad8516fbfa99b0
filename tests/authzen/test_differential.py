"""Every test case of the example policies (policies/*_test.yaml) decides identically in
process, over gRPC, over JSON `/v1/check` and over AuthZEN — effect, reasons, deciding policy
and rule, obligations — through the documented mapping (pdp.http.authzen.subject_of, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pdp.engine import Engine, compile_policy_set
from pdp.engine.suites import iter_case_requests
from pdp.http.authzen import context_of, resource_of, subject_of
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.examples import examples_without_limits

from .support import Pdp, client_time_flags, pdp_serve

Outcome = tuple[bool, tuple[str, ...], str, str, Any]


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples_without_limits(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def source(policies: Path) -> Any:
    return load_policy_dir(policies)


@pytest.fixture(scope="module")
def cases(source: Any) -> list[tuple[str, dict]]:
    out = [
        (f"{suite.id}/{case.name}", raw)
        for suite, case, raw in iter_case_requests(source.test_suites)
    ]
    assert len(out) > 50  # the example suites, not an empty glob
    return out


@pytest.fixture(scope="module")
def in_process(source: Any, cases: list[tuple[str, dict]]) -> dict[str, dict[str, Outcome]]:
    engine = Engine(compile_policy_set(source))
    out = {}
    for name, raw in cases:
        response = engine.check(parse_check_request(raw))
        out[name] = {
            a: (d.effect == "allow", tuple(d.reasons), d.policy, d.rule, dict(d.obligations))
            for a, d in response.results[0].actions.items()
        }
    return out


@pytest.fixture(scope="module")
def pdp(policies: Path) -> Iterator[Pdp]:
    with pdp_serve(*client_time_flags(), policies=policies) as p:
        yield p


def _from_proto_json(answer: dict) -> dict[str, Outcome]:
    return {
        a: (
            d.get("effect") == "EFFECT_ALLOW",
            tuple(d.get("reasons", ())),
            d.get("policy", ""),
            d.get("rule", ""),
            d.get("obligations", {}),
        )
        for a, d in answer["results"][0]["actions"].items()
    }


def test_both_allows_and_denies_are_compared(in_process: dict[str, dict[str, Outcome]]) -> None:
    effects = {o[0] for actions in in_process.values() for o in actions.values()}
    assert effects == {True, False}


def test_grpc_decides_as_in_process(
    pdp: Pdp, cases: list[tuple[str, dict]], in_process: dict
) -> None:
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        stub = pb_grpc.DecisionServiceStub(ch)
        for name, raw in cases:
            answer = stub.Check(json_format.ParseDict(raw, pb.CheckRequest()), timeout=10)
            assert _from_proto_json(json_format.MessageToDict(answer)) == in_process[name], name


def test_json_check_decides_as_in_process(
    pdp: Pdp, cases: list[tuple[str, dict]], in_process: dict
) -> None:
    for name, raw in cases:
        reply = pdp.post("/v1/check", raw)
        assert reply.status == 200, (name, reply.body)
        assert _from_proto_json(reply.json) == in_process[name], name


def test_authzen_decides_as_in_process(
    pdp: Pdp, cases: list[tuple[str, dict]], in_process: dict
) -> None:
    for name, raw in cases:
        res = raw["resources"][0]
        actions = res["actions"]
        body = {
            "subject": subject_of(raw["principal"]),
            "resource": resource_of(res),
            "context": context_of(raw.get("context")),
            "evaluations": [{"action": {"name": a}} for a in actions],
        }
        reply = pdp.post("/access/v1/evaluations", body, headers={"X-Request-ID": name[:500]})
        assert reply.status == 200, (name, reply.body)
        got = {}
        for action, ev in zip(actions, reply.json["evaluations"], strict=True):
            ctx = ev["context"]
            got[action] = (
                ev["decision"],
                tuple(ctx["reasons"]),
                ctx.get("policy", ""),
                ctx.get("rule", ""),
                ctx.get("obligations", {}),
            )
        assert got == in_process[name], name
        # The single-evaluation endpoint agrees with the batch.
        first = actions[0]
        one = pdp.post(
            "/access/v1/evaluation",
            {
                "subject": body["subject"],
                "resource": body["resource"],
                "context": body["context"],
                "action": {"name": first},
            },
        ).json
        assert one["decision"] is in_process[name][first][0], name
