"""CEL → Python compiler: parse with celpy, generate a Python function per expression.

env = CelEnv(constants={...}, variables={"is_owner": "resource.attr.owner == principal.id"})
cond = compile_cel_bool("V.is_owner && 'kb:read' in principal.scopes", env)
cond({"principal": {...}, "resource": {...}, "action": "read", "context": {...}, "now": t})

`matches` is RE2 (linear time in the input); a constant pattern RE2 refuses is a compile
error, a dynamic one a run-time error.

Known differences from the CEL spec (everything else follows the conformance suite):
- timestamps and durations keep microseconds, not nanoseconds;
- a map literal with both `true` and `1` as keys collapses them (Python dict keys);
- celpy's grammar does not parse backquoted field names (m.`a-b`) and lexes `1.f()` as `1.`;
- unknown identifiers and functions are compile errors, never runtime errors;
- protobuf messages, enums, wrappers, optionals and `string.format` are not supported.
"""

from pdp.cel._api import CelEnv, CompiledCel, batch, compile_cel, compile_cel_bool
from pdp.cel._values import CelType, CelUint
from pdp.errors import CelCompileError, CelEvalError

__all__ = [
    "CelCompileError",
    "CelEnv",
    "CelEvalError",
    "CelType",
    "CelUint",
    "CompiledCel",
    "batch",
    "compile_cel",
    "compile_cel_bool",
]
