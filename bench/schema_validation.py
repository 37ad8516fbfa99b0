"""Per-request cost of validating attributes against a JSON Schema: jsonschema vs fastjsonschema.

Run: .venv/bin/python bench/schema_validation.py (on a quiet machine: timings, not assertions)
Both validators are built once (as the engine does at load); the loop measures one call per
valid attribute map, and one per invalid one (where the error is built).

How to read it: µs per validated map for each library, valid and invalid; the ratio is why
pdp depends on fastjsonschema (pyproject.toml, pdp/engine/schemas.py) — a reviewer's check of
that choice, which a new release of either library could change.
"""

from __future__ import annotations

import contextlib
import timeit

import fastjsonschema
import jsonschema

SCHEMA = {
    "type": "object",
    "properties": {
        "owner": {"type": "string"},
        "archived": {"type": "boolean"},
        "classification": {"enum": ["public", "internal", "confidential", "secret"]},
        "shared_with": {"type": "array", "items": {"type": "string"}},
        "size": {"type": "number", "minimum": 0},
    },
    "required": ["owner"],
    "additionalProperties": False,
}
GOOD = {"owner": "alice", "archived": False, "classification": "internal", "shared_with": ["b"]}
BAD = {"owner": "alice", "archived": "true"}


def main() -> None:
    js = jsonschema.Draft202012Validator(SCHEMA)
    fast = fastjsonschema.compile(SCHEMA)

    def js_bad() -> None:
        next(js.iter_errors(BAD), None)

    def fast_bad() -> None:
        with contextlib.suppress(fastjsonschema.JsonSchemaValueException):
            fast(BAD)

    n = 20000
    for name, fn in (
        ("jsonschema valid", lambda: js.is_valid(GOOD)),
        ("fastjsonschema valid", lambda: fast(GOOD)),
        ("jsonschema invalid", js_bad),
        ("fastjsonschema invalid", fast_bad),
    ):
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"{name:24s} {best * 1e6:8.2f} µs/call")


def engine_cost() -> None:
    """One decision on the example policies, with and without the kind's schemas."""
    from dataclasses import replace
    from pathlib import Path

    from pdp.engine import Engine, compile_policy_set
    from pdp.model.loader import load_policy_dir
    from pdp.model.request import parse_check_request

    source = load_policy_dir(Path(__file__).resolve().parents[1] / "policies")
    bare = replace(
        source,
        resource_policies=tuple(replace(p, schemas=None) for p in source.resource_policies),
    )
    request = parse_check_request(
        {
            "principal": {"id": "alice", "tenant": "acme", "roles": ["user"],
                          "scopes": ["conversations:read", "conversations:write"], "attr": {}},
            "resources": [{"kind": "conversation", "id": "c1", "tenant": "acme",
                           "attr": {"owner": "alice", "archived": False},
                           "actions": ["read", "append"]}],
            "context": {"ip": "81.2.69.160", "attr": {"mfa": True}},
        }
    )  # fmt: skip
    engines = {name: Engine(compile_policy_set(src)) for name, src in (("without schemas", bare), ("with schemas", source))}  # fmt: skip
    schemas = engines["with schemas"].policy_set.kinds["conversation"].schemas
    res = request.resources[0].resource
    fns = {
        **{name: (lambda e=e: e.check(request)) for name, e in engines.items()},
        "the schema check alone": lambda: schemas.violation(
            request.principal, res, request.context, lambda: 0
        ),
    }
    # Alternating rounds, so that drift in machine load hits every variant alike.
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(15):
        for name, fn in fns.items():
            best[name] = min(best[name], timeit.timeit(fn, number=3000) / 3000)
    for name, t in best.items():
        print(f"engine.check, 1 resource x 2 actions, {name:24s} {t * 1e6:8.2f} µs")


if __name__ == "__main__":
    main()
    engine_cost()
