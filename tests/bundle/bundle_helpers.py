"""Helpers for bundle tests: policy trees whose versions decide differently, packed bundles,
and a real HTTP bundle server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdp.bundle.archive import pack
from pdp.bundle.manifest import FileEntry, Manifest, sha256_hex
from pdp.bundle.verify import sign_bundle
from pdp.model.request import CheckRequest, parse_check_request

# Every version declares the same actions; version N allows only `aN`.
ACTIONS = [f"a{i}" for i in range(1, 31)]


def policy_files(n: int, *, tests_pass: bool = True, compile_ok: bool = True) -> dict[str, bytes]:
    """Version `n` of a tiny policy tree: role `user` may do `aN` and nothing else."""
    actions = "\n".join(f"    {a}: {{}}" for a in ACTIONS)
    condition = '      condition: "principal.id =="\n' if not compile_ok else ""
    policy = f"""apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: things}}
spec:
  resource: thing
  actions:
{actions}
  rules:
    - id: allow-a{n}
      actions: [a{n}]
      effect: allow
      roles: [user]
{condition}"""
    other = f"a{n + 1}"
    expect_other = "allow" if not tests_pass else "deny"
    suite = f"""apiVersion: pdp/v1
kind: TestSuite
metadata: {{id: things-tests}}
spec:
  principals:
    u: {{id: u1, tenant: t1, roles: [user]}}
  resources:
    r: {{kind: thing, id: r1, tenant: t1}}
  cases:
    - name: version {n} allows only a{n}
      principal: u
      resource: r
      expect: {{a{n}: allow, {other}: {expect_other}}}
"""
    return {"things.yaml": policy.encode(), "things_test.yaml": suite.encode()}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def make_bundle(
    n: int,
    *,
    name: str = "things",
    revision: str | None = None,
    key: Ed25519PrivateKey | None = None,
    tests_pass: bool = True,
    compile_ok: bool = True,
) -> bytes:
    """Pack version `n.0.0` directly (no build-time test run), so broken bundles can exist."""
    files = policy_files(n, tests_pass=tests_pass, compile_ok=compile_ok)
    manifest = Manifest(
        name=name,
        version=f"{n}.0.0",
        revision=revision if revision is not None else f"rev{n:04d}",
        dirty=False,
        build_time="2026-01-01T00:00:00Z",
        builder="pdp test",
        files={p: FileEntry(sha256_hex(c), len(c)) for p, c in files.items()},
    )
    data = pack(manifest.canonical_bytes(), files, None, 1767225600)
    return sign_bundle(data, key) if key is not None else data


def probe_request() -> CheckRequest:
    return parse_check_request(
        {
            "principal": {"id": "u1", "tenant": "t1", "roles": ["user"]},
            "resources": [{"kind": "thing", "id": "r1", "tenant": "t1", "actions": ACTIONS}],
        }
    )


def allowed_actions(results: dict[str, str]) -> set[str]:
    return {a for a, effect in results.items() if effect == "allow"}


# A held answer sends a byte this often: its reader's per-read timeout never trips.
HELD_BYTE_EVERY_S = 0.5


@dataclass
class BundleServer:
    """A real HTTP server serving one bundle at /bundle.pdpb with a strong ETag.

    `hold()` makes it hang: a bundle asked for from then on is sent a byte every
    `HELD_BYTE_EVERY_S` (as a stalled CDN would) until `release()`, then at once; `hold(after=N)`
    lets the next N requests through first (a source that answers one poller and hangs for the
    next). `answered` counts the bundles sent whole."""

    bundle: bytes = b""
    available: bool = True
    requests: int = 0
    not_modified: int = 0
    answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    released: threading.Event = field(default_factory=threading.Event)
    hold_after: int = 0  # requests up to this number are not held

    def __post_init__(self) -> None:
        self.released.set()

    def set(self, data: bytes) -> None:
        with self.lock:
            self.bundle = data

    def hold(self, after: int = 0) -> None:
        with self.lock:
            self.hold_after = self.requests + after
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def etag(self) -> str:
        return '"' + hashlib.sha256(self.bundle).hexdigest()[:32] + '"'


@contextmanager
def serve_bundles(initial: bytes = b"") -> Iterator[BundleServer]:
    state = BundleServer(bundle=initial)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
                exempt = state.requests <= state.hold_after
                body, etag, up = state.bundle, state.etag(), state.available
                if up and self.headers.get("If-None-Match") == etag:
                    state.not_modified += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
            if not up or not body:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.end_headers()
            sent = 0
            try:
                while (
                    sent < len(body) and not exempt and not state.released.wait(HELD_BYTE_EVERY_S)
                ):
                    self.wfile.write(body[sent : sent + 1])
                    self.wfile.flush()
                    sent += 1
                self.wfile.write(body[sent:])
            except OSError:  # the reader went away (a stopped server) mid-answer
                return
            with state.lock:
                state.answered += 1

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/bundle.pdpb"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release()  # a held answer ends, so its thread does
        server.shutdown()
        server.server_close()
        thread.join(5)


def flip_one_byte(data: bytes) -> bytes:
    """`data` with one bit of its middle byte flipped: a tampered archive."""
    out = bytearray(data)
    out[len(out) // 2] ^= 0x01
    return bytes(out)
