"""Bundle signature policy and load-time checks, written to kill the mutants `make mutation`
found alive in pdp/bundle (docs/MUTATION.md): a trusted key given without `require_signature`
still refuses a bad or foreign signature, malformed signature entries are `invalid` (never an
exception), re-signing is deterministic, and extra load checks are never skipped."""

from __future__ import annotations

import base64
import json

import pytest
from bundle_helpers import make_bundle
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdp.bundle import signing
from pdp.bundle.archive import pack, unpack
from pdp.bundle.load import load_bundle
from pdp.bundle.verify import open_bundle, sign_bundle
from pdp.engine import Engine
from pdp.engine.suites import CaseResult
from pdp.errors import BundleError

TRUSTED = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
KID = signing.key_id(TRUSTED.public_key())
OTHER_KID = signing.key_id(OTHER.public_key())


def _with_signature(data: bytes, signature: bytes | None) -> bytes:
    raw = unpack(data)
    return pack(raw.manifest, raw.files, signature, 1767225600)


def _refusal(data: bytes, **kwargs: object) -> str:
    with pytest.raises(BundleError) as caught:
        open_bundle(data, [TRUSTED.public_key()], **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


def test_trust_without_require_still_refuses_a_foreign_signature() -> None:
    data = make_bundle(1, key=OTHER)
    assert _refusal(data) == (
        f"signature check failed: untrusted (key {OTHER_KID}): no trusted key signed this bundle"
    )
    # Without trusted keys there is nothing to check against: accepted, marked unchecked.
    status = open_bundle(data).signature
    assert (status.state, status.key_id) == ("unchecked", OTHER_KID)


def test_trust_without_require_still_refuses_a_forged_signature() -> None:
    forged = _with_signature(make_bundle(2), unpack(make_bundle(1, key=TRUSTED)).signature)
    assert _refusal(forged) == (
        f"signature check failed: invalid (key {KID}): "
        f"signature by key {KID} does not match the manifest"
    )


def test_unsigned_with_trust_is_accepted_only_when_not_required() -> None:
    data = make_bundle(1)
    assert open_bundle(data, [TRUSTED.public_key()]).signature.state == "unsigned"
    assert _refusal(data, require_signature=True) == "signature check failed: unsigned"
    with pytest.raises(BundleError) as caught:
        open_bundle(data, require_signature=True)
    assert str(caught.value) == "a signature is required but no trusted key was given"


def test_a_valid_signature_reports_the_key_that_made_it() -> None:
    verified = open_bundle(make_bundle(1, key=TRUSTED), [TRUSTED.public_key()])
    assert (verified.signature.state, verified.signature.key_id) == ("valid", KID)
    assert verified.raw_signature == unpack(make_bundle(1, key=TRUSTED)).signature


@pytest.mark.parametrize(
    ("entry", "detail"),
    [
        (b"[]", "signature entry has no `signatures` list"),
        (b'{"signatures": []}', "signature entry has no `signatures` list"),
        (b'{"signatures": ["x"]}', "each signature needs string `algorithm`, `key_id` and `value`"),
        (
            b'{"signatures": [{"algorithm": "ed25519", "key_id": 1, "value": "x"}]}',
            "each signature needs string `algorithm`, `key_id` and `value`",
        ),
        (
            json.dumps({"signatures": [{"algorithm": "a", "key_id": "k", "value": "v"}] * 17}),
            "signature entry has more than 16 signatures",
        ),
    ],
)
def test_malformed_signature_entries_are_invalid_not_errors(
    entry: bytes | str, detail: str
) -> None:
    raw = entry.encode() if isinstance(entry, str) else entry
    status = signing.verify(b"{}", raw, [TRUSTED.public_key()])
    assert (status.state, status.detail) == ("invalid", detail)


def test_exactly_the_maximum_number_of_signatures_is_accepted() -> None:
    manifest = unpack(make_bundle(1)).manifest
    good = json.loads(signing.sign(manifest, TRUSTED, None))["signatures"][0]
    filler = [{"algorithm": "other", "key_id": f"k{i}", "value": "AA=="} for i in range(15)]
    entry = json.dumps({"signatures": [*filler, good]}).encode()
    status = signing.verify(manifest, entry, [TRUSTED.public_key()])
    assert (status.state, status.key_id) == ("valid", KID)


def test_a_signature_value_with_junk_characters_is_not_valid() -> None:
    manifest = unpack(make_bundle(1)).manifest
    entry = json.loads(signing.sign(manifest, TRUSTED, None))
    entry["signatures"][0]["value"] = "!" + entry["signatures"][0]["value"]
    status = signing.verify(manifest, json.dumps(entry).encode(), [TRUSTED.public_key()])
    assert status.state == "invalid"


def test_a_bad_signature_does_not_hide_a_good_one_by_another_trusted_key() -> None:
    manifest = unpack(make_bundle(1)).manifest
    bad = json.loads(signing.sign(manifest, OTHER, None))["signatures"][0]
    bad["value"] = base64.b64encode(b"\0" * 64).decode()
    good = json.loads(signing.sign(manifest, TRUSTED, None))["signatures"][0]
    entry = json.dumps({"signatures": [bad, good]}).encode()
    status = signing.verify(manifest, entry, [OTHER.public_key(), TRUSTED.public_key()])
    assert (status.state, status.key_id) == ("valid", KID)


def test_resigning_replaces_the_keys_own_signature_keeps_others_and_is_deterministic() -> None:
    data = make_bundle(1)
    once = sign_bundle(sign_bundle(data, TRUSTED), TRUSTED)
    sigs = json.loads(unpack(once).signature or b"")["signatures"]
    assert [s["key_id"] for s in sigs] == [KID]
    a_then_b = sign_bundle(sign_bundle(data, TRUSTED), OTHER)
    b_then_a = sign_bundle(sign_bundle(data, OTHER), TRUSTED)
    assert a_then_b == b_then_a
    sigs = json.loads(unpack(a_then_b).signature or b"")["signatures"]
    assert [s["key_id"] for s in sigs] == sorted([KID, OTHER_KID])
    for key in (TRUSTED, OTHER):
        assert open_bundle(a_then_b, [key.public_key()], require_signature=True).signature.ok


def test_extra_load_checks_run_and_refuse() -> None:
    def failing_check(source: object, engine: object) -> list[CaseResult]:
        assert isinstance(engine, Engine)  # checks decide with the bundle's own engine
        assert engine.bundle.version == "1.0.0"
        return [CaseResult("mapping", "doc read", "read", "mapping.yaml", 3, False, failure="no")]

    with pytest.raises(BundleError) as caught:
        load_bundle(make_bundle(1), checks=[failing_check])
    assert str(caught.value) == (
        "bundle tests fail (1 failed): mapping.yaml:3 mapping / doc read [read]: no"
    )
    assert load_bundle(make_bundle(1)).manifest.version == "1.0.0"


def test_failing_suites_are_named_up_to_five_then_counted() -> None:
    def six_failures(source: object, engine: object) -> list[CaseResult]:
        return [CaseResult("s", f"c{i}", "a", "f.yaml", i, False, failure="x") for i in range(6)]

    with pytest.raises(BundleError) as caught:
        load_bundle(make_bundle(1), checks=[six_failures])
    assert str(caught.value) == (
        "bundle tests fail (6 failed): "
        + "; ".join(f"f.yaml:{i} s / c{i} [a]: x" for i in range(5))
        + "; ... and 1 more"
    )


def test_exactly_five_failures_are_all_named_with_no_count() -> None:
    def five_failures(source: object, engine: object) -> list[CaseResult]:
        return [CaseResult("s", f"c{i}", "a", "f.yaml", i, False, failure="x") for i in range(5)]

    with pytest.raises(BundleError) as caught:
        load_bundle(make_bundle(1), checks=[five_failures])
    assert str(caught.value) == "bundle tests fail (5 failed): " + "; ".join(
        f"f.yaml:{i} s / c{i} [a]: x" for i in range(5)
    )


def test_the_verified_bundle_records_its_archive_digest() -> None:
    import hashlib

    data = make_bundle(1, key=TRUSTED)
    verified = open_bundle(data, [TRUSTED.public_key()])
    assert verified.archive_sha256 == hashlib.sha256(data).hexdigest()
