from __future__ import annotations

import json

import pytest

from pdp.model.request import parse_check_request
from pdp.telemetry import MASKED, Masker, MaskPathError

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
