"""In-process engines answering the workload's questions (bench/peers/workload.py).

Each adapter turns a workload request into the engine's native input once (`prepare`, not
timed: a caller would hold its data in that form), and `run` asks the engine — the call that
is timed. `effects` reads the answer back as [{action: allowed}] per resource, for the
agreement check. Peers import lazily: pdp and the floor need nothing beyond `make test`'s
install; cedarpy, regopy and casbin come with the `bench` extra.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .workload import Effects, Request, floor_request

PEERS = Path(__file__).resolve().parent


@dataclass
class Adapter:
    name: str
    prepare: Callable[[Request], Any]
    run: Callable[[Any], Any]
    effects: Callable[[Any, Any], Effects]  # (native input, run's output) -> effects
    note: str = ""


def floor_adapter() -> Adapter:
    return Adapter(
        "hand-written Python (floor)", lambda raw: raw, floor_request, lambda _n, out: out
    )


def _pdp_engine() -> Any:
    from pdp.engine import Engine, compile_policy_set
    from pdp.model.loader import load_policy_dir

    return Engine(compile_policy_set(load_policy_dir(PEERS / "pdp")))


def _pdp_effects(_native: Any, response: Any) -> Effects:
    return [{a: d.allowed for a, d in r.actions.items()} for r in response.results]


def pdp_adapter() -> Adapter:
    from pdp.model.request import parse_check_request

    engine = _pdp_engine()
    return Adapter("pdp (Engine.check)", parse_check_request, engine.check, _pdp_effects)


def pdp_parse_adapter() -> Adapter:
    """pdp from the JSON-shaped dict, request validation included (what a server pays)."""
    from pdp.model.request import parse_check_request

    engine = _pdp_engine()
    return Adapter(
        "pdp (parse + check)",
        lambda raw: raw,
        lambda raw: engine.check(parse_check_request(raw)),
        _pdp_effects,
    )


def cedar_adapter() -> Adapter:
    import cedarpy

    policies = cedarpy.PolicySet.from_str((PEERS / "cedar/policies.cedar").read_text())

    def prepare(raw: Request) -> tuple[list[dict], list[dict], list[list[str]]]:
        p = raw["principal"]
        user = {"type": "User", "id": p["id"]}
        entities: list[dict] = [
            {
                "uid": user,
                "attrs": {"tenant": p["tenant"], "scopes": p["scopes"]},
                "parents": [{"type": "Role", "id": role} for role in p["roles"]],
            }
        ]
        ctx = {"ip": {"__extn": {"fn": "ip", "arg": raw["context"]["ip"]}}}
        requests, shape = [], []
        for r in raw["resources"]:
            doc = {"type": "Document", "id": r["id"]}
            entities.append(
                {
                    "uid": doc,
                    "attrs": {
                        "tenant": r["tenant"],
                        "owner": {"__entity": {"type": "User", "id": r["attr"]["owner"]}},
                        "classification": r["attr"]["classification"],
                    },
                    "parents": [],
                }
            )
            for a in r["actions"]:
                requests.append(
                    {
                        "principal": user,
                        "action": {"type": "Action", "id": a},
                        "resource": doc,
                        "context": ctx,
                    }
                )
            shape.append(list(r["actions"]))
        return requests, entities, shape

    def run(native: tuple[list[dict], list[dict], list[list[str]]]) -> list[Any]:
        return cedarpy.is_authorized_batch(native[0], policies, native[1])

    def effects(native: tuple[list[dict], list[dict], list[list[str]]], out: list[Any]) -> Effects:
        for result in out:
            if result.diagnostics.errors:
                raise RuntimeError(f"cedar errors: {result.diagnostics.errors}")
        it = iter(out)
        return [{a: next(it).allowed for a in actions} for actions in native[2]]

    return Adapter("cedarpy (is_authorized_batch)", prepare, run, effects)


def rego_adapter() -> Adapter:
    import regopy

    interp = regopy.Interpreter()
    interp.add_module("authz.rego", (PEERS / "rego/authz.rego").read_text())
    # Compiled once: a query string re-plans on every call (~7x slower here).
    bundle = interp.build("x = data.authz.decision", [])

    def prepare(raw: Request) -> list[Any]:
        p = raw["principal"]
        principal = {k: p[k] for k in ("id", "tenant", "roles", "scopes")}
        return [
            regopy.Input(
                {
                    "principal": principal,
                    "resource": {
                        "id": r["id"],
                        "tenant": r["tenant"],
                        "owner": r["attr"]["owner"],
                        "classification": r["attr"]["classification"],
                        "actions": r["actions"],
                    },
                    "context": raw["context"],
                }
            )
            for r in raw["resources"]
        ]

    def run(inputs: list[Any]) -> list[dict[str, bool]]:
        out = []
        for i in inputs:
            interp.set_input(i)
            # Reading the answer means decoding the output document: part of the call.
            out.append(json.loads(str(interp.query_bundle(bundle)))["bindings"]["x"])
        return out

    return Adapter(
        "regopy (Rego, compiled bundle)",
        prepare,
        run,
        lambda _n, out: out,
        note="CIDR by integer ranges: rego-cpp lacks net.cidr_contains",
    )


def casbin_adapter() -> Adapter:
    import casbin

    enforcer = casbin.Enforcer(str(PEERS / "casbin/model.conf"))
    rows = [
        line.rstrip("\n").split("\t")
        for line in (PEERS / "casbin/policy.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    enforcer.add_policies(rows)
    enforce = enforcer.enforce

    def prepare(raw: Request) -> list[tuple[Any, Any, Any, list[str]]]:
        p = raw["principal"]
        sub = SimpleNamespace(id=p["id"], tenant=p["tenant"], roles=p["roles"], scopes=p["scopes"])
        ctx = SimpleNamespace(ip=raw["context"]["ip"])
        return [
            (
                sub,
                SimpleNamespace(
                    id=r["id"],
                    tenant=r["tenant"],
                    owner=r["attr"]["owner"],
                    classification=r["attr"]["classification"],
                ),
                ctx,
                r["actions"],
            )
            for r in raw["resources"]
        ]

    def run(native: list[tuple[Any, Any, Any, list[str]]]) -> Effects:
        return [
            {a: enforce(sub, obj, a, ctx) for a in actions} for sub, obj, ctx, actions in native
        ]

    return Adapter("casbin (ABAC, eval rules)", prepare, run, lambda _n, out: out)


ALL: dict[str, Callable[[], Adapter]] = {
    "floor": floor_adapter,
    "pdp": pdp_adapter,
    "pdp-parse": pdp_parse_adapter,
    "cedar": cedar_adapter,
    "rego": rego_adapter,
    "casbin": casbin_adapter,
}
