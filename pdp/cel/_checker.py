"""A static type checker for CEL expressions, after cel-go's checker: it only rejects.

`check(source, env)` walks the parsed expression with a `TypeEnv` (the request's fixed shapes,
the attribute types from schemas when declared, constants, data, variables) and returns the
expression's type with every issue found. Expressions that pass compile and run exactly as
before; the checker never changes what an expression means.

What it rejects, each with the CEL position of the offending node:
- `PDP120` a field the request never has (`context.contry`, `principal.tenat`, `R.atr`);
- `PDP121` an operator or function with no overload for the operand types (`"a" < 1`,
  `R.attr.archived == true` when the schema says `archived` is a string);
- `PDP122` an attribute a schema does not declare (`R.attr.archivd`);
- `PDP123` a condition whose type can never be `bool`;
- `PDP124` a constant or data path that does not exist (`data.networks.denylst`);
- `PDP125` a field selection on a value that has no fields (`P.id.name`).
And warns (`PDP205`) when an attribute without a declared type is compared with a `bool` or
number literal: `R.attr.archived == true` is false, not an error, for the string `"true"`;
and (`PDP208`) when a comparison's result never depends on the request: both sides the same
expression (`R.tenant == R.tenant`), or a field the request parser never lets be empty
compared with emptiness (`P.id != ""`, `size(R.id) == 0`). Such a comparison is folded to
its value only where the field is always present, so `R.attr.x == R.attr.x` (an error when
`x` is missing, which denies) stays unknown. Pure functions of constants fold too
(`size(C.admins) == 0`), so a condition constant once constants are substituted is seen.

Unions are checked soundly for operators (every combination of member types must have an
overload) except that `null` members are ignored: null-safety is not checked, so
`actor.type` is accepted although `actor` may be null (a run-time `no such key`). A `dyn`
(an undeclared attribute, `dyn()`) is not checked at all. Everything else accepted runs
without a type error on attributes that satisfy the schemas, and each value has the type
given here: tests/validator/test_checker_property.py holds the checker to that, with
`TypeEnv.strict` (nulls and `dyn` checked too) telling which errors come from those two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any, NamedTuple

from pdp.cel import _ast as A
from pdp.cel import _types as ty
from pdp.cel import _values as v
from pdp.cel._types import (
    BOOL,
    BYTES,
    CIDR,
    DOUBLE,
    DURATION,
    DYN,
    INT,
    IP,
    NULL,
    NUMERIC,
    STRING,
    TIMESTAMP,
    TYPE,
    UINT,
    ConstT,
    ListT,
    MapT,
    ObjT,
    Prim,
    T,
)

UNKNOWN_FIELD = "PDP120"
NO_OVERLOAD = "PDP121"
UNDECLARED_ATTRIBUTE = "PDP122"
NOT_BOOL = "PDP123"
UNDEFINED_PATH = "PDP124"
NOT_SELECTABLE = "PDP125"
UNTYPED_COMPARISON = "PDP205"
FIXED_COMPARISON = "PDP208"

_NO = object()  # "not a constant"


@dataclass(frozen=True, slots=True)
class Issue:
    code: str
    message: str
    line: int  # 1-based, in the source of `variable` when set, else of the expression
    column: int
    variable: str | None = None
    warning: bool = False


def _attr_map() -> T:
    return MapT(STRING, ty.UNTYPED)


@dataclass
class TypeEnv:
    """What the checker knows. An `attr` type left as `map(string, dyn)` means "no schema"."""

    principal_attr: T = field(default_factory=_attr_map)
    resource_attr: T = field(default_factory=_attr_map)
    context_attr: T = field(default_factory=_attr_map)
    constants: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)  # name -> source
    # Check `null` members like any other and refuse the author's `dyn` (`ty.Untyped`): what
    # the checker leaves to the author (null-safety, undeclared attributes) checked too, while a
    # `dyn` of the checker's own making is trusted. The property test's oracle for which
    # run-time type errors those explain (tests/validator/test_checker_property.py); far too
    # strict for policies, so never set for users.
    strict: bool = False
    _var_memo: dict[str, tuple[T, Any, list[Issue]]] = field(default_factory=dict)
    # `roots()`, built once: a checker per expression and per variable each rebuilt it (a
    # fifth of the validator's time). Like `_var_memo`, it takes the fields as fixed once
    # checking starts.
    _roots: dict[str, T] | None = field(default=None, repr=False, compare=False)

    def variable_issues(self) -> list[Issue]:
        """The issues of every variable checked so far in this environment."""
        return [i for name in sorted(self._var_memo) for i in self._var_memo[name][2]]

    def roots(self) -> dict[str, T]:
        """What each name of the activation is (read only: shared by the env's checkers)."""
        if self._roots is None:
            self._roots = self._build_roots()
        return self._roots

    def _build_roots(self) -> dict[str, T]:
        actor = ObjT(
            "actor",
            {"id": STRING, "type": STRING, "scopes": ListT(STRING), "attr": _attr_map()},
            required=frozenset({"id", "type", "scopes", "attr"}),
        )
        principal = ObjT(
            "principal",
            {
                "id": STRING,
                "tenant": STRING,
                "roles": ListT(STRING),
                "scopes": ListT(STRING),
                "attr": _named(self.principal_attr, "principal.attr"),
                "actor": ty.union(actor, NULL),
            },
            required=frozenset({"id", "tenant", "roles", "scopes", "attr", "actor"}),
        )
        resource = ObjT(
            "resource",
            {
                "kind": STRING,
                "id": STRING,
                "tenant": STRING,
                "attr": _named(self.resource_attr, "resource.attr"),
            },
            required=frozenset({"kind", "id", "tenant", "attr"}),
        )
        context = ObjT(
            "context",
            {
                "ip": STRING,
                "country": STRING,
                "time": TIMESTAMP,
                "attr": _named(self.context_attr, "context.attr"),
            },
            required=frozenset({"ip", "country", "attr"}),
        )
        return {
            "principal": principal,
            "P": principal,
            "resource": resource,
            "R": resource,
            "context": context,
            "actor": ty.union(actor, NULL),
            "action": STRING,
            "now": TIMESTAMP,
        }


def _named(t: T, name: str) -> T:
    if isinstance(t, ObjT):
        return ObjT(name, t.fields, t.closed, t.rest, t.required, t.schema_path, t.sealed)
    return t


@dataclass(slots=True)
class Result:
    type: T
    const: Any  # the value when the expression is a compile-time constant, else `NOT_CONST`
    issues: list[Issue]
    line: int = 1  # where the expression's outermost node is, for issues about its result
    column: int = 1


NOT_CONST = _NO


def check(source: str, env: TypeEnv, *, condition: bool = False) -> Result:
    """Type-check `source` (which must already compile)."""
    ast = A.parse(source)
    c = _Checker(env, None)
    t, k = c.c(ast)
    if condition and not c.can_be(t, BOOL):
        c.issue(NOT_BOOL, f"a condition must be `bool`, this is `{t.show()}`{_sometimes(t)}", ast)
    return Result(t, k, c.issues, ast.line or 1, ast.column or 1)


def _sometimes(t: T) -> str:
    """The way out for a value only sometimes a `bool` (a schema's `anyOf: [boolean, string]`):
    it fails at run time on its other members, where a comparison is just false."""
    if len(_concrete_members(t)) > 1 and BOOL in _concrete_members(t):
        return " (a `bool` only sometimes: `== true` is false for the other types)"
    return ""


def may_be(t: T, *names: str) -> bool:
    """Whether a value of type `t` may have one of the primitive types `names` (`"int"`,
    `"string"`...): like the condition check, only a type that can never be one is refused."""
    return any(
        isinstance(m, ty.Dyn) or (isinstance(m, Prim) and m.name in names) for m in ty.members(t)
    )


def may_be_list_of(t: T, *names: str) -> bool:
    """Whether a value of type `t` may be a list whose elements may have one of `names`."""
    return any(
        isinstance(m, ty.Dyn) or (isinstance(m, ty.ListT) and may_be(m.elem, *names))
        for m in ty.members(t)
    )


def is_list_literal(source: str) -> bool:
    """Whether `source` (which must already compile) is a list written out: `[a, b]`."""
    return isinstance(A.parse(source), A.ListLit)


class _Checker:
    def __init__(self, env: TypeEnv, variable: str | None) -> None:
        self.env = env
        self.var_name = variable
        self.issues: list[Issue] = []
        self.scope: dict[str, T] = {}
        self.roots = env.roots()
        # Arithmetic over one value (`of_one`): per node, the node (its id is not reused
        # while it lives), the value, and per member of its type what the node is.
        self._of_one: dict[int, tuple[A.Node, A.Node, list[tuple[T, T]]]] = {}

    def skip(self, m: T, t: T) -> bool:
        """Whether member `m` of type `t` is left unchecked: `dyn` (anything goes), or a `null`
        beside other members, which is null-safety (`has()`, `!= null`), not typing: the
        checker does not narrow `x != null && x.f()`, so checking it would refuse that."""
        if isinstance(m, ty.Nothing):
            return True  # no value has it: whatever is done with one never runs
        if self.env.strict:  # the author's `dyn` and nulls refused, the checker's `dyn` trusted
            return isinstance(m, ty.Dyn) and not isinstance(m, ty.Untyped)
        return isinstance(m, ty.Dyn) or (m == NULL and len(_concrete_members(t)) > 1)

    def dyn_used(self, node: A.Node, m: T) -> None:
        """A `dyn` member used where its type decides success: unchecked, but in strict mode."""
        if self.env.strict and isinstance(m, ty.Untyped):
            self.issue(NO_OVERLOAD, "a `dyn` is used here (strict mode)", node)

    def can_be(self, t: T, want: Prim) -> bool:
        """Whether a value of type `t` is a `want` whatever branch or member it came from: as
        for `combos`, every member must be one. `!(a ? a : b)` with `a: bool, b: string` was
        accepted for its `bool` member and failed at run time whenever `a` was false."""
        return all(m == want or self.skip(m, t) for m in _concrete_members(t))

    def issue(self, code: str, message: str, node: A.Node, *, warning: bool = False) -> None:
        line, column = node.line or 1, node.column or 1
        self.issues.append(Issue(code, message, line, column, self.var_name, warning))

    # --- nodes ------------------------------------------------------------------------------

    def c(self, node: A.Node) -> tuple[T, Any]:
        if isinstance(node, A.Lit):
            return ConstT(node.value), node.value
        if isinstance(node, A.Ident):
            return self.ident(node)
        if isinstance(node, A.Select):
            return self.select(node)
        if isinstance(node, A.Call):
            return self.call(node)
        if isinstance(node, A.ListLit):
            items = [self.c(i) for i in node.items]
            if items and all(k is not _NO for _, k in items):
                value = [k for _, k in items]
                return ConstT(value), value
            return ListT(ty.union(*(t for t, _ in items)) if items else ty.NOTHING), _NO
        if isinstance(node, A.MapLit):
            keys = [self.c(k)[0] for k, _ in node.entries]
            vals = [self.c(x)[0] for _, x in node.entries]
            for (key, _), kt in zip(node.entries, keys):
                bad = self.misfit(kt, _MAP_KEYS)
                if bad is not None:
                    self.issue(
                        NO_OVERLOAD,
                        f"a map key must be a `string`, `int`, `uint` or `bool`, not `{bad.show()}`",
                        key,
                    )
            if not keys:
                return MapT(ty.NOTHING, ty.NOTHING), _NO
            return MapT(ty.union(*keys), ty.union(*vals)), _NO
        return DYN, _NO

    def ident(self, node: A.Ident) -> tuple[T, Any]:
        name = node.name
        if name in self.scope:
            return self.scope[name], _NO
        name = name.lstrip(".")
        if name in ("C", "constants"):
            return ConstT(dict(self.env.constants), "constants"), dict(self.env.constants)
        if name == "data":
            return ConstT(dict(self.env.data), "data"), _NO
        root = self.roots.get(name)
        if root is not None:
            return root, _NO
        if name in v.TYPE_NAMES:
            return TYPE, _NO
        return DYN, _NO

    def select(self, node: A.Select) -> tuple[T, Any]:
        root = node.operand
        if isinstance(root, A.Ident) and root.name not in self.scope:
            base = root.name.lstrip(".")
            if base in ("V", "variables"):
                return self.variable(node.field, node)
        operand, k = self.c(root)
        return self.field_of(operand, k, node.field, node, _path(root))

    def field_of(
        self, operand: T, k: Any, name: str, node: A.Node, path: str | None
    ) -> tuple[T, Any]:
        if isinstance(operand, ConstT):
            value = operand.value
            if isinstance(value, dict):
                if name in value:
                    sub = value[name]
                    what = f"{operand.what}.{name}" if operand.what else ""
                    # Data is looked up at run time; constants fold. Both are checked here.
                    return ConstT(sub, what), (sub if k is not _NO else _NO)
                shown = f"{path}.{name}" if path else name
                self.issue(UNDEFINED_PATH, f"`{shown}` does not exist in the bundle", node)
                return DYN, _NO
            operand = ty.concrete(operand)
        out: list[T] = []
        for m in ty.members(operand):
            m = ty.concrete(m)
            if isinstance(m, ty.Dyn):
                self.dyn_used(node, m)
                return m, _NO
            if self.skip(m, operand):
                continue  # null-safety is not checked (see the module docstring)
            if isinstance(m, ObjT):
                if name in m.fields:
                    out.append(m.fields[name])
                elif not m.closed:
                    out.append(m.rest or ty.UNTYPED)
                else:
                    self._unknown_field(m, name, node, path)
                    return DYN, _NO
            elif isinstance(m, MapT):
                out.append(m.value)
            else:
                shown = path or "the value"
                self.issue(
                    NOT_SELECTABLE,
                    f"`{shown}` is `{m.show()}`, which has no field `{name}`",
                    node,
                )
                return DYN, _NO
        return (ty.union(*out) if out else DYN), _NO

    def _unknown_field(self, m: ObjT, name: str, node: A.Node, path: str | None) -> None:
        from difflib import get_close_matches

        close = get_close_matches(name, list(m.fields), n=1, cutoff=0.6)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        shown = f"{path}.{name}" if path else name
        if m.schema_path:
            self.issue(
                UNDECLARED_ATTRIBUTE,
                f"`{shown}` is not declared in schema `{m.schema_path}`{hint}",
                node,
            )
        else:
            known = ", ".join(f"`{f}`" for f in m.fields)
            self.issue(
                UNKNOWN_FIELD,
                f"`{shown}` does not exist: `{m.name or path}` has only {known}{hint}",
                node,
            )

    def variable(self, name: str, node: A.Node) -> tuple[T, Any]:
        env = self.env
        if name not in env.variables:
            return DYN, _NO  # the compiler reports undefined variables
        memo = env._var_memo.get(name)
        if memo is None:
            env._var_memo[name] = (DYN, _NO, [])  # a cycle (a compile error) ends here
            sub = _Checker(env, name)
            try:
                t, k = sub.c(A.parse(env.variables[name]))
            except Exception:
                t, k = DYN, _NO
            memo = (t, k, sub.issues)
            env._var_memo[name] = memo
        return memo[0], memo[1]

    # --- calls ------------------------------------------------------------------------------

    def call(self, node: A.Call) -> tuple[T, Any]:
        fn, args = node.fn, node.args
        if node.target is None:
            handler = _OPERATORS.get(fn)
            if handler is not None:
                return handler(self, node)
            if fn == "has":
                return self.has(node)
            return self.function(node, fn.lstrip("."), [self.c(a) for a in args])
        target = node.target
        if isinstance(target, A.Ident) and target.name not in self.scope:
            if target.name == "cel" and fn == "bind" and len(args) == 3:
                init, _ = self.c(args[1])
                name = args[0].name if isinstance(args[0], A.Ident) else ""
                return self.bound({name: init}, args[2])
            if target.name == "ip" and fn == "isCanonical":
                return self.function(node, "ip.isCanonical", [self.c(a) for a in args])
        if fn in _MACRO_NAMES and args and isinstance(args[0], A.Ident):
            return self.macro(node)
        recv = self.c(target)
        return self.method(node, fn, recv, [self.c(a) for a in args])

    def bound(self, binds: dict[str, T], body: A.Node) -> tuple[T, Any]:
        saved = self.scope
        self.scope = {**saved, **binds}
        try:
            return self.c(body)
        finally:
            self.scope = saved

    def has(self, node: A.Call) -> tuple[T, Any]:
        arg = node.args[0] if node.args else None
        if not isinstance(arg, A.Select):
            return BOOL, _NO
        root = arg.operand
        if isinstance(root, A.Ident) and root.name.lstrip(".") in (
            "C", "constants", "data", "V", "variables",
        ) and root.name not in self.scope:  # fmt: skip
            return BOOL, _NO
        operand, _ = self.c(root)
        for m in _concrete_members(operand):
            if self.skip(m, operand):
                continue
            if isinstance(m, ObjT):
                if m.closed and arg.field not in m.fields:
                    self._unknown_field(m, arg.field, arg, _path(root))
                    break
            elif not isinstance(m, MapT):  # a list too: `has()` wants a map
                self.issue(
                    NOT_SELECTABLE,
                    f"`{_path(root) or 'the value'}` is `{m.show()}`, which has no fields",
                    arg,
                )
                break
        return BOOL, _NO

    def macro(self, node: A.Call) -> tuple[T, Any]:
        """A comprehension: its variables are typed from the range (a list's elements, or its
        indexes and elements; a map's keys, or its keys and values), and every predicate
        (`all`'s, `filter`'s, `map`'s optional filter) must be `bool`."""
        fn, args = node.fn, node.args
        two = fn in ("transformList", "transformMap") or (fn in _QUANTIFIERS and len(args) == 3)
        names = [a.name if isinstance(a, A.Ident) else "" for a in args[: 2 if two else 1]]
        target, _ = self.c(node.target)  # type: ignore[arg-type]
        firsts: list[T] = []
        seconds: list[T] = []
        for m in _concrete_members(target):
            if isinstance(m, ty.Dyn):
                self.dyn_used(node, m)
                firsts.append(m)
                seconds.append(m)
            elif self.skip(m, target):
                continue
            elif isinstance(m, ListT):
                firsts.append(INT if two else m.elem)
                seconds.append(m.elem)
            elif isinstance(m, MapT):
                firsts.append(m.key)
                seconds.append(m.value)
            elif isinstance(m, ObjT):
                firsts.append(STRING)
                seconds.append(_any_value(m))
            else:
                self.issue(NO_OVERLOAD, f"`{fn}` needs a list or a map, got `{m.show()}`", node)
                return DYN, _NO
        first, second = ty.union(*firsts), ty.union(*seconds)
        binds = dict(zip(names, (first, second)))
        parts = [(self.bound(binds, a)[0], a) for a in args[len(names) :]]
        if fn in _QUANTIFIERS or fn == "filter" or len(parts) == 2:
            pred, where = parts[-1] if fn in _QUANTIFIERS else parts[0]
            if not self.can_be(pred, BOOL):
                self.issue(
                    NO_OVERLOAD,
                    f"the predicate of `{fn}` must be `bool`, got `{pred.show()}`{_sometimes(pred)}",
                    where,
                )  # fmt: skip
        if fn in _QUANTIFIERS:
            return BOOL, _NO
        if fn == "filter":
            return ListT(first), _NO
        if fn == "transformMap":
            return MapT(first, parts[-1][0]), _NO
        return ListT(parts[-1][0]), _NO  # map, transformList

    def function(self, node: A.Call, name: str, args: list[tuple[T, Any]]) -> tuple[T, Any]:
        k = _fold(_global_fn(name), [k for _, k in args])
        types = [t for t, _ in args]
        return self.signature(node, name, _GLOBAL_SIGS.get(name), types, member=False), k

    def method(
        self, node: A.Call, name: str, recv: tuple[T, Any], args: list[tuple[T, Any]]
    ) -> tuple[T, Any]:
        k = _fold(_member_fn(name), [recv[1], *(k for _, k in args)])
        types = [recv[0], *(t for t, _ in args)]
        return self.signature(node, name, _MEMBER_SIGS.get(name), types, member=True), k

    def signature(
        self, node: A.Call, name: str, overloads: Any, types: list[T], *, member: bool
    ) -> T:
        """Every member of every argument must fit the overload of that arity; its result."""
        sig = next((o for o in overloads or () if len(o.accepts) == len(types)), None)
        if sig is None:
            return DYN  # an unknown function or a wrong arity: a compile error
        for i, (t, ok) in enumerate(zip(types, sig.accepts)):
            bad = self.misfit(t, ok)
            if bad is not None:
                which = "receiver" if member and i == 0 else "argument"
                self.issue(
                    NO_OVERLOAD, f"no matching overload for `{name}`: {which} of type `{bad.show()}`",
                    node,
                )  # fmt: skip
                break
        return sig.result(types) if callable(sig.result) else sig.result

    def misfit(self, t: T, ok: Callable[[T], bool] | frozenset[T]) -> T | None:
        """The first member of `t` that `ok` refuses (for a list of given elements, the first
        list whose elements may be another type), or None."""
        for m in _concrete_members(t):
            if self.skip(m, t):
                continue
            if not (m in ok if isinstance(ok, frozenset) else ok(m)):
                return m
            if isinstance(ok, _ListOf) and isinstance(m, ListT) and self.misfit(m.elem, ok.elems):
                return m
        return None

    # --- operators --------------------------------------------------------------------------

    def logic(self, node: A.Call) -> tuple[T, Any]:
        (lt, lk), (rt, rk) = self.c(node.args[0]), self.c(node.args[1])
        for t, arg in ((lt, node.args[0]), (rt, node.args[1])):
            if not self.can_be(t, BOOL):
                self.issue(
                    NO_OVERLOAD,
                    f"no matching overload for `{_OP_TEXT[node.fn]}`: operand of type `{t.show()}`"
                    f"{_sometimes(t)}",
                    arg,
                )
        is_and = node.fn == "_&&_"
        for k in (lk, rk):
            if k is (not is_and):  # a decisive constant: `false && x`, `true || x`
                return BOOL, k
        if lk is not _NO and rk is not _NO and isinstance(lk, bool) and isinstance(rk, bool):
            return BOOL, (lk and rk) if is_and else (lk or rk)
        return BOOL, _NO

    def not_(self, node: A.Call) -> tuple[T, Any]:
        t, k = self.c(node.args[0])
        if not self.can_be(t, BOOL):
            self.issue(
                NO_OVERLOAD,
                f"no matching overload for `!`: operand of type `{t.show()}`{_sometimes(t)}",
                node,
            )
        return BOOL, (not k) if isinstance(k, bool) else _NO

    def neg(self, node: A.Call) -> tuple[T, Any]:
        t, _ = self.c(node.args[0])
        self.combos(node, "-", [t], lambda a: a in (INT, DOUBLE, DURATION))
        return ty.concrete(t), _NO

    def ternary(self, node: A.Call) -> tuple[T, Any]:
        (ct, ck), (at, ak), (bt, bk) = (self.c(a) for a in node.args)
        if not self.can_be(ct, BOOL):
            self.issue(
                NO_OVERLOAD,
                f"the condition of `?:` must be `bool`, got `{ct.show()}`{_sometimes(ct)}",
                node,
            )
        if ck is True:
            return at, ak
        if ck is False:
            return bt, bk
        return ty.union(at, bt), _NO

    def equality(self, node: A.Call) -> tuple[T, Any]:
        before = len(self.issues)
        (lt, lk), (rt, rk) = self.c(node.args[0]), self.c(node.args[1])
        if not _comparable_any(lt, rt):
            self.issue(
                NO_OVERLOAD,
                f"no matching overload for `{_OP_TEXT[node.fn]}` applied to "
                f"`({lt.show()}, {rt.show()})`: `{lt.show()}` and `{rt.show()}` values are never "
                "equal",
                _literal_side(node),
            )
        elif len(self.issues) == before:  # an operand already in error is not "untyped"
            self.untyped_literal(node, lt, rt)
        if lk is not _NO and rk is not _NO:
            try:
                same = v.eq(lk, rk)
                return BOOL, same if node.fn == "_==_" else not same
            except Exception:
                pass
        elif len(self.issues) == before:
            return BOOL, self.fixed_comparison(node)
        return BOOL, _NO

    def untyped_literal(self, node: A.Call, lt: T, rt: T) -> None:
        """PDP205: a schema-less attribute compared with a bool or number literal."""
        left, right = node.args
        for side, other, other_t in ((left, right, rt), (right, left, lt)):
            if (
                _is_attribute(side)
                and isinstance(other, A.Lit)
                and isinstance(ty.concrete(other_t), Prim)
                and ty.concrete(other_t) in (BOOL, INT, UINT, DOUBLE)
                and ty.is_dyn(lt if side is left else rt)
            ):
                self.issue(
                    UNTYPED_COMPARISON,
                    f"`{_path(side)}` has no declared type: `{_OP_TEXT[node.fn]} "
                    f"{_lit_text(other)}` is false (not an error) when it is a string such as "
                    f'`"{_lit_text(other)}"`; declare it in a schema',
                    _literal_side(node),
                    warning=True,
                )
                return

    def untyped_membership(self, node: A.Call, known: Any) -> None:
        """PDP205 for `in`: a schema-less attribute looked up in a list of bool or number
        literals (or a constant one) misses its string spelling as `==` does."""
        left, right = node.args
        if isinstance(left, A.Lit):  # `4 in R.attr.levels`: the list may hold `"4"`
            values, attr = [left.value], right
        elif isinstance(right, A.ListLit):
            values, attr = [i.value for i in right.items if isinstance(i, A.Lit)], left
        elif isinstance(known, list | tuple):
            values, attr = list(known), left
        else:
            return
        scalar = next((x for x in values if isinstance(x, bool | int | float)), None)
        if scalar is None:
            return
        text = ("true" if scalar else "false") if isinstance(scalar, bool) else str(scalar)
        where = f"`{text} in` it" if attr is right else f"`in` a list holding `{text}`"
        self.issue(
            UNTYPED_COMPARISON,
            f"`{_path(attr)}` has no declared type: {where} is false (not an error) when it "
            f'holds the string `"{text}"`; declare it in a schema',
            node,
            warning=True,
        )

    def ordering(self, node: A.Call) -> tuple[T, Any]:
        before = len(self.issues)
        (lt, lk), (rt, rk) = self.c(node.args[0]), self.c(node.args[1])
        self.combos(node, _OP_TEXT[node.fn], [lt, rt], _orderable)
        if lk is not _NO and rk is not _NO:
            try:
                fn = {"_<_": v.lt, "_<=_": v.le, "_>_": v.gt, "_>=_": v.ge}[node.fn]
                return BOOL, fn(lk, rk)
            except Exception:
                pass
        elif len(self.issues) == before:
            return BOOL, self.fixed_comparison(node)
        return BOOL, _NO

    def fixed_comparison(self, node: A.Call) -> Any:
        """PDP208 for a comparison whose result never depends on the request; its value when
        it is the same for every request that evaluates it without error, else `_NO`."""
        op, (left, right) = node.fn, node.args
        shown = _OP_TEXT[op]
        here = self.request_path(left)
        if _same(left, right) or (here is not None and here == self.request_path(right)):
            value = op in ("_==_", "_<=_", "_>=_")
            name = _path(left)
            what = f"`{name}`" if name else "an expression"
            sure = here in _ALWAYS_PRESENT
            when = "" if sure else f" whenever {what if name else 'it'} has a value"
            self.issue(
                FIXED_COMPARISON,
                f"`{shown}` compares {what} with itself: it is always `{_text(value)}`{when}",
                node,
                warning=True,
            )
            return value if sure else _NO
        for side, other in ((left, right), (right, left)):
            if not isinstance(other, A.Lit) or isinstance(other.value, bool):
                continue
            name = self.request_path(side)
            empty = other.value == "" and isinstance(other.value, str)
            if empty and op in ("_==_", "_!=_") and name in _NEVER_EMPTY:
                value = op == "_!=_"
                self.issue(
                    FIXED_COMPARISON,
                    f"`{_path(side)}` is never empty (a request without it is refused): "
                    f"`{_shown_with(side is left, _path(side), shown, _EMPTY)}` is always "
                    f"`{_text(value)}`",
                    node,
                    warning=True,
                )
                return value
            size_of = self.size_of_never_empty(side)
            if size_of is not None and isinstance(other.value, int):
                # size >= 1: the operator with the size on the left, against `other.value`.
                flip = {"_<_": "_>_", "_<=_": "_>=_", "_>_": "_<_", "_>=_": "_<=_"}
                k = other.value
                rel = flip.get(op, op) if side is right else op
                value = {
                    "_==_": False if k < 1 else None,
                    "_!=_": True if k < 1 else None,
                    "_>_": True if k < 1 else None,
                    "_>=_": True if k <= 1 else None,
                    "_<_": False if k <= 1 else None,
                    "_<=_": False if k < 1 else None,
                }[rel]
                if value is not None:
                    self.issue(
                        FIXED_COMPARISON,
                        f"`{size_of}` is never empty (a request without it is refused), so "
                        f"`{_shown_with(side is left, f'size({size_of})', shown, str(k))}` is "
                        f"always `{_text(value)}`",
                        node,
                        warning=True,
                    )
                    return value
        return _NO

    def request_path(self, node: A.Node) -> str | None:
        """`node` as a request field path with the long root names (`principal.id`), unless a
        comprehension variable shadows its root."""
        root = node
        while isinstance(root, A.Select):
            root = root.operand
        if not isinstance(root, A.Ident) or root.name in self.scope:
            return None
        p = _path(node)
        if p is None:
            return None
        head, dot, rest = p.partition(".")
        return _LONG_ROOT.get(head, head) + dot + rest

    def size_of_never_empty(self, node: A.Node) -> str | None:
        """The path of `size(X)` / `X.size()` when `X` is never empty."""
        if not isinstance(node, A.Call) or node.fn != "size":
            return None
        if node.target is None and len(node.args) == 1:
            arg = node.args[0]
        elif node.target is not None and not node.args:
            arg = node.target
        else:
            return None
        return _path(arg) if self.request_path(arg) in _NEVER_EMPTY else None

    def membership(self, node: A.Call) -> tuple[T, Any]:
        (xt, xk), (ct, ck) = self.c(node.args[0]), self.c(node.args[1])
        before = len(self.issues)
        x, c = node.args
        if isinstance(x, A.Lit) and _is_attribute(c) and ty.is_dyn(ct):
            self.untyped_membership(node, None)
        elems: list[T] = []
        for m in ty.members(ty.concrete(ct)):
            m = ty.concrete(m)
            if isinstance(m, ty.Dyn):
                self.dyn_used(node, m)
                return BOOL, _NO
            if isinstance(m, ListT):
                elems.append(m.elem)
            elif isinstance(m, MapT | ObjT):
                elems.append(m.key if isinstance(m, MapT) else STRING)
                # A map is looked up, and a lookup with a null, bytes, time or list fails.
                self.combos(node, "in", [xt, m], lambda a, _: a in _LOOKUP_KEYS)
            elif not self.skip(m, ct):
                self.issue(
                    NO_OVERLOAD,
                    f"no matching overload for `in` applied to `({xt.show()}, {m.show()})`: "
                    "the right side must be a list or a map",
                    node,
                )
                return BOOL, _NO
        if elems and len(self.issues) == before and not _comparable_any(xt, ty.union(*elems)):
            self.issue(
                NO_OVERLOAD,
                f"no matching overload for `in` applied to `({xt.show()}, {ct.show()})`: "
                f"a `{xt.show()}` is never an element of it",
                node,
            )
        elif _is_attribute(node.args[0]) and ty.is_dyn(xt):
            self.untyped_membership(node, ck)
        if xk is not _NO and ck is not _NO:
            try:
                return BOOL, v.in_(xk, ck)
            except Exception:
                pass
        return BOOL, _NO

    def arithmetic(self, node: A.Call) -> tuple[T, Any]:
        self._of_one.pop(id(node), None)  # of an earlier pass over it (another scope's types)
        (lt, _), (rt, _) = self.c(node.args[0]), self.c(node.args[1])
        rule = _ARITH[node.fn]
        left, right = self.of_one(node.args[0], lt), self.of_one(node.args[1], rt)
        if [m for m, _ in left[1]] == [m for m, _ in right[1]] and _same_value(left[0], right[0]):
            return self.arithmetic_of_one(node, left[0], left[1], right[1], rule)
        self.combos(node, _OP_TEXT[node.fn], [lt, rt], lambda a, b: rule(a, b) is not None)
        outs = []
        for a, b in product(_concrete_members(lt), _concrete_members(rt)):
            if isinstance(a, ty.Dyn) or isinstance(b, ty.Dyn):
                return (a if isinstance(a, ty.Dyn) else b), _NO
            r = rule(a, b)
            if r is not None:
                outs.append(r)
        return (ty.union(*outs) if outs else DYN), _NO

    def of_one(self, node: A.Node, t: T) -> tuple[A.Node, list[tuple[T, T]]]:
        """`node` as arithmetic over one value `X`: `X`, and per member `m` of `X`'s type what
        `node` is when `X` is an `m`. A sum (or any arithmetic) of copies of `X` is recorded
        by `arithmetic_of_one`; anything else is `X` itself, a variable naming an expression
        read as that expression. Members `skip` leaves unchecked are left out, but `dyn`."""
        kept = self._of_one.get(id(node))
        if kept is not None and kept[0] is node:
            return kept[1], kept[2]
        pairs = [
            (m, m) for m in _concrete_members(t) if isinstance(m, ty.Dyn) or not self.skip(m, t)
        ]
        return self.aliased(node), pairs

    def aliased(self, node: A.Node) -> A.Node:
        """`node`, or when it is `V.name`, the expression that variable names (followed): one
        value, unless a comprehension here binds a name the expression reads (a variable is
        evaluated outside every comprehension)."""
        seen: set[str] = set()
        while (
            isinstance(node, A.Select)
            and isinstance(node.operand, A.Ident)
            and node.operand.name not in self.scope
            and node.operand.name.lstrip(".") in ("V", "variables")
            and node.field in self.env.variables
            and node.field not in seen
        ):
            seen.add(node.field)
            try:
                expr = A.parse(self.env.variables[node.field])
            except Exception:
                return node
            if self.scope and not _idents(expr).isdisjoint(self.scope):
                return node
            node = expr
        return node

    def arithmetic_of_one(
        self,
        node: A.Call,
        value: A.Node,
        left: list[tuple[T, T]],
        right: list[tuple[T, T]],
        rule: Callable[[T, T], T | None],
    ) -> tuple[T, Any]:
        """`x + x`, `(x + x) * x`: every operand is one value `x`, so of one member of its
        type, never two. A JSON number is an `int` or a `double` (its text decides), and `int
        + double` has no overload, but `R.attr.n + R.attr.n` adds an int to an int or a double
        to a double. Each member `m` of `x`'s type is followed through both sides."""
        outs, pairs = [], []
        for (m, a), (_, b) in zip(left, right, strict=True):
            if isinstance(a, ty.Dyn) or isinstance(b, ty.Dyn):
                return (a if isinstance(a, ty.Dyn) else b), _NO
            r = rule(a, b)
            if r is None:
                self.issue(
                    NO_OVERLOAD,
                    f"no matching overload for `{_OP_TEXT[node.fn]}` applied to "
                    f"`({a.show()}, {b.show()})`",
                    node,
                )
                return DYN, _NO
            outs.append(r)
            pairs.append((m, r))
        self._of_one[id(node)] = (node, value, pairs)
        return (ty.union(*outs) if outs else DYN), _NO

    def index(self, node: A.Call) -> tuple[T, Any]:
        (ct, ck), (it, ik) = self.c(node.args[0]), self.c(node.args[1])
        if isinstance(ik, str) and (isinstance(ct, ConstT) or isinstance(ty.concrete(ct), ObjT)):
            return self.field_of(ct, ck, ik, node, _path(node.args[0]))
        out: list[T] = []
        for m in _concrete_members(ct):
            if isinstance(m, ty.Dyn):
                self.dyn_used(node, m)
                return m, _NO
            if self.skip(m, ct):
                continue
            if isinstance(m, ListT):
                self.combos(node, "[]", [it], lambda a: a in (INT, UINT, DOUBLE))
                out.append(m.elem)
            elif isinstance(m, MapT):
                self.combos(node, "[]", [it], lambda a, key=m.key: _is_key_of(a, key))
                out.append(m.value)
            elif isinstance(m, ObjT):
                self.combos(node, "[]", [it], lambda a: a == STRING)
                out.append(_any_value(m))
            else:
                self.issue(NO_OVERLOAD, f"no matching overload for `[]` on `{m.show()}`", node)
                return DYN, _NO
        return (ty.union(*out) if out else DYN), _NO

    def combos(self, node: A.Node, op: str, types: list[T], ok: Callable[..., bool]) -> None:
        """Every combination of (non-null, non-dyn) member types must have an overload."""
        sets = [_concrete_members(t) for t in types]
        for combo in product(*sets):
            if any(self.skip(m, t) for m, t in zip(combo, types)):
                continue
            if not ok(*combo):
                shown = ", ".join(m.show() for m in combo)
                self.issue(
                    NO_OVERLOAD, f"no matching overload for `{op}` applied to `({shown})`", node
                )
                return


def _idents(node: A.Node) -> set[str]:
    """Every identifier `node` reads, its comprehensions' own variables included."""
    out: set[str] = set()
    stack: list[Any] = [node]
    while stack:
        x = stack.pop()
        if isinstance(x, A.Ident):
            out.add(x.name)
        stack.extend(A.children(x))
    return out


def _same_value(a: A.Node, b: A.Node) -> bool:
    """Whether two expressions are written alike (positions aside), so they have one value:
    CEL has no side effects, and the two sides of one operator see the same bindings."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, A.Lit):
            assert isinstance(y, A.Lit)
            if type(x.value) is not type(y.value) or x.value != y.value:
                return False
        elif isinstance(x, A.Ident):
            assert isinstance(y, A.Ident)
            if x.name != y.name:
                return False
        elif isinstance(x, A.Select):
            assert isinstance(y, A.Select)
            if x.field != y.field:
                return False
            stack.append((x.operand, y.operand))
        elif isinstance(x, A.Call):
            assert isinstance(y, A.Call)
            if (
                x.fn != y.fn
                or len(x.args) != len(y.args)
                or (x.target is None) != (y.target is None)
            ):
                return False
            stack.extend(zip(x.args, y.args))
            if x.target is not None and y.target is not None:
                stack.append((x.target, y.target))
        elif isinstance(x, A.ListLit):
            assert isinstance(y, A.ListLit)
            if len(x.items) != len(y.items):
                return False
            stack.extend(zip(x.items, y.items))
        elif isinstance(x, A.MapLit):
            assert isinstance(y, A.MapLit)
            if len(x.entries) != len(y.entries):
                return False
            for (xk, xv), (yk, yv) in zip(x.entries, y.entries):
                stack += [(xk, yk), (xv, yv)]
        elif isinstance(x, A.Struct):
            assert isinstance(y, A.Struct)
            if x.type_name != y.type_name or [f for f, _ in x.fields] != [f for f, _ in y.fields]:
                return False
            stack.extend((xv, yv) for (_, xv), (_, yv) in zip(x.fields, y.fields))
        else:
            return False
    return True


def _concrete_members(t: T) -> list[T]:
    return [ty.concrete(m) for m in ty.members(ty.concrete(t))]


def _comparable(a: T, b: T) -> bool:
    a, b = ty.concrete(a), ty.concrete(b)
    if isinstance(a, ty.Dyn) or isinstance(b, ty.Dyn) or a == NULL or b == NULL:
        return True
    if a in NUMERIC and b in NUMERIC:
        return True
    if isinstance(a, ty.Union) or isinstance(b, ty.Union):
        return _comparable_any(a, b)
    if isinstance(a, ListT) and isinstance(b, ListT):
        return _comparable(a.elem, b.elem)
    if isinstance(a, MapT | ObjT) and isinstance(b, MapT | ObjT):
        return True
    return a == b


# The keys a map literal may have (CEL's map key types).
_MAP_KEYS = frozenset({STRING, BOOL, INT, UINT})
# What a map can be looked up with (`m[k]`, `k in m`): its key types, and a double that is a
# whole number (CEL's heterogeneous keys). Anything else is an error even on an empty map.
_LOOKUP_KEYS = frozenset({STRING, BOOL, INT, UINT, DOUBLE})


def _is_key_of(a: T, key: T) -> bool:
    return a in _LOOKUP_KEYS and _comparable_any(a, key)


def _comparable_any(a: T, b: T) -> bool:
    return any(_comparable(x, y) for x in _concrete_members(a) for y in _concrete_members(b))


def _orderable(a: T, b: T) -> bool:
    if a in NUMERIC and b in NUMERIC:
        return True
    return a == b and a in (STRING, BYTES, BOOL, TIMESTAMP, DURATION)


def _arith_add(a: T, b: T) -> T | None:
    if a == b and a in (INT, UINT, DOUBLE, STRING, BYTES, DURATION):
        return a
    if isinstance(a, ListT) and isinstance(b, ListT):
        return ListT(ty.union(a.elem, b.elem))
    if {a, b} == {TIMESTAMP, DURATION}:
        return TIMESTAMP
    return None


def _arith_sub(a: T, b: T) -> T | None:
    if a == b and a in (INT, UINT, DOUBLE, DURATION):
        return a
    if a == TIMESTAMP and b == TIMESTAMP:
        return DURATION
    if a == TIMESTAMP and b == DURATION:
        return TIMESTAMP
    return None


def _arith_mul(a: T, b: T) -> T | None:
    return a if a == b and a in (INT, UINT, DOUBLE) else None


def _arith_mod(a: T, b: T) -> T | None:
    return a if a == b and a in (INT, UINT) else None


_ARITH: dict[str, Callable[[T, T], T | None]] = {
    "_+_": _arith_add,
    "_-_": _arith_sub,
    "_*_": _arith_mul,
    "_/_": _arith_mul,
    "_%_": _arith_mod,
}
_OP_TEXT = {
    "_==_": "==", "_!=_": "!=", "_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">=",
    "_+_": "+", "_-_": "-", "_*_": "*", "_/_": "/", "_%_": "%", "_&&_": "&&", "_||_": "||",
}  # fmt: skip

_OPERATORS: dict[str, Callable[[_Checker, A.Call], tuple[T, Any]]] = {
    "_&&_": _Checker.logic,
    "_||_": _Checker.logic,
    "!_": _Checker.not_,
    "-_": _Checker.neg,
    "_?_:_": _Checker.ternary,
    "_==_": _Checker.equality,
    "_!=_": _Checker.equality,
    "_<_": _Checker.ordering,
    "_<=_": _Checker.ordering,
    "_>_": _Checker.ordering,
    "_>=_": _Checker.ordering,
    "@in": _Checker.membership,
    "_[_]": _Checker.index,
    **{op: _Checker.arithmetic for op in _ARITH},
}
_MACRO_NAMES = frozenset(
    ["all", "exists", "exists_one", "existsOne", "map", "filter", "transformList", "transformMap"]
)
_QUANTIFIERS = frozenset(["all", "exists", "exists_one", "existsOne"])


def _any_value(m: ObjT) -> T:
    """The value under a key computed at run time: any field's, or anything when the object
    may hold other keys (a schema's open object is closed to the checker's field names, not
    to the request, which may carry undeclared keys)."""
    if not m.sealed:
        return ty.UNTYPED
    found = [*m.fields.values(), *([m.rest or ty.UNTYPED] if not m.closed else [])]
    return ty.union(*found) if found else ty.NOTHING


def _is(*allowed: T) -> Callable[[T], bool]:
    return lambda m: m in allowed


def _list(m: T) -> bool:
    return isinstance(m, ListT)


class _ListOf:
    """A list whose elements all have one of the types `elems` (`join`'s strings)."""

    def __init__(self, *elems: T) -> None:
        self.elems = frozenset(elems)

    def __call__(self, m: T) -> bool:
        return isinstance(m, ListT)


def _sized(m: T) -> bool:
    return m in (STRING, BYTES) or isinstance(m, ListT | MapT | ObjT)


def _any(_: T) -> bool:
    return True


def _elems_of_first(types: list[T]) -> T:
    """`intersect(a, b)`: a list of `a`'s elements."""
    elems = []
    for m in _concrete_members(types[0]):
        if isinstance(m, ty.Dyn):
            return ListT(m)
        if isinstance(m, ListT):
            elems.append(m.elem)
    return ListT(ty.union(*elems) if elems else ty.NOTHING)


class _Sig(NamedTuple):
    """One overload: a predicate per argument (the receiver first for a member function),
    and the result type (or a function of the argument types giving it)."""

    accepts: tuple[Callable[[T], bool], ...]
    result: T | Callable[[list[T]], T]


def _sig(result: T | Callable[[list[T]], T], *accepts: Callable[[T], bool]) -> _Sig:
    return _Sig(accepts, result)


_STR = _is(STRING)
_INT = _is(INT)  # an index or count argument: the library takes an `int`, not a `uint`
_TS = _is(TIMESTAMP)
_TIME = _is(TIMESTAMP, DURATION)
_IP = _is(IP)
_CIDR = _is(CIDR)
# Every function of pdp.cel._library, by name: its overloads, one per arity at most (a test
# holds the two tables together). A function the checker did not know would have a `dyn`
# result and unchecked arguments: `R.attr.n.split(",")` was accepted and failed at run time.
_GLOBAL_SIGS: dict[str, tuple[_Sig, ...]] = {
    "size": (_sig(INT, _sized),),
    "int": (_sig(INT, _is(INT, UINT, DOUBLE, STRING, BOOL, TIMESTAMP)),),
    "uint": (_sig(UINT, _is(INT, UINT, DOUBLE, STRING)),),
    "double": (_sig(DOUBLE, _is(INT, UINT, DOUBLE, STRING)),),
    "string": (
        _sig(STRING, _is(INT, UINT, DOUBLE, STRING, BOOL, BYTES, TIMESTAMP, DURATION, IP, CIDR)),
    ),
    "bytes": (_sig(BYTES, _is(BYTES, STRING)),),
    "bool": (_sig(BOOL, _is(BOOL, STRING)),),
    "type": (_sig(TYPE, _any),),
    "dyn": (_sig(ty.UNTYPED, _any),),
    "timestamp": (_sig(TIMESTAMP, _is(STRING, TIMESTAMP, INT)),),
    "duration": (_sig(DURATION, _is(STRING, DURATION)),),
    "matches": (_sig(BOOL, _STR, _STR),),
    "ip": (_sig(IP, _STR),),
    "cidr": (_sig(CIDR, _STR),),
    "isIP": (_sig(BOOL, _STR),),
    "isCIDR": (_sig(BOOL, _STR),),
    "ip.isCanonical": (_sig(BOOL, _STR),),
    "inCIDRs": (_sig(BOOL, _is(STRING, IP), _ListOf(STRING, CIDR)),),
    "hasAll": (_sig(BOOL, _list, _list),),
    "hasAny": (_sig(BOOL, _list, _list),),
    "isSubset": (_sig(BOOL, _list, _list),),
    "intersect": (_sig(_elems_of_first, _list, _list),),
    "country": (_sig(STRING, _is(STRING, IP)),),
}
_DATE_PARTS = (
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
)
_CLOCK_PARTS = ("getHours", "getMinutes", "getSeconds", "getMilliseconds")
_MEMBER_SIGS: dict[str, tuple[_Sig, ...]] = {
    "size": (_sig(INT, _sized),),
    "contains": (_sig(BOOL, _STR, _STR),),
    "startsWith": (_sig(BOOL, _STR, _STR),),
    "endsWith": (_sig(BOOL, _STR, _STR),),
    "matches": (_sig(BOOL, _STR, _STR),),
    "lowerAscii": (_sig(STRING, _STR),),
    "upperAscii": (_sig(STRING, _STR),),
    "trim": (_sig(STRING, _STR),),
    "reverse": (_sig(STRING, _STR),),
    "split": (_sig(ListT(STRING), _STR, _STR), _sig(ListT(STRING), _STR, _STR, _INT)),
    "join": (_sig(STRING, _ListOf(STRING)), _sig(STRING, _ListOf(STRING), _STR)),
    "replace": (_sig(STRING, _STR, _STR, _STR), _sig(STRING, _STR, _STR, _STR, _INT)),
    "indexOf": (_sig(INT, _STR, _STR), _sig(INT, _STR, _STR, _INT)),
    "lastIndexOf": (_sig(INT, _STR, _STR), _sig(INT, _STR, _STR, _INT)),
    "substring": (_sig(STRING, _STR, _INT), _sig(STRING, _STR, _INT, _INT)),
    "charAt": (_sig(STRING, _STR, _INT),),
    "containsAll": (_sig(BOOL, _list, _list),),
    "containsAny": (_sig(BOOL, _list, _list),),
    "containsIP": (_sig(BOOL, _CIDR, _is(IP, STRING)),),
    "containsCIDR": (_sig(BOOL, _CIDR, _is(CIDR, STRING)),),
    "ip": (_sig(IP, _CIDR),),
    "masked": (_sig(CIDR, _CIDR),),
    "prefixLength": (_sig(INT, _CIDR),),
    "family": (_sig(INT, _IP),),
    **{
        name: (_sig(BOOL, _IP),)
        for name in (
            "isUnspecified",
            "isLoopback",
            "isGlobalUnicast",
            "isLinkLocalUnicast",
            "isLinkLocalMulticast",
        )
    },
    # A date part of a timestamp, in UTC or the named zone; a clock part of a duration too,
    # but a duration has no zone.
    **{name: (_sig(INT, _TS), _sig(INT, _TS, _STR)) for name in _DATE_PARTS},
    **{name: (_sig(INT, _TIME), _sig(INT, _TS, _STR)) for name in _CLOCK_PARTS},
}


def _global_fn(name: str) -> Any:
    from pdp.cel._library import GLOBALS

    return GLOBALS.get(name)


def _member_fn(name: str) -> Any:
    from pdp.cel._library import MEMBERS

    return MEMBERS.get(name)


# Cheap, request-free results only: `size`, string tests, conversions of constants. A
# function the library marks impure (or one that errors) is left to run time.
def _fold(spec: Any, args: list[Any]) -> Any:
    if spec is None or not spec.pure or any(a is _NO for a in args):
        return _NO
    if len(args) not in spec.arities:
        return _NO
    try:
        value = spec.impl(*args)
    except Exception:
        return _NO
    return value if isinstance(value, bool | int | float | str) else _NO


def _same(a: A.Node, b: A.Node) -> bool:
    """Whether two expressions are written the same (positions aside). Two literals fold
    already; a comparison of two of them is not "the same expression"."""
    if type(a) is not type(b) or isinstance(a, A.Lit):
        return False
    return _same_tree(a, b)


def _same_tree(a: A.Node, b: A.Node) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, A.Lit):
        return type(a.value) is type(b.value) and a.value == b.value  # type: ignore[attr-defined]
    if isinstance(a, A.Ident):
        return a.name.lstrip(".") == b.name.lstrip(".")  # type: ignore[attr-defined]
    if isinstance(a, A.Select):
        return a.field == b.field and _same_tree(a.operand, b.operand)  # type: ignore[attr-defined]
    if isinstance(a, A.Call):
        assert isinstance(b, A.Call)
        if a.fn != b.fn or len(a.args) != len(b.args) or (a.target is None) != (b.target is None):
            return False
        if a.target is not None and not _same_tree(a.target, b.target):  # type: ignore[arg-type]
            return False
        return all(_same_tree(x, y) for x, y in zip(a.args, b.args))
    if isinstance(a, A.ListLit):
        assert isinstance(b, A.ListLit)
        return len(a.items) == len(b.items) and all(map(_same_tree, a.items, b.items))
    if isinstance(a, A.MapLit):
        assert isinstance(b, A.MapLit)
        return len(a.entries) == len(b.entries) and all(
            _same_tree(k1, k2) and _same_tree(v1, v2)
            for (k1, v1), (k2, v2) in zip(a.entries, b.entries)
        )
    return False  # a message literal: not worth the risk of a wrong "same"


_EMPTY = '""'


def _shown_with(left: bool, side: str, op: str, literal: str) -> str:
    return f"{side} {op} {literal}" if left else f"{literal} {op} {side}"


def _text(value: bool) -> str:
    return "true" if value else "false"


_LONG_ROOT = {"P": "principal", "R": "resource"}
# Request fields always present with a value of a type that equals itself (no double, so
# no NaN): the parser fills each one in (`""` when a tenant, ip or country is not given).
_ALWAYS_PRESENT = frozenset(
    [
        "principal.id", "principal.tenant", "principal.roles", "principal.scopes",
        "resource.kind", "resource.id", "resource.tenant",
        "context.ip", "context.country", "action", "now",
    ]
)  # fmt: skip
# Ids the request parser refuses empty (pdp/model/request.py `_id`, `required=True`); a
# tenant, ip or country may be `""`.
_NEVER_EMPTY = frozenset(["principal.id", "resource.kind", "resource.id", "action"])


def _path(node: A.Node) -> str | None:
    parts: list[str] = []
    while True:
        if isinstance(node, A.Select):
            parts.append(node.field)
            node = node.operand
        elif isinstance(node, A.Call) and node.fn == "_[_]" and isinstance(node.args[1], A.Lit):
            parts.append(str(node.args[1].value))
            node = node.args[0]
        else:
            break
    if not isinstance(node, A.Ident):
        return None
    parts.append(node.name.lstrip("."))
    return ".".join(reversed(parts))


_ATTR_ROOTS = ("P.attr.", "principal.attr.", "R.attr.", "resource.attr.", "context.attr.",
               "actor.attr.", "principal.actor.attr.", "P.actor.attr.")  # fmt: skip


def _is_attribute(node: A.Node) -> bool:
    p = _path(node)
    return p is not None and p.startswith(_ATTR_ROOTS)


def _lit_text(node: A.Lit) -> str:
    value = node.value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _literal_side(node: A.Call) -> A.Node:
    """Where a binary operator's caret goes: its literal operand when it has one."""
    for arg in reversed(node.args):
        if isinstance(arg, A.Lit) and arg.line is not None:  # bool literals carry no position
            return arg
    return node


def names_used(source: str) -> set[tuple[str, str]]:
    """The constants, variables and data entries an expression names directly:
    {("C", name), ("V", name), ("data", name)}. Variables are not followed."""
    out: set[tuple[str, str]] = set()
    stack: list[Any] = [A.parse(source)]
    while stack:
        node = stack.pop()
        if isinstance(node, A.Select):
            root = node.operand
            if isinstance(root, A.Ident):
                base = root.name.lstrip(".")
                kind = {"C": "C", "constants": "C", "V": "V", "variables": "V", "data": "data"}
                if base in kind:
                    out.add((kind[base], node.field))
        stack.extend(A.children(node))
    return out
