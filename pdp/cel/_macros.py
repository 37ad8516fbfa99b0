"""Comprehension macros: all, exists, exists_one/existsOne, map, filter (one iteration variable)
and their two-variable forms (all, exists, existsOne, transformList, transformMap)."""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any

from pdp.cel import _ast as A
from pdp.cel import _values as v
from pdp.cel._budget import (
    _INF,
    CHARS_PER_ITERATION,
    ELEMENTS_PER_ITERATION,
    NEVER,
    Deadline,
    Interrupted,
    _monotonic,
    _spend,
)
from pdp.cel._code import Code

if TYPE_CHECKING:
    from pdp.cel._compile import Compiler


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
        if y.__class__ is dict or isinstance(y, dict):
            # Its keys too: `==` looks each up in the other map, a memcmp of a long key
            # (`{R.attr.a: 1} == {R.attr.b: 1}` compared two 64 Ki-character keys uncharged).
            for k in y:
                if k.__class__ is str or k.__class__ is bytes:
                    units += len(k) * ELEMENTS_PER_ITERATION
            elements = y.values()
        else:
            elements = y
        for e in elements:
            ce = e.__class__
            if ce is str or ce is bytes:
                units += len(e) * ELEMENTS_PER_ITERATION
            elif ce is list or ce is tuple or ce is dict or isinstance(e, dict):
                stack.append(e)
    return units // (ELEMENTS_PER_ITERATION * CHARS_PER_ITERATION)


# The charged forms of the operations whose cost grows with their operands. In a comprehension
# body the compiler emits them always; elsewhere only when an operand is a list or map or a
# long string (pdp/cel/_operators.py), with the evaluation's budget made on first use.


def _charge(budget: list[Any], n: int) -> None:
    """`_spend`, for an operation that may cost nothing: one over small values reads no clock."""
    if n:
        _spend(budget, n)


def _same_size(a: Any, b: Any) -> int:
    """How many elements of list `b` Python's `a in b` compares with string `a` character by
    character: those of the same length (its `==` tells strings of different lengths apart
    at once). An element of another class with that length is counted too: a little over."""
    n = len(a)
    try:
        return list(map(len, b)).count(n)  # a C loop: cheaper than what it prices
    except TypeError:  # an element without a length (a number, a bool, null)
        return sum(1 for e in b if e.__class__ is a.__class__ and len(e) == n)


def in_charged(a: Any, b: Any, budget: list[Any]) -> bool:
    cb = b.__class__
    if cb is dict or isinstance(b, dict):
        # A lookup compares a long key with the one it finds (a memcmp); a miss compares
        # nothing (the key's hash is computed once per string and kept), ~0.02 us whatever
        # its length, so only a hit is charged.
        if v.in_(a, b):
            _charge(budget, _key_work(a))
            return True
        return False
    if cb is list or cb is tuple:
        ca = a.__class__
        if ca is list or ca is tuple or ca is dict or isinstance(a, dict):
            _charge(budget, scan_work(b, budget[0]))  # compared with each element, deeply
        elif (ca is str or ca is bytes) and len(a) >= CHARS_PER_ITERATION:
            # A long string compared with each element of its length, character by character:
            # `l.all(x, C.long in l)` with a 10,000-character `C.long` and a request list of
            # 10,000 such strings compared 10^8 characters per iteration for 1,000 iterations.
            units = (
                len(b) * CHARS_PER_ITERATION + _same_size(a, b) * len(a) * ELEMENTS_PER_ITERATION
            )
            _charge(budget, units // (ELEMENTS_PER_ITERATION * CHARS_PER_ITERATION))
        else:
            _charge(budget, len(b) // ELEMENTS_PER_ITERATION)
    return v.in_(a, b)


def add_charged(a: Any, b: Any, budget: list[Any]) -> Any:
    # Charged before it builds: `false && <this>` absorbs the error, and the work must not be
    # done again on every iteration that follows.
    _charge(budget, work(a) + work(b))
    return v.add(a, b)


def _key_work(k: Any) -> int:
    """What looking a string key up in a map costs: hashing it (once: a string keeps its hash)
    and comparing it with the key of that hash (a memcmp on every lookup that finds it)."""
    return len(k) // CHARS_PER_ITERATION if k.__class__ is str else 0


def _eq_work(a: Any, b: Any, budget: list[Any]) -> int:
    """What `a == b` compares: lists or maps of the same size element by element, deeply,
    and two strings or bytes of the same length character by character (a memcmp: ~5 us for
    two equal strings of 64 Ki characters 4 bytes wide); operands of different sizes or
    kinds differ at once."""
    ca = a.__class__
    if ca is str or ca is bytes:
        if b.__class__ is ca and len(b) == len(a):
            return len(a) // CHARS_PER_ITERATION
        return 0
    if not (ca is list or ca is tuple or ca is dict or isinstance(a, dict)):
        return 0
    cb = b.__class__
    if not (cb is list or cb is tuple or cb is dict or isinstance(b, dict)) or len(a) != len(b):
        return 0
    return scan_work(a, budget[0])


def eq_charged(a: Any, b: Any, budget: list[Any]) -> bool:
    _charge(budget, _eq_work(a, b, budget))
    return v.eq(a, b)


def ne_charged(a: Any, b: Any, budget: list[Any]) -> bool:
    _charge(budget, _eq_work(a, b, budget))
    return v.ne(a, b)


def order_charged(fn: Any, a: Any, b: Any, budget: list[Any]) -> bool:
    """`fn` (`lt`, `le`, `gt`, `ge`) of two strings or bytes, charged by the shorter one's
    length: what Python compares up to the first difference (character by character for
    strings stored in different widths, ~0.1 ms for 64 Ki characters)."""
    ca = a.__class__
    if (ca is str or ca is bytes) and b.__class__ is ca:
        _charge(budget, min(len(a), len(b)) // CHARS_PER_ITERATION)
    return bool(fn(a, b))


def index_charged(c: Any, k: Any, budget: list[Any]) -> Any:
    """`c[k]`, a lookup of a long string key charged by its length, hit or miss: a miss's
    error quotes the key, a copy of it (`in` of a map charges only a hit)."""
    if c.__class__ is dict or isinstance(c, dict):
        _charge(budget, _key_work(k))
    return v.index(c, k)


def call_charged(budget: list[Any], fn: Any, *args: Any) -> Any:
    _charge(budget, sum(scan_work(a, budget[0]) for a in args))  # what it scans, before it runs
    out = fn(*args)
    _charge(budget, work(out))
    return out


# How much body a comprehension runs between two reads of the stop time: its range is charged
# (and the clock read) once, before the first iteration, and a body of uncharged operations
# reads no clock itself, so `l.exists(x, x == "q0" || ... 300 terms)` over 90,000 items ran
# 0.74 s under a 0.05 s stop time. A range longer than `BODY_NODES_PER_CLOCK_READ` divided by
# the body's size in syntax nodes is iterated in strides of that many items, the stop time
# read before each stride after the first: some hundred microseconds of body between reads,
# whatever the body's size. The usual comprehension (a short range, a small body) is one
# stride and reads no clock beyond its range's charge.
BODY_NODES_PER_CLOCK_READ = 20_000


def stride(body: list[A.Node]) -> int:
    """How many iterations of `body` (a comprehension's predicate, filter or transform) run
    between two reads of the stop time."""
    nodes = 0
    stack: list[Any] = list(body)
    while stack:  # not recursive: a body may nest deeper than Python's stack
        nodes += 1
        stack.extend(A.children(stack.pop()))
    return max(1, BODY_NODES_PER_CLOCK_READ // nodes)


def _strides(items: Any, stop: Deadline, n: int) -> Any:
    yield items[:n]  # the range's charge has just read the clock
    for i in range(n, len(items), n):
        if stop.at < _INF and _monotonic() >= stop.at:
            raise Interrupted
        yield items[i : i + n]


def _watched(items: Any, stop: Deadline, n: int) -> Any:
    """`items` (more than `n`), read the stop time every `n` of them (a C loop over each
    stride: the items cost nothing more). Called only for a long range: a short one is
    returned as it is, with no call."""
    if stop is NEVER:
        return items
    return chain.from_iterable(_strides(items, stop, n))


def iter_range(r: Any, budget: list[Any], n: int) -> Any:
    cr = r.__class__
    if cr is list or cr is tuple:
        _spend(budget, len(r))
        return r if len(r) <= n else _watched(r, budget[1], n)
    if cr is dict or isinstance(r, dict):
        _spend(budget, len(r))
        return list(r) if len(r) <= n else _watched(list(r), budget[1], n)
    v.no_overload("comprehension range", r)


def iter_pairs(r: Any, budget: list[Any], n: int) -> Any:
    cr = r.__class__
    if cr is list or cr is tuple:
        _spend(budget, len(r))
        pairs = list(enumerate(r))
    elif cr is dict or isinstance(r, dict):
        _spend(budget, len(r))
        pairs = list(r.items())
    else:
        v.no_overload("comprehension range", r)
    return pairs if len(pairs) <= n else _watched(pairs, budget[1], n)


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
    n = stride(node.args[nvars:])
    comp.emit(f"{it} = {'_iter' if nvars == 1 else '_pairs'}({rng.expr}, _budget, {n})")
    comp.budgeted = True
    return f"for {', '.join(locals_)} in {it}:", dict(zip(names, locals_))


def quantifier(comp: Compiler, node: A.Call) -> Code:
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
