"""Client library for the pdp decision service: `Client` (blocking) and `AsyncClient`.

    from pdp.client import Client

    with Client("127.0.0.1:50051") as pdp:
        if pdp.is_allowed(principal, {"kind": "document", "id": "d1", "tenant": "acme"}, "read"):
            ...

See docs/CLIENT.md.
"""

from pdp.model.decision import ActionDecision, BundleInfo, CheckResponse, ResourceDecision

from ._client import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S, AsyncClient, Client, Retry

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_TIMEOUT_S",
    "ActionDecision",
    "AsyncClient",
    "BundleInfo",
    "CheckResponse",
    "Client",
    "ResourceDecision",
    "Retry",
]
