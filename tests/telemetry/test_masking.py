from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.model.request import parse_check_request
from pdp.telemetry import MASKED, Masker, MaskPathError
from pdp.telemetry._confusables import SOURCES, TARGETS
from pdp.telemetry.masking import ALWAYS_DROPPED_KEYS, _is_dropped_key

from .conftest import TOKEN, request_dict


def test_operator_paths_mask_attributes_and_identity_fields() -> None:
    masker = Masker(
        ["principal.attr.email", "resources[*].attr.ssn", "context.ip", "resources[1].id"]
    )
    masked = masker.mask_request(request_dict())
    req = masked.request
    assert req["principal"]["attr"]["email"] == MASKED
    assert [r["attr"]["ssn"] for r in req["resources"]] == [MASKED, MASKED]
    assert req["resources"][0]["id"] == "doc-1"
    assert req["resources"][1]["id"] == MASKED
    assert req["context"]["ip"] == ""  # must stay parseable as an IP
    assert req["principal"]["attr"]["department"] == "legal"
    assert {"alice@acme.example", "123-45-6789", "10.1.2.3", "doc-2"} <= masked.secrets
    # Still the shape parse_check_request accepts.
    parse_check_request(req)


def test_credentials_are_always_dropped_without_configuration() -> None:
    original = request_dict()
    masked = Masker().mask_request(original)
    text = json.dumps(masked.request)
    assert TOKEN not in text
    assert "Authorization" not in text
    assert "token" not in masked.request["principal"]["attr"]
    assert masked.request["principal"]["attr"]["headers"] == {"x-request-id": "r-9"}
    assert masked.request["resources"][0]["attr"]["note"] == MASKED  # "bearer <jwt>" value
    # The input is never modified: the engine's dicts may still be in use.
    assert original["principal"]["attr"]["token"] == TOKEN


def test_wildcard_key_masks_every_attribute() -> None:
    masked = Masker(["principal.attr.*"]).mask_request(request_dict())
    assert set(masked.request["principal"]["attr"].values()) == {MASKED}


def test_redact_removes_masked_values_from_free_text() -> None:
    masked = Masker(["principal.attr.email"]).mask_request(request_dict())
    assert masked.redact("missing scope (alice@acme.example)") == f"missing scope ({MASKED})"


@pytest.mark.parametrize(
    "path",
    [
        "principal.roles",
        "resources[*].actions",
        "resources[*].kind",
        "principal.attr",
        "x.attr.y",
        "a..b",
    ],
)
def test_structural_or_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(MaskPathError, match="mask path"):
        Masker([path])


# -- lookalikes from Unicode's confusables (pdp.telemetry._confusables) -----------------------

_BY_LETTER: dict[str, list[str]] = {}
for _source, _target in zip(SOURCES, TARGETS):
    _BY_LETTER.setdefault(_target, []).append(_source)
_BY_LETTER.setdefault("l", []).extend(_BY_LETTER.get("i", []))  # one glyph class


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(sorted(ALWAYS_DROPPED_KEYS)), data=st.data())
def test_a_credential_key_spelt_with_any_lookalikes_is_dropped(key: str, data) -> None:
    spelt = []
    for letter in key:
        choices = _BY_LETTER.get(letter.lower(), [])
        if choices and data.draw(st.booleans()):
            letter = data.draw(st.sampled_from(choices))
        elif data.draw(st.booleans()):
            letter = letter.upper()
        spelt.append(letter)
    assert _is_dropped_key("".join(spelt)), "".join(spelt)


def test_keys_that_name_no_credential_stay() -> None:
    for key in ("department", "email", "tokens", "region", "clientId", "\u0434\u043e\u043c"):
        assert not _is_dropped_key(key), key
