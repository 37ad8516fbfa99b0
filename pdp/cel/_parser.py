"""The fast path of CEL parsing: a hand-written recursive-descent parser for celpy's grammar.

celpy's parser (lark LALR over `cel.lark`) costs ~250 µs for a one-line condition, most of it
lark's per-token machinery; at 10,000 policies that was the largest single cost of compiling.
This parser reads the same language straight into `_ast` nodes, ~10x faster.

It only has to be right on success. On anything it is unsure of (a syntax error, a reserved
identifier, a bad literal, message construction `T{...}`, a lexing corner) it gives up with
`Fallback`, and `_ast.parse` redoes the work with celpy's parser and the tree walker, which own
every error message and position. tests/cel/test_parser_equivalence.py checks that whatever
this parser accepts, the tree walker accepts with the same AST (positions included).

Lexing follows lark's contextual lexer for this grammar: where an operand may start, the
terminals are tried in lark's order (bytes, multi-line string, string, float, uint, int,
identifier: first match wins, so `-1` is a literal there and `1.` a float); after an operand
only operators and punctuation exist, so `a -1` is a subtraction. The terminal regexes are
lark's own (a test checks they still are).

Node positions are those of the tree walker: a binary operator, index or ternary sits where its
left operand's text starts, a `Select` or method call at its field name, a prefix operator at
itself, a literal at its token (celpy's lexer makes `true`/`false` tokens without a position,
hence `None`), a parenthesised expression's text starts at its `(`.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from typing import Any

from pdp.cel._ast import (
    _RESERVED,
    Call,
    Ident,
    ListLit,
    Lit,
    MapLit,
    Node,
    Select,
    literal_value,
)


class Fallback(Exception):
    """The fast path cannot build this expression; the tree walker decides (and reports)."""


# lark's patterns for the terminals that may start an operand, in the order its lexer tries
# them (BYTES_LIT before MLSTRING_LIT before STRING_LIT; FLOAT_LIT before UINT_LIT before
# INT_LIT; IDENT last: `r'x'` is a string, `rx` an identifier). `{4-8}` is literal text in
# celpy's grammar, not a repeat count; kept as is so the same strings lex the same way.
_ESC_DQ = r"""\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4-8}"""
_ESC_SQ = r"""\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}"""
_MLSTRING = (
    f"(?:[rR]?'''(?:{_ESC_SQ}|\r\n|\r|\n|.)*?'''|[rR]?\"\"\"(?:{_ESC_DQ}|\r\n|\r|\n|.)*?\"\"\")"
)
_STRING = f"(?:[rR]?'(?:{_ESC_SQ}|.)*?'|[rR]?\"(?:{_ESC_DQ}|.)*?\")"
_INT = r"(?:-?0x(?:[0-9abcdefABCDEF])+|-?(?:[0-9])+)"
TERMINALS: tuple[tuple[str, str], ...] = (
    ("BYTES_LIT", f"(?:[bB]{_MLSTRING}|[bB]{_STRING})"),
    ("MLSTRING_LIT", _MLSTRING),
    ("STRING_LIT", _STRING),
    (
        "FLOAT_LIT",
        r"(?:-?(?:[0-9])+[eE][+-]?(?:[0-9])+"
        r"|-?(?:[0-9])+\.(?:[0-9])*(?:[eE][+-]?(?:[0-9])+)?"
        r"|-?(?:[0-9])*\.(?:[0-9])+(?:[eE][+-]?(?:[0-9])+)?)",
    ),
    ("UINT_LIT", _INT + "[uU]"),
    ("INT_LIT", _INT),
    ("IDENT", "[_a-zA-Z][_a-zA-Z0-9]*"),
)
_OPERAND = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in TERMINALS), re.M)
_IDENT = re.compile("(?P<IDENT>[_a-zA-Z][_a-zA-Z0-9]*)")
_IDENT_START = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDENT_CHAR = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# Ignored text: lark's WHITESPACE and COMMENT (`.` stops at "\n" only, so a "\r" is commented).
_SKIP = re.compile(r"(?:[\t\n\f\r ]+|//.*)*")
_SKIP_START = frozenset("\t\n\f\r /")

# Binary operators after an operand: text -> (precedence, CEL function). All left-associative.
_BINARY: dict[str, tuple[int, str]] = {
    "||": (1, "_||_"),
    "&&": (2, "_&&_"),
    "<": (3, "_<_"),
    "<=": (3, "_<=_"),
    ">": (3, "_>_"),
    ">=": (3, "_>=_"),
    "==": (3, "_==_"),
    "!=": (3, "_!=_"),
    "in": (3, "@in"),
    "+": (4, "_+_"),
    "-": (4, "_-_"),
    "*": (5, "_*_"),
    "/": (5, "_/_"),
    "%": (5, "_%_"),
}
_TWO_CHAR = frozenset(["||", "&&", "<=", ">=", "==", "!="])

# A parsed operand: (node, line, column) where its text starts; a prefix-operator run adds
# (function, run length, innermost operand) so `!!x` cancels to `x` as in the tree walker.
_Value = tuple[Any, ...]


class _Parser:
    __slots__ = ("newlines", "pos", "src")

    def __init__(self, src: str) -> None:
        self.src = src
        self.pos = 0
        self.newlines = [i for i, c in enumerate(src) if c == "\n"] if "\n" in src else []

    def at(self, pos: int) -> tuple[int, int]:
        """lark's line and column (1-based; only "\\n" starts a line) of offset `pos`."""
        nl = self.newlines
        if not nl:
            return 1, pos + 1
        k = bisect_left(nl, pos)
        return k + 1, pos - (nl[k - 1] if k else -1)

    def skip(self) -> str:
        """Skip ignored text; the next character ("" at the end)."""
        pos = self.pos
        c = self.src[pos : pos + 1]
        if c not in _SKIP_START:  # most calls: no regex needed
            return c
        if c == " ":  # the usual separator: one space, then a token
            nxt = self.src[pos + 1 : pos + 2]
            if nxt not in _SKIP_START:
                self.pos = pos + 1
                return nxt
        m = _SKIP.match(self.src, pos)
        pos = self.pos = m.end()  # type: ignore[union-attr]  # the pattern matches ""
        return self.src[pos : pos + 1]

    def expect(self, char: str) -> None:
        if self.skip() != char:
            raise Fallback
        self.pos += 1

    def parse(self) -> Node:
        node = self.expr()[0]
        if self.skip():
            raise Fallback  # trailing input
        return node

    def expr(self) -> _Value:
        # expr: conditionalor ["?" conditionalor ":" expr]  (the middle is not a full expr)
        cond = self.binary(1)
        if self.skip() != "?":
            return cond
        self.pos += 1
        then = self.binary(1)
        self.expect(":")
        other = self.expr()
        return (Call(cond[1], cond[2], "_?_:_", [cond[0], then[0], other[0]]), cond[1], cond[2])

    def operator(self) -> str:
        """The binary operator at the current position, or "" (not consumed)."""
        c = self.skip()
        if not c:
            return ""
        two = self.src[self.pos : self.pos + 2]
        if two in _TWO_CHAR:
            return two
        if two == "in":
            # After an operand lark's lexer knows no identifiers: `a inx` lexes as `a in x`.
            if self.src[self.pos + 2 : self.pos + 3] in _IDENT_CHAR:
                raise Fallback
            return two
        return c if c in _BINARY else ""

    def binary(self, min_prec: int) -> _Value:
        left = self.unary()
        while True:
            op = self.operator()
            if not op:
                return left
            prec, fn = _BINARY[op]
            if prec < min_prec:
                return left
            self.pos += len(op)
            right = self.binary(prec + 1)
            left = (Call(left[1], left[2], fn, [left[0], right[0]]), left[1], left[2])

    def unary(self) -> _Value:
        c = self.skip()
        pos = self.pos
        if c in _IDENT_START and not (c in "rRbB" and self.src[pos + 1 : pos + 2] in "'\"rR"):
            # Only IDENT can start here (the other terminals start with a quote, a digit, `-`,
            # `.`, or a string prefix): one small pattern instead of trying all seven.
            m = _IDENT.match(self.src, pos)
        else:
            m = _OPERAND.match(self.src, pos)
        if m is None and (c == "!" or c == "-"):  # a literal such as `-1` wins over `-`
            fn = "!_" if c == "!" else "-_"
            line, col = self.at(self.pos)
            self.pos += 1
            nxt = self.skip()
            if (nxt == "!" or nxt == "-") and nxt != c:
                raise Fallback  # `!-x`, `-!x`: not CEL; the tree walker reports it
            inner = self.unary()
            if len(inner) > 3 and inner[3] == fn:
                count = inner[4] + 1
                base = inner[5]
            else:
                count = 1
                base = inner[0]
            node = base if count % 2 == 0 else Call(line, col, fn, [base])
            return (node, line, col, fn, count, base)
        return self.member(self.primary(m, c))

    def member(self, value: _Value) -> _Value:
        node, line, col = value[0], value[1], value[2]
        while True:
            c = self.skip()
            if c == ".":
                self.pos += 1
                name, nline, ncol = self.field_name()
                if self.skip() == "(":
                    self.pos += 1
                    node = Call(nline, ncol, name, self.exprs(")"), node)
                else:
                    node = Select(nline, ncol, node, name)
            elif c == "[":
                self.pos += 1
                index = self.expr()[0]
                self.expect("]")
                node = Call(line, col, "_[_]", [node, index])
            elif c == "{":
                raise Fallback  # message construction: never supported, the tree walker reports
            else:
                return (node, line, col) if node is not value[0] else value

    def field_name(self) -> tuple[str, int, int]:
        """The identifier after a `.`: any word but `true`/`false`, which celpy's lexer
        turns into literals everywhere."""
        self.skip()
        m = _IDENT.match(self.src, self.pos)
        if m is None:
            raise Fallback
        name = m.group()
        if name == "true" or name == "false":
            raise Fallback
        line, col = self.at(self.pos)
        self.pos = m.end()
        return name, line, col

    def primary(self, m: re.Match[str] | None, c: str) -> _Value:
        pos = self.pos
        if m is not None:
            kind = m.lastgroup
            text = m.group()
            self.pos = m.end()
            if kind == "IDENT":
                if text == "true" or text == "false":
                    return (Lit(None, None, text == "true"), None, None)  # type: ignore[arg-type]
                line, col = self.at(pos)
                if text == "null":
                    return (Lit(line, col, None), line, col)
                if text in _RESERVED:
                    raise Fallback
                if self.skip() == "(":
                    self.pos += 1
                    return (Call(line, col, text, self.exprs(")")), line, col)
                return (Ident(line, col, text), line, col)
            line, col = self.at(pos)
            try:
                value = literal_value(kind, text)  # type: ignore[arg-type]
            except ValueError:
                raise Fallback from None
            return (Lit(line, col, value), line, col)
        line, col = self.at(pos)
        self.pos = pos + 1
        if c == "(":
            inner = self.expr()
            self.expect(")")
            return (inner[0], line, col)
        if c == "[":
            return (ListLit(line, col, self.exprs("]")), line, col)
        if c == "{":
            entries: list[tuple[Node, Node]] = []
            if self.skip() == "}":
                self.pos += 1
            else:
                while True:
                    key = self.expr()[0]
                    self.expect(":")
                    entries.append((key, self.expr()[0]))
                    if self.skip() != ",":
                        break
                    self.pos += 1
                self.expect("}")
            return (MapLit(line, col, entries), line, col)
        if c == ".":
            name = self.field_name()[0]
            if name in _RESERVED:
                raise Fallback
            if self.skip() == "(":
                self.pos += 1
                return (Call(line, col, "." + name, self.exprs(")")), line, col)
            return (Ident(line, col, "." + name), line, col)
        raise Fallback

    def exprs(self, close: str) -> list[Node]:
        """`[expr ("," expr)*] close`, after the opening bracket (no trailing comma)."""
        if self.skip() == close:
            self.pos += 1
            return []
        items = [self.expr()[0]]
        while self.skip() == ",":
            self.pos += 1
            items.append(self.expr()[0])
        self.expect(close)
        return items


def parse_fast(source: str) -> Node:
    """The AST of `source`; `Fallback` (or another exception) when the tree walker must decide."""
    return _Parser(source).parse()
