"""Comprehension macros: all, exists, exists_one/existsOne, map, filter (one iteration variable)
and their two-variable forms (all, exists, existsOne, transformList, transformMap)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from pdp.cel import _ast as A
from pdp.cel import _values as v
from pdp.cel._regex import MAX_PROGRAM_SIZE, compile_regex, scan_length

if TYPE_CHECKING:
    from pdp.cel._compile import Code, Compiler


# Iterations all comprehensions of one evaluation may take together. Nested comprehensions
# multiply: `P.attr.groups.exists(g, R.attr.acl.exists(a, a == g))` over two request lists of
# 10,000 items each is 10^8 iterations, seconds of CPU per check, and a hostile policy nests
# deeper. Past the budget the evaluation is a CEL error (a deny in a deny rule, a non-match
# in an allow rule). Kubernetes bounds its CEL by cost the same way.
MAX_ITERATIONS = 100_000


# A body's own work draws on the same budget. Without it one iteration could cost as much as
# its request allows: `l.exists(x, x in l + l)` over one request list of 20,000 strings took
# 20,000 iterations and ~10^9 element operations (half a minute with the GIL held), and
# `l.map(x, l + l)` kept 20,000 lists of 40,000 items (6 GB). So every ten list or map
# elements a body builds or scans (`in`, `+`, `==` on lists and maps, a library call), and
# every hundred characters of a string, cost one iteration. What one evaluation may build in
# all is then ~10^6 elements or ~10^7 characters, and its CPU a fraction of a second.
ELEMENTS_PER_ITERATION = 10
CHARS_PER_ITERATION = 100


class Interrupted(BaseException):
    """The call's deadline (the activation's `STOP_AT`) passed while a comprehension was
    working: the evaluation is abandoned, not answered. A BaseException, as asyncio's
    CancelledError is, so that neither CEL's error absorption (`false && <error>`, a guarded
    macro body) nor the engine's fail-closed handlers (`except Exception`: a deny, a
    non-match) take it for a CEL error and decide with it: the engine turns it into its
    `DeadlineExceeded`."""


# The activation key under which `Engine.check` puts a call's deadline (monotonic seconds).
# No CEL identifier can name it, so no condition reads or shadows it; an activation without
# it (the test runner, `pdp check`, the planner) has no deadline.
STOP_AT = "\x00stop_at"
_INF = math.inf
_monotonic = time.monotonic


def _spend(budget: list[Any], n: int) -> None:
    """Charge `n` iterations to `budget` ([iterations left, stop time]); each charge also
    reads the clock when the call has a deadline. The budget bounds one evaluation's work, not
    its time (an RE2 compile or scan is one charge that can take milliseconds; one rule or
    action after another each get a fresh budget), so a deadline is checked here, on every
    charge: once per comprehension range and per charged operation of a body."""
    budget[0] -= n
    if budget[0] < 0:
        v.fail(
            f"comprehensions iterate more than {MAX_ITERATIONS} times in one evaluation, "
            f"counting their bodies' work ({ELEMENTS_PER_ITERATION} list elements or "
            f"{CHARS_PER_ITERATION} characters built or scanned count as one)"
        )
    stop_at = budget[1]
    if stop_at < _INF and _monotonic() >= stop_at:
        raise Interrupted


def work(x: Any) -> int:
    """What building or scanning `x` costs, in iterations."""
    c = x.__class__
    if c is str or c is bytes:
        return len(x) // CHARS_PER_ITERATION
    if c is list or c is tuple or c is dict or isinstance(x, dict):
        return len(x) // ELEMENTS_PER_ITERATION
    return 0


def scan_work(x: Any, cap: int) -> int:
    """What comparing `x` element by element or indexing it costs, in iterations: its elements
    and characters at every depth, counted up to a little past `cap` (what is left of the
    budget: an exhausted budget stops the count at once, as the errors a macro absorbs repeat
    the charge on every later iteration). `work` counts the top level, which is what building
    a copy costs, but `==`, `in` of a list and the set helpers descend: `l.all(x, big == big)`
    with `big` a list of one 9,000-item list was charged nothing per iteration and compared
    9,000 items in each (44 s over 9,000 iterations)."""
    c = x.__class__
    if c is str or c is bytes:
        return len(x) // CHARS_PER_ITERATION
    if not (c is list or c is tuple or c is dict or isinstance(x, dict)):
        return 0
    limit = (max(cap, 0) + 1) * ELEMENTS_PER_ITERATION * CHARS_PER_ITERATION
    units = 0  # an element is CHARS_PER_ITERATION units, a character ELEMENTS_PER_ITERATION
    stack = [x]
    while stack and units < limit:
        y = stack.pop()
        units += len(y) * CHARS_PER_ITERATION
        if units >= limit:
            break
        for e in y.values() if y.__class__ is dict or isinstance(y, dict) else y:
            ce = e.__class__
            if ce is str or ce is bytes:
                units += len(e) * ELEMENTS_PER_ITERATION
            elif ce is list or ce is tuple or ce is dict or isinstance(e, dict):
                stack.append(e)
    return units // (ELEMENTS_PER_ITERATION * CHARS_PER_ITERATION)


# The charged forms of the operations whose cost grows with their operands, which the compiler
# emits inside comprehension bodies only (elsewhere each runs once per evaluation, on values the
# request limits bound).


def in_charged(a: Any, b: Any, budget: list[Any]) -> bool:
    cb = b.__class__
    if cb is list or cb is tuple:  # a map lookup is one step
        ca = a.__class__
        if ca is list or ca is tuple or ca is dict or isinstance(a, dict):
            _spend(
                budget, scan_work(b, budget[0])
            )  # a list or map compared with each element, deeply
        else:
            _spend(budget, len(b) // ELEMENTS_PER_ITERATION)
    return v.in_(a, b)


def add_charged(a: Any, b: Any, budget: list[Any]) -> Any:
    # Charged before it builds: `false && <this>` absorbs the error, and the work must not be
    # done again on every iteration that follows.
    _spend(budget, work(a) + work(b))
    return v.add(a, b)


def eq_charged(a: Any, b: Any, budget: list[Any]) -> bool:
    _spend(budget, scan_work(a, budget[0]) if a.__class__ is not str else 0)
    return v.eq(a, b)


def ne_charged(a: Any, b: Any, budget: list[Any]) -> bool:
    _spend(budget, scan_work(a, budget[0]) if a.__class__ is not str else 0)
    return v.ne(a, b)


def call_charged(budget: list[Any], fn: Any, *args: Any) -> Any:
    _spend(budget, sum(scan_work(a, budget[0]) for a in args))  # what it scans, before it runs
    out = fn(*args)
    _spend(budget, work(out))
    return out


# A scan by RE2 costs up to its program's size per UTF-8 byte (pdp/cel/_regex.py): each
# REGEX_UNITS_PER_ITERATION instructions x bytes cost one iteration, so RE2 scans can
# take at most ~10^8 units (tens of milliseconds) of one evaluation, not 10^5 capped scans.
REGEX_UNITS_PER_ITERATION = 1_000


def regex_charged(budget: list[Any], rx: Any, s: Any) -> bool:
    """`s.matches('<constant>')` in a comprehension body: charged before it scans."""
    if s.__class__ is str:
        n = len(s)
        steps = n * rx.size // REGEX_UNITS_PER_ITERATION
        if steps and not s.isascii():
            steps = scan_length(s) * rx.size // REGEX_UNITS_PER_ITERATION
        _spend(budget, max(n // CHARS_PER_ITERATION, steps))
    return rx(s)


def matches_charged(budget: list[Any], s: Any, pattern: Any) -> bool:
    """`s.matches(p)` in a comprehension body, `p` from the request: compiling costs one
    iteration per instruction of the program (about what it takes), cached or not, and a
    refused pattern the most a program may have, since a refused compile is not cached and
    can take milliseconds; then the scan is charged as `regex_charged` charges it."""
    if s.__class__ is not str or pattern.__class__ is not str:
        v.no_overload("matches", s, pattern)
    _spend(budget, len(pattern) // CHARS_PER_ITERATION)
    try:
        rx = compile_regex(pattern)
    except Exception:
        _spend(budget, MAX_PROGRAM_SIZE)
        raise
    _spend(budget, rx.size)
    return regex_charged(budget, rx, s)


def iter_range(r: Any, budget: list[Any]) -> Any:
    cr = r.__class__
    if cr is list or cr is tuple:
        _spend(budget, len(r))
        return r
    if cr is dict or isinstance(r, dict):
        _spend(budget, len(r))
        return list(r)
    v.no_overload("comprehension range", r)


def iter_pairs(r: Any, budget: list[Any]) -> Any:
    cr = r.__class__
    if cr is list or cr is tuple:
        _spend(budget, len(r))
        return list(enumerate(r))
    if cr is dict or isinstance(r, dict):
        _spend(budget, len(r))
        return list(r.items())
    v.no_overload("comprehension range", r)


def macro_error(e: Any, name: str) -> Any:
    if isinstance(e, BaseException):
        raise e
    v.no_overload(name, e)


def _header(comp: Compiler, node: A.Call, nvars: int) -> tuple[str, dict[str, str]]:
    """Emit the range evaluation; return the `for` line and the bindings of the variables."""
    assert node.target is not None
    names: list[str] = []
    for arg in node.args[:nvars]:
        if not isinstance(arg, A.Ident) or arg.name.startswith("."):
            raise comp.err(f"`{node.fn}` wants a simple identifier as iteration variable", arg)
        names.append(arg.name)
    if nvars == 2 and names[0] == names[1]:
        raise comp.err(f"`{node.fn}`: the two iteration variables must differ", node)
    rng = comp.c(node.target)
    it = comp.tmp("it")
    locals_ = [comp.tmp("v") for _ in names]
    comp.emit(f"{it} = {'_iter' if nvars == 1 else '_pairs'}({rng.expr}, _budget)")
    comp.budgeted = True
    return f"for {', '.join(locals_)} in {it}:", dict(zip(names, locals_))


def quantifier(comp: Compiler, node: A.Call) -> Code:
    from pdp.cel._compile import Code

    name = "exists_one" if node.fn == "existsOne" else node.fn
    if len(node.args) not in (2, 3):
        raise comp.err(f"wrong number of arguments to macro `{node.fn}`: want 2 or 3", node)
    if comp.too_deep():
        return comp.in_function(lambda: quantifier(comp, node))
    loop, binds = _header(comp, node, len(node.args) - 1)
    pred = node.args[-1]
    out = comp.tmp("r")
    if name == "exists_one":
        n = comp.tmp("n")
        comp.emit(f"{n} = 0")
        comp.emit(loop)
        with comp.block(), comp.loop_body(binds):
            pv = comp.tmp()
            comp.emit(f"{pv} = {comp.c(pred).expr}")
            comp.emit(f"if {pv} is True:")
            with comp.block(counts=False):
                comp.emit(f"{n} += 1")
            comp.emit(f"elif {pv} is not False:")
            with comp.block(counts=False):
                comp.emit(f"_macro_error({pv}, 'exists_one')")
        comp.emit(f"{out} = {n} == 1")
        return Code(out, "bool")
    stop, go = ("False", "True") if name == "all" else ("True", "False")
    errv = comp.tmp("e")
    comp.emit(f"{out} = {go}")
    comp.emit(f"{errv} = _NOERR")
    comp.emit(loop)
    with comp.block(), comp.loop_body(binds):
        pv = comp.guarded(pred)
        comp.emit(f"if {pv} is {stop}:")
        with comp.block(counts=False):
            comp.emit(f"{out} = {stop}")
            comp.emit("break")
        comp.emit(f"if {pv} is not {go}:")
        with comp.block(counts=False):
            comp.emit(f"{errv} = {pv}")
    comp.emit(f"if {out} is {go} and {errv} is not _NOERR:")
    with comp.block(counts=False):
        comp.emit(f"_macro_error({errv}, {name!r})")
    return Code(out, "bool")


def transform(comp: Compiler, node: A.Call) -> Code:
    """map / filter (one variable), transformList / transformMap (two variables)."""
    from pdp.cel._compile import Code

    name = node.fn
    nvars = 2 if name in ("transformList", "transformMap") else 1
    allowed = {"map": (2, 3), "filter": (2,)}.get(name, (3, 4))
    if len(node.args) not in allowed:
        raise comp.err(f"wrong number of arguments to macro `{name}`", node)
    if comp.too_deep():
        return comp.in_function(lambda: transform(comp, node))
    loop, binds = _header(comp, node, nvars)
    out = comp.tmp("r")
    to_map = name == "transformMap"
    comp.emit(f"{out} = {{}}" if to_map else f"{out} = []")
    comp.emit(loop)
    with comp.block(), comp.loop_body(binds):
        has_filter = name == "filter" or len(node.args) == nvars + 2
        if has_filter:
            pv = comp.tmp()
            comp.emit(f"{pv} = {comp.c(node.args[nvars]).expr}")
            comp.emit(f"if {pv} is not True:")
            with comp.block(counts=False):
                comp.emit(f"if {pv} is not False:")
                with comp.block(counts=False):
                    comp.emit(f"_macro_error({pv}, {name!r})")
                comp.emit("continue")
        first = next(iter(binds.values()))
        if name == "filter":
            comp.emit(f"{out}.append({first})")
        elif to_map:
            comp.emit(f"{out}[{first}] = {comp.c(node.args[-1]).expr}")
        else:
            comp.emit(f"{out}.append({comp.c(node.args[-1]).expr})")
    return Code(out, "map" if to_map else "list")


MACROS = {
    "all": quantifier,
    "exists": quantifier,
    "exists_one": quantifier,
    "existsOne": quantifier,
    "map": transform,
    "filter": transform,
    "transformList": transform,
    "transformMap": transform,
}
