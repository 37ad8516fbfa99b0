"""The fast path of CEL parsing: celpy's grammar and lark LALR parser, building our AST inline.

celpy's `CELParser` has lark build a full `Tree` (with propagated positions) that `_ast` then
walks again; at 10,000 policies that tree building was the largest single cost of loading. Here
the same grammar, with the same lexer options, runs through lark's LALR parser with an embedded
transformer: each grammar rule's callback builds `_ast` nodes as the parser reduces, so no
`Tree` is ever made.

The callbacks only handle expressions that parse and build cleanly. On any problem (a syntax
error, a reserved identifier, a bad literal, an invalid message name) they give up with
`Fallback`, and `_ast.parse` redoes the work on the original tree-walking path, which owns every
error message and position. So errors are exactly those of the tree walker, and a success here
is checked to give the same AST as the tree walker (tests/cel/test_parser_equivalence.py).

Values passed between callbacks are tuples `(node, line, column, ...)`: `line`/`column` are
where the rule's text starts (what lark's propagated `meta` gave the tree walker), which is not
always the node's own position (a `Select` sits at its field name). A fourth item tags values
the tree walker treats specially: `_NAME` for a dotted identifier (allowed as a message type
name), `_UNARY` for a run of prefix operators (`!!x` cancels to `x`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import celpy
from celpy.celparser import CELParser
from lark import Lark, Token

from pdp.cel._ast import (
    _BINOPS,
    _RESERVED,
    Call,
    Ident,
    ListLit,
    Lit,
    MapLit,
    Node,
    Select,
    Struct,
    literal_value,
)


class Fallback(Exception):
    """The fast path cannot build this expression; the tree walker decides (and reports)."""


_NAME = "name"
_UNARY = "unary"


def _ident(tok: Token) -> str:
    name = str(tok)
    if name in _RESERVED:
        raise Fallback
    return name


def _exprs(vals: list[Any]) -> list[Node]:
    # exprlist children alternate expression, ",", expression...
    return [vals[i][0] for i in range(0, len(vals), 2)]


class _Callbacks:
    """One method per grammar rule (lark calls it with the rule's children, tokens included)."""

    # Single-child rules pass their child's value through unchanged (tags included).
    def member(self, ch: list[Any]) -> Any:
        return ch[0]

    primary = member

    def expr(self, ch: list[Any]) -> Any:
        if len(ch) == 1:
            return ch[0]
        c = ch[0]
        return (Call(c[1], c[2], "_?_:_", [c[0], ch[2][0], ch[4][0]]), c[1], c[2])

    def conditionalor(self, ch: list[Any]) -> Any:
        if len(ch) == 1:
            return ch[0]
        a = ch[0]
        return (Call(a[1], a[2], "_||_", [a[0], ch[2][0]]), a[1], a[2])

    def conditionaland(self, ch: list[Any]) -> Any:
        if len(ch) == 1:
            return ch[0]
        a = ch[0]
        return (Call(a[1], a[2], "_&&_", [a[0], ch[2][0]]), a[1], a[2])

    # relation/addition/multiplication: [operator value, right] where the operator rule's value
    # is (function name, left value); the call sits where the left operand starts.
    def relation(self, ch: list[Any]) -> Any:
        if len(ch) == 1:
            return ch[0]
        fn, a = ch[0]
        return (Call(a[1], a[2], fn, [a[0], ch[1][0]]), a[1], a[2])

    addition = relation
    multiplication = relation

    def unary(self, ch: list[Any]) -> Any:
        if len(ch) == 1:
            return ch[0]
        (fn, line, col), inner = ch
        # A run of the same prefix operator cancels in pairs, as in the tree walker: count the
        # run and keep its innermost operand (`base`).
        if len(inner) > 3 and inner[3] is _UNARY and inner[4] == fn:
            count = inner[5] + 1
            base = inner[6]
        else:
            count = 1
            base = inner[0]
        node = base if count % 2 == 0 else Call(line, col, fn, [base])
        return (node, line, col, _UNARY, fn, count, base)

    def unary_not(self, ch: list[Any]) -> Any:
        tok = ch[0]
        return ("!_", tok.line or 1, tok.column or 1)

    def unary_neg(self, ch: list[Any]) -> Any:
        tok = ch[0]
        return ("-_", tok.line or 1, tok.column or 1)

    def member_dot(self, ch: list[Any]) -> Any:
        operand, _dot, name = ch
        node = Select(name.line or 1, name.column or 1, operand[0], str(name))
        if len(operand) > 3 and operand[3] is _NAME:
            return (node, operand[1], operand[2], _NAME)
        return (node, operand[1], operand[2])

    def member_dot_arg(self, ch: list[Any]) -> Any:
        operand, name = ch[0], ch[2]
        args = _exprs(ch[4]) if len(ch) == 6 else []
        node = Call(name.line or 1, name.column or 1, str(name), args, operand[0])
        return (node, operand[1], operand[2])

    def member_index(self, ch: list[Any]) -> Any:
        operand = ch[0]
        node = Call(operand[1], operand[2], "_[_]", [operand[0], ch[2][0]])
        return (node, operand[1], operand[2])

    def member_object(self, ch: list[Any]) -> Any:
        operand = ch[0]
        if len(operand) <= 3 or operand[3] is not _NAME:
            raise Fallback  # not a dotted name: the tree walker reports it
        parts: list[str] = []
        n = operand[0]
        while isinstance(n, Select):
            parts.append(n.field)
            n = n.operand
        assert isinstance(n, Ident)
        parts.append(n.name)
        fields: list[tuple[str, Node]] = []
        if len(ch) == 4:
            fi = ch[2]
            for i in range(0, len(fi), 4):
                fields.append((str(fi[i]), fi[i + 2][0]))
        node = Struct(operand[1], operand[2], ".".join(reversed(parts)), fields)
        return (node, operand[1], operand[2])

    def literal(self, ch: list[Any]) -> Any:
        tok = ch[0]
        # Raw token positions, as lark's propagated meta gave the tree walker: celpy's lexer
        # callback makes `true`/`false` tokens without a position, so theirs are None.
        line, col = tok.line, tok.column
        try:
            value = literal_value(tok.type, str(tok))
        except ValueError:
            raise Fallback from None
        return (Lit(line, col, value), line, col)

    def ident(self, ch: list[Any]) -> Any:
        tok = ch[0]
        line, col = tok.line or 1, tok.column or 1
        return (Ident(line, col, _ident(tok)), line, col, _NAME)

    def dot_ident(self, ch: list[Any]) -> Any:
        dot, tok = ch
        line, col = dot.line or 1, dot.column or 1
        return (Ident(line, col, "." + _ident(tok)), line, col, _NAME)

    def ident_arg(self, ch: list[Any]) -> Any:
        tok = ch[0]
        line, col = tok.line or 1, tok.column or 1
        args = _exprs(ch[2]) if len(ch) == 4 else []
        return (Call(line, col, _ident(tok), args), line, col)

    def dot_ident_arg(self, ch: list[Any]) -> Any:
        dot, tok = ch[0], ch[1]
        line, col = dot.line or 1, dot.column or 1
        args = _exprs(ch[3]) if len(ch) == 5 else []
        return (Call(line, col, "." + _ident(tok), args), line, col)

    def paren_expr(self, ch: list[Any]) -> Any:
        tok = ch[0]
        return (ch[1][0], tok.line or 1, tok.column or 1)

    def list_lit(self, ch: list[Any]) -> Any:
        tok = ch[0]
        line, col = tok.line or 1, tok.column or 1
        items = _exprs(ch[1]) if len(ch) == 3 else []
        return (ListLit(line, col, items), line, col)

    def map_lit(self, ch: list[Any]) -> Any:
        tok = ch[0]
        line, col = tok.line or 1, tok.column or 1
        entries: list[tuple[Node, Node]] = []
        if len(ch) == 3:
            mi = ch[1]
            for i in range(0, len(mi), 4):
                entries.append((mi[i][0], mi[i + 2][0]))
        return (MapLit(line, col, entries), line, col)

    # Lists: returned raw (separators included) for the rule that uses them.
    def exprlist(self, ch: list[Any]) -> Any:
        return ch

    fieldinits = exprlist
    mapinits = exprlist


def _binop(fn: str) -> Any:
    def op(self: _Callbacks, ch: list[Any]) -> Any:
        return (fn, ch[0])

    return op


for _rule, _fn in _BINOPS.items():
    setattr(_Callbacks, _rule, _binop(_fn))


_lark: Lark | None = None


def _parser() -> Lark:
    global _lark
    if _lark is None:
        # The options of celpy's CELParser (same grammar, lexer, priorities, placeholders), but:
        # all tokens kept so callbacks see where `(`, `[`, `!`... start; no propagated
        # positions (the callbacks carry them); the transformer applied while parsing; and no
        # debug (it only prints lark's state stack on a syntax error, which the fallback to
        # celpy's own parser then prints anyway).
        grammar = (Path(celpy.__file__).parent / "cel.lark").read_text()
        _lark = Lark(
            grammar,
            parser="lalr",
            start="expr",
            debug=False,
            g_regex_flags=re.M,
            lexer_callbacks={"IDENT": CELParser.ambiguous_literals},
            propagate_positions=False,
            maybe_placeholders=False,
            priority="invert",
            keep_all_tokens=True,
            transformer=_Callbacks(),
        )
    return _lark


def parse_fast(source: str) -> Node:
    """The AST of `source`; `Fallback` (or any lark error) when the tree walker must decide."""
    value = _parser().parse(source)
    node: Node = value[0]
    return node
