"""The fast parser (lark with an embedded transformer) builds exactly the tree walker's AST.

`pdp.cel._ast.parse` tries `_parser.parse_fast` and falls back to the tree walker
(`parse_tree`) on any problem, so errors are always the tree walker's. What must hold: whenever
the fast path succeeds, the tree walker succeeds too, with the same AST (positions and literal
types included, hence the comparison of reprs: `Lit(1) == Lit(True)` as dataclasses).
"""

from __future__ import annotations

from typing import Any

import pytest
from cel_support import CONFORMANCE

from pdp.cel import _ast
from pdp.cel._parser import parse_fast
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
    for source in ["a.b(c) && !d || e[0] in [1, 2]", "x ? {'k': 1u} : .y.z", "-!-x"]:
        parse_fast(source)


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
