"""One request, one answer: in process, `pdp check`, the client library and raw gRPC agree.

Issue 19, point 9: `auth_time: 1773143700` (an int in JSON) was allowed by `pdp check` and
denied `condition_error` over gRPC, where a protobuf Struct carries every number as a double.
The rule now (docs/POLICY_FORMAT.md, "Numbers in requests"): an integral value within
+-2**53 is a CEL int on every path, anything else a double.

Every test case of the example policy suites (policies/**/*_test.yaml) runs against a
real `pdp serve` (with `--allow-client-time`: the cases fix their time) through the raw proto
made by protobuf's own JSON parser and through `pdp.client.Client`, and in process; effect,
policy, rule, reasons, message and errors must be the same for every action. Then targeted
numbers (ints, doubles, `1.0`, huge, bools) through all four paths, `pdp check` included.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pdp.cli._common import load_and_compile
from pdp.client import Client
from pdp.engine import Engine
from pdp.engine.suites import iter_case_requests
from pdp.errors import LimitExceeded, RequestError
from pdp.model.decision import CheckResponse
from pdp.model.request import parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.convert import response_from_proto

from .real_pdp import Served, pdp_serve

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def summary(resp: CheckResponse) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """What a caller acts on, per resource and action."""
    return {
        (r.kind, r.id, action): (d.effect, d.policy, d.rule, d.reasons, d.message, d.errors)
        for r in resp.results
        for action, d in r.actions.items()
    }


def raw_grpc(served: Served, text: str) -> CheckResponse | tuple[str, str]:
    """The JSON text through protobuf's JSON parser (what grpcurl or a Go client sends)."""
    msg = json_format.Parse(text, pb.CheckRequest())
    try:
        return response_from_proto(served.check(msg))
    except grpc.RpcError as e:
        return e.code().name, (e.details() or "").split(":", 1)[0]


def in_process(engine: Engine, text: str) -> CheckResponse | tuple[str, str]:
    try:
        request = parse_check_request(json.loads(text))
    except LimitExceeded as e:
        return "RESOURCE_EXHAUSTED", e.field
    except RequestError as e:
        return "INVALID_ARGUMENT", e.field
    return engine.check(request)


def via_client(client: Client, obj: dict[str, Any]) -> CheckResponse | tuple[str, str]:
    try:
        return client.check(
            obj["principal"], obj["resources"], obj.get("context"), request_id=obj["request_id"]
        )
    except RequestError as e:
        return "INVALID_ARGUMENT", e.field


def outcome(result: CheckResponse | tuple[str, str]) -> Any:
    return summary(result) if isinstance(result, CheckResponse) else result


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example policies without rate limits: quota is state that every call consumes, so
    a long-running server and a fresh engine cannot be asked the same question twice. What is
    compared here is how a request is read and decided."""
    root = tmp_path_factory.mktemp("example") / "policies"
    shutil.copytree(POLICIES, root)
    for path in root.rglob("*.yaml"):
        if re.search(r"^kind:\s*LimitPolicy\b", path.read_text(), re.M):
            path.unlink()
    return root


@pytest.fixture(scope="module")
def example(example_dir: Path) -> tuple[Engine, list[tuple[str, dict[str, Any]]]]:
    source, policy_set = load_and_compile(example_dir)
    cases = [
        (f"{suite.id}/{case.name}", raw)
        for suite, case, raw in iter_case_requests(source.test_suites)
    ]
    return Engine(policy_set), cases


@pytest.fixture(scope="module")
def served_example(example_dir: Path) -> Iterator[Served]:
    with pdp_serve(example_dir, "--allow-client-time", "--decision-cache", "0") as s:
        yield s


def test_every_example_case_decides_the_same_over_grpc_and_in_process(
    example: tuple[Engine, list[tuple[str, dict[str, Any]]]], served_example: Served
) -> None:
    engine, cases = example
    assert len(cases) >= 100  # every case of every example suite, not a sample
    compared = 0
    with Client(served_example.address, timeout=10) as client:
        for name, obj in cases:
            text = json.dumps(obj)
            here = outcome(in_process(engine, text))
            assert isinstance(here, dict), f"{name}: the example case is refused: {here}"
            assert outcome(raw_grpc(served_example, text)) == here, f"{name}: raw gRPC differs"
            assert outcome(via_client(client, obj)) == here, f"{name}: the client differs"
            compared += len(here)
    assert compared >= len(cases)


# -- numbers ----------------------------------------------------------------------------------

NUMBERS_POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: numbers}
spec:
  resource: value
  actions:
    is_int: {}
    is_double: {}
    is_bool: {}
    plus_one: {}
    epoch_step_up: {}
    half: {}
  rules:
    - id: int
      actions: [is_int]
      effect: allow
      condition: type(resource.attr.v) == int
    - id: double
      actions: [is_double]
      effect: allow
      condition: type(resource.attr.v) == double
    - id: bool
      actions: [is_bool]
      effect: allow
      condition: type(resource.attr.v) == bool
    - id: level
      actions: [plus_one]
      effect: allow
      condition: resource.attr.v + 1 >= 3
    - id: epoch
      actions: [epoch_step_up]
      effect: allow
      condition: >-
        timestamp(resource.attr.v) <= now && now - timestamp(resource.attr.v) < duration("15m")
    - id: half
      actions: [half]
      effect: allow
      condition: double(resource.attr.v) / 2.0 >= 1.0
"""
ACTIONS = ["is_int", "is_double", "is_bool", "plus_one", "epoch_step_up", "half"]
NOW = "2026-03-10T12:00:00Z"
AUTH_TIME = 1773143700  # 2026-03-10T11:55:00Z, epoch seconds: the issue's value

# JSON spellings and the CEL type the documented rule gives them.
NUMBERS = {
    "1773143700": "int",  # the issue's auth_time
    "1773143700.0": "int",
    "2": "int",
    "2.0": "int",
    "2e0": "int",
    "-0.0": "int",
    "0": "int",
    "2.5": "double",
    "9007199254740992": "int",  # 2**53: the last exact one
    # 2**53 + 1: no double holds it; read as a double (all a Struct can carry) it is 2**53,
    # an int, on every path.
    "9007199254740993": "int",
    "-9007199254740993": "int",
    "9007199254740994.0": "double",  # 2**53 + 2: exact as a double, past the int range
    "1152921504606846976": "double",  # 2**60
    "1e300": "double",
    "true": "bool",
    "false": "bool",
    '"2"': "string",
}


def numbers_request() -> str:
    resources = ",".join(
        f'{{"kind": "value", "id": "v{i}", "tenant": "t", "attr": {{"v": {spelling}}},'
        f' "actions": {json.dumps(ACTIONS)}}}'
        for i, spelling in enumerate(NUMBERS)
    )
    return (
        f'{{"request_id": "numbers", "principal": {{"id": "p", "tenant": "t"}},'
        f' "resources": [{resources}], "context": {{"time": "{NOW}"}}}}'
    )


@pytest.fixture(scope="module")
def numbers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("numbers")
    (root / "numbers.yaml").write_text(textwrap.dedent(NUMBERS_POLICY).lstrip())
    return root


@pytest.fixture(scope="module")
def served_numbers(numbers_dir: Path) -> Iterator[Served]:
    with pdp_serve(numbers_dir, "--allow-client-time", "--decision-cache", "0") as s:
        yield s


def pdp_check(policies: Path, text: str) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp.cli.main",
            "check",
            "--policies",
            str(policies),
            "--request",
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    return {
        (r["kind"], r["id"], action): (
            d["effect"],
            d.get("policy", ""),
            d.get("rule", ""),
            tuple(d.get("reasons", ())),
            d.get("message", ""),
            tuple(d.get("errors", ())),
        )
        for r in reply["results"]
        for action, d in r["actions"].items()
    }


def test_numbers_decide_the_same_on_every_path(numbers_dir: Path, served_numbers: Served) -> None:
    text = numbers_request()
    _source, policy_set = load_and_compile(numbers_dir)
    here = outcome(in_process(Engine(policy_set), text))
    assert isinstance(here, dict)
    assert outcome(raw_grpc(served_numbers, text)) == here
    with Client(served_numbers.address, timeout=10) as client:
        assert outcome(via_client(client, json.loads(text))) == here
    assert pdp_check(numbers_dir, text) == here

    # And the answer is the documented one, not merely the same one.
    for i, (spelling, kind) in enumerate(NUMBERS.items()):
        effects = {a: here[("value", f"v{i}", a)][0] for a in ACTIONS}
        for a in ("is_int", "is_double", "is_bool"):
            want = "allow" if a == f"is_{kind}" else "deny"
            assert effects[a] == want, f"{spelling}: {a} is {effects[a]}"
    by = {s: i for i, s in enumerate(NUMBERS)}
    assert here[("value", f"v{by['1773143700']}", "epoch_step_up")][0] == "allow"
    assert here[("value", f"v{by['1773143700.0']}", "epoch_step_up")][0] == "allow"
    assert here[("value", f"v{by['2']}", "plus_one")][0] == "allow"
    assert here[("value", f"v{by['2.0']}", "plus_one")][0] == "allow"
    assert here[("value", f"v{by['2.5']}", "half")][0] == "allow"
    # Mixed int/double arithmetic is a CEL error (fail closed), the same everywhere.
    plus = here[("value", f"v{by['2.5']}", "plus_one")]
    assert plus[0] == "deny" and plus[5]
    # A bool is never a number: `true + 1` does not become 2.
    assert here[("value", f"v{by['true']}", "plus_one")][0] == "deny"


def test_the_issues_auth_time_is_allowed_over_grpc(served_numbers: Served) -> None:
    """The issue's case exactly: an int epoch over gRPC (a Struct double) is a timestamp."""
    obj = {
        "principal": {"id": "p", "tenant": "t"},
        "resources": [
            {
                "kind": "value",
                "id": "v",
                "tenant": "t",
                "attr": {"v": AUTH_TIME},
                "actions": ["epoch_step_up"],
            }
        ],
        "context": {"time": NOW},
    }
    reply = served_numbers.check(json_format.ParseDict(obj, pb.CheckRequest()))
    decision = reply.results[0].actions["epoch_step_up"]
    assert decision.effect == pb.EFFECT_ALLOW, list(decision.errors)


def test_non_finite_and_out_of_range_numbers_are_refused_alike(
    numbers_dir: Path, served_numbers: Served
) -> None:
    _source, policy_set = load_and_compile(numbers_dir)
    engine = Engine(policy_set)
    for spelling in ("1e400", "-1e400", "1" + "0" * 400):
        text = numbers_request().replace('"v": 2.5', f'"v": {spelling}')
        assert spelling in text
        here = in_process(engine, text)
        assert here == ("INVALID_ARGUMENT", "resources[7].attr.v"), spelling
    # Over gRPC such a number can only arrive as an infinite double, refused at the same field.
    for inf in (float("inf"), float("-inf"), float("nan")):
        msg = json_format.Parse(numbers_request(), pb.CheckRequest())
        msg.resources[7].attr["v"] = inf
        with pytest.raises(grpc.RpcError) as info:
            served_numbers.check(msg)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("resources[7].attr.v:")


def test_duplicate_json_keys_are_refused_by_pdp_check_and_grpc_json(numbers_dir: Path) -> None:
    text = numbers_request().replace('"v": 2.5', '"v": 2.5, "v": 1')
    with pytest.raises(json_format.ParseError):
        json_format.Parse(text, pb.CheckRequest())
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp.cli.main",
            "check",
            "--policies",
            str(numbers_dir),
            "--request",
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "duplicate key `v`" in out.stderr
