"""`context.country` must be an ISO 3166-1 alpha-2 code, not merely two letters.

The check was for shape only, so `UK` (reserved, not Britain's code: that is `GB`), `EU`,
`SU`, `YU` or `QL` were decided as if they were countries: a rule on `GB` did not match an
upstream that spells Britain `UK`, and the call was allowed. Now a two-letter value must be
an assigned code (vendored in `pdp.model.countries`, with its source) or a user-assigned one
(AA, QM-QZ, XA-XZ, ZZ: ISO will never give them to a country, and geolocation services send
`XK` for Kosovo, `XX`/`ZZ` for unknown); anything else is refused naming `context.country`
on every protocol (gRPC INVALID_ARGUMENT, HTTP 400, the rate limit service's
`invalid_descriptor`), over a real `pdp serve` and a real rate limit service.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, assert_error, pdp_serve

from pdp.errors import RequestError
from pdp.gateway._gen.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from pdp.model.countries import ASSIGNED, USER_ASSIGNED
from pdp.model.request import DEFAULT_LIMITS, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.server.convert import request_from_proto
from tests.limits.conftest import LIMITED, rls_stub, write_policies

from .test_harden15_ids import authzen_body, effects

POLICY = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {}
  rules:
    - {id: members, actions: [read], effect: allow, roles: [member], reason: member}
    - id: sanctioned
      actions: [read]
      effect: deny
      condition: context.country in ["GB", "CU"]
      reason: sanctioned
"""

# Shaped like a code, and no code: reserved for an alias or withdrawn (UK, EU, FX, SU, YU,
# AN, CS, TP, ZR), or never assigned (QL just below the user-assigned QM, OO, AB, ZY).
NOT_CODES = ["UK", "uk", "EU", "FX", "SU", "YU", "AN", "CS", "TP", "ZR", "QL", "OO", "AB", "ZY"]
# Assigned (the newest: SS in 2011, BQ/CW/SX in 2010) and user-assigned ones.
CODES = ["US", "fr", "SS", "BQ", "CW", "SX", "XK", "xx", "ZZ", "AA", "QM", "QZ", "XA"]


def with_country(country: str) -> dict[str, Any]:
    return {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["member"]},
        "resources": [{"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}],
        "context": {"country": country},
    }


@pytest.fixture(scope="module")
def pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pdp]:
    root = tmp_path_factory.mktemp("country")
    (root / "notes.yaml").write_text(textwrap.dedent(POLICY))
    with pdp_serve(policies=root) as p:
        yield p


@pytest.fixture(scope="module")
def stub(pdp: Pdp) -> Iterator[pb_grpc.DecisionServiceStub]:
    with grpc.insecure_channel(pdp.grpc_address) as channel:
        yield pb_grpc.DecisionServiceStub(channel)


@pytest.fixture(scope="module")
def limiter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rls_grpc.RateLimitServiceStub]:
    root = write_policies(Path(tmp_path_factory.mktemp("country-rls")), LIMITED)
    with rls_stub(root) as s:
        yield s


@pytest.mark.parametrize("code", NOT_CODES)
def test_a_two_letter_value_that_is_no_code_is_refused_on_every_protocol(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, code: str
) -> None:
    assert effects(stub, pdp, with_country("GB")) == {"EFFECT_DENY"}
    raw = with_country(code)
    with pytest.raises(RequestError) as info:
        parse_check_request(raw)
    assert info.value.field == "context.country"
    msg = json_format.ParseDict(raw, pb.CheckRequest())
    with pytest.raises(RequestError) as info:
        request_from_proto(msg, DEFAULT_LIMITS)
    assert info.value.field == "context.country"
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(msg, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"context.country: `{code}` is not an ISO 3166-1")
    assert_error(pdp.post("/v1/check", raw), 400, "context.country")
    assert_error(pdp.post("/access/v1/evaluation", authzen_body(raw)), 400, "context.country")


@pytest.mark.parametrize("code", CODES)
def test_assigned_and_user_assigned_codes_are_decided(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, code: str
) -> None:
    assert effects(stub, pdp, with_country(code)) == {"EFFECT_ALLOW"}
    assert effects(stub, pdp, with_country(code.swapcase())) == {"EFFECT_ALLOW"}
    assert effects(stub, pdp, with_country("gb")) == {"EFFECT_DENY"}


def test_the_rate_limit_service_refuses_a_descriptor_country_that_is_no_code(
    limiter: rls_grpc.RateLimitServiceStub,
) -> None:
    def should(country: str) -> rls.RateLimitResponse:
        entries = [("kind", "note"), ("action", "read"), ("principal.id", "zed")]
        entries.append(("context.country", country))
        desc = rl.RateLimitDescriptor(
            entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
        )
        request = rls.RateLimitRequest(domain="pdp", descriptors=[desc])
        return limiter.ShouldRateLimit(request, timeout=30)

    for code in ("UK", "QL"):
        reply = should(code)
        assert reply.overall_code == rls.RateLimitResponse.OVER_LIMIT
        body = json.loads(reply.raw_body)
        assert body["error"] == "invalid_descriptor", body
        assert body["message"].startswith("descriptors[0].entries[3].value: `"), body
    assert should("XK").overall_code == rls.RateLimitResponse.OK


def test_the_vendored_list_is_iso_3166_1_as_published() -> None:
    assert len(ASSIGNED) == 249  # ISO 3166-1's officially assigned alpha-2 codes
    assert {"GB", "US", "SS", "BQ", "CW", "SX", "KP", "CU", "AX", "PS", "TW"} <= ASSIGNED
    assert not {c.upper() for c in NOT_CODES} & (ASSIGNED | USER_ASSIGNED)
    assert len(USER_ASSIGNED) == 1 + 14 + 26 + 1  # AA, QM-QZ, XA-XZ, ZZ
    assert not ASSIGNED & USER_ASSIGNED
    assert all(len(c) == 2 and c.isascii() and c.isupper() for c in ASSIGNED | USER_ASSIGNED)
