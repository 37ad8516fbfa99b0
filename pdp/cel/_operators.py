"""Code generation for CEL operators (a mixin of the Compiler).

Comparisons and membership get inline fast paths guarded by a class test, under which Python's
operator is exactly CEL's; everything else calls the runtime in `_values`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pdp.cel import _ast as A
from pdp.cel import _values as v
from pdp.cel._budget import CHARS_PER_ITERATION, ELEMENTS_PER_ITERATION
from pdp.cel._code import Code
from pdp.errors import CelEvalError

if TYPE_CHECKING:
    from pdp.cel._compile import Compiler

    _Base = Compiler
else:
    _Base = object


class Operators(_Base):
    # --- operators --------------------------------------------------------------------------

    def logic(self, node: A.Call, tail: bool = False) -> Code:
        """`&&`/`||`. With `tail` (the whole expression), emit `return`s instead of assigning a
        result: shorter Python, which is what Python's compile() time goes by."""
        is_and = node.fn == "_&&_"
        stop, go = ("False", "True") if is_and else ("True", "False")
        out = self.tmp("r")
        operands = _chain(node)
        if len(operands) > 2:
            # A flat chain: one pass that stops at the first absorbing value, so long
            # `a && b && c ...` chains do not nest Python blocks.
            temps: list[str] = []
            if not tail:
                self.emit("while True:")
            with self.block(counts=not tail, indent=not tail):
                for op in operands:
                    t = self.guarded(op)
                    temps.append(t)
                    self.emit(f"if {t} is {stop}:")
                    with self.block(counts=False):
                        if tail:
                            self.emit(f"return {stop}")
                        else:
                            self.emit(f"{out} = {stop}")
                            self.emit("break")
                all_go = " and ".join(f"{t} is {go}" for t in temps)
                result = f"{go} if {all_go} else _logic_error({node.fn!r}, {', '.join(temps)})"
                if tail:
                    self.emit(f"return {result}")
                else:
                    self.emit(f"{out} = {result}")
                    self.emit("break")
            return Code(out, "bool")
        a = self.guarded(operands[0])
        self.emit(f"if {a} is {stop}:")
        with self.block(counts=False):
            self.emit(f"return {stop}" if tail else f"{out} = {stop}")
        if tail:
            b = self.guarded(operands[1])
            self.emit(f"if {b} is {stop}:")
            with self.block(counts=False):
                self.emit(f"return {stop}")
            self.emit(
                f"return {go} if {a} is {go} and {b} is {go} "
                f"else _logic_error({node.fn!r}, {a}, {b})"
            )
            return Code(out, "bool")
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
        w = "_ne_w" if negate else "_eq_w"
        bounded = _bounded(a) or _bounded(b)
        if bounded and (
            a.kind in _SIMPLE
            or b.kind in _SIMPLE
            or (a.kind == b.kind and a.kind in ("int", "bool"))
        ):
            return Code(f"({a.expr} {op} {b.expr})", "bool")
        if a.kind == "null" or b.kind == "null":
            other = b if a.kind == "null" else a
            return Code(f"({other.expr} is {'not ' if negate else ''}None)", "bool")
        ta, tb = self.tmp(), self.tmp()
        if not bounded and (a.kind in _SEQ or b.kind in _SEQ):
            # Two strings (or bytes) of the same length are compared byte by byte: a memcmp,
            # ~5 us for 64 Ki characters stored 4 bytes wide, which a condition can repeat
            # thousands of times. A long one is charged (`_eq_work`), a short one is not.
            # (`and` over a first test that always holds, not `&` of two bools: cheaper, and
            # both temporaries are set whatever the second says.)
            if a.kind in _SEQ:
                return Code(
                    f"({ta} {op} {b.expr} if len({ta} := {a.expr}) < {CHARS_PER_ITERATION} "
                    f"else {w}({ta}, {b.expr}, {self.budget()}))",
                    "bool",
                )
            return Code(
                f"({ta} {op} {tb} if ({ta} := {a.expr}) is not _NOERR and "
                f"len({tb} := {b.expr}) < {CHARS_PER_ITERATION} "
                f"else {w}({ta}, {tb}, {self.budget()}))",
                "bool",
            )
        plain = f"{'_ne' if negate else '_eq'}({ta}, {tb})"
        # Comparing two lists or maps costs their size, two long strings their length:
        # charged, in a comprehension body or not (`a == b || a == b ...` over two request
        # lists compared 10^7 elements in one condition with nothing to stop it). A scalar or
        # a short constant on either side differs or matches at once: nothing to charge.
        if bounded:
            slow = plain
            short = ""
        else:
            charged = f"{w}({ta}, {tb}, {self.budget()})"
            slow = charged if self.loops else f"({plain} if {_small_test(ta)} else {charged})"
            short = f" and len({ta}) < {CHARS_PER_ITERATION}"
        return Code(
            f"({ta} {op} {tb} if ({ta} := {a.expr}).__class__ is ({tb} := {b.expr}).__class__ "
            f"is str{short} else {slow})",
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
        bounded = _bounded(a) or _bounded(b)
        if a.kind == b.kind and a.kind in ("int", "double", "uint"):
            return Code(f"({a.expr} {op} {b.expr})", "bool")
        ta, tb = self.tmp(), self.tmp()
        # Two long strings are compared character by character up to their first difference:
        # ~0.1 ms for 64 Ki characters stored in different widths (a memcmp in the same
        # width, bytes too), which a condition can repeat thousands of times. Charged by the
        # shorter one's length once one is long (`_order_work`); a short one, or a short
        # constant on either side, bounds the work and is not.
        charged = f"_ord_w(_{fn}, {ta}, {tb}, {{budget}})"
        if a.kind == b.kind == "string":
            if bounded:
                return Code(f"({a.expr} {op} {b.expr})", "bool")
            return Code(
                f"({ta} {op} {b.expr} if len({ta} := {a.expr}) < {CHARS_PER_ITERATION} "
                f"else _ord_w(_{fn}, {ta}, {b.expr}, {self.budget()}))",
                "bool",
            )
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
        # Same class among int/double/string: Python's operator is CEL's.
        head = f"({ta} {op} {tb} if ({ta} := {a.expr}).__class__ is ({tb} := {b.expr}).__class__ "
        if bounded:
            return Code(f"{head}in _ORD else _{fn}({ta}, {tb}))", "bool")
        return Code(
            f"{head}in _ORD and ({ta}.__class__ is not str or len({ta}) < {CHARS_PER_ITERATION}) "
            f"else _{fn}({ta}, {tb}) if {ta}.__class__ not in _SEQS or len({ta}) < "
            f"{CHARS_PER_ITERATION} else {charged.format(budget=self.budget())})",
            "bool",
        )

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
        if self.loops:  # a list scan costs the list's size: charged in a body
            return Code(f"_in_w({a.expr}, {b.expr}, _budget)", "bool")
        # Elsewhere too, unless the list is short or a map, and what it looks for a scalar or
        # a short string (a few short strings compared are a few memcmps, as `==` is; a map
        # lookup of a long string hashes it and compares it with the key it finds): `x in l`
        # 600 times over a request list of 20,000 ran with nothing to stop it.
        tb = self.tmp()
        few = (
            f"({tb} := {b.expr}).__class__ is dict "
            f"or {tb}.__class__ in _LT and len({tb}) < {ELEMENTS_PER_ITERATION}"
        )
        if a.const or _is_simple(a.expr):
            ta = a.expr
            if _bounded(a):
                cheap = few
            elif a.kind == "string":
                cheap = f"({few}) and len({ta}) < {CHARS_PER_ITERATION}"
            else:
                cheap = f"({few}) and {_small_test(ta)}"
        else:
            ta = self.tmp()
            # `&`, not `and`: both sides run, so both temporaries are set whatever the first is.
            if _bounded(a):
                test = f"({ta} := {a.expr}) is not _NOERR"
            elif a.kind == "string":
                test = f"len({ta} := {a.expr}) < {CHARS_PER_ITERATION}"
            else:
                test = _small_test(ta).replace(ta, f"({ta} := {a.expr})", 1)
            cheap = f"({test}) & ({few})"
        fast = f"{ta} in {tb}" if a.kind == "string" else f"_in({ta}, {tb})"
        return Code(f"({fast} if {cheap} else _in_w({ta}, {tb}, {self.budget()}))", "bool")

    def index(self, node: A.Call) -> Code:
        a, b = (self.c(x) for x in node.args)
        if a.const and b.const:
            try:
                return self.const(v.index(a.value, b.value))
            except CelEvalError:
                pass
        # A map lookup hashes a string key (once per string) and compares it with the key of
        # the same hash it finds (a memcmp, ~5 us for 64 Ki characters 4 bytes wide, on every
        # lookup): `R.attr.m[R.attr.k]` repeated by a long condition is charged once the key
        # is long. A constant key is as long as the policy wrote it: never charged.
        if _bounded(b):
            if b.kind == "string":
                # For a str key, Python's dict lookup is CEL's; on any other type it raises.
                return Code(f"{a.expr}[{b.expr}]")
            return Code(f"_index({a.expr}, {b.expr})")
        ta, tb = self.tmp(), self.tmp()
        charged = f"_index_w({ta}, {tb}, {self.budget()})"
        if b.kind == "string":
            return Code(
                f"({ta}[{tb}] if ({ta} := {a.expr}) is not _NOERR and "
                f"len({tb} := {b.expr}) < {CHARS_PER_ITERATION} else {charged})"
            )
        return Code(
            f"(_index({ta}, {tb}) if ({ta} := {a.expr}) is not _NOERR and "
            f"(({tb} := {b.expr}).__class__ is not str or len({tb}) < {CHARS_PER_ITERATION}) "
            f"else {charged})"
        )

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
        if fn != "add" or kind in ("int", "double", "uint") or _scalar(a, b, strings=False):
            return Code(f"_{fn}({a.expr}, {b.expr})", kind)
        if self.loops:
            return Code(f"_add_w({a.expr}, {b.expr}, _budget)", kind)  # what it builds
        # Elsewhere, charged when what it builds is a list or map or a long string.
        ta, tb = self.tmp(), self.tmp()
        cheap = (
            f"({ta} := {a.expr}).__class__ is ({tb} := {b.expr}).__class__ and "
            f"({ta}.__class__ in _NUM or {ta}.__class__ is str "
            f"and len({ta}) + len({tb}) < {CHARS_PER_ITERATION})"
        )
        return Code(f"(_add({ta}, {tb}) if {cheap} else _add_w({ta}, {tb}, {self.budget()}))", kind)


_ORDER = {"_<_": "lt", "_<=_": "le", "_>_": "gt", "_>=_": "ge"}
_ORDER_OP = {"_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">="}
_ARITH = {"_+_": "add", "_-_": "sub", "_*_": "mul", "_/_": "div", "_%_": "mod"}


# Static kinds of values no operation takes more than constant time over.
_SCALAR_KINDS = frozenset(
    {"int", "uint", "double", "bool", "null", "timestamp", "duration", "type", "ip", "cidr"}
)


def _scalar(*codes: Code, strings: bool = True) -> bool:
    """Is one of `codes` known at compile time to be a scalar (a string too, with `strings`:
    `==` and `in` with a string on one side compare no list or map)?"""
    for c in codes:
        if c.kind in _SCALAR_KINDS or (strings and c.kind in ("string", "bytes")):
            return True
        if c.const and c.value.__class__ not in (list, tuple, dict):
            return True
    return False


# Kinds whose `==` Python's operator decides exactly (with a bounded operand, at once).
_SIMPLE = ("string", "bytes", "timestamp", "duration")
# Kinds whose comparisons cost their length.
_SEQ = ("string", "bytes")


def _bounded(c: Code) -> bool:
    """Is `c` known at compile time to be a scalar, or a constant that is not a list or a map
    and, when a string or bytes, shorter than `CHARS_PER_ITERATION`? A comparison, a lookup
    or a membership test with it on one side costs at most its length."""
    if c.kind in _SCALAR_KINDS:
        return True
    if c.const:
        value = c.value
        cls = value.__class__
        if cls is str or cls is bytes:
            return len(value) < CHARS_PER_ITERATION
        return cls not in (list, tuple, dict)
    return False


def _small_test(t: str) -> str:
    """A test that the value held in `t` is a scalar or a short string."""
    return f"({t}.__class__ in _SMALL or {t}.__class__ is str and len({t}) < {CHARS_PER_ITERATION})"


def _is_simple(expr: str) -> bool:
    return expr.isidentifier()


def _small(a: Code, t: str) -> str:
    """A test that the value of `a`, held in `t`, is a scalar or a short string."""
    if a.kind in _SCALAR_KINDS:
        return "True"
    if a.kind == "string":
        return f"len({t}) < {CHARS_PER_ITERATION}"
    return f"({t}.__class__ in _SMALL or {t}.__class__ is str and len({t}) < {CHARS_PER_ITERATION})"


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


_OPERATORS: dict[str, Any] = {
    "_&&_": Operators.logic,
    "_||_": Operators.logic,
    "_?_:_": Operators.ternary,
    "!_": Operators.not_,
    "-_": Operators.neg,
    "_==_": Operators.equality,
    "_!=_": Operators.equality,
    "@in": Operators.in_,
    "_[_]": Operators.index,
    **dict.fromkeys(_ORDER, Operators.ordering),
    **dict.fromkeys(_ARITH, Operators.arith),
}
