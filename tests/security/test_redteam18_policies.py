"""Red-team 18, policy files: a string no UTF-8 can hold.

YAML's `"\\ud800"` (and JSON's) escape yields a lone surrogate: a Python string that is no
Unicode text. The loader took it, so a rule `reason: "r\\ud800"` compiled, served, and every
Check that rule decided failed as INTERNAL (protobuf cannot encode the reason; the HTTP JSON
face neither): one author's typo or one hostile commit, and a whole kind answered errors
instead of decisions. Such a string is now a load error at its file:line:column.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pdp.errors import PolicyErrors
from pdp.model.loader import load_policy_files

POLICY = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: doc}
spec:
  resource: document
  tenancy: global
  actions: {read: {}}
  rules:
    - id: readers
      actions: [read]
      effect: allow
      roles: [reader]
      reason: READER
      obligations: {watermark: WATERMARK}
"""

CASES = {
    # where the escape goes -> (file text, line, column of the offending scalar)
    "reason": (POLICY.replace("READER", '"r\\ud800"'), 13, 15),
    "obligation": (POLICY.replace("WATERMARK", '"w\\udfff"'), 14, 32),
    "key": (POLICY.replace("{watermark:", '{"w\\ud800":'), 14, 21),
    "single quoted is no escape": (POLICY.replace("READER", "'r\\ud800'"), None, None),
    # PyYAML decodes each half of a UTF-16 pair on its own: two lone surrogates, no emoji.
    "a pair": (POLICY.replace("READER", '"\\ud83d\\ude00"'), 13, 15),
    "a code point": (POLICY.replace("READER", '"\\U0001F600"'), None, None),
    "long form": (POLICY.replace("READER", '"\\U0000d800"'), 13, 15),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_lone_surrogate_in_a_policy_is_a_load_error_at_its_position(case: str) -> None:
    text, line, column = CASES[case]
    if line is None:
        source = load_policy_files({"doc.yaml": text.encode()})
        [policy] = source.resource_policies
        assert policy.id == "doc"
        return
    with pytest.raises(PolicyErrors) as caught:
        load_policy_files({"doc.yaml": text.encode()})
    [error] = caught.value.errors
    assert (error.location.file, error.location.line, error.location.column) == (
        "doc.yaml",
        line,
        column,
    ), error.render()
    assert "unpaired surrogate" in error.message
    error.render().encode("utf-8")  # the message itself is text


def test_a_lone_surrogate_in_a_json_data_file_is_a_load_error() -> None:
    files = {
        "doc.yaml": POLICY.encode(),
        "data/names.json": b'{"ok": "fine", "bad": ["x", "\\udc00"]}',
    }
    with pytest.raises(PolicyErrors) as caught:
        load_policy_files(files)
    [error] = caught.value.errors
    assert error.location.file == "data/names.json" and "unpaired surrogate" in error.message
    error.render().encode("utf-8")


def test_pdp_validate_names_the_position_instead_of_serving_errors(tmp_path: Path) -> None:
    (tmp_path / "doc.yaml").write_text(CASES["reason"][0])
    result = subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout
    out = result.stdout + result.stderr
    assert "doc.yaml:13:15:" in out and "unpaired surrogate" in out, out
    assert "Traceback" not in out


def test_json_data_keeps_a_surrogate_pair_and_a_literal_backslash_u() -> None:
    # JSON, unlike PyYAML, joins a pair into one character; `\\\\ud800` is text, no escape.
    files = {
        "doc.yaml": POLICY.encode(),
        "data/names.json": b'{"smile": "\\ud83d\\ude00", "path": "C:\\\\ud800"}',
    }
    source = load_policy_files(files)
    assert source.data["names"] == {"smile": "\U0001f600", "path": "C:\\ud800"}


# -- an integer no JSON encoder of the HTTP face takes ------------------------------------------
#
# YAML and JSON integers have no size limit and the loader kept them whole: an obligation
# `{big: 1000000000000000000000000000000}` compiled, and every AuthZEN or JSON answer carrying
# it was a 500 (orjson takes 64-bit integers only); a constant that size is no CEL int either.
# An integer outside the signed 64-bit range is now a load error at its position.


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1" + "0" * 30, False),
        ("-9223372036854775809", False),
        ("9223372036854775808", False),
        ("0x10000000000000000", False),
        ("9223372036854775807", True),
        ("-9223372036854775808", True),
    ],
)
def test_an_integer_beyond_64_bits_is_a_load_error(value: str, ok: bool) -> None:
    text = POLICY.replace("WATERMARK", value).replace("READER", "reader")
    with pytest.raises(PolicyErrors) as caught:
        load_policy_files({"doc.yaml": text.encode()})
    [error] = caught.value.errors
    assert (error.location.line, error.location.column) == (14, 32), error.render()
    if ok:
        # Within 64 bits, but an obligation must also be within +-2**53, which a gRPC
        # answer's Struct carries exactly (session 26, tests/security/test_redteam26_decide.py).
        assert "64-bit" not in error.message and "2**53" in error.message
        return
    assert "64-bit" in error.message


def test_an_integer_beyond_64_bits_in_json_data_is_a_load_error() -> None:
    files = {"doc.yaml": POLICY.encode(), "data/limits.json": b'{"n": 18446744073709551616}'}
    with pytest.raises(PolicyErrors) as caught:
        load_policy_files(files)
    [error] = caught.value.errors
    assert error.location.file == "data/limits.json" and "64-bit" in error.message
