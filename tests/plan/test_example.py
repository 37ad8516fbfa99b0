"""examples/list_service: the listing is exactly what Check allows, as a script and over HTTP."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

from . import _gen as g

APP = g.ROOT / "examples" / "list_service" / "app.py"
ENGINE = Engine(compile_policy_set(load_policy_dir(g.POLICIES)))


def _run(db: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(APP), "--policies", str(g.POLICIES), "--db", str(db), *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout


def _load_app() -> Any:
    spec = importlib.util.spec_from_file_location("list_service_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # SQLAlchemy resolves the annotations through it
    spec.loader.exec_module(module)
    return module


app = _load_app()


def _allowed(db: Path, principal: dict, ip: str) -> list[str]:
    with Session(sa.create_engine(f"sqlite:///{db}")) as s:
        resources = [d.resource() for d in s.scalars(sa.select(app.Document))]
    req = parse_check_request({"principal": principal, "context": {"ip": ip},
                               "resources": [{**r, "actions": ["read"]} for r in resources]})  # fmt: skip
    return sorted(r.id for r in g.access_engine(ENGINE).check(req).results
                  if r.actions["read"].allowed)  # fmt: skip


@pytest.mark.parametrize("who", ["alice", "bob", "carol", "dana", "eve"])
def test_list_is_what_check_allows(tmp_path: Path, who: str) -> None:
    db = tmp_path / "docs.db"
    _run(db, "seed")
    listed = [d["id"] for d in json.loads(_run(db, "list", "--as", who))]
    assert listed == _allowed(db, app.PRINCIPALS[who], "10.20.30.40")
    if who == "carol":  # her own, the one shared with her, her KB's public one
        assert listed == ["d-100", "d-300", "d-500"]


def test_list_over_http(tmp_path: Path) -> None:
    db = tmp_path / "docs.db"
    _run(db, "seed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--policies", str(g.POLICIES), "--db", str(db), "serve",
         "--port", str(port)],
    )  # fmt: skip
    try:
        principal = {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"],
                     "attr": {"kbs": ["kb-eng"]}}  # fmt: skip
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/documents", headers={"X-Principal": json.dumps(principal)}
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    body = json.load(resp)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        # From 127.0.0.1, not the corporate network: alice's secret document is fenced off.
        got = [d["id"] for d in body["documents"]]
        assert got == _allowed(db, principal, "127.0.0.1")
        assert "d-102" not in got and "d-100" in got
    finally:
        proc.terminate()
        proc.wait(timeout=30)
