"""CEL AST → Python source → one Python function per expression.

The generated function takes the activation dict and returns the CEL value. Subexpressions
that can short-circuit (`&&`, `||`, `?:`, macros) become statements; everything else is a
Python expression, with inline fast paths for the common JSON cases (string equality,
membership of a string in a list, field access on dicts) and calls into `_values` otherwise.
CEL errors are Python exceptions; `&&`/`||`/macros catch them and treat them as error values.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from pdp.cel import _ast as A
from pdp.cel import _values as v
from pdp.cel._library import GLOBALS, MEMBERS, Fn
from pdp.cel._macros import MACROS as _MACROS
from pdp.cel._macros import iter_pairs, iter_range, macro_error
from pdp.cel._network import CidrSet
from pdp.errors import CelCompileError, CelEvalError

if TYPE_CHECKING:
    from pdp.cel._api import CelEnv

ACTIVATION = ("principal", "resource", "action", "context", "now")
_ALIASES = {"P": "principal", "R": "resource"}
_MAX_BLOCK_DEPTH = 8  # Python allows 20 nested try/for blocks per function; split well before


class Code(NamedTuple):
    expr: str
    kind: str | None = None  # static CEL type when known ("string", "bool", ...)
    const: bool = False  # a compile-time constant whose value is `value`
    value: Any = None


_NO_VALUE = object()


def _kind_of_value(x: Any) -> str | None:
    t = v._TYPE_OF.get(x.__class__)
    if t is None:
        return None
    return {
        "int": "int",
        "uint": "uint",
        "double": "double",
        "bool": "bool",
        "string": "string",
        "bytes": "bytes",
        "null_type": "null",
        "list": "list",
        "map": "map",
    }.get(t.name)


_RUNTIME: dict[str, Any] = {
    "_eq": v.eq,
    "_ne": v.ne,
    "_lt": v.lt,
    "_le": v.le,
    "_gt": v.gt,
    "_ge": v.ge,
    "_in": v.in_,
    "_index": v.index,
    "_has": v.has,
    "_not": v.not_,
    "_neg": v.neg,
    "_add": v.add,
    "_sub": v.sub,
    "_mul": v.mul,
    "_div": v.div,
    "_mod": v.mod,
    "_size": v.size,
    "_logic_error": v.logic_error,
    "_cond_error": v.cond_error,
    "_want_bool": v.want_bool,
    "_fail": v.fail,
    "_now": v.now_of,
    "_NUM": v.NUMERIC,
    "_LD": frozenset({list, dict, tuple}),
    "_iter": None,  # set below
    "_macro_error": None,
    "_CelEvalError": CelEvalError,
    "_wrap": None,
    "_dup_key": None,
}


def wrap_error(e: BaseException) -> CelEvalError:
    if isinstance(e, CelEvalError):
        return e
    if isinstance(e, KeyError):
        return CelEvalError(f"no such key: `{e.args[0] if e.args else ''}`")
    if isinstance(e, ZeroDivisionError):
        return CelEvalError("division by zero")
    if isinstance(e, OverflowError):
        return CelEvalError(f"overflow: {e}")
    if isinstance(e, RecursionError):
        return CelEvalError("evaluation nests too deeply")
    if isinstance(e, TypeError | AttributeError | IndexError):
        return CelEvalError(f"no matching overload ({e})")
    return CelEvalError(f"{e.__class__.__name__}: {e}")


def _map_build(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k, x in pairs:
        ck = k.__class__
        if not (ck is str or ck is int or ck is v.CelUint or ck is bool):
            v.fail(f"unsupported key type `{v.type_name(k)}` in map literal")
        if v.map_lookup(out, k)[0] if out else False:
            v.fail(f"repeated key in map literal: `{k}`")
        out[k] = x
    return out


_RUNTIME["_iter"] = iter_range
_RUNTIME["_pairs"] = iter_pairs
_RUNTIME["_macro_error"] = macro_error
_RUNTIME["_wrap"] = wrap_error
_RUNTIME["_map"] = _map_build


class Compiler:
    def __init__(self, env: CelEnv, source: str, names: frozenset[str]) -> None:
        self.env = env
        self.source = source
        self.names = names  # extra activation names (conformance bindings)
        self.lines: list[str] = []
        self.indent = 1
        self.depth = 0
        self.globals: dict[str, Any] = dict(_RUNTIME)
        self._const_ids: dict[int, str] = {}
        self.counter = itertools.count()
        self.scope: dict[str, str] = {}
        self.loads: set[str] = set()
        self.uses_time = False
        self.var_stack: list[str] = []

    # --- plumbing ---------------------------------------------------------------------------

    def err(self, msg: str, node: A.Node) -> CelCompileError:
        return CelCompileError(msg, self.source, node.line, node.column)

    def tmp(self, base: str = "t") -> str:
        return f"_{base}{next(self.counter)}"

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    @contextmanager
    def block(self, counts: bool = True) -> Iterator[None]:
        self.indent += 1
        if counts:
            self.depth += 1
        try:
            yield
        finally:
            self.indent -= 1
            if counts:
                self.depth -= 1

    def const(self, value: Any) -> Code:
        kind = _kind_of_value(value)
        c = value.__class__
        if value is None or c is bool or c is int or c is str or c is bytes:
            return Code(repr(value), kind, True, value)
        if c is float and math.isfinite(value):
            return Code(repr(value), kind, True, value)
        key = id(value)
        name = self._const_ids.get(key)
        if name is None:
            name = self.tmp("k")
            self._const_ids[key] = name
            self.globals[name] = value
        return Code(name, kind, True, value)

    def glob(self, value: Any, base: str = "g") -> str:
        name = self.tmp(base)
        self.globals[name] = value
        return name

    def guarded(self, node: A.Node) -> str:
        """Evaluate `node` into a fresh local, holding the exception instead when it fails."""
        out = self.tmp()
        mark = len(self.lines)
        self.emit("try:")
        with self.block():
            code = self.isolated(node)
            self.emit(f"{out} = {code.expr}")
        if code.const or (len(self.lines) == mark + 2 and _is_simple_local(code.expr)):
            del self.lines[mark:]
            self.emit(f"{out} = {code.expr}")
            return out
        self.emit("except Exception as _e:")
        with self.block(counts=False):
            self.emit(f"{out} = _e")
        return out

    def isolated(self, node: A.Node) -> Code:
        """Compile a statement-heavy subexpression, in a nested function once nesting is deep."""
        if self.depth < _MAX_BLOCK_DEPTH:
            return self.c(node)
        return self.in_function(lambda: self.c(node))

    # --- nodes ------------------------------------------------------------------------------

    def c(self, node: A.Node) -> Code:
        if isinstance(node, A.Lit):
            return self.const(node.value)
        if isinstance(node, A.Ident):
            return self.ident(node)
        if isinstance(node, A.Select):
            return self.select(node)
        if isinstance(node, A.Call):
            return self.call(node)
        if isinstance(node, A.ListLit):
            items = [self.c(i) for i in node.items]
            if all(i.const for i in items):
                return self.const([i.value for i in items])
            return Code("[" + ", ".join(i.expr for i in items) + "]", "list")
        if isinstance(node, A.MapLit):
            pairs = [(self.c(k), self.c(x)) for k, x in node.entries]
            for (kc, _), (kn, _) in zip(pairs, node.entries):
                if kc.kind not in (None, "string", "int", "uint", "bool"):
                    raise self.err(f"unsupported map key type `{kc.kind}`", kn)
            body = ", ".join(f"({k.expr}, {x.expr})" for k, x in pairs)
            return Code(f"_map([{body}])", "map")
        if isinstance(node, A.Struct):
            raise self.err(f"message construction `{node.type_name}{{...}}` is not supported", node)
        raise self.err("unsupported expression", node)

    def ident(self, node: A.Ident) -> Code:
        name = node.name
        if name.startswith("."):
            name = name[1:]
        elif name in self.scope:
            return Code(self.scope[name])
        name = _ALIASES.get(name, name)
        if name == "now":
            self.uses_time = True
            self.loads.add("now")
            return Code("now", "timestamp")
        if name in ACTIVATION or name in self.names:
            self.loads.add(name)
            return Code(_local(name))
        if name == "actor":
            self.loads.add("principal")
            return Code(f"{_local('principal')}.get('actor')")
        if name in ("C", "constants"):
            return self.const(dict(self.env.constants))
        if name == "data":
            return self.const(dict(self.env.data))
        if name in ("V", "variables"):
            raise self.err(f"`{name}` must be followed by a variable name", node)
        t = v.TYPE_NAMES.get(name)
        if t is not None:
            return self.const(t)
        raise self.err(f"undeclared reference to `{name}`", node)

    def select(self, node: A.Select) -> Code:
        root = node.operand
        if isinstance(root, A.Ident) and root.name not in self.scope:
            base = root.name.lstrip(".")
            if base in ("V", "variables"):
                return self.variable(node.field, node)
            if base in ("C", "constants") or base == "data":
                src = self.env.constants if base != "data" else self.env.data
                if node.field not in src:
                    what = "constant" if base != "data" else "data entry"
                    raise self.err(f"undefined {what} `{base}.{node.field}`", node)
                return self.const(src[node.field])
            if base == "context" and node.field == "time" and "context" not in self.names:
                self.uses_time = True
        qn = _qualified(node)
        if qn is not None and qn in self.names and self._unscoped_root(node):
            self.loads.add(qn)
            return Code(_local(qn))
        if qn is not None and qn in v.TYPE_NAMES and not self._is_var_root(node):
            return self.const(v.TYPE_NAMES[qn])
        operand = self.c(root)
        if operand.const and isinstance(operand.value, dict) and node.field in operand.value:
            return self.const(operand.value[node.field])
        return Code(f"{operand.expr}[{node.field!r}]")

    def _unscoped_root(self, node: A.Node) -> bool:
        while isinstance(node, A.Select):
            node = node.operand
        return isinstance(node, A.Ident) and node.name not in self.scope

    def _is_var_root(self, node: A.Node) -> bool:
        while isinstance(node, A.Select):
            node = node.operand
        if not isinstance(node, A.Ident):
            return True
        name = _ALIASES.get(node.name, node.name)
        return name in self.scope or name in ACTIVATION or name in self.names

    def variable(self, name: str, node: A.Node) -> Code:
        env = self.env
        if name not in env.variables:
            raise self.err(f"undefined variable `V.{name}`", node)
        if name in self.var_stack:
            cycle = " -> ".join([*self.var_stack[self.var_stack.index(name) :], name])
            raise self.err(f"variable cycle: {cycle}", node)
        src = env.variables[name]
        saved_source, saved_scope = self.source, self.scope
        self.var_stack.append(name)
        self.source, self.scope = src, {}
        try:
            try:
                ast = env.parsed_variable(name)
                return self.c(ast)
            except CelCompileError as e:
                if getattr(e, "variable", None) is None:
                    e.variable = name  # type: ignore[attr-defined]
                raise
        finally:
            self.var_stack.pop()
            self.source, self.scope = saved_source, saved_scope

    # --- calls ------------------------------------------------------------------------------

    def call(self, node: A.Call) -> Code:
        fn = node.fn
        args = node.args
        if node.target is None:
            op = _OPERATORS.get(fn)
            if op is not None:
                return op(self, node)
            if fn == "has":
                return self.has(node)
            if fn in ("now", ".now") and not args:
                self.uses_time = True
                self.loads.add("now")
                return Code("now", "timestamp")
            if fn == "country" or fn == ".country":
                self._arity(node, 1)
                table = self.glob(self.env.geo_table(), "geo")
                return Code(f"{table}.lookup({self.c(args[0]).expr})", "string")
            if fn == "inCIDRs":
                self._arity(node, 2)
                ip = self.c(args[0])
                cidrs = self.c(args[1])
                if cidrs.const:
                    try:
                        cset = CidrSet(cidrs.value)
                    except CelEvalError as e:
                        raise self.err(f"inCIDRs: {e}", args[1]) from None
                    return Code(f"{self.glob(cset, 'cidrs')}.contains({ip.expr})", "bool")
            return self.apply(node, GLOBALS.get(fn.lstrip(".")), fn.lstrip("."), args)
        target = node.target
        if isinstance(target, A.Ident) and target.name not in self.scope:
            qual = f"{target.name}.{fn}"
            if qual in GLOBALS and not self._is_var_root(target):
                return self.apply(node, GLOBALS[qual], qual, args)
            if target.name == "cel" and fn == "bind":
                return self.bind(node)
        macro = _MACROS.get(fn)
        if macro is not None and args and isinstance(args[0], A.Ident):
            return macro(self, node)
        return self.apply(node, MEMBERS.get(fn), fn, [target, *args])

    def _arity(self, node: A.Call, n: int) -> None:
        if len(node.args) != n:
            raise self.err(
                f"wrong number of arguments to `{node.fn}`: got {len(node.args)}, want {n}", node
            )

    def apply(self, node: A.Call, spec: Fn | None, name: str, args: list[A.Node]) -> Code:
        if spec is None:
            raise self.err(f"unknown function `{name}`", node)
        if len(args) not in spec.arities:
            want = " or ".join(str(a - (node.target is not None)) for a in sorted(spec.arities))
            got = len(args) - (node.target is not None)
            raise self.err(f"wrong number of arguments to `{name}`: got {got}, want {want}", node)
        codes = [self.c(a) for a in args]
        if spec.pure and all(c.const for c in codes):
            try:
                return self.const(spec.impl(*(c.value for c in codes)))
            except Exception:
                pass  # the error belongs to run time, where CEL can still absorb it
        impl = self.glob(spec.impl, "fn")
        return Code(f"{impl}({', '.join(c.expr for c in codes)})", spec.kind)

    def has(self, node: A.Call) -> Code:
        self._arity(node, 1)
        arg = node.args[0]
        if not isinstance(arg, A.Select):
            raise self.err("has() requires a field selection, e.g. `has(a.b)`", node)
        root = arg.operand
        if isinstance(root, A.Ident) and root.name == "context" and arg.field == "time":
            self.uses_time = True
        if isinstance(root, A.Ident) and root.name.lstrip(".") in (
            "C", "constants", "data", "V", "variables",
        ) and root.name not in self.scope:  # fmt: skip
            base = root.name.lstrip(".")
            if base in ("V", "variables"):
                return self.const(arg.field in self.env.variables)
            src = self.env.data if base == "data" else self.env.constants
            return self.const(arg.field in src)
        operand = self.c(root)
        return Code(f"_has({operand.expr}, {arg.field!r})", "bool")

    # --- operators --------------------------------------------------------------------------

    def logic(self, node: A.Call) -> Code:
        is_and = node.fn == "_&&_"
        stop, go = ("False", "True") if is_and else ("True", "False")
        out = self.tmp("r")
        operands = _chain(node)
        if len(operands) > 2:
            # A flat chain: one pass that stops at the first absorbing value, so long
            # `a && b && c ...` chains do not nest Python blocks.
            temps: list[str] = []
            self.emit("while True:")
            with self.block():
                for op in operands:
                    t = self.guarded(op)
                    temps.append(t)
                    self.emit(f"if {t} is {stop}:")
                    with self.block(counts=False):
                        self.emit(f"{out} = {stop}")
                        self.emit("break")
                all_go = " and ".join(f"{t} is {go}" for t in temps)
                self.emit(
                    f"{out} = {go} if {all_go} else _logic_error({node.fn!r}, {', '.join(temps)})"
                )
                self.emit("break")
            return Code(out, "bool")
        a = self.guarded(operands[0])
        self.emit(f"if {a} is {stop}:")
        with self.block(counts=False):
            self.emit(f"{out} = {stop}")
        self.emit("else:")
        with self.block(counts=False):
            b = self.guarded(operands[1])
            self.emit(f"if {b} is {stop}:")
            with self.block(counts=False):
                self.emit(f"{out} = {stop}")
            self.emit(f"elif {a} is {go} and {b} is {go}:")
            with self.block(counts=False):
                self.emit(f"{out} = {go}")
            self.emit("else:")
            with self.block(counts=False):
                self.emit(f"{out} = _logic_error({node.fn!r}, {a}, {b})")
        return Code(out, "bool")

    def ternary(self, node: A.Call) -> Code:
        cond, yes, no = node.args
        c = self.c(cond)
        cv = self.tmp("c")
        self.emit(f"{cv} = {c.expr}")
        out = self.tmp("r")
        self.emit(f"if {cv} is True:")
        with self.block(counts=False):
            y = self.isolated(yes)
            self.emit(f"{out} = {y.expr}")
        self.emit(f"elif {cv} is False:")
        with self.block(counts=False):
            n = self.isolated(no)
            self.emit(f"{out} = {n.expr}")
        self.emit("else:")
        with self.block(counts=False):
            self.emit(f"{out} = _cond_error({cv})")
        return Code(out, y.kind if y.kind == n.kind else None)

    def not_(self, node: A.Call) -> Code:
        a = self.c(node.args[0])
        if a.kind == "bool":
            return Code(f"(not {a.expr})", "bool")
        t = self.tmp()
        return Code(f"(not {t} if ({t} := {a.expr}).__class__ is bool else _not({t}))", "bool")

    def neg(self, node: A.Call) -> Code:
        a = self.c(node.args[0])
        if a.const:
            try:
                return self.const(v.neg(a.value))
            except CelEvalError:
                pass
        return Code(f"_neg({a.expr})", a.kind if a.kind in ("int", "double") else None)

    def equality(self, node: A.Call) -> Code:
        a, b = (self.c(x) for x in node.args)
        negate = node.fn == "_!=_"
        if a.const and b.const:
            return self.const(v.eq(a.value, b.value) != negate)
        op = "!=" if negate else "=="
        simple = ("string", "bytes", "timestamp", "duration")
        if a.kind in simple or b.kind in simple or (a.kind == b.kind and a.kind in ("int", "bool")):
            return Code(f"({a.expr} {op} {b.expr})", "bool")
        if a.kind == "null" or b.kind == "null":
            other = b if a.kind == "null" else a
            return Code(f"({other.expr} is {'not ' if negate else ''}None)", "bool")
        ta, tb = self.tmp(), self.tmp()
        slow = "_ne" if negate else "_eq"
        return Code(
            f"({ta} {op} {tb} if ({ta} := {a.expr}).__class__ is ({tb} := {b.expr}).__class__ "
            f"is str else {slow}({ta}, {tb}))",
            "bool",
        )

    def ordering(self, node: A.Call) -> Code:
        a, b = (self.c(x) for x in node.args)
        fn = _ORDER[node.fn]
        if a.const and b.const:
            try:
                return self.const(getattr(v, fn)(a.value, b.value))
            except CelEvalError:
                pass
        op = _ORDER_OP[node.fn]
        if a.kind == b.kind and a.kind in ("int", "double", "uint", "string"):
            return Code(f"({a.expr} {op} {b.expr})", "bool")
        guard_b = _fast_num_guard(b)
        if guard_b is not None:
            t = self.tmp()
            return Code(
                f"({t} {op} {b.expr} if ({t} := {a.expr}).__class__ {guard_b} else _{fn}({t}, {b.expr}))",
                "bool",
            )
        guard_a = _fast_num_guard(a)
        if guard_a is not None:
            t = self.tmp()
            return Code(
                f"({a.expr} {op} {t} if ({t} := {b.expr}).__class__ {guard_a} else _{fn}({a.expr}, {t}))",
                "bool",
            )
        return Code(f"_{fn}({a.expr}, {b.expr})", "bool")

    def in_(self, node: A.Call) -> Code:
        a, b = (self.c(x) for x in node.args)
        if a.const and b.const:
            try:
                return self.const(v.in_(a.value, b.value))
            except CelEvalError:
                pass
        if (
            b.const
            and isinstance(b.value, list)
            and b.value
            and all(x.__class__ is str for x in b.value)
        ):
            # A constant list of strings: a frozenset lookup, exact for str needles.
            s = self.glob(frozenset(b.value), "set")
            t = self.tmp()
            return Code(
                f"({t} in {s} if ({t} := {a.expr}).__class__ is str else _in({t}, {b.expr}))",
                "bool",
            )
        if a.kind == "string":
            t = self.tmp()
            return Code(
                f"({a.expr} in {t} if ({t} := {b.expr}).__class__ in _LD else _in({a.expr}, {t}))",
                "bool",
            )
        return Code(f"_in({a.expr}, {b.expr})", "bool")

    def index(self, node: A.Call) -> Code:
        a, b = (self.c(x) for x in node.args)
        if a.const and b.const:
            try:
                return self.const(v.index(a.value, b.value))
            except CelEvalError:
                pass
        if b.kind == "string":
            # For a str key, Python's dict lookup is CEL's; on any other type it raises.
            return Code(f"{a.expr}[{b.expr}]")
        return Code(f"_index({a.expr}, {b.expr})")

    def arith(self, node: A.Call) -> Code:
        a, b = (self.c(x) for x in node.args)
        fn = _ARITH[node.fn]
        if a.const and b.const:
            try:
                return self.const(getattr(v, fn)(a.value, b.value))
            except CelEvalError:
                pass
        kind = (
            a.kind if a.kind == b.kind and a.kind in ("int", "double", "string", "uint") else None
        )
        if node.fn != "_+_" and kind == "string":
            kind = None
        return Code(f"_{fn}({a.expr}, {b.expr})", kind)

    # --- macros ---------------------------------------------------------------------------

    @contextmanager
    def bound(self, binds: dict[str, str]) -> Iterator[None]:
        saved = self.scope
        self.scope = {**saved, **binds}
        try:
            yield
        finally:
            self.scope = saved

    def too_deep(self) -> bool:
        return self.depth >= _MAX_BLOCK_DEPTH

    def in_function(self, build: Callable[[], Code]) -> Code:
        """Emit `build()` inside a nested function: a fresh block-nesting budget for Python."""
        fname = self.tmp("f")
        self.emit(f"def {fname}():")
        saved = self.depth
        self.depth = 0
        with self.block(counts=False):
            code = build()
            self.emit(f"return {code.expr}")
        self.depth = saved
        return Code(f"{fname}()", code.kind)

    def bind(self, node: A.Call) -> Code:
        if len(node.args) != 3 or not isinstance(node.args[0], A.Ident):
            raise self.err(
                "cel.bind(name, init, expr) takes an identifier and two expressions", node
            )
        init = self.c(node.args[1])
        local = self.tmp("v")
        self.emit(f"{local} = {init.expr}")
        with self.bound({node.args[0].name: local}):
            return self.c(node.args[2])


_ORDER = {"_<_": "lt", "_<=_": "le", "_>_": "gt", "_>=_": "ge"}
_ORDER_OP = {"_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">="}
_ARITH = {"_+_": "add", "_-_": "sub", "_*_": "mul", "_/_": "div", "_%_": "mod"}

_OPERATORS: dict[str, Any] = {
    "_&&_": Compiler.logic,
    "_||_": Compiler.logic,
    "_?_:_": Compiler.ternary,
    "!_": Compiler.not_,
    "-_": Compiler.neg,
    "_==_": Compiler.equality,
    "_!=_": Compiler.equality,
    "@in": Compiler.in_,
    "_[_]": Compiler.index,
    **dict.fromkeys(_ORDER, Compiler.ordering),
    **dict.fromkeys(_ARITH, Compiler.arith),
}


def _fast_num_guard(c: Code) -> str | None:
    """A class test under which Python's comparison with constant `c` equals CEL's.

    CEL compares int with double as doubles; Python compares exactly. They agree whenever the
    constant is an int that a double represents exactly, or when both sides are doubles.
    """
    if not c.const:
        return None
    if c.kind == "int" and abs(c.value) <= 2**53:
        return "in _NUM"
    if c.kind == "double":
        return "is float"
    return None


def _chain(node: A.Call) -> list[A.Node]:
    """The operands of a chain of the same logical operator, in evaluation order."""
    out: list[A.Node] = []
    stack: list[A.Node] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, A.Call) and n.fn == node.fn and n.target is None:
            stack.extend(reversed(n.args))
        else:
            out.append(n)
    return out


def _qualified(node: A.Node) -> str | None:
    parts: list[str] = []
    while isinstance(node, A.Select):
        parts.append(node.field)
        node = node.operand
    if not isinstance(node, A.Ident):
        return None
    parts.append(node.name.lstrip("."))
    return ".".join(reversed(parts))


def _local(name: str) -> str:
    return name if name in ACTIVATION else "a_" + name.replace(".", "_D_")


def _is_simple_local(expr: str) -> bool:
    return expr.isidentifier()


def generate(
    env: CelEnv, source: str, ast: A.Node, *, require_bool: bool, names: frozenset[str]
) -> tuple[Any, bool, str]:
    """Return (function, uses_time, python source)."""
    comp = Compiler(env, source, names)
    code = comp.c(ast)
    body = comp.lines
    if require_bool and code.kind != "bool":
        body.append(f"    _res = {code.expr}")
        body.append("    return _res if _res.__class__ is bool else _want_bool(_res)")
    else:
        body.append(f"    return {code.expr}")
    head = ["def _cel(act):", "  try:"]
    for name in sorted(comp.loads):
        if name == "now":
            head.append("    now = _now(act)")
        else:
            head.append(f"    {_local(name)} = act[{name!r}]")
    text = "\n".join(
        [
            *head,
            *body,
            "  except _CelEvalError:",
            "    raise",
            "  except Exception as _e:",
            "    raise _wrap(_e) from None",
        ]
    )
    glb = comp.globals
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, 20000))
        exec(compile(text, "<cel>", "exec"), glb)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as e:
        raise CelCompileError(f"expression too complex to compile ({e})", source, 1, 1) from None
    finally:
        sys.setrecursionlimit(limit)
    return glb["_cel"], comp.uses_time, text


__all__ = ["datetime", "generate", "timedelta"]
