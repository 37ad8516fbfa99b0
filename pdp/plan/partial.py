"""Partial evaluation of a CEL condition with the resource unknown.

Every subexpression that does not read the resource is compiled by pdp's own CEL compiler and
run on the request's principal, context and time, so folding has Check's exact semantics.
What reads the resource becomes a pair of formulas (`Pred`): where it is true, and where it
is false. Everywhere else — an error, or a value that is not a bool — it is neither; the
planner gives that case the effect Check gives an error (a deny rule matches, an allow rule
does not). Anything whose resource-dependent part the filter language cannot express exactly
raises `Unplannable`: the plan refuses rather than approximate.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pdp.cel import _ast as A
from pdp.cel import _functions as f
from pdp.cel import _values as cv
from pdp.cel._compile import generate
from pdp.engine.compiled import CondSource

from . import tree as t
from .tree import FALSE, TRUE, Formula, Path, and_, atom, not_, or_


class Unplannable(Exception):
    """A condition whose resource-dependent part cannot be expressed exactly as a filter."""

    def __init__(self, message: str, node: A.Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = node.line if node is not None else 0
        self.column = node.column if node is not None else 0


# --- abstract values ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Known:
    """A value computed at plan time; `error` when computing it failed."""

    value: Any
    error: bool = False


ERROR = Known(None, True)


@dataclass(frozen=True, slots=True)
class Field:
    path: Path


@dataclass(frozen=True, slots=True)
class Root:
    """The `resource` map itself."""


@dataclass(frozen=True, slots=True)
class Pred:
    """A bool that depends on the resource: true where `t` holds, false where `f` holds,
    an error (or not a bool) elsewhere. `t` and `f` never hold together."""

    t: Formula
    f: Formula


Value = Known | Field | Root | Pred

_RESOURCE_NAMES = frozenset({"R", "resource"})
_VAR_ROOTS = frozenset({"V", "variables"})
_CONST_ROOTS = frozenset({"C", "constants", "data"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


@functools.lru_cache(maxsize=4096)
def parse(source: str) -> A.Node:
    """The AST of a condition (never mutated, so shared)."""
    return A.parse(source)


class _Cache:
    """Per-(node, environment) memos that outlive one plan: whether a node reads the resource,
    and the compiled function of a node that does not. Keys hold the objects they name, so an
    id is never reused while cached; bounded, cleared whole when full."""

    MAX = 20_000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reads: dict[tuple[int, int], tuple[A.Node, Any, bool]] = {}
        self.fns: dict[tuple[int, int], tuple[A.Node, Any, Callable[[Any], Any]]] = {}

    def get_reads(self, node: A.Node, env: Any) -> bool | None:
        hit = self.reads.get((id(node), id(env)))
        return hit[2] if hit is not None else None

    def put_reads(self, node: A.Node, env: Any, value: bool) -> None:
        with self.lock:
            if len(self.reads) > self.MAX:
                self.reads.clear()
            self.reads[(id(node), id(env))] = (node, env, value)

    def fn(self, node: A.Node, env: Any) -> Callable[[Any], Any]:
        hit = self.fns.get((id(node), id(env)))
        if hit is not None:
            return hit[2]
        fn = generate(env, "<plan>", node, require_bool=False, names=frozenset()).fn
        with self.lock:
            if len(self.fns) > self.MAX:
                self.fns.clear()
            self.fns[(id(node), id(env))] = (node, env, fn)
        return fn


_cache = _Cache()


def reads_resource(node: A.Node, env: Any) -> bool:
    hit = _cache.get_reads(node, env)
    if hit is not None:
        return hit
    value = _reads(node, env)
    _cache.put_reads(node, env, value)
    return value


def _reads(node: A.Node, env: Any) -> bool:
    if isinstance(node, A.Ident):
        return node.name.lstrip(".") in _RESOURCE_NAMES
    if isinstance(node, A.Lit):
        return False
    if isinstance(node, A.Select):
        op = node.operand
        if isinstance(op, A.Ident) and op.name.lstrip(".") in _VAR_ROOTS:
            if node.field in env.variables:
                return reads_resource(env.parsed_variable(node.field), env)
            return False
        if isinstance(op, A.Ident) and op.name.lstrip(".") in _CONST_ROOTS:
            return False
        return reads_resource(op, env)
    if isinstance(node, A.Call):
        if node.fn == "has" and node.target is None and len(node.args) == 1:
            arg = node.args[0]
            if (
                isinstance(arg, A.Select)
                and isinstance(arg.operand, A.Ident)
                and arg.operand.name.lstrip(".") in _VAR_ROOTS | _CONST_ROOTS
            ):
                return False
        parts = [*node.args] + ([node.target] if node.target is not None else [])
        return any(reads_resource(a, env) for a in parts)
    if isinstance(node, A.ListLit):
        return any(reads_resource(a, env) for a in node.items)
    if isinstance(node, A.MapLit):
        return any(reads_resource(k, env) or reads_resource(v, env) for k, v in node.entries)
    if isinstance(node, A.Struct):
        return any(reads_resource(v, env) for _, v in node.fields)
    return True  # an unknown node kind: assume the worst


class NoResource(dict):  # type: ignore[type-arg]
    """The activation's `resource` at plan time: empty, and it notes any read. Only what does
    not read the resource is evaluated, so a read means the planner misjudged a condition."""

    touched = False

    def _touch(self, *_: Any) -> Any:
        self.touched = True
        raise KeyError("resource")

    __getitem__ = __contains__ = get = keys = items = values = __iter__ = __len__ = _touch  # type: ignore[assignment]


# --- the evaluator --------------------------------------------------------------------------


class Partial:
    """Evaluates conditions of one plan: fixed principal, context, action and time."""

    def __init__(self, activation: Mapping[str, Any], kind: str, tenant: str | None = None) -> None:
        self.act = activation
        self.kind = kind
        self.tenant = tenant  # the resource tenant, when the caller fixed it

    # entry point
    def condition(self, cond: CondSource | None) -> Pred:
        if cond is None:
            return Pred(TRUE, FALSE)
        if cond.op == "cel":
            return self.to_pred(self.ev(parse(cond.source), cond.env))
        parts = [self.condition(c) for c in cond.items]
        if cond.op == "all":
            return Pred(and_(*(p.t for p in parts)), or_(*(p.f for p in parts)))
        if cond.op == "any":
            return Pred(or_(*(p.t for p in parts)), and_(*(p.f for p in parts)))
        if cond.op == "none":
            return Pred(and_(*(p.f for p in parts)), or_(*(p.t for p in parts)))
        raise Unplannable(f"unknown condition group `{cond.op}`")

    def known(self, node: A.Node, env: Any) -> Known:
        resource = self.act.get("resource")
        try:
            value = Known(_cache.fn(node, env)(self.act))
        except Exception:
            value = ERROR
        if isinstance(resource, NoResource) and resource.touched:
            # `reads_resource` missed a way to reach the resource: refuse, never guess.
            raise Unplannable("a condition reads the resource in a way the planner cannot follow",
                              node)  # fmt: skip
        return value

    @staticmethod
    def to_pred(v: Value) -> Pred:
        if isinstance(v, Pred):
            return v
        if isinstance(v, Known):
            if not v.error and v.value is True:
                return Pred(TRUE, FALSE)
            if not v.error and v.value is False:
                return Pred(FALSE, TRUE)
            return Pred(FALSE, FALSE)
        if isinstance(v, Field):
            return Pred(atom("eq", v.path, True), atom("eq", v.path, False))
        return Pred(FALSE, FALSE)  # the resource map is not a bool

    def ev(self, node: A.Node, env: Any) -> Value:
        if not reads_resource(node, env):
            return self.known(node, env)
        if isinstance(node, A.Ident):
            return Root()
        if isinstance(node, A.Select):
            op = node.operand
            if isinstance(op, A.Ident) and op.name.lstrip(".") in _VAR_ROOTS:
                return self.ev(env.parsed_variable(node.field), env)
            return self.select(self.ev(op, env), node.field)
        if isinstance(node, A.Call):
            return self.call(node, env)
        raise Unplannable("a list or map literal built from the resource cannot be planned", node)

    def select(self, base: Value, name: str) -> Value:
        if isinstance(base, Root):
            if name == "kind":
                return Known(self.kind)
            if name == "tenant" and self.tenant is not None:
                return Known(self.tenant)
            if name in ("id", "tenant", "attr"):
                return Field((name,))
            return ERROR  # no such key on the resource map
        if isinstance(base, Field):
            if base.path in t.STRING_FIELDS:
                return ERROR  # a string has no fields
            return Field((*base.path, name))
        if isinstance(base, Known):
            if base.error:
                return ERROR
            try:
                return Known(cv.select(base.value, name))
            except Exception:
                return ERROR
        return ERROR  # a bool has no fields

    # --- calls ----------------------------------------------------------------------------

    def call(self, node: A.Call, env: Any) -> Value:
        fn = node.fn
        args = node.args
        if node.target is not None:
            if fn in ("containsAll", "containsAny") and len(args) == 1:
                a, b = self.ev(node.target, env), self.ev(args[0], env)
                return self.sets("hasAll" if fn == "containsAll" else "hasAny", a, b, node)
            if fn in _MACROS:
                raise Unplannable(f"the macro `{fn}` over resource data cannot be planned", node)
            raise Unplannable(f"`{fn}()` on resource data cannot be planned", node)
        if fn in ("_&&_", "_||_"):
            a = self.to_pred(self.ev(args[0], env))
            b = self.to_pred(self.ev(args[1], env))
            if fn == "_&&_":
                return Pred(and_(a.t, b.t), or_(a.f, b.f))
            return Pred(or_(a.t, b.t), and_(a.f, b.f))
        if fn == "!_":
            a = self.to_pred(self.ev(args[0], env))
            return Pred(a.f, a.t)
        if fn == "_?_:_":
            return self.ternary(node, env)
        if fn in ("_==_", "_!=_"):
            p = self.equals(self.ev(args[0], env), self.ev(args[1], env), node)
            return p if fn == "_==_" else Pred(p.f, p.t)
        if fn == "@in":
            return self.member(self.ev(args[0], env), self.ev(args[1], env), node)
        if fn in _ORDER:
            return self.order(fn, self.ev(args[0], env), self.ev(args[1], env), node)
        if fn == "has" and len(args) == 1 and isinstance(args[0], A.Select):
            return self.has(self.ev(args[0].operand, env), args[0].field)
        if fn == "_[_]":
            return self.index(self.ev(args[0], env), self.ev(args[1], env), node)
        if fn in ("hasAll", "hasAny", "isSubset") and len(args) == 2:
            a, b = self.ev(args[0], env), self.ev(args[1], env)
            if fn == "isSubset":  # isSubset(a, b) = hasAll(b, a)
                fn, a, b = "hasAll", b, a
            return self.sets(fn, a, b, node)
        if fn == "dyn" and len(args) == 1:
            return self.ev(args[0], env)
        raise Unplannable(f"`{fn.strip('_')}` applied to resource data cannot be planned", node)

    def sets(self, fn: str, a: Value, b: Value, node: A.Node) -> Pred:
        """hasAll(a, b): every element of b is in a; hasAny(a, b): some is. Both lists, or an
        error; elements compare with CEL equality."""
        if _is_error(a) or _is_error(b):
            return Pred(FALSE, FALSE)
        if isinstance(a, Known) and isinstance(b, Known):
            impl = f.has_all if fn == "hasAll" else f.has_any
            try:
                return _bool_pred(impl(a.value, b.value))
            except Exception:
                return Pred(FALSE, FALSE)
        if fn == "hasAny" and isinstance(a, Field) and isinstance(b, Known):
            a, b = b, a  # symmetric
        if isinstance(a, Known) and isinstance(b, Field):
            k = a.value
        elif isinstance(a, Field) and isinstance(b, Known):
            k = b.value
        else:
            raise Unplannable(f"`{fn}` over two parts of the resource cannot be planned", node)
        if not isinstance(k, list | tuple):
            return Pred(FALSE, FALSE)  # not a list: no such overload
        if not all(t.is_scalar(e) for e in k):
            raise Unplannable(f"`{fn}` with a list holding lists or maps cannot be planned", node)
        p = b.path if isinstance(b, Field) else a.path  # type: ignore[union-attr]
        is_list = atom("is", p, "list")
        if fn == "hasAny":
            holds = or_(*(atom("contains", p, e) for e in k))
        elif isinstance(a, Known):  # every element of the field is in k
            holds = atom("subset", p, tuple(k))
        else:  # the field holds every element of k
            holds = and_(is_list, *(atom("contains", p, e) for e in k))
        return Pred(holds, and_(is_list, not_(holds)))

    def ternary(self, node: A.Call, env: Any) -> Value:
        cond = self.ev(node.args[0], env)
        if isinstance(cond, Known):  # only the chosen branch runs, as in CEL
            if cond.error or not isinstance(cond.value, bool):
                return ERROR
            return self.ev(node.args[1] if cond.value else node.args[2], env)
        c = self.to_pred(cond)
        branches = [self.ev(b, env) for b in node.args[1:]]
        for b in branches:
            if isinstance(b, Known) and (b.error or isinstance(b.value, bool)):
                continue
            if isinstance(b, Pred):
                continue
            raise Unplannable("a conditional (`?:`) yielding resource data cannot be planned", node)
        y, n = (self.to_pred(b) for b in branches)
        return Pred(or_(and_(c.t, y.t), and_(c.f, n.t)), or_(and_(c.t, y.f), and_(c.f, n.f)))

    def equals(self, a: Value, b: Value, node: A.Node) -> Pred:
        if _is_error(a) or _is_error(b):
            return Pred(FALSE, FALSE)
        if isinstance(a, Known) and isinstance(b, Known):
            return _bool_pred(cv.eq(a.value, b.value))
        if isinstance(b, Field) and isinstance(a, Known):
            a, b = b, a
        if isinstance(a, Field) and isinstance(b, Known):
            x = b.value
            if isinstance(x, list | tuple | dict):
                raise Unplannable(
                    "comparing resource data with a list or map cannot be planned", node
                )
            present = atom("exists", a.path)
            if not t.is_scalar(x):
                # No JSON value equals a timestamp, bytes, a type...: false when present.
                if isinstance(x, int | float) and not isinstance(x, bool):
                    raise Unplannable(f"the number `{x}` cannot be planned", node)
                return Pred(FALSE, present)
            eq = atom("eq", a.path, x)
            return Pred(eq, and_(present, not_(eq)))
        if isinstance(b, Pred) and isinstance(a, Known):
            a, b = b, a
        if isinstance(a, Pred) and isinstance(b, Known):
            if b.value is True:
                return a
            if b.value is False:
                return Pred(a.f, a.t)
            return Pred(FALSE, or_(a.t, a.f))  # a bool never equals a non-bool
        if isinstance(a, Pred) and isinstance(b, Pred):
            return Pred(or_(and_(a.t, b.t), and_(a.f, b.f)), or_(and_(a.t, b.f), and_(a.f, b.t)))
        raise Unplannable("comparing two parts of the resource cannot be planned", node)

    def member(self, x: Value, c: Value, node: A.Node) -> Pred:
        if _is_error(x) or _is_error(c):
            return Pred(FALSE, FALSE)
        if isinstance(x, Known) and isinstance(c, Known):
            try:
                return _bool_pred(cv.in_(x.value, c.value))
            except Exception:
                return Pred(FALSE, FALSE)
        if isinstance(x, Known) and isinstance(c, Field):
            return self._in_field(x.value, c.path, node)
        if isinstance(x, Field) and isinstance(c, Known):
            return self._field_in(x.path, c.value, node)
        raise Unplannable("this `in` over resource data cannot be planned", node)

    def _in_field(self, x: Any, p: Path, node: A.Node) -> Pred:
        """`x in R.attr.p`: list membership, or a key of a map; an error for anything else."""
        if not t.is_scalar(x):
            raise Unplannable(f"`in` of a {cv.type_name(x)} value cannot be planned", node)
        is_list, is_map = atom("is", p, "list"), atom("is", p, "map")
        contains = atom("contains", p, x)
        not_in_list = and_(is_list, not_(contains))
        if isinstance(x, str):
            key = atom("has_key", p, x)
            return Pred(or_(contains, key), or_(not_in_list, and_(is_map, not_(key))))
        if x is None:
            return Pred(contains, not_in_list)  # looking null up in a map is an error
        return Pred(contains, or_(not_in_list, is_map))  # JSON keys are strings, never x

    def _field_in(self, p: Path, c: Any, node: A.Node) -> Pred:
        """`R.attr.p in c` with `c` known."""
        present = atom("exists", p)
        if isinstance(c, list | tuple):
            if not all(t.is_scalar(e) for e in c):
                raise Unplannable("`in` a list holding lists or maps cannot be planned", node)
            inside = atom("in", p, tuple(c))
            return Pred(inside, and_(present, not_(inside)))
        if isinstance(c, dict):
            if not all(isinstance(k, str) for k in c):
                raise Unplannable("`in` a map with non-string keys cannot be planned", node)
            inside = atom("in", p, tuple(c))
            # A string is looked up; a number or bool is simply not a key; null, a list or a
            # map is an error.
            scalar_miss = or_(
                and_(atom("is", p, "string"), not_(inside)),
                atom("is", p, "int"),
                atom("is", p, "double"),
                atom("is", p, "bool"),
            )
            return Pred(inside, scalar_miss)
        return Pred(FALSE, FALSE)  # `in` a string, a number...: no such overload

    def order(self, fn: str, a: Value, b: Value, node: A.Node) -> Pred:
        if _is_error(a) or _is_error(b):
            return Pred(FALSE, FALSE)
        if isinstance(a, Known) and isinstance(b, Known):
            try:
                return _bool_pred(_ORDER[fn][1](a.value, b.value))
            except Exception:
                return Pred(FALSE, FALSE)
        op = _ORDER[fn][0]
        if isinstance(a, Known) and isinstance(b, Field):
            a, b, op = b, a, _FLIP[op]
        if isinstance(a, Field) and isinstance(b, Known):
            x = b.value
            if isinstance(x, str):
                family = atom("is", a.path, "string")
            elif isinstance(x, int | float) and not isinstance(x, bool) and t.is_scalar(x):
                family = or_(atom("is", a.path, "int"), atom("is", a.path, "double"))
            elif isinstance(x, bool):
                return _bool_order(a.path, op, x)
            elif isinstance(x, int | float):
                raise Unplannable(f"ordering resource data against `{x}` cannot be planned", node)
            else:
                # A timestamp, duration, list...: no JSON value orders against it, an error.
                return Pred(FALSE, FALSE)
            rel = atom(op, a.path, x)
            return Pred(rel, and_(family, not_(rel)))
        raise Unplannable("ordering two parts of the resource cannot be planned", node)

    def has(self, base: Value, name: str) -> Value:
        if isinstance(base, Root):
            return Known(name in ("kind", "id", "tenant", "attr"))
        if isinstance(base, Field):
            if base.path in t.STRING_FIELDS:
                return ERROR
            child = atom("exists", (*base.path, name))
            return Pred(child, and_(atom("is", base.path, "map"), not_(child)))
        if isinstance(base, Known) and not base.error:
            try:
                return Known(cv.has(base.value, name))
            except Exception:
                return ERROR
        return ERROR

    def index(self, c: Value, i: Value, node: A.Node) -> Value:
        if _is_error(c) or _is_error(i):
            return ERROR
        if isinstance(c, Root | Field) and isinstance(i, Known) and isinstance(i.value, str):
            if not t.is_identifier(i.value):
                raise Unplannable(f"the attribute key `{i.value[:64]}` cannot be planned", node)
            return self.select(c, i.value)
        raise Unplannable("this index into resource data cannot be planned", node)


_ORDER: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "_<_": ("lt", cv.lt),
    "_<=_": ("le", cv.le),
    "_>_": ("gt", cv.gt),
    "_>=_": ("ge", cv.ge),
}
_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def _is_error(v: Value) -> bool:
    return isinstance(v, Known) and v.error


def _bool_order(p: Path, op: str, x: bool) -> Pred:
    """`R.attr.p <op> x` for a bool `x`: bools order false < true; anything else is an error."""
    is_bool, true, false = atom("is", p, "bool"), atom("eq", p, True), atom("eq", p, False)
    holds = {
        ("lt", True): false, ("lt", False): FALSE,
        ("le", True): is_bool, ("le", False): false,
        ("gt", True): FALSE, ("gt", False): true,
        ("ge", True): true, ("ge", False): is_bool,
    }[(op, x)]  # fmt: skip
    return Pred(holds, and_(is_bool, not_(holds)))


def _bool_pred(b: bool) -> Pred:
    return Pred(TRUE, FALSE) if b else Pred(FALSE, TRUE)
