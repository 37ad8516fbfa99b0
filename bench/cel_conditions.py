"""µs per evaluation of typical policy conditions: pdp.cel vs a hand-written lambda vs cel-expr-python.

.venv/bin/python bench/cel_conditions.py

How to read it: `pdp µs` is one evaluation of the condition as pdp compiled it (CEL to a Python
closure), `lambda µs` the same condition written by hand in Python, and `ratio` pdp over the
lambda (the price of writing CEL instead of code; near 1 is the goal). `cel-expr µs` is
Google's cel-expr-python on the same inputs, including converting them each call, and
`speedup` how many times faster pdp is. Timings, not assertions: compare ratios on one machine.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pdp.cel import CelEnv, compile_cel_bool

ACT: dict[str, Any] = {
    "principal": {
        "id": "alice",
        "tenant": "acme",
        "roles": ["user", "editor"],
        "scopes": ["kb:read", "kb:write", "model:invoke"],
        "attr": {"dept": "eng", "clearance": 3.0},
        "actor": {"id": "agent-7", "type": "ai_agent", "scopes": ["kb:read"], "attr": {}},
    },
    "resource": {
        "kind": "document",
        "id": "d1",
        "tenant": "acme",
        "attr": {"owner": "alice", "level": 3.0, "classification": "internal", "tags": ["a", "b"]},
    },
    "action": "read",
    "context": {"ip": "10.1.2.3", "country": "FR", "attr": {"mfa": True}},
    "now": datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
}
CONSTANTS = {"corp": ["10.0.0.0/8", "192.168.0.0/16"], "blocked": ["KP", "IR", "SY"]}

CASES: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    (
        "owner+scope",
        'resource.attr.owner == principal.id && "kb:read" in principal.scopes',
        lambda a: (
            a["resource"]["attr"]["owner"] == a["principal"]["id"]
            and "kb:read" in a["principal"]["scopes"]
        ),
    ),
    (
        "numeric level",
        "principal.attr.clearance >= resource.attr.level",
        lambda a: a["principal"]["attr"]["clearance"] >= a["resource"]["attr"]["level"],
    ),
    (
        "role exists",
        "principal.roles.exists(r, r == 'editor' || r == 'admin')",
        lambda a: any(r in ("editor", "admin") for r in a["principal"]["roles"]),
    ),
    (
        "geo fence",
        "context.country in ['KP', 'IR', 'SY']",
        lambda a: a["context"]["country"] in ("KP", "IR", "SY"),
    ),
    (
        "agent limit",
        "actor != null && actor.type == 'ai_agent' && !('kb:write' in actor.scopes)",
        lambda a: (
            a["principal"]["actor"] is not None
            and a["principal"]["actor"]["type"] == "ai_agent"
            and "kb:write" not in a["principal"]["actor"]["scopes"]
        ),
    ),
    (
        "mfa + classification",
        "has(context.attr.mfa) && context.attr.mfa == true && "
        "resource.attr.classification != 'secret'",
        lambda a: (
            "mfa" in a["context"]["attr"]
            and a["context"]["attr"]["mfa"] is True
            and a["resource"]["attr"]["classification"] != "secret"
        ),
    ),
    (
        "inCIDRs (pdp ext)",
        "inCIDRs(context.ip, C.corp)",
        None,  # type: ignore[list-item]
    ),
]


def per_call_us(fn: Callable[[], Any]) -> float:
    n = 20_000
    best = min(timeit.repeat(fn, number=n, repeat=5))
    return best / n * 1e6


def main() -> None:
    import ipaddress

    nets = [ipaddress.ip_network(c) for c in CONSTANTS["corp"]]
    try:
        import cel_expr_python.cel as ref  # type: ignore[import-not-found]

        ref_env = ref.NewEnv(
            variables={n: ref.Type.DYN for n in ("principal", "resource", "action", "context")}
        )
    except ImportError:
        ref = None
    env = CelEnv(constants=CONSTANTS)
    print(
        f"{'condition':24} {'pdp µs':>8} {'lambda µs':>10} {'ratio':>6} {'cel-expr µs':>12} {'speedup':>8}"
    )
    for name, src, hand in CASES:
        compiled = compile_cel_bool(src, env)
        assert compiled(ACT) in (True, False)
        if hand is None:

            def hand(a: dict[str, Any]) -> bool:
                ip = ipaddress.ip_address(a["context"]["ip"])
                return any(ip in n for n in nets)

        assert compiled(ACT) == bool(hand(ACT)), name
        t_pdp = per_call_us(lambda c=compiled: c(ACT))
        t_hand = per_call_us(lambda h=hand: h(ACT))
        ref_txt = "-"
        speed = "-"
        if ref is not None and "C." not in src and "actor" not in src:
            expr = ref_env.compile(src, disable_check=True)
            data = {k: ACT[k] for k in ("principal", "resource", "action", "context")}
            t_ref = per_call_us(lambda e=expr, d=data: e.eval(data=d))
            ref_txt = f"{t_ref:12.2f}"
            speed = f"{t_ref / t_pdp:7.1f}x"
        print(
            f"{name:24} {t_pdp:8.2f} {t_hand:10.2f} {t_pdp / t_hand:5.1f}x {ref_txt:>12} {speed:>8}"
        )


if __name__ == "__main__":
    main()
