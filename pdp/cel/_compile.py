"""CEL AST → Python source → one Python function per expression.

The generated function takes the activation dict and returns the CEL value. Subexpressions
that can short-circuit (`&&`, `||`, `?:`, macros) become statements; everything else is a
Python expression, with inline fast paths for the common JSON cases (string equality,
membership of a string in a list, field access on dicts) and calls into `_values` otherwise.
CEL errors are Python exceptions; `&&`/`||`/macros catch them and treat them as error values.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, Any, NamedTuple

from pdp.cel import _ast as A
from pdp.cel import _values as v
from pdp.cel._budget import MAX_ITERATIONS, NEVER, STOP_AT
from pdp.cel._code import Code
from pdp.cel._library import GLOBALS, MEMBERS, Fn
from pdp.cel._macros import MACROS as _MACROS
from pdp.cel._macros import (
    add_charged,
    call_charged,
    eq_charged,
    in_charged,
    index_charged,
    iter_pairs,
    iter_range,
    macro_error,
    ne_charged,
    order_charged,
    scan_work,
    work,
)
from pdp.cel._network import CidrSet
from pdp.cel._operators import _OPERATORS, Operators, _small
from pdp.cel._regex import Regex, matches_charged
from pdp.errors import CelCompileError, CelEvalError

if TYPE_CHECKING:
    from pdp.cel._api import CelEnv

ACTIVATION = ("principal", "resource", "action", "context", "now")
_TYPE_NAME_LAST = frozenset(n.rsplit(".", 1)[1] for n in v.TYPE_NAMES if "." in n)
_INDENT = tuple("    " * n for n in range(128))  # deeper than Python's tokenizer allows (100)
_ALIASES = {"P": "principal", "R": "resource"}
# A variable is inlined as code wherever it is used, so `v1: V.v0 + V.v0`, `v2: V.v1 + V.v1`...
# doubles the code with each level: 30 levels would take the compiler days. Real conditions
# inline a few dozen references.
_MAX_INLINED = 10_000
_MAX_BLOCK_DEPTH = 8  # Python allows 20 nested try/for blocks per function; split well before


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
    "_ORD": frozenset({int, float, str}),
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
        if k in out:
            # CEL keeps `true` and `1` apart; a Python dict holds them as one key (True == 1),
            # so the later value would silently replace the earlier one.
            other = next(o for o in out if o == k)
            v.fail(f"a map literal cannot hold both the keys `{_key(k)}` and `{_key(other)}`")
        out[k] = x
    return out


def _key(k: Any) -> str:
    return str(k).lower() if k.__class__ is bool else repr(k)  # `true`, `1`, `1u`


_RUNTIME["_NOERR"] = object()  # "no error yet": None is a CEL value (null), so it cannot be
_RUNTIME["_iter"] = iter_range
_RUNTIME["_NEVER"] = NEVER
_RUNTIME["_pairs"] = iter_pairs
_RUNTIME["_in_w"] = in_charged
_RUNTIME["_add_w"] = add_charged
_RUNTIME["_eq_w"] = eq_charged
_RUNTIME["_ne_w"] = ne_charged
_RUNTIME["_call_w"] = call_charged
_RUNTIME["_ord_w"] = order_charged
_RUNTIME["_index_w"] = index_charged
_RUNTIME["_matches_w"] = matches_charged
_RUNTIME["_macro_error"] = macro_error
_RUNTIME["_wrap"] = wrap_error
_RUNTIME["_map"] = _map_build
_RUNTIME["_MAXI"] = MAX_ITERATIONS
_RUNTIME["_STOP"] = STOP_AT
# Classes whose values every operation handles in constant time (or, for a short string,
# next to it): an operand of these needs no budget outside a comprehension.
_RUNTIME["_SCAL"] = frozenset(
    {int, float, bool, type(None), v.CelUint, str, bytes, datetime, timedelta}
)
_RUNTIME["_LT"] = v.LISTS
_RUNTIME["_SEQS"] = frozenset({str, bytes})
_RUNTIME["_SMALL"] = frozenset({int, float, bool, type(None), v.CelUint, datetime, timedelta})

# The builtins of every generated function: Python's, plus the runtime above. Python looks a
# name up in the function's globals, then in its builtins, so each function's own globals hold
# only its constants: one shared dict instead of a copy of ~40 entries per expression (~2 KiB
# each, 30,000 of them at 10,000 policies, and as many for the garbage collector to walk).
_BUILTINS: dict[str, Any] = {**builtins.__dict__, **_RUNTIME}


class _Block:
    """The context manager of `Compiler.block`: a class, because a generator-based one was a
    visible share of code generation (several blocks per expression)."""

    __slots__ = ("comp", "counts", "step")

    def __init__(self, comp: Compiler, counts: bool, indent: bool) -> None:
        self.comp = comp
        self.counts = counts
        self.step = 1 if indent else 0

    def __enter__(self) -> None:
        comp = self.comp
        comp.indent += self.step
        if comp.indent > comp.max_indent:
            comp.max_indent = comp.indent
        if self.counts:
            comp.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.comp.indent -= self.step
        if self.counts:
            self.comp.depth -= 1


class Compiler(Operators):
    def __init__(self, env: CelEnv, source: str, names: frozenset[str]) -> None:
        self._env = env
        self.env_used = False  # did the result depend on the environment (see `env`)?
        self.source = source
        self.names = names  # extra activation names (conformance bindings)
        self.lines: list[str] = []
        self.indent = 2  # inside `def _cel(act):` and its `try:`
        self.max_indent = 2  # the deepest level emitted (see `_lazy_safe`)
        self.depth = 0
        self.globals: dict[str, Any] = {"__builtins__": _BUILTINS}
        self._const_ids: dict[int, str] = {}
        self.counter = itertools.count()
        self.scope: dict[str, str] = {}
        self.loads: set[str] = set()
        self.uses_time = False
        self.var_stack: list[str] = []
        self.inlined = 0  # variable references inlined so far (see `_MAX_INLINED`)
        self.budgeted = False  # a comprehension or `matches`: the function keeps a work budget
        self.loops = 0  # comprehension bodies around the node being compiled
        self.lazy_budget = False  # an operation outside comprehensions may make the budget

    @property
    def env(self) -> CelEnv:
        """The environment; reading it marks the result as depending on it. An expression
        that never reads it (no C., V., data., country()) compiles the same in every
        environment, which lets `compile_cel` reuse it across a batch."""
        self.env_used = True
        return self._env

    # --- plumbing ---------------------------------------------------------------------------

    def err(self, msg: str, node: A.Node) -> CelCompileError:
        return CelCompileError(msg, self.source, node.line, node.column)

    def tmp(self, base: str = "t") -> str:
        return f"_{base}{next(self.counter)}"

    def emit(self, line: str) -> None:
        # Four spaces per level, as a person would write it: `pdp compile` shows this text,
        # and indentation costs Python's tokenizer next to nothing.
        try:
            self.lines.append(_INDENT[self.indent] + line)
        except IndexError:  # absurdly deep: Python's compile() will refuse it with a message
            self.lines.append("    " * self.indent + line)

    def block(self, counts: bool = True, indent: bool = True) -> _Block:
        """`with self.block():` emits one indentation level deeper; `counts` when the level is
        a try/for/while block (Python limits how many nest in one function). `indent=False`:
        the same code at the same level (a block its caller decided to leave out)."""
        return _Block(self, counts, indent)

    def const(self, value: Any) -> Code:
        kind = _kind_of_value(value)
        c = value.__class__
        if value is None or c is bool:
            return Code(repr(value), kind, True, value)
        # Any other constant is a global of the function, never a literal in its text, so
        # expressions that differ only in constants (`level >= 3`, `level >= 4`) generate the
        # same Python text and share one compiled code object (`_code_for`). One name per
        # occurrence: the text then depends on the expression's shape, not on which values
        # happen to be equal.
        if c is int or c is str or c is bytes or c is float:
            name = self.tmp("k")
            self.globals[name] = value
            return Code(name, kind, True, value)
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
        cls = node.__class__  # the node classes have no subclasses: `is` is isinstance here
        if cls is A.Select:
            return self.select(node)  # type: ignore[arg-type]
        if cls is A.Call:
            return self.call(node)  # type: ignore[arg-type]
        if cls is A.Ident:
            return self.ident(node)  # type: ignore[arg-type]
        if cls is A.Lit:
            return self.const(node.value)  # type: ignore[attr-defined]
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
        # The qualified name matters only for declared names and type names (`google.x.T`).
        qn = _qualified(node) if self.names or node.field in _TYPE_NAME_LAST else None
        if qn is not None and qn in self.names and self._unscoped_root(node):
            self.loads.add(qn)
            return Code(_local(qn))
        if qn is not None and qn in v.TYPE_NAMES and not self._is_var_root(node):
            return self.const(v.TYPE_NAMES[qn])
        operand = self.c(root)
        if operand.const and isinstance(operand.value, dict) and node.field in operand.value:
            return self.const(operand.value[node.field])
        expr = operand.expr
        if operand.const and (operand.value is None or operand.value.__class__ is bool):
            # A global, not the literal: Python warns at compile time on `None['f']` (printed
            # to the server's stderr, about code the author never wrote); both fail alike.
            expr = self.glob(operand.value)
        return Code(f"{expr}[{node.field!r}]")

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
        self.inlined += 1
        if self.inlined > _MAX_INLINED:
            raise self.err(
                f"expression too large: its variables are inlined more than {_MAX_INLINED} "
                "times (a variable that uses another more than once, over many levels?)",
                node,
            )
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
                    if cidrs.value.__class__ not in (list, tuple):
                        # CidrSet would iterate a string's characters, or fail on a bool.
                        raise self.err(
                            "inCIDRs: the second argument must be a list of CIDRs, got "
                            f"`{v.type_name(cidrs.value)}`",
                            args[1],
                        )
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
        if name == "matches" and codes[1].const and codes[1].value.__class__ is str:
            return self.regex(codes[0], codes[1].value, args[1])
        if spec.pure and all(c.const for c in codes):
            try:
                return self.const(spec.impl(*(c.value for c in codes)))
            except Exception:
                pass  # the error belongs to run time, where CEL can still absorb it
        if name == "matches":  # charged wherever it is, priced by the pattern's program
            self.budgeted = True
            return Code(f"_matches_w(_budget, {codes[0].expr}, {codes[1].expr})", spec.kind)
        impl = self.glob(spec.impl, "fn")
        if name in _O1_FUNCTIONS:
            return Code(f"{impl}({', '.join(c.expr for c in codes)})", spec.kind)
        if self.loops:
            return Code(f"_call_w(_budget, {impl}, {', '.join(c.expr for c in codes)})", spec.kind)
        # Elsewhere charged when an argument is a list or map or a long string: `join`,
        # `split`, `replace`, the set helpers, conversions scan or build what they are given.
        temps: list[str] = []
        tests: list[str] = []
        for c in codes:
            if c.const:
                if scan_work(c.value, 1) or work(c.value):
                    tests.append("False")
                temps.append(c.expr)
                continue
            t = self.tmp()
            temps.append(t)
            test = _small(c, t)
            if test != "True":
                tests.append(test)
        if not tests:
            return Code(f"{impl}({', '.join(c.expr for c in codes)})", spec.kind)
        if "False" in tests:  # a large constant: always charged
            exprs = ", ".join(c.expr for c in codes)
            return Code(f"_call_w({self.budget()}, {impl}, {exprs})", spec.kind)
        args = ", ".join(temps)
        bound = [(t, c) for t, c in zip(temps, codes) if not c.const]
        if len(bound) == 1:  # the test sets the one temporary (its first use comes first)
            t, c = bound[0]
            test = " and ".join(tests).replace(t, f"({t} := {c.expr})", 1)
        else:  # all set first: a test that fails skips the ones after it
            test = (
                f"({', '.join(f'({t} := {c.expr})' for t, c in bound)},) and {' and '.join(tests)}"
            )
        return Code(
            f"({impl}({args}) if {test} else _call_w({self.budget()}, {impl}, {args}))",
            spec.kind,
        )

    def regex(self, subject: Code, pattern: str, node: A.Node) -> Code:
        """`s.matches('<constant>')`: the pattern is compiled now, so one RE2 refuses is a
        compile error at its position (never a policy that loads and then fails every call).
        Each scan is charged to the evaluation's budget, in a comprehension or not: capped
        scans must not add up without bound, nor run on past the call's stop time."""
        try:
            regex = Regex(pattern)
        except CelEvalError as e:
            raise self.err(str(e), node) from None
        if subject.const:
            try:
                return self.const(regex(subject.value))
            except CelEvalError:
                pass  # e.g. `1.matches('a')`: a run-time error, as for any other function
        rx = self.glob(regex, "rx")
        self.budgeted = True
        return Code(f"{rx}.charged({subject.expr}, _budget)", "bool")

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

    # --- macros ---------------------------------------------------------------------------

    @contextmanager
    def bound(self, binds: dict[str, str]) -> Iterator[None]:
        saved = self.scope
        self.scope = {**saved, **binds}
        try:
            yield
        finally:
            self.scope = saved

    @contextmanager
    def loop_body(self, binds: dict[str, str]) -> Iterator[None]:
        """A comprehension's body: operations whose cost grows with their operands are charged
        to the iteration budget there (`pdp.cel._macros.work`)."""
        self.loops += 1
        try:
            with self.bound(binds):
                yield
        finally:
            self.loops -= 1

    def budget(self) -> str:
        """The expression of the evaluation's budget where an operation is charged. In a
        comprehension it exists (`_header`). Elsewhere it is made on the first charge the
        evaluation makes, so that the ordinary condition, which charges nothing (its operands
        are small), never builds one: `_budget` is None until then."""
        if self.loops:
            return "_budget"
        self.lazy_budget = True
        return "(_budget or (_budget := [_MAXI, act.get(_STOP, _NEVER)]))"

    def too_deep(self) -> bool:
        return self.depth >= _MAX_BLOCK_DEPTH

    def in_function(self, build: Callable[[], Code]) -> Code:
        """Emit `build()` inside a nested function: a fresh block-nesting budget for Python."""
        fname = self.tmp("f")
        self.emit(f"def {fname}():")
        mark = len(self.lines)
        saved = self.depth
        self.depth = 0
        with self.block(counts=False):
            code = build()
            self.emit(f"return {code.expr}")
            if any("_budget :=" in line for line in self.lines[mark:]):
                # The budget made in here is the evaluation's, the enclosing function's local.
                self.lines.insert(mark, "    " * self.indent + "nonlocal _budget")
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


# Library functions that cost the same whatever the size of their arguments: never charged.
_O1_FUNCTIONS = frozenset({"size", "type", "dyn", "charAt"})


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


@functools.lru_cache(maxsize=2048)
def _code_for(text: str) -> CodeType:
    """Python's compile() of a generated module, memoised by its text.

    compile() is the largest cost of compiling an expression (~100-200 µs for a one-line
    condition). Constants are globals (`Compiler.const`), so every expression of the same shape
    has the same text: policy sets made of many similar policies compile each shape once. The
    functions still differ: each gets its own globals. Bounded, so that a server reloading
    policy sets keeps the code of at most this many shapes it no longer uses.
    """
    return compile(text, "<cel>", "exec")


class Generated(NamedTuple):
    fn: Callable[[Any], Any]  # a fresh function object, the caller's to decorate
    uses_time: bool
    python_source: str
    reads: frozenset[str]  # activation names it reads
    env_used: bool  # False: the same in any environment (no C., V., data., country())
    globals: dict[str, Any]  # the function's globals: runtime helpers and constants (`_k0`)


# Python's compile() is half the cost of compiling a policy set whose conditions all differ
# (~100-200 µs each), and a server with 10,000 policies evaluates few of them soon after start.
# So a condition whose text Python cannot refuse is compiled on its first call instead; every
# CEL error was found while generating the text. Python refuses text only for its nesting:
# more than 20 nested blocks or 100 indentation levels, 200 nested brackets, or an expression
# tree deep enough to exhaust the compiler's recursion limit. Below these bounds none of that
# can happen, so such text is compiled at once, where a refusal is a compile error.
_LAZY_MAX_INDENT = 16
_LAZY_MAX_BRACKETS = 150  # total, so also the deepest possible bracket nesting
_LAZY_MAX_CHARS = 16_000  # bounds the depth of an unbracketed operator chain


def _lazy_safe(text: str, max_indent: int) -> bool:
    return (
        max_indent <= _LAZY_MAX_INDENT
        and len(text) <= _LAZY_MAX_CHARS
        and text.count("(") + text.count("[") + text.count("{") <= _LAZY_MAX_BRACKETS
    )


def _exec(text: str, glb: dict[str, Any], source: str) -> Callable[[Any], Any]:
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, 20000))
        fn = _define(text, glb)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as e:
        raise CelCompileError(f"expression too complex to compile ({e})", source, 1, 1) from None
    finally:
        sys.setrecursionlimit(limit)
    return fn


def _define(text: str, glb: dict[str, Any]) -> FunctionType:
    """The function `_cel` that `text` defines, with `glb` as its globals but not kept in
    them: a function held by its own globals is a reference cycle, which only the cyclic
    collector frees, and `pdp serve` keeps its policies out of the collector's passes
    (`pdp.cli.serve._HeapSettler`): a replaced policy set must go by reference counts alone."""
    defined: dict[str, Any] = {}
    exec(_code_for(text), glb, defined)
    fn: FunctionType = defined["_cel"]
    return fn


def _stub(act: Any) -> Any:
    return _first_call(act)  # type: ignore[name-defined]  # noqa: F821  # a global of each stub


def _failed(act: Any) -> Any:
    raise _compile_error  # type: ignore[name-defined]  # noqa: F821  # set with this code


def _lazy(text: str, glb: dict[str, Any]) -> FunctionType:
    """A function of the expression's own globals `glb` whose code, until its first call,
    calls `_first_call`; that compiles `text` (`_define`) and gives the function the compiled
    code, so every later call runs the generated code directly. Two threads racing here both
    compile the same text, which is harmless. Should Python still refuse the text, the
    function raises a CelEvalError from then on: a deny with a reason, never an allow.

    `glb` holds the function only weakly (through `_first_call`): no reference cycle, see
    `_define`."""
    fn = FunctionType(_stub.__code__, glb, "_cel")
    glb["_first_call"] = functools.partial(_compile_on_first_call, text, weakref.ref(fn))
    return fn


def _compile_on_first_call(text: str, ref: weakref.ref[FunctionType], act: Any) -> Any:
    fn = ref()
    if fn is None:  # not expected: the function is the one calling
        raise CelEvalError("expression could not be compiled (its function is gone)")
    glb = fn.__globals__
    try:
        code = _define(text, glb).__code__
    except Exception as e:  # not expected below the `_lazy_safe` bounds
        name = e.__class__.__name__
        glb["_compile_error"] = CelEvalError(f"expression could not be compiled ({name})")
        code = _failed.__code__
    fn.__code__ = code
    return fn(act)


def generate(
    env: CelEnv,
    source: str,
    ast: A.Node,
    *,
    require_bool: bool,
    names: frozenset[str],
    lazy: bool = False,
) -> Generated:
    """Compile `ast` (parsed from `source`) to a Python function.

    With `lazy`, the function of a text Python cannot refuse compiles it on its first call
    (`_lazy`)."""
    comp = Compiler(env, source, names)
    body = comp.lines
    try:
        if isinstance(ast, A.Call) and ast.fn in ("_&&_", "_||_") and ast.target is None:
            comp.logic(ast, tail=True)  # the usual condition: it returns its result itself
        else:
            code = comp.c(ast)
            if require_bool and code.kind != "bool":
                body.append(f"        _res = {code.expr}")
                body.append("        return _res if _res.__class__ is bool else _want_bool(_res)")
            else:
                body.append(f"        return {code.expr}")
    except RecursionError:  # e.g. `a + a + ...` thousands long: an author's error, not a crash
        raise CelCompileError("expression nests too deeply", source, 1, 1) from None
    head = ["def _cel(act):", "    try:"]
    if comp.budgeted:
        # [iterations left, the call's stop time] (`pdp.cel._budget._spend`)
        head.append(f"        _budget = [{MAX_ITERATIONS}, act.get({STOP_AT!r}, _NEVER)]")
    elif comp.lazy_budget:
        head.append("        _budget = None  # made by the first charge (`Compiler.budget`)")
    for name in sorted(comp.loads):
        if name == "now":
            head.append("        now = _now(act)")
        else:
            head.append(f"        {_local(name)} = act[{name!r}]")
    text = "\n".join(
        [
            *head,
            *body,
            "    except _CelEvalError:",
            "        raise",
            "    except Exception as _e:",
            "        raise _wrap(_e) from None",
        ]
    )
    glb = comp.globals
    reads = frozenset(comp.loads)
    if lazy and _lazy_safe(text, comp.max_indent):
        fn = _lazy(text, glb)
    else:
        fn = _exec(text, glb, source)
    return Generated(fn, comp.uses_time, text, reads, comp.env_used, glb)


__all__ = ["datetime", "generate", "timedelta"]
