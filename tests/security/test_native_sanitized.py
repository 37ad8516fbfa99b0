"""The native transport's C under AddressSanitizer and UBSan, in every `make test`.

The extension is built with `-fsanitize=address,undefined` into a temporary directory (the
in-place build stays as it is: other test files use it at the same time) and a real `pdp serve
--transport native` loads it (a sitecustomize's import hook, libasan preloaded). The hostile
tests of test_native_transport.py run against it as they are (imported, so a case added
there is run here too), then clients killed with many streams open, a burst of streams on
several connections, and the drain with a call in flight. Any sanitizer report in the
server's stderr, or the server dying, fails the test it happens in; the drain must exit 0.

Then the fuzz harness (pdp/server/native/fuzz/h2_fuzz.c) built with gcc + ASan/UBSan and a
replay main: its seed corpus (unary, streaming calls, early replies) and every crash
regression replayed, leaks checked.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pdp.server.native.fuzz import build

from .native_h2 import CHECK, HEADERS, frame, raw_calls
from .real_pdp import Served, pdp_serve
from .serving import health
from .test_native_transport import (  # run here as they are, on the sanitized server
    GOOD,
    MAX_CALLS,
    MAX_MESSAGE,
    _grpc,
    _port,
    _slow,
    _still_answers,
    policies,
    test_a_silent_connection_is_closed,
    test_calls_past_max_concurrent_rpcs_are_refused,
    test_clients_gone_mid_call,
    test_hostile_requests_each_get_their_status,
    test_random_bytes_after_the_preface,
    test_still_answering_after_the_random_bytes,
    test_the_grpc_message_is_percent_encoded,
)

__all__ = [  # the imported tests and fixture, collected here
    "policies",
    "test_a_silent_connection_is_closed",
    "test_calls_past_max_concurrent_rpcs_are_refused",
    "test_clients_gone_mid_call",
    "test_hostile_requests_each_get_their_status",
    "test_random_bytes_after_the_preface",
    "test_still_answering_after_the_random_bytes",
    "test_the_grpc_message_is_percent_encoded",
]

FUZZ = Path(build.__file__).resolve().parent
# test_native_transport.py's `served` flags: its tests expect these limits.
FLAGS = ["--transport", "native", "--workers", "1", "--max-message-bytes", str(MAX_MESSAGE),
         "--max-string-length", "100", "--grpc-idle-timeout", "1",
         "--max-concurrent-rpcs", str(MAX_CALLS), "--no-rate-limit-service", "--threads", "1"]  # fmt: skip
# CPython frees little at exit: leaks are the fuzz harness's to find (it runs a plain C
# program), not the server's. UBSan stops at its first report too (and the build does not
# recover from one).
ASAN_OPTIONS = "detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0"
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1"
REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: \w+Sanitizer")
_HOOK = """\
import importlib.abc, importlib.util, sys

class _Sanitized(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pdp.server.native._h2":
            return importlib.util.spec_from_file_location(name, {so!r})
        return None

sys.meta_path.insert(0, _Sanitized())
"""


@dataclass
class Sanitized:
    so: Path
    env: dict[str, str]


def _runtime(name: str) -> str:
    path = subprocess.run(
        ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert os.path.isabs(path), f"gcc has no {name}: `make c-tools` installs it"
    return path


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Sanitized:
    """_h2 built with ASan + UBSan, and the environment that makes `pdp serve` load it."""
    root = tmp_path_factory.mktemp("native-asan")
    so = build.extension(root / "ext")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(_HOOK.format(so=str(so)))
    path = os.pathsep.join(p for p in (str(root / "site"), os.environ.get("PYTHONPATH")) if p)
    env = {
        "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
        "ASAN_OPTIONS": ASAN_OPTIONS,
        "UBSAN_OPTIONS": UBSAN_OPTIONS,
        "PYTHONPATH": path,
    }
    return Sanitized(so, env)


def _reports(s: Served) -> list[str]:
    return [line for line in s.log if REPORT.search(line)]


@pytest.fixture(scope="module")
def served(policies: Path, sanitized: Sanitized) -> Iterator[Served]:
    """The sanitized server for the module; at the end, SIGTERM with a slow call in flight:
    the call answered, exit 0, no report."""
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as mp:  # only while the server starts
            for key, value in sanitized.env.items():
                mp.setenv(key, value)
            s = stack.enter_context(pdp_serve(policies, *FLAGS))
        yield s
        _answers_again(s)
        slow, result = _in_flight(_port(s))
        s.proc.send_signal(signal.SIGTERM)
        slow.join(120)
        code = s.proc.wait(120)
        assert not _reports(s), "".join(s.log)
        assert code == 0 and result == ["0"], (code, result, "".join(s.log))


def _call_into(result: list[str], port: int, payload: bytes) -> None:
    result.append(_grpc(port, payload))


def _in_flight(port: int) -> tuple[threading.Thread, list[str]]:
    """A slow Check being decided: known when a health call, answered by the same decision
    thread after it, times out (a larger one if the first was decided before that)."""
    for n in (10, 20, 40, 80):
        result: list[str] = []
        worker = threading.Thread(target=_call_into, args=(result, port, _slow(n, f"drain-{n}")))
        worker.start()
        while worker.is_alive():
            if health(port, timeout=0.5) is None and worker.is_alive():
                return worker, result
        assert result == ["0"], result
    raise AssertionError("no Check stayed long enough in flight")


@pytest.fixture(autouse=True)
def _no_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used the server: still running, nothing reported."""
    yield
    if "served" in request.fixturenames:
        s: Served = request.getfixturevalue("served")
        assert not _reports(s), "".join(s.log)
        assert s.proc.poll() is None, "".join(s.log)


def _answers_again(s: Served) -> None:
    """A good Check decided: calls of killed clients already taken still run to the end, and
    while they hold --max-concurrent-rpcs a new one is refused RESOURCE_EXHAUSTED."""
    for _ in range(600):
        if _grpc(_port(s), GOOD) == "0":
            return
        assert s.proc.poll() is None, "".join(s.log)
        time.sleep(0.2)
    _still_answers(s)


def test_the_server_runs_the_sanitized_build(served: Served, sanitized: Sanitized) -> None:
    """Else every test here would pass on the plain build."""
    maps = Path(f"/proc/{served.proc.pid}/maps").read_text()
    assert str(sanitized.so) in maps and "libasan" in maps


def test_clients_killed_with_many_streams_open(served: Served) -> None:
    """90 slow calls on a connection reset at once, three times over: calls queued, deciding
    and refused (--max-concurrent-rpcs) lose their stream together."""
    import h2.connection

    slow = frame(_slow(3, "killed"))
    for _ in range(3):
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        for _ in range(90):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, HEADERS)
            conn.send_data(sid, slow, end_stream=True)
        with socket.create_connection(("127.0.0.1", _port(served)), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(conn.data_to_send())
    _answers_again(served)


def test_a_burst_of_streams_on_several_connections(served: Served) -> None:
    """Four connections of 60 streams each at once: every call answered, decided or refused
    RESOURCE_EXHAUSTED past --max-concurrent-rpcs, none lost."""
    _answers_again(served)
    got: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: got.append(raw_calls(_port(served), [GOOD] * 60)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 4 and {s for g in got for s in g} <= {"0", "8"}, got
    _answers_again(served)


def test_the_fuzz_corpus_replays_clean(tmp_path: Path) -> None:
    """The fuzz harness built with gcc + ASan/UBSan (no clang): the seed corpus and every
    crash regression (fuzz/crashes/) run once each, leaks checked, no report."""
    replay = build.harness(tmp_path / "replay", "replay")
    inputs = [d for d in (FUZZ / "corpus", FUZZ / "crashes") if d.is_dir()]
    count = sum(1 for d in inputs for f in d.iterdir() if f.is_file() and f.name[0] != ".")
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1", "UBSAN_OPTIONS": UBSAN_OPTIONS,
           "H2_FUZZ_TRACE": "1"}  # fmt: skip
    done = subprocess.run(
        [str(replay), *map(str, inputs)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and not REPORT.search(done.stderr), done.stderr[-5000:]
    assert f"replayed {count} inputs" in done.stdout and count >= 70, done.stdout
    # The seeds reach the streaming calls (a message to Python, sends, a finish) and the
    # early replies (reply() taken, and refused past the batch), as h2_fuzz.c's trace says.
    for step in ("stream event 2 on", "stream_send(", "stream_finish(", ": ok\n", ": raised\n"):
        assert step in done.stderr, step


def _registered(text: str) -> set[str]:
    calls = re.findall(r"nghttp2_(session_callbacks_set_\w+\(g_cbs, \w+|option_set_\w+)", text)
    return set(calls)


def test_the_harness_sets_up_sessions_as_the_server_does() -> None:
    """h2_fuzz.c repeats what start() registers with nghttp2 (callbacks, options): a callback
    added to the server and not to the harness would go unfuzzed."""
    server = _registered((FUZZ.parent / "_h2.c").read_text())
    harness = _registered((FUZZ / "h2_fuzz.c").read_text())
    assert server and server == harness, server ^ harness


def test_the_harness_plays_every_call_of_the_python_side() -> None:
    """h2_fuzz.c calls every function of the extension the server's Python side calls (but
    those that start, stop and configure it), so each is fuzzed: a new one must be played
    there too. And it serves the server's streaming paths (server.STREAMED)."""
    from pdp.server.native import server

    harness = (FUZZ / "h2_fuzz.c").read_text()
    played = set(re.findall(r"\bpy_(\w+)\(NULL", harness))
    assert set(server._CALLS) - {"start", "stop", "use_tls"} <= played, played
    assert all(f'"{path}"' in harness for path in server.STREAMED)


def test_a_check_still_answers(served: Served) -> None:
    _answers_again(served)
    assert _grpc(_port(served), GOOD, path=CHECK) == "0"
