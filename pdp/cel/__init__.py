"""CEL → Python compiler: parse with celpy, generate a Python function per expression.

env = CelEnv(constants={...}, variables={"is_owner": "resource.attr.owner == principal.id"})
cond = compile_cel_bool("V.is_owner && 'kb:read' in principal.scopes", env)
cond({"principal": {...}, "resource": {...}, "action": "read", "context": {...}, "now": t})
"""

from pdp.cel._api import CelEnv, CompiledCel, compile_cel, compile_cel_bool
from pdp.cel._values import CelType, CelUint
from pdp.errors import CelCompileError, CelEvalError

__all__ = [
    "CelCompileError",
    "CelEnv",
    "CelEvalError",
    "CelType",
    "CelUint",
    "CompiledCel",
    "compile_cel",
    "compile_cel_bool",
]
