"""Sync and asyncio clients of pdp.v1.DecisionService.

Both take plain dicts (the JSON shape of `pdp check`), answer with the model's `CheckResponse`,
apply a default deadline to every call, and retry UNAVAILABLE (no policies yet, a server
restarting) with bounded exponential backoff inside that deadline. Every other failure is
raised as `grpc.RpcError`: a caller that gets no decision must deny. A malformed request is
refused before it is sent, with the `RequestError` (naming the field) that `pdp check` and
the in-process API raise for the same dicts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from pdp.model.decision import CheckResponse
from pdp.server._gen.pdp.v1 import decision_pb2 as _pb
from pdp.server.convert import response_from_proto

from ._convert import request_to_proto

_CHECK = "/pdp.v1.DecisionService/Check"
_SERVER_INFO = "/pdp.v1.DecisionService/ServerInfo"

DEFAULT_TIMEOUT_S = 1.0  # a decision on the request path must be fast or fail (closed)
DEFAULT_ATTEMPTS = 4


@dataclass(frozen=True)
class Retry:
    """Bounded retries of UNAVAILABLE with exponential backoff and full jitter."""

    attempts: int = DEFAULT_ATTEMPTS  # total tries, the first included
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt)
        return random.uniform(0, ceiling)


def _read(path: str | Path | bytes | None) -> bytes | None:
    if path is None or isinstance(path, bytes):
        return path
    return Path(path).read_bytes()


def _credentials(
    tls: bool,
    ca: str | Path | bytes | None,
    cert: str | Path | bytes | None,
    key: str | Path | bytes | None,
) -> grpc.ChannelCredentials | None:
    if not (tls or ca or cert):
        return None
    if bool(cert) != bool(key):
        raise ValueError("client certificate and key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )


def _options(server_name: str | None) -> list[tuple[str, Any]]:
    # Our own retry loop decides; grpc's transparent retries would multiply attempts.
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def _check_request(
    principal: Mapping[str, Any],
    resources: Iterable[Mapping[str, Any]],
    context: Mapping[str, Any] | None,
    request_id: str,
    explain: bool,
) -> bytes:
    msg = request_to_proto(principal, resources, context, request_id=request_id, explain=explain)
    return msg.SerializeToString()


def _allowed(response: CheckResponse, action: str) -> bool:
    decision = response.results[0].actions.get(action) if response.results else None
    return decision is not None and decision.allowed


class Client:
    """A blocking client; thread-safe, one channel per client. Use as a context manager.

    `target` is `host:port` or `unix:/path`. `tls=True` uses the system roots; `ca` a given
    root; `cert`/`key` (PEM paths or bytes) add a client certificate for mTLS.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: Retry = Retry(),
        tls: bool = False,
        ca: str | Path | bytes | None = None,
        cert: str | Path | bytes | None = None,
        key: str | Path | bytes | None = None,
        server_name: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        creds = _credentials(tls, ca, cert, key)
        options = _options(server_name)
        self._channel = (
            grpc.secure_channel(target, creds, options)
            if creds
            else grpc.insecure_channel(target, options)
        )
        self._check = self._channel.unary_unary(_CHECK)
        self._info = self._channel.unary_unary(
            _SERVER_INFO,
            request_serializer=_pb.ServerInfoRequest.SerializeToString,
            response_deserializer=_pb.ServerInfoResponse.FromString,
        )
        self.timeout = timeout
        self.retry = retry
        self.metadata = tuple(metadata)

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            try:
                return method(
                    request, timeout=max(deadline - time.monotonic(), 0), metadata=self.metadata
                )
            except grpc.RpcError as exc:
                attempt += 1
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.retry.attempts:
                    raise
                pause = self.retry.backoff(attempt - 1)
                if time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)

    def check(
        self,
        principal: Mapping[str, Any],
        resources: Iterable[Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
        explain: bool = False,
        timeout: float | None = None,
    ) -> CheckResponse:
        """Decide every action of every resource; raises `RequestError` for a malformed
        request (nothing sent) and `grpc.RpcError` when no decision came back."""
        data = _check_request(principal, resources, context, request_id, explain)
        return response_from_proto(
            _pb.CheckResponse.FromString(self._call(self._check, data, timeout))
        )

    def is_allowed(
        self,
        principal: Mapping[str, Any],
        resource: Mapping[str, Any],
        action: str,
        context: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> bool:
        """True only on an explicit allow; raises `grpc.RpcError` when no decision came back."""
        resp = self.check(principal, [{**resource, "actions": [action]}], context, timeout=timeout)
        return _allowed(resp, action)

    def server_info(self, *, timeout: float | None = None) -> _pb.ServerInfoResponse:
        return self._call(self._info, _pb.ServerInfoRequest(), timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`: same arguments, awaitable methods, `async with`."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: Retry = Retry(),
        tls: bool = False,
        ca: str | Path | bytes | None = None,
        cert: str | Path | bytes | None = None,
        key: str | Path | bytes | None = None,
        server_name: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        creds = _credentials(tls, ca, cert, key)
        options = _options(server_name)
        self._channel = (
            grpc.aio.secure_channel(target, creds, options)
            if creds
            else grpc.aio.insecure_channel(target, options)
        )
        self._check = self._channel.unary_unary(_CHECK)
        self._info = self._channel.unary_unary(
            _SERVER_INFO,
            request_serializer=_pb.ServerInfoRequest.SerializeToString,
            response_deserializer=_pb.ServerInfoResponse.FromString,
        )
        self.timeout = timeout
        self.retry = retry
        self.metadata = tuple(metadata)

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            try:
                return await method(
                    request, timeout=max(deadline - loop.time(), 0), metadata=self.metadata
                )
            except grpc.aio.AioRpcError as exc:
                attempt += 1
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.retry.attempts:
                    raise
                pause = self.retry.backoff(attempt - 1)
                if loop.time() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)

    async def check(
        self,
        principal: Mapping[str, Any],
        resources: Iterable[Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
        explain: bool = False,
        timeout: float | None = None,
    ) -> CheckResponse:
        data = _check_request(principal, resources, context, request_id, explain)
        reply = await self._call(self._check, data, timeout)
        return response_from_proto(_pb.CheckResponse.FromString(reply))

    async def is_allowed(
        self,
        principal: Mapping[str, Any],
        resource: Mapping[str, Any],
        action: str,
        context: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> bool:
        resp = await self.check(
            principal, [{**resource, "actions": [action]}], context, timeout=timeout
        )
        return _allowed(resp, action)

    async def server_info(self, *, timeout: float | None = None) -> _pb.ServerInfoResponse:
        return await self._call(self._info, _pb.ServerInfoRequest(), timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
