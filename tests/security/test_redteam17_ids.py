"""An id that an upstream trims to another id is refused, invisible format characters included.

The id rule (`id_problem`, test_harden15_ids.py) refused a control character anywhere and
whitespace at either end, as `str.strip()` sees whitespace. JavaScript's `String.trim()` also
removes U+FEFF (ZERO WIDTH NO BREAK SPACE, the byte order mark), which Python's `isspace()`
does not count: through a real `pdp serve`, the deny on `principal.id == "mallory"` was passed
by `"mallory\\ufeff"` (an allow on every protocol), an id a Node.js service in front of pdp, or
behind it, reads as `mallory`. Other invisible format characters (Unicode category Cf: U+200B
ZERO WIDTH SPACE, which .NET Framework 3.5's `Trim()` removed, U+2060 WORD JOINER, U+00AD
SOFT HYPHEN, bidi marks) at an end give the same alias to any sanitizer that strips them, and
show as nothing in a log. Now an id that begins or ends with one is refused on every protocol
naming the field; inside an id they stay (Persian words use U+200C, emoji sequences U+200D).
"""

from __future__ import annotations

import copy
import os
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

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, assert_error, pdp_serve

from pdp.errors import RequestError
from pdp.gateway.request import HttpAttributes, translate
from pdp.model.request import id_problem, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from .test_gateway_jwt import READ
from .test_harden15_ids import (
    BASE,
    FIELDS,
    MAPPING,
    POLICY,
    assert_refused_everywhere,
    authzen_body,
    bent,
    effects,
    grpc_refusal,
)

EXAMPLES = int(os.environ.get("PDP_FUZZ_EXAMPLES", "100"))

# Every format character (Unicode category Cf) of the Basic Multilingual Plane.
FORMATS = [chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) == "Cf"]


@pytest.fixture(scope="module")
def pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pdp]:
    root = tmp_path_factory.mktemp("ids17")
    (root / "notes.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(policies=root) as p:
        yield p


@pytest.fixture(scope="module")
def stub(pdp: Pdp) -> Iterator[pb_grpc.DecisionServiceStub]:
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        yield pb_grpc.DecisionServiceStub(ch)


@pytest.mark.parametrize(
    "alias",
    [
        "mallory\ufeff",  # JavaScript's trim() removes it: the Node.js reading is `mallory`
        "\ufeffmallory",
        "mallory\u200b",
        "\u2060mallory",
        "mallory\u00ad",
        "\u200emallory",
    ],
)
def test_an_invisible_alias_of_a_denied_principal_is_refused_not_allowed(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, alias: str
) -> None:
    assert effects(stub, pdp, bent("principal.id", "mallory")) == {"EFFECT_DENY"}
    assert alias.strip() == alias  # what the old rule saw: no surrounding whitespace
    raw = bent("principal.id", alias)
    with pytest.raises(RequestError) as info:
        parse_check_request(raw)
    assert info.value.field == "principal.id"
    invisible = alias.replace("mallory", "")
    assert f"U+{ord(invisible):04X}" in info.value.message
    assert grpc_refusal(stub, raw).startswith("principal.id: ")
    assert_error(pdp.post("/v1/check", raw), 400, "principal.id")
    assert_error(pdp.post("/access/v1/evaluation", authzen_body(raw)), 400, "subject.id")


def test_format_characters_inside_an_id_are_decided(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub
) -> None:
    for path, value in [
        ("principal.id", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),  # Persian, ZWNJ
        ("principal.id", "\U0001f469\u200d\U0001f4bb dev"),  # an emoji sequence, ZWJ
        ("resources[0].id", "note\u00adone"),
    ]:
        assert effects(stub, pdp, bent(path, value)) == {"EFFECT_ALLOW"}, (path, value)
    # Attribute values are free text, format characters at either end included.
    raw = copy.deepcopy(BASE)
    raw["principal"]["attr"] = {"note": "\ufeffhello\u200b"}
    assert effects(stub, pdp, raw) == {"EFFECT_ALLOW"}


@st.composite
def edged_ids(draw: st.DrawFn) -> str:
    """A printable id with a format character at one end (or both)."""
    base = draw(st.text(st.characters(categories=("L", "N", "P")), min_size=0, max_size=12))
    fmt = draw(st.sampled_from(FORMATS))
    return draw(st.sampled_from([fmt + base, base + fmt, fmt + base + fmt]))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(sorted(FIELDS)), value=edged_ids())
def test_any_id_edged_by_a_format_character_is_refused_naming_the_field(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, path: str, value: str
) -> None:
    assert_refused_everywhere(pdp, stub, path, value)


@given(st.text(st.characters(categories=("L", "N", "P", "Cf")), min_size=1, max_size=16))
def test_the_rule_is_exactly_no_format_character_at_an_end(value: str) -> None:
    edged = unicodedata.category(value[0]) == "Cf" or unicodedata.category(value[-1]) == "Cf"
    assert bool(id_problem(value)) == edged, value


@pytest.mark.parametrize("claim", ["sub", "tid", "roles"])
def test_a_token_claim_edged_by_a_format_character_is_a_bad_credential(claim: str) -> None:
    claims: dict[str, Any] = {"sub": "alice", "tid": "acme", "roles": ["user"]}
    claims[claim] = ["user", "admin\ufeff"] if claim == "roles" else f"{claims[claim]}\u200b"
    tr = translate(HttpAttributes("GET", READ, source_ip="127.0.0.1"), MAPPING, None, claims=claims)
    assert (tr.kind, tr.reason) == ("unauthenticated", "invalid_claims"), tr
