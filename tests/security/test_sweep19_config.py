"""Hostile or mistaken `pdp serve` settings: a clear start-up error naming the key, or a
warning where the setting is legitimate but risky. Before:

- `--workers 99999999999999999999999` (or `PDP_WORKERS`, or `workers:` in `--config`) with a
  fixed port was taken as given: the supervisor forked workers until the machine gave out,
  each printing a traceback;
- a `PDP_*` variable naming no key (`PDP_DECISON_LOG`, a typo) was ignored without a word,
  leaving the decision log silently off, where the same typo in `--config` is an error;
- `--listen 0.0.0.0:...` without TLS and `--prometheus 0.0.0.0:...` (unauthenticated
  metrics) started without a warning.

Kubernetes' service links for a Service named `pdp` (`PDP_SERVICE_HOST`, `PDP_PORT`, ...)
are not settings and stay quiet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLICIES = Path(__file__).resolve().parents[2] / "policies"
START_CAP = 90.0


def _serve(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `pdp serve` until it listens (then stop it) or exits; its code and stderr."""
    argv = [sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(POLICIES), *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    lines: list[str] = []
    assert proc.stderr is not None
    end = time.monotonic() + START_CAP
    try:
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                proc.send_signal(signal.SIGTERM)
            assert time.monotonic() < end, "".join(lines)
        return proc.wait(30), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_absurd_worker_count_is_refused_by_name(tmp_path: Path) -> None:
    huge = "99999999999999999999999"
    config = tmp_path / "pdp.yaml"
    config.write_text(f"workers: {huge}\n")
    for args, env in (
        (["--workers", huge], None),
        ([], {"PDP_WORKERS": huge}),
        (["--config", str(config)], None),
    ):
        code, out = _serve("--listen", "127.0.0.1:47913", "--no-ext-authz", *args, env=env)
        assert code == 2, out
        assert "error: " in out and "--workers" in out, out
        assert f"takes a whole number from 1 to 256, or `auto`, not `{huge}`" in out, out
        assert "Traceback" not in out and "listening on" not in out, out


def test_risky_exposure_and_unknown_variables_are_warned_about() -> None:
    env = {"PDP_DECISON_LOG": "/tmp/typo.jsonl", "PDP_SERVICE_HOST": "10.0.0.9"}
    env["PDP_PORT_50051_TCP_ADDR"] = "10.0.0.9"
    code, out = _serve(
        "--listen", "0.0.0.0:0", "--prometheus", "0.0.0.0:0", "--no-ext-authz", env=env
    )
    assert code == 0, out
    assert "PDP_DECISON_LOG is not a pdp setting and is ignored" in out, out
    assert "--listen 0.0.0.0:0 is reachable from the network without TLS" in out, out
    assert "--prometheus 0.0.0.0:0 serves /metrics without authentication" in out, out
    assert "PDP_SERVICE_HOST" not in out and "PDP_PORT" not in out, out
    assert "Traceback" not in out, out


def test_loopback_settings_start_without_a_warning() -> None:
    code, out = _serve(
        "--listen", "127.0.0.1:0", "--prometheus", "127.0.0.1:0", "--no-ext-authz",
        env={"PDP_LOG_LEVEL": "info"},
    )  # fmt: skip
    assert code == 0, out
    warnings = [line for line in out.splitlines() if " WARNING " in line]
    assert [w for w in warnings if "file-descriptor limit" not in w] == [], out
