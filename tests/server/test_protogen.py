"""The committed generated code matches a fresh `make proto`."""

from __future__ import annotations

from pdp.server import protogen


def test_generated_code_is_not_stale() -> None:
    for target in protogen.TARGETS:
        stale = protogen.is_stale(target)
        assert not stale, f"run `make proto`: stale {stale}"


def test_imports_are_package_relative() -> None:
    text = (protogen.TARGETS[0].out / "pdp" / "v1" / "decision_pb2_grpc.py").read_text()
    assert "from . import decision_pb2" in text
    assert "from pdp.v1" not in text
