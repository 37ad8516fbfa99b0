"""The client library against a real server: sync and async, retries, deadlines."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import pdp
from pdp.client import AsyncClient, Client, Retry
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.errors import RequestError
from pdp.model.loader import load_policy_dir
from pdp.server import CheckObservation, PdpServer, ServerConfig, build_server

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {}
    edit: {scopes: ["notes:write"]}
  rules:
    - id: owner
      actions: ["*"]
      effect: allow
      condition: resource.attr.owner == principal.id
      obligations: {watermark: true}
"""

BOB = {"id": "bob", "tenant": "t1", "roles": ["user"], "scopes": ["notes:write"]}
NOTE = {"kind": "note", "id": "n1", "tenant": "t1", "attr": {"owner": "bob"}}


class Counter:
    def __init__(self) -> None:
        self.codes: list[str] = []

    def on_check(self, record: CheckObservation) -> None:
        self.codes.append(record.error_code)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("notes")
    (root / "note.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    return Engine(compile_policy_set(load_policy_dir(Path(root))))


@pytest.fixture
def holder() -> EngineHolder:
    return EngineHolder()


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def server(holder: EngineHolder, counter: Counter) -> Iterator[PdpServer]:
    s = build_server(holder, ServerConfig(listen=("127.0.0.1:0",)), observer=counter)
    s.start()
    yield s
    s.stop(0)


def test_sync_client(server: PdpServer, holder: EngineHolder, engine: Engine) -> None:
    holder.swap(engine)
    with Client(f"127.0.0.1:{server.port}") as c:
        resp = c.check(
            BOB, [{**NOTE, "actions": ["read", "edit"]}], {"time": "2026-01-01T00:00:00Z"}
        )
        assert resp.results[0].actions["edit"].obligations == {"watermark": True}
        assert resp.evaluated_at.startswith("2026-01-01")
        assert c.is_allowed(BOB, NOTE, "edit")
        assert not c.is_allowed({**BOB, "scopes": []}, NOTE, "edit")
        assert not c.is_allowed(BOB, NOTE, "no-such-action")


def test_async_client(server: PdpServer, holder: EngineHolder, engine: Engine) -> None:
    holder.swap(engine)

    async def main() -> tuple[bool, bool, str]:
        async with AsyncClient(f"127.0.0.1:{server.port}") as c:
            resp = await c.check(BOB, [{**NOTE, "actions": ["read"]}], request_id="a-1")
            info = await c.server_info()
            return (
                await c.is_allowed(BOB, NOTE, "read"),
                await c.is_allowed({**BOB, "id": "eve"}, NOTE, "read"),
                resp.request_id + info.pdp_version,
            )

    allowed, other, text = asyncio.run(main())
    assert (allowed, other) == (True, False)
    assert text.startswith("a-1") and text[len("a-1") :] == pdp.__version__


def test_retries_unavailable_until_policies_arrive(
    server: PdpServer, holder: EngineHolder, engine: Engine, counter: Counter
) -> None:
    threading.Timer(0.3, holder.swap, (engine,)).start()
    # Generous caps: the outcome is the allow after UNAVAILABLEs, not how fast it came.
    retry = Retry(attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.1)
    with Client(f"127.0.0.1:{server.port}", timeout=30, retry=retry) as c:
        assert c.is_allowed(BOB, NOTE, "read") is True
    assert counter.codes[0] == "UNAVAILABLE" and counter.codes[-1] == ""


def test_retries_are_bounded(server: PdpServer, counter: Counter) -> None:
    retry = Retry(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.01)
    with (
        Client(f"127.0.0.1:{server.port}", timeout=5, retry=retry) as c,
        pytest.raises(grpc.RpcError) as info,
    ):
        c.check(BOB, [{**NOTE, "actions": ["read"]}])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert counter.codes == ["UNAVAILABLE"] * 3


def test_async_retries_bounded_by_deadline(server: PdpServer, counter: Counter) -> None:
    async def main() -> grpc.StatusCode:
        retry = Retry(attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.05)
        async with AsyncClient(f"127.0.0.1:{server.port}", timeout=0.3, retry=retry) as c:
            try:
                await c.check(BOB, [{**NOTE, "actions": ["read"]}])
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        raise AssertionError("no error")

    # The deadline, not the 1000 attempts, ends the retries. Which code the caller sees depends
    # on where the deadline falls: between attempts (the last UNAVAILABLE is raised) or inside
    # one (DEADLINE_EXCEEDED, which a loaded machine makes likely). Both mean no decision.
    assert asyncio.run(main()) in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert 1 <= len(counter.codes) < 1000
    # The server never decided: every attempt but the last met no policies; the last may also
    # have arrived with its deadline already spent, which the server answers before deciding.
    assert set(counter.codes[:-1]) <= {"UNAVAILABLE"}
    assert counter.codes[-1] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_async_retries_until_policies_arrive(
    server: PdpServer, holder: EngineHolder, engine: Engine, counter: Counter
) -> None:
    """More than one attempt within one deadline: the async client does retry."""
    threading.Timer(0.3, holder.swap, (engine,)).start()

    async def main() -> bool:
        retry = Retry(attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.1)
        async with AsyncClient(f"127.0.0.1:{server.port}", timeout=30, retry=retry) as c:
            return await c.is_allowed(BOB, NOTE, "read")

    assert asyncio.run(main()) is True
    assert counter.codes[0] == "UNAVAILABLE" and counter.codes[-1] == ""
    assert set(counter.codes[:-1]) == {"UNAVAILABLE"}


def test_invalid_argument_is_not_retried(
    server: PdpServer, holder: EngineHolder, engine: Engine, counter: Counter
) -> None:
    holder.swap(engine)
    with Client(f"127.0.0.1:{server.port}") as c:
        # Malformed: refused before it is sent, with the error `pdp check` gives.
        with pytest.raises(RequestError) as bad:
            c.check(BOB, [{**NOTE, "actions": [""]}])
        assert bad.value.field == "resources[0].actions[0]"
        assert counter.codes == []
        # Over the server's limit on attribute strings: only the server knows its limits, so
        # the client sends it, the server refuses it, and the refusal is not retried.
        too_long = {**NOTE, "attr": {**NOTE["attr"], "note": "x" * 70_000}, "actions": ["read"]}
        with pytest.raises(grpc.RpcError) as info:
            c.check(BOB, [too_long])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "resources[0].attr.note" in (info.value.details() or "")
    assert counter.codes == ["RESOURCE_EXHAUSTED"]
