"""The fast parser (hand-written, `pdp.cel._parser`) builds exactly the tree walker's AST.

`pdp.cel._ast.parse` tries `_parser.parse_fast` and falls back to the tree walker
(`parse_tree`) on any problem, so errors are always the tree walker's. What must hold: whenever
the fast path succeeds, the tree walker succeeds too, with the same AST (positions and literal
types included, hence the comparison of reprs: `Lit(1) == Lit(True)` as dataclasses).
"""

from __future__ import annotations

from typing import Any

import pytest
from cel_support import CONFORMANCE
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.cel import _ast
from pdp.cel._parser import TERMINALS, parse_fast
from pdp.errors import CelCompileError

HANDWRITTEN = [
    "a.b.c + 1 > 2 && !!x || [1, 2][0] in {'a': 1} ? -(-3) : google.Type{f: 1}",
    "!x", "!!x", "!!!x", "!-!x", "-!-x", "--x", "---1", "!(!x)", "-(-(x))", "- -x",
    "!!x == y", "-(1)", "-1", "- 1", "1 - -1", "a-1", "a - 1",
    "(a).b", "(a){}", "(a).b{}", "a.b(c).d{}", "a{}", ".a.b{}", "a.b{x: 1, y: 2}", "x{}.y",
    "a[b][c].d(e, f)", ".f(1)", ".x", ".x.y", "f()", "a.f()", "[]", "{}", "[1,]", "{1: 2, 3: 4}",
    "x ? y : z ? w : v", "(x ? y : z) ? w : v", "a || b || c && d && e",
    "1 < 2 <= 3 > 4 >= 5 == 6 != 7", "a in b in c", "1 + 2 * 3 / 4 % 5 - 6",
    "'abc'", '"a\\nb"', "r'\\n'", "b'\\xff'", "'''x\ny'''", "1u", "0x1F", "-0x1", "1.5e3", ".5",
    "1.", "true", "false", "null", "truex", "as", "if", "a.as", "a.if()", "x.in", "in",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616u",
    "'\\q'", "'\\ud800'", "b'\\u00ff'", "a.b(99999999999999999999, 99999999999999999999)",
    "99999999999999999999.f(99999999999999999999)", "a[", ")", "", "   ", "a +", "1 // c\n+ 2",
    "a\n  && b\n  || c", "\n\n  x.y(\n z)", "f(g(h(1)), [k, {l: m}])", "has(a.b)",
    "[1, 2].map(x, x * 2)", "m.all(k, m[k] > 0)", "cel.bind(x, 1, x + 1)", "Int{}", "int(1)",
    "a.b.c.d.e.f.g", "(((((1)))))", "{'a': {'b': [1, {'c': 2}]}}", "x.y{z: 1}.w",
    "1 ? 2 : 3 ? 4 : 5", "!true || -1 > 0", "a\u00e9", "'\u00e9'", "b'\u00e9'", "x.`a-b`",
    # corners of lark's contextual lexer, which the hand-written parser must match
    "a inx", "a in_x", "a in x", "1in x", "a.null", "a.true", "a.false", "a.in", "a.as()",
    ".null", ".true", ".in", "true || x", "false && true", "null == x", "x{}", "a.b{c: 1}",
    "a -1", "a - -1", "-1.5.x", "1.5.x", "1..5", "1.e5", "1e5u", "0x", "0x1Fu", "-0x1Fu",
    "r'x'", 'R"x"', "b'''x'''", "br'x'", "rb'x'", "'''a''' + ''", "'\\''", '"a\\"b"',
    "a // c\r+ 1", "a /\n/ b", "a\r\n+ b", "x\v", "a ? b ? c : d : e", "a ? b : c ? d : e",
    "(a ? b : c)", "{a ? b : c : d}", "f(a,)", "[,]", "{1:}", "a.b.c(d)[e]", "a[b]c", "a.5",
    "!= x", "a ! b", "a = b", "a | b", "a & b", "- - x", "!!!!x", "-(-(-x))", "- -1",
    "x.y\n  .z(\n1)\n  [2]", "'a\nb'", "'''a\r\nb'''", "\n\n'''a\nb''' + c\n+ d",
]  # fmt: skip


def check(source: str) -> None:
    try:
        fast: Any = parse_fast(source)
    except Exception:  # the fast path gives up; parse() then is parse_tree by construction
        fast = None
    try:
        tree: Any = _ast.parse_tree(source)
    except CelCompileError as e:
        assert fast is None, f"{source!r}: fast path accepted what the tree walker rejects ({e})"
        with pytest.raises(CelCompileError) as got:
            _ast.parse(source)
        assert (got.value.message, got.value.line, got.value.column) == (
            e.message,
            e.line,
            e.column,
        )
        return
    if fast is not None:
        assert repr(fast) == repr(tree), source
    assert repr(_ast.parse(source)) == repr(tree)


@pytest.mark.parametrize("source", HANDWRITTEN)
def test_handwritten(source: str) -> None:
    check(source)


def test_fast_path_is_taken() -> None:
    # Not a test of correctness: a guard that the fast path did not silently stop working.
    for source in [
        "a.b(c) && !d || e[0] in [1, 2]",
        "x ? {'k': 1u} : .y.z",
        "-(!x) + !!y - --z",
        "has(R.attr.archived) && R.attr.archived == true && R.attr.age > 7",
        "P.id in R.attr.readers || P.attr.level >= 7\n  // why\n  && 'a\\n' != b'x'",
        "[1, 2.5, -3, 4u, null, true, '''m''', r'\\d'].size() > 0",
    ]:
        parse_fast(source)


def test_terminals_are_larks() -> None:
    """The operand terminals, in the order lark's lexer tries them, are celpy's grammar's."""
    from celpy.celparser import CELParser

    CELParser()
    lark = CELParser.CEL_PARSER
    assert lark is not None
    theirs = [(t.name, t.pattern.value) for t in lark.parser.lexer.root_lexer.terminals]
    assert theirs[: len(TERMINALS)] == list(TERMINALS)


_WS = st.sampled_from(["", "", "", " ", "\n", "  ", "//c\n", "\t", "\r"])
_ATOMS = st.sampled_from(
    ["1", "-1", "1u", "0x1F", "1.5", ".5", "1.", "1e3", "'s'", '"d"', "r'\\n'", "b'\\xff'",
     "'''m\nl'''", "true", "false", "null", "x", "y", ".z", "as", "in", "'\\q'",
     "9223372036854775808", "-9223372036854775808"]
)  # fmt: skip
_OPS = st.sampled_from(
    ["||", "&&", "<", "<=", ">", ">=", "==", "!=", "in", "+", "-", "*", "/", "%", "?", ":"]
)
_NOISE = st.sampled_from(
    ["", "-", ".", "5", "in", "x", "(", ")", "[", "]", "{", "}", ",", "?", "!", "'", "/", "\n"]
)


def _sources(depth: int) -> st.SearchStrategy[str]:
    """Mostly valid expressions with irregular spacing, lexing corners included."""
    if depth == 0:
        return _ATOMS
    sub = _sources(depth - 1)
    args = st.lists(sub, max_size=3).map(", ".join)
    prefix = st.sampled_from(["!", "-", "!!", "- ", "!-"])
    field = st.sampled_from(["a", "null", "in", "true"])
    method = st.sampled_from(["f", "all", "in"])
    function = st.sampled_from(["f", "has", ".g", "if"])
    return st.one_of(
        _ATOMS,
        st.builds(lambda a, w, op, v, b: f"{a}{w}{op}{v}{b}", sub, _WS, _OPS, _WS, sub),
        st.builds(lambda c, a, b: f"{c} ? {a} : {b}", sub, sub, sub),
        st.builds(lambda op, w, a: f"{op}{w}{a}", prefix, _WS, sub),
        st.builds(lambda a, w, f: f"{a}{w}.{w}{f}", sub, _WS, field),
        st.builds(lambda a, f, x: f"{a}.{f}({x})", sub, method, args),
        st.builds(lambda a, w, i: f"{a}{w}[{w}{i}]", sub, _WS, sub),
        st.builds(lambda w, a: f"({w}{a}{w})", _WS, sub),
        st.builds(lambda x: f"[{x}]", args),
        st.builds(lambda k, v: f"{{{k}: {v}}}", sub, sub),
        st.builds(lambda f, x: f"{f}({x})", function, args),
    )


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(source=_sources(4), at=st.integers(0, 10_000), noise=_NOISE, cut=st.booleans())
def test_random_sources(source: str, at: int, noise: str, cut: bool) -> None:
    """Random expressions, each with one character dropped or one token inserted somewhere."""
    at %= len(source) + 1
    if cut:
        source = source[:at] + source[at + 1 :]
    else:
        source = source[:at] + noise + source[at:]
    check(source)


def test_conformance_expressions(conformance_protos: Any) -> None:
    from google.protobuf import text_format

    simple_pb2 = conformance_protos
    n = 0
    for path in sorted((CONFORMANCE / "testdata").glob("*.textproto")):
        pb = simple_pb2.SimpleTestFile()
        try:
            text_format.Parse(path.read_text(), pb)
        except text_format.ParseError:
            continue
        for section in pb.section:
            for test in section.test:
                check(test.expr)
                n += 1
    assert n > 1000
