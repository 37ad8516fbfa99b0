"""`pdp serve --require-signature` end to end: a real server process, a real bundle file.

An unsigned bundle and one signed by an untrusted key are refused — the server stays up,
reports NOT_SERVING and answers decisions with UNAVAILABLE — and the bundle signed by the
trusted key is served. The control run without the flag serves the unsigned bundle, so the
refusal is the flag's doing and not a broken bundle's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from bundle_helpers import make_bundle
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_serve_e2e import CHECK, START_TIMEOUT, Replica, pdp_serve

from pdp.bundle.archive import pack, unpack
from pdp.bundle.signing import generate_keypair, load_private_key
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

T = TypeVar("T")
# A cap, not a duration under test: the server polls the file every ~0.5 s.
WAIT = 30.0


def _wait_for(probe: Callable[[], T], what: str) -> T:
    """Poll `probe` until it returns something truthy; fail after a generous cap."""
    deadline = time.monotonic() + WAIT
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _health(server: Replica) -> int:
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _assert_refused(server: Replica, error: str) -> None:
    """Nothing is served: no active bundle, health NOT_SERVING, a decision is UNAVAILABLE."""
    info = server.info()
    assert info.active_bundle.version == ""
    assert error in info.last_error, info.last_error
    assert _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Check(CHECK, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _allowed(server: Replica) -> set[str]:
    response = server.stub.Check(CHECK, timeout=5)
    return {a for a, d in response.results[0].actions.items() if d.effect == pb.EFFECT_ALLOW}


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    trusted_key, trusted_pub = generate_keypair(tmp_path / "trusted")
    other_key, _ = generate_keypair(tmp_path / "other")
    return {"trusted_key": trusted_key, "trusted_pub": trusted_pub, "other_key": other_key}


def test_unsigned_then_untrusted_bundles_are_refused_then_the_trusted_one_served(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    bundle = tmp_path / "live.pdpb"
    bundle.write_bytes(make_bundle(1))
    flags = ("--require-signature", "--trust", str(keys["trusted_pub"]))
    with pdp_serve(str(bundle), *flags) as server:
        _wait_for(lambda: server.info().last_error, "the unsigned bundle to be refused")
        _assert_refused(server, "unsigned")

        bundle.write_bytes(make_bundle(2, key=load_private_key(keys["other_key"])))
        _wait_for(
            lambda: "no trusted key" in server.info().last_error,
            "the bundle signed by an untrusted key to be refused",
        )
        _assert_refused(server, "no trusted key signed this bundle")

        bundle.write_bytes(make_bundle(3, key=load_private_key(keys["trusted_key"])))
        _wait_for(
            lambda: server.info().active_bundle.version == "3.0.0",
            "the bundle signed by the trusted key to be served",
        )
        assert _health(server) == health_pb2.HealthCheckResponse.SERVING
        assert _allowed(server) == {"a3"}
        assert server.info().last_error == ""


def test_a_tampered_signed_bundle_is_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    """The trusted key's signature over another manifest does not carry over."""
    signed = make_bundle(4, key=load_private_key(keys["trusted_key"]))
    unsigned_other = make_bundle(5)
    sig = unpack(signed).signature
    assert sig is not None
    forged = _with_signature(unsigned_other, sig)
    bundle = tmp_path / "live.pdpb"
    bundle.write_bytes(forged)
    flags = ("--require-signature", "--trust", str(keys["trusted_pub"]))
    with pdp_serve(str(bundle), *flags) as server:
        _wait_for(lambda: server.info().last_error, "the forged bundle to be refused")
        _assert_refused(server, "does not match the manifest")


def _with_signature(data: bytes, signature: bytes) -> bytes:
    parts = unpack(data)
    return pack(parts.manifest, parts.files, signature, 1767225600)


def test_control_without_the_flag_serves_the_unsigned_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "live.pdpb"
    bundle.write_bytes(make_bundle(1))
    with pdp_serve(str(bundle)) as server:
        _wait_for(lambda: server.info().active_bundle.version == "1.0.0", "the bundle")
        assert _health(server) == health_pb2.HealthCheckResponse.SERVING
        assert _allowed(server) == {"a1"}


def test_require_signature_without_trust_is_a_startup_error(tmp_path: Path) -> None:
    bundle = tmp_path / "live.pdpb"
    bundle.write_bytes(make_bundle(1))
    argv = [sys.executable, "-m", "pdp.cli.main", "serve", "--bundle", str(bundle)]
    done = subprocess.run(
        [*argv, "--listen", "127.0.0.1:0", "--require-signature"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert done.returncode != 0
    assert "--require-signature needs --trust PUB" in done.stderr
