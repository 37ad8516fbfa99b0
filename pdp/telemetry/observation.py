"""What telemetry reads from one observed call.

The server defines the concrete observation (`pdp.server.hooks.CheckObservation`) and calls
the observer after every Check; the Envoy ext_authz servicer calls the same observer. This
module states, structurally, the part of it telemetry depends on, so `pdp.telemetry` never
imports the server (the observer is injected into it, never the other way round).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pdp.model.decision import CheckResponse
from pdp.model.request import CheckRequest


class Observation(Protocol):
    """One finished call: the request, the answer (None on error) and how it went."""

    @property
    def request(self) -> CheckRequest | None: ...  # None when the request did not convert

    @property
    def response(self) -> CheckResponse | None: ...  # None when the call failed

    @property
    def error_code(self) -> str: ...  # gRPC status code name, "" on success

    @property
    def error_message(self) -> str: ...

    @property
    def peer(self) -> str: ...  # gRPC peer address, e.g. `ipv4:127.0.0.1:5555`

    @property
    def peer_identity(self) -> str: ...  # mTLS identity (SAN / CN), "" without mTLS

    @property
    def metadata(self) -> Sequence[tuple[str, str | bytes]]: ...  # incoming gRPC metadata

    @property
    def start_time(self) -> float: ...  # unix seconds when the call started

    @property
    def latency_s(self) -> float: ...

    @property
    def rpc(self) -> str: ...  # e.g. `/pdp.v1.DecisionService/Check`


class Observer(Protocol):
    """What the server calls: after every Check, and once at shutdown."""

    def on_check(self, record: Observation) -> None: ...

    def close(self) -> None: ...
