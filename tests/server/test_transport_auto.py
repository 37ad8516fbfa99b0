"""`pdp serve --transport auto`, the default: the native transport whenever its extension is
built, grpcio when it is not, and the start-up log and --print-config say which and why."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .conftest import ALICE, DOC, free_port
from .test_serve_cli import pdp_serve, wait_serving

CHECK = "/pdp.v1.DecisionService/Check"
# A run of `pdp serve` in which the extension cannot be imported, as on an install that did not
# build it (no compiler or headers): the import machinery finds None for the module.
WITHOUT_EXTENSION = (
    "import sys; sys.modules['pdp.server.native._h2'] = None; "
    "from pdp.cli.main import main; sys.exit(main(sys.argv[1:]))"
)

# An extension built by an older checkout (an editable install not rebuilt after a pull): one
# the Python side calls a function of that it lacks.
WITH_STALE_EXTENSION = (
    "import sys, types; import pdp.server.native as package; "
    "from pdp.server.native import _h2; stale = types.ModuleType(_h2.__name__); "
    "stale.__dict__.update({k: v for k, v in vars(_h2).items() if k != 'reply'}); "
    "sys.modules[_h2.__name__] = package._h2 = stale; "
    "from pdp.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def _print_config(*args: str, without_extension: bool = False, run: str = WITHOUT_EXTENSION) -> str:
    command = ["-c", run, "serve"] if without_extension else ["-m", "pdp.cli.main", "serve"]
    done = subprocess.run(
        [sys.executable, *command, *args, "--print-config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _line(config: str, key: str) -> str:
    return next(line for line in config.splitlines() if line.startswith(f"{key}:"))


def test_the_default_is_native_when_the_extension_is_built(policy_dir: Path) -> None:
    config = _print_config("--policies", str(policy_dir))
    transport = _line(config, "transport")
    assert transport.startswith('transport: "native"'), transport
    assert "auto: its extension is built" in transport, transport
    # The native transport's decision threads, not grpcio's RPC threads.
    assert _line(config, "threads").startswith("threads: 4"), config


def test_the_default_is_grpcio_when_the_extension_is_not_built(policy_dir: Path) -> None:
    config = _print_config("--policies", str(policy_dir), without_extension=True)
    transport = _line(config, "transport")
    assert transport.startswith('transport: "grpcio"'), transport
    assert "auto: the native transport is not built" in transport, transport


def test_native_asked_for_without_the_extension_is_refused_by_name(policy_dir: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_EXTENSION,
            "serve",
            "--policies",
            str(policy_dir),
            "--transport",
            "native",
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "--transport native: the native transport is not built" in done.stderr, done.stderr


def test_a_stale_extension_is_not_used_and_says_to_rebuild(policy_dir: Path) -> None:
    config = _print_config(
        "--policies", str(policy_dir), without_extension=True, run=WITH_STALE_EXTENSION
    )
    transport = _line(config, "transport")
    assert transport.startswith('transport: "grpcio"'), transport
    assert "older than this pdp (it lacks reply)" in transport, transport
    assert "make native" in transport, transport


def test_an_explicit_transport_is_kept(policy_dir: Path) -> None:
    for name in ("grpcio", "native"):
        config = _print_config("--policies", str(policy_dir), "--transport", name)
        assert _line(config, "transport").startswith(f'transport: "{name}"'), config


def test_a_default_server_says_native_at_start_and_decides(policy_dir: Path) -> None:
    port = free_port()
    with pdp_serve("--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}") as proc:
        wait_serving(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = channel.unary_unary(CHECK)
            data = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None)
            reply = pb.CheckResponse.FromString(check(data.SerializeToString(), timeout=30))
        assert len(reply.results) == 1
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "(native transport; default, auto: its extension is built)" in out, out
