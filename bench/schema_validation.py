"""Per-request cost of validating attributes against a JSON Schema: jsonschema vs fastjsonschema.

Run: .venv/bin/python bench/schema_validation.py
Both validators are built once (as the engine does at load); the loop measures one call per
valid attribute map, and one per invalid one (where the error is built).
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


if __name__ == "__main__":
    main()
