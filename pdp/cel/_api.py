"""The public face of the compiler: `CelEnv`, `compile_cel`, `CompiledCel`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Protocol

from pdp.bulk import bulk
from pdp.cel import _ast
from pdp.cel._compile import Generated, generate
from pdp.cel._network import GeoTable
from pdp.errors import CelCompileError

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class CelEnv:
    """What a compiled expression may reference besides the activation.

    `constants` (`C.x`) and `data` (`data.x`) are inlined at compile time; `variables` maps a
    name to CEL source, compiled on first use and inlined wherever `V.name` appears.
    `names` declares extra activation variables (tools and conformance tests use it).
    """

    def __init__(
        self,
        *,
        constants: Mapping[str, Any] = _EMPTY,
        variables: Mapping[str, str] = _EMPTY,
        data: Mapping[str, Any] = _EMPTY,
        names: Iterable[str] = (),
    ) -> None:
        self.constants = constants
        self.variables = variables
        self.data = data
        self.names = frozenset(names)
        self._parsed: dict[str, _ast.Node] = {}
        self._geo: GeoTable | None = None
        self._lock = threading.Lock()

    def parsed_variable(self, name: str) -> _ast.Node:
        node = self._parsed.get(name)
        if node is None:
            node = _ast.parse(self.variables[name])
            self._parsed[name] = node
        return node

    def geo_table(self) -> GeoTable:
        with self._lock:
            if self._geo is None:
                try:
                    self._geo = GeoTable(self.data.get("geoip"))
                except (KeyError, ValueError, TypeError) as e:
                    raise CelCompileError(
                        f"invalid data.geoip table: {e}", "country(...)"
                    ) from None
            return self._geo


class CompiledCel(Protocol):
    """A compiled expression: the generated Python function itself (call it with the
    activation dict), carrying what the engine and tools read about it as attributes.

    A short expression's function compiles its Python on its first call
    (`pdp.cel._compile._lazy`).
    """

    source: str
    uses_time: bool
    python_source: str  # the generated function `_cel(act)`, as `pdp compile` shows it
    python_globals: Mapping[str, Any]  # its globals: runtime helpers, constants (`_k0`, ...)
    reads: frozenset[str]  # activation names it reads (`principal`, `action`, ...)

    def __call__(self, activation: Mapping[str, Any], /) -> Any: ...


def _make(source: str, g: Generated) -> CompiledCel:
    # The function itself, not an object wrapping it: a call costs no extra frame.
    fn: Any = g.fn
    fn.source = source
    fn.uses_time = g.uses_time
    fn.python_source = g.python_source
    fn.python_globals = g.globals
    fn.reads = g.reads
    return fn  # type: ignore[no-any-return]


def compile_cel(source: str, env: CelEnv, *, require_bool: bool = False) -> CompiledCel:
    """Compile `source` once; raise CelCompileError for anything not supported.

    With `require_bool`, a non-bool result at run time is a CelEvalError.
    """
    if not isinstance(source, str):
        raise CelCompileError("expression must be a string", str(source))
    memo = _batch.compiled
    key = (source, require_bool, env.names)
    if memo is not None:
        hit = memo.get(key)
        if hit is not None:
            return hit
    try:
        ast = _ast.parse(source)
        g = generate(env, source, ast, require_bool=require_bool, names=env.names, lazy=True)
    except CelCompileError as e:
        # `.variable` names the V.x whose source holds the error; None for the expression itself.
        if not hasattr(e, "variable"):
            e.variable = None  # type: ignore[attr-defined]
        raise
    compiled = _make(source, g)
    if memo is not None and not g.env_used:
        memo[key] = compiled
    return compiled


def compile_cel_bool(source: str, env: CelEnv) -> CompiledCel:
    """Compile a condition: a result other than bool is a CelEvalError at run time."""
    return compile_cel(source, env, require_bool=True)


class _Batch(threading.local):
    # The expressions compiled in this thread's current batch that read nothing from their
    # environment, by (source, require_bool, declared names); None outside a batch.
    compiled: dict[tuple[str, bool, frozenset[str]], CompiledCel] | None = None


_batch = _Batch()


@contextmanager
def batch() -> Iterator[None]:
    """Many `compile_cel` calls follow (a whole policy set): pause the cyclic GC meanwhile
    (`pdp.bulk`), and compile each environment-independent expression once.

    Compiling allocates millions of long-lived objects (ASTs, code, functions) and almost no
    cycles, so each collection rescans everything made so far for nothing: at 10,000
    policies full ones were ~2 s of ~18, and the passes after resuming ~0.3 s at once and
    ~1.5 s soon after.

    Policies repeat conditions (`R.attr.owner == P.id`); one that reads no constant,
    variable or data is the same function in every policy, so the batch keeps one compiled
    object per source (an immutable value, shared) until the outermost batch ends. Each
    source is parsed once (`_ast.shared_parses`): the policies importing a variable share
    its tree.
    """
    outer = _batch.compiled
    if outer is None:
        _batch.compiled = {}
    try:
        with bulk(), _ast.shared_parses():
            yield
    finally:
        _batch.compiled = outer
