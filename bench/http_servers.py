"""Which HTTP server library should carry `pdp serve --http-listen`? Measured, not assumed.

    .venv/bin/pip install -e '.[bench]'        # uvicorn[standard] (httptools, uvloop), granian
    apt-get install wrk                        # the load tool (Debian)
    .venv/bin/python bench/http_servers.py [--duration 5] [--rounds 3] [--connections 32]

Each candidate serves the same trivial handler — parse a small JSON POST body, answer
`{"decision": true}` — in one process pinned to the last core, while `wrk` (one thread,
pinned to the first core, keep-alive connections) posts the same body for `--duration`
seconds. Rounds interleave the candidates (the shared machine drifts); the median req/s and
p99 latency per candidate are printed. Candidates: aiohttp's low-level server (the choice),
uvicorn with httptools and uvloop serving a raw ASGI callable, uvicorn with its pure-Python
h11 parser, and granian (Rust) with an ASGI callable, one worker each. Not a test: figures
depend on the machine; say which with every figure.

Besides speed, the listener needs the TLS peer certificate of each request (the mTLS
identity allow-list): aiohttp exposes it (`transport.get_extra_info("ssl_object")`), uvicorn's
ASGI scope does not, granian's only through its own TLS settings.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BODY = (
    b'{"subject":{"type":"user","id":"alice","properties":{"tenant":"acme","roles":["user"]}},'
    b'"action":{"name":"read"},"resource":{"type":"document","id":"d-100","properties":'
    b'{"tenant":"acme","owner":"alice"}}}'
)

APPS = {
    "aiohttp": """
        import asyncio, json, sys
        from aiohttp import web
        async def handle(request):
            json.loads(await request.read())
            return web.Response(body=b'{"decision":true}', content_type="application/json")
        async def main():
            runner = web.ServerRunner(web.Server(handle, access_log=None))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
            print("ready", flush=True)
            await asyncio.Event().wait()
        asyncio.run(main())
    """,
    "aiohttp-uvloop": """
        import asyncio, json, sys
        import uvloop
        from aiohttp import web
        async def handle(request):
            json.loads(await request.read())
            return web.Response(body=b'{"decision":true}', content_type="application/json")
        async def main():
            runner = web.ServerRunner(web.Server(handle, access_log=None))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
            print("ready", flush=True)
            await asyncio.Event().wait()
        uvloop.run(main())
    """,
    "uvicorn-httptools": """
        import json, sys, uvicorn
        async def app(scope, receive, send):
            body = b""
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
            json.loads(body)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"decision":true}'})
        print("ready", flush=True)
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools",
                    loop="uvloop", log_level="error", access_log=False, lifespan="off")
    """,
    "uvicorn-h11": """
        import json, sys, uvicorn
        async def app(scope, receive, send):
            body = b""
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
            json.loads(body)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"decision":true}'})
        print("ready", flush=True)
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="h11", loop="asyncio",
                    log_level="error", access_log=False, lifespan="off")
    """,
    "granian-asgi": """
        import json, sys
        from granian import Granian
        from granian.constants import Interfaces
        print("ready", flush=True)
        Granian("bench_app:app", address="127.0.0.1", port=int(sys.argv[1]),
                interface=Interfaces.ASGI, workers=1, log_enabled=False).serve()
    """,
}

GRANIAN_APP = """
import json
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    json.loads(body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"decision":true}'})
"""

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %f %f\\n", summary.requests, latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def run_one(name: str, tmp: Path, args: argparse.Namespace, cpus: list[int]) -> tuple[float, float]:
    port = free_port()
    script = tmp / f"srv_{name.replace('-', '_')}.py"
    script.write_text(textwrap.dedent(APPS[name]))
    server_cpu, client_cpu = str(cpus[-1]), str(cpus[0])
    proc = subprocess.Popen(
        ["taskset", "-c", server_cpu, sys.executable, str(script), str(port)],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(tmp)},
    )
    try:
        wait_port(port)
        lua = tmp / "post.lua"
        lua.write_text(LUA.format(body=f"[[{BODY.decode()}]]"))
        cmd = ["taskset", "-c", client_cpu, "wrk", "-t1", f"-c{args.connections}"]
        cmd += [f"-d{args.duration}s", "-s", str(lua), f"http://127.0.0.1:{port}/"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        m = re.search(r"RESULT (\d+) ([\d.]+) ([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if m is None or errors:
            raise RuntimeError(f"{name}: wrk said\n{out}")
        return int(m.group(1)) / args.duration, float(m.group(3)) / 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--only", action="append", choices=sorted(APPS))
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    names = args.only or list(APPS)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "bench_app.py").write_text(GRANIAN_APP)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                try:
                    results[name].append(run_one(name, tmp, args, cpus))
                except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                    print(f"{name}: {exc}", file=sys.stderr)
    print(
        f"trivial JSON POST, wrk -t1 -c{args.connections} -d{args.duration}s, server pinned to "
        f"cpu {cpus[-1]}, wrk to cpu {cpus[0]}, {os.cpu_count()} cpus, median of {args.rounds}"
    )
    print(f"{'server':<20} {'req/s':>9} {'p99 ms':>8}")
    for name in names:
        if results[name]:
            rps = statistics.median(x for x, _ in results[name])
            p99 = statistics.median(y for _, y in results[name])
            print(f"{name:<20} {rps:>9.0f} {p99:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
