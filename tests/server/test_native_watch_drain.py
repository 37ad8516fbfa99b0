"""Health Watch on the native transport through the drain and the stop, against grpcio's: its
own file, as the extension serves one server per process and this one must stop."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from pdp.engine import Engine, EngineHolder
from pdp.server import ServerConfig, build_server

from .test_native_streams import NOT_SERVING, SERVING, _until, _watch

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native.server import NativeServer


def _watch_through_stop(server: Any) -> list[Any]:
    server.start()
    seen, thread, _ = _watch(server.port)
    _until(lambda: seen, "the first status")
    server.begin_stop(0)
    _until(lambda: len(seen) > 1, "NOT_SERVING at the drain")
    server.stop(0)
    thread.join(30)
    return seen


def test_health_watch_hears_the_drain_then_ends_at_stop_as_on_grpcio(engine: Engine) -> None:
    """SERVING, NOT_SERVING once the drain begins, then UNAVAILABLE when the server stops:
    what a grpcio server's watcher sees."""
    config = ServerConfig(listen=("127.0.0.1:0",))
    ours = _watch_through_stop(NativeServer(EngineHolder(engine), config))
    theirs = _watch_through_stop(build_server(EngineHolder(engine), config))
    assert (
        ours
        == theirs
        == [SERVING, NOT_SERVING, (grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")]
    )
