"""Shared fixtures for the CEL tests: protobuf classes for the conformance suite, summary line."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cel_support import CONFORMANCE, SUMMARY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def conformance_protos(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Generate the conformance .proto classes into a temp dir (never stale, never committed)."""
    # A missing suite is a failure, never a skip: a clone without it would pass silently.
    assert (CONFORMANCE / "proto").is_dir(), f"CEL conformance suite not found in `{CONFORMANCE}`"
    out = tmp_path_factory.mktemp("cel_gen")
    protos = sorted(
        str(p.relative_to(CONFORMANCE / "proto")) for p in (CONFORMANCE / "proto").rglob("*.proto")
    )
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{CONFORMANCE / 'proto'}", f"-I{include}",
         f"--python_out={out}", *protos],
        check=True,
        cwd=CONFORMANCE / "proto",
    )  # fmt: skip
    sys.path.insert(0, str(out))
    # Importing registers every message (TestAllTypes, ...) in the default descriptor pool, so
    # text_format can parse `Any` values that name them.
    for p in protos:
        importlib.import_module(p[: -len(".proto")].replace("/", ".") + "_pb2")
    return importlib.import_module("cel.expr.conformance.test.simple_pb2")
