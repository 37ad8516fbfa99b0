"""CEL → Python compiler: parse with celpy, generate a Python function per expression.

env = CelEnv(constants={...}, variables={"is_owner": "resource.attr.owner == principal.id"})
cond = compile_cel_bool("V.is_owner && 'kb:read' in principal.scopes", env)
cond({"principal": {...}, "resource": {...}, "action": "read", "context": {...}, "now": t})

`matches` is RE2 (linear time in the input); a constant pattern RE2 refuses is a compile
error, a dynamic one a run-time error.

Known differences from the CEL spec (everything else follows the conformance suite):
- timestamps and durations keep microseconds, not nanoseconds;
- a map literal whose keys a Python dict cannot tell apart (`1` and `1u`, `1` and `true`) is an
  evaluation error, so its condition fails closed; CEL makes a map of two entries of them;
- celpy's grammar does not parse backquoted field names (m.`a-b`) and lexes `1.f()` as `1.`;
- unknown identifiers and functions are compile errors, never runtime errors;
- protobuf messages, enums, wrappers, optionals and `string.format` are not supported.

Deadlines: when the activation holds a `Deadline` under `STOP_AT` (its `at`: monotonic
seconds, which its maker may lower while the evaluation runs), a comprehension or an RE2
compile or scan still working past it raises `Interrupted` (a BaseException: no CEL error
handling absorbs it) at its next charge to the evaluation's work budget (pdp/cel/_budget.py)
or, in a long comprehension range, before its next stride of iterations.
"""

from pdp.cel._api import CelEnv, CompiledCel, batch, compile_cel, compile_cel_bool
from pdp.cel._ast import shared_parses
from pdp.cel._budget import NEVER, STOP_AT, Deadline, Interrupted
from pdp.cel._checker import (
    NOT_CONST,
    TypeEnv,
    is_list_literal,
    may_be,
    may_be_list_of,
    names_used,
)
from pdp.cel._checker import Issue as CheckIssue
from pdp.cel._checker import check as check_cel
from pdp.cel._types import T as CelStaticType
from pdp.cel._types import from_schema as type_from_schema
from pdp.cel._types import untyped_attributes
from pdp.cel._values import CelType, CelUint
from pdp.errors import CelCompileError, CelEvalError

__all__ = [
    "NEVER",
    "NOT_CONST",
    "STOP_AT",
    "CelCompileError",
    "CelEnv",
    "CelEvalError",
    "CelStaticType",
    "CelType",
    "CelUint",
    "CheckIssue",
    "CompiledCel",
    "Deadline",
    "Interrupted",
    "TypeEnv",
    "batch",
    "check_cel",
    "compile_cel",
    "compile_cel_bool",
    "is_list_literal",
    "may_be",
    "may_be_list_of",
    "names_used",
    "shared_parses",
    "type_from_schema",
    "untyped_attributes",
]
