"""CEL source → a small AST (celpy's lark parser as the front end).

Operators become `Call`s with CEL's internal function names (`_&&_`, `_==_`, `@in`, `_[_]`, ...),
as in the canonical CEL AST, so macros and operators are dispatched in one place.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pdp.cel._values import INT64_MAX, INT64_MIN, UINT64_MAX, CelUint
from pdp.errors import CelCompileError

if TYPE_CHECKING:
    from celpy.celparser import CELParseError, CELParser
    from lark import Token, Tree


@dataclass(slots=True)
class Node:
    line: int
    column: int


@dataclass(slots=True)
class Lit(Node):
    value: Any


@dataclass(slots=True)
class Ident(Node):
    name: str


@dataclass(slots=True)
class Select(Node):
    operand: Node
    field: str


@dataclass(slots=True)
class Call(Node):
    fn: str
    args: list[Node]
    target: Node | None = None


@dataclass(slots=True)
class ListLit(Node):
    items: list[Node]


@dataclass(slots=True)
class MapLit(Node):
    entries: list[tuple[Node, Node]]


@dataclass(slots=True)
class Struct(Node):
    type_name: str
    fields: list[tuple[str, Node]] = field(default_factory=list)


def children(node: Node) -> list[Node]:
    """The nodes `node` reads directly, for walks that keep their own stack (an expression may
    nest deeper than Python's)."""
    if isinstance(node, Call):
        return [*node.args, node.target] if node.target is not None else node.args
    if isinstance(node, Select):
        return [node.operand]
    if isinstance(node, ListLit):
        return node.items
    if isinstance(node, MapLit):
        return [x for entry in node.entries for x in entry]
    if isinstance(node, Struct):
        return [x for _, x in node.fields]
    return []


_BINOPS = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}

_PASS_THROUGH = frozenset(
    [
        "expr",
        "conditionalor",
        "conditionaland",
        "relation",
        "addition",
        "multiplication",
        "unary",
        "member",
        "primary",
    ]
)
_RESERVED = frozenset(
    [
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
        "in",
    ]
)

_parser: CELParser | None = None

# Longer sources skip the fast path: only the tree walker's recursion bounds nesting depth
# ("expression nests too deeply"), and an expression nested that deeply is at least this long.
_FAST_MAX_LEN = 10_000


def parse(source: str) -> Node:
    """The tree of `source`; within `shared_parses()`, the one tree of each source (its
    readers, the compiler and the checker, never change a tree)."""
    trees = _shared.trees
    if trees is None:
        return _parse(source)
    tree = trees.get(source)
    if tree is None:
        tree = trees[source] = _parse(source)  # an error is raised afresh each time
    return tree


class _Shared(threading.local):
    # Within `shared_parses()` on this thread: the tree of each source parsed; else None.
    trees: dict[str, Node] | None = None


_shared = _Shared()


@contextmanager
def shared_parses() -> Iterator[None]:
    """Parse each CEL source once until the outermost block ends. Loading a policy set parses
    each expression in the compiler and again in the validator, and each variable again for
    every policy that imports it: 326 parses of 56 sources for the example policies."""
    outer = _shared.trees
    if outer is None:
        _shared.trees = {}
    try:
        yield
    finally:
        _shared.trees = outer


def _parse(source: str) -> Node:
    if len(source) <= _FAST_MAX_LEN:
        try:
            return parse_fast(source)
        except Exception:  # any trouble: the tree walker decides and reports
            pass
    return parse_tree(source)


def parse_tree(source: str) -> Node:
    """Parse with celpy's CELParser and walk its tree: the reference path, owning all errors."""
    global _parser
    if _parser is None:
        _load_tree_parser()
        _parser = CELParser()
    try:
        tree = _parser.parse(source)
    except CELParseError as e:
        cause = e.__context__
        token = getattr(cause, "token", None)
        if token is not None and token.type == "$END":
            lines = source.splitlines() or [""]
            raise CelCompileError(
                "syntax error: unexpected end of expression", source, len(lines), len(lines[-1]) + 1
            ) from None
        raise CelCompileError(
            f"syntax error: unexpected input near `{_near(source, e)}`",
            source,
            e.line or 1,
            e.column or 1,
        ) from None
    except Exception as e:  # lark raises a few other kinds on odd input
        raise CelCompileError(f"syntax error: {e}".splitlines()[0], source, 1, 1) from None
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, 20000))
        return _Builder(source).build(tree)
    except RecursionError:
        raise CelCompileError("expression nests too deeply", source, 1, 1) from None
    finally:
        sys.setrecursionlimit(limit)


def _load_tree_parser() -> None:
    """Import celpy's parser and lark's tree types on first use: together they are a large
    share of `pdp serve`'s start-up, and the fast parser (pdp.cel._parser) reads nearly every
    source, so most processes never need them."""
    global CELParseError, CELParser, Token, Tree
    from celpy.celparser import CELParseError, CELParser
    from lark import Token, Tree


def _near(source: str, e: CELParseError) -> str:
    lines = source.splitlines() or [""]
    line = lines[min(max(e.line or 1, 1), len(lines)) - 1]
    col = max((e.column or 1) - 1, 0)
    return line[col : col + 12] or "end of input"


def _pos(t: Tree | Token) -> tuple[int, int]:
    if isinstance(t, Token):
        return t.line or 1, t.column or 1
    meta = t.meta
    if getattr(meta, "empty", True):
        return 1, 1
    return meta.line, meta.column


def _mixes_prefix_operators(op: str, operand: Tree | Token) -> bool:
    """Whether a run of one prefix operator ends in the other one (`!-x`, `--!x`). A negative
    number literal is one token, as in the reference parsers: `!!-1` is `-1`."""
    del op  # the run of `op` was consumed: a remaining unary operator is the other one
    return isinstance(operand, Tree) and operand.data == "unary" and len(operand.children) == 2


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, msg: str, t: Tree | Token) -> CelCompileError:
        line, col = _pos(t)
        return CelCompileError(msg, self.source, line, col)

    def build(self, t: Tree) -> Node:
        # Walk down single-child pass-through rules without recursion so deep nesting is cheap.
        while True:
            d = t.data
            if d in _PASS_THROUGH and len(t.children) == 1 and isinstance(t.children[0], Tree):
                t = t.children[0]
                continue
            break
        line, col = _pos(t)
        d = t.data
        ch = t.children
        if d == "expr":
            return Call(
                line, col, "_?_:_", [self.build(ch[0]), self.build(ch[1]), self.build(ch[2])]
            )
        if d in ("conditionalor", "conditionaland"):
            fn = "_||_" if d == "conditionalor" else "_&&_"
            return Call(line, col, fn, [self.build(ch[0]), self.build(ch[1])])
        if d in ("relation", "addition", "multiplication"):
            left_op, right = ch
            op_line, op_col = _pos(left_op)
            return Call(
                op_line, op_col, _BINOPS[left_op.data], [self.build(left_op.children[0]),
                                                         self.build(right)]
            )  # fmt: skip
        if d == "unary":
            op, operand = ch
            # Like the reference parsers, a run of the same prefix operator cancels in pairs:
            # `!!x` is `x` (no bool check) and `--x` is `x`.
            run = 1
            while True:
                while (
                    isinstance(operand, Tree)
                    and operand.data in _PASS_THROUGH
                    and operand.data != "unary"
                    and len(operand.children) == 1
                    and isinstance(operand.children[0], Tree)
                    and operand.children[0].data in ("unary", "member", "primary")
                ):
                    operand = operand.children[0]
                if (
                    isinstance(operand, Tree)
                    and operand.data == "unary"
                    and len(operand.children) == 2
                    and operand.children[0].data == op.data
                ):
                    run += 1
                    operand = operand.children[1]
                    continue
                break
            if _mixes_prefix_operators(op.data, operand):
                # CEL's grammar: `"!" {"!"} Member | "-" {"-"} Member`. celpy's accepts `!-x`
                # and `!!-x`; the reference parsers reject them, and so do we.
                raise CelCompileError(
                    "syntax error: `!` and `-` cannot be combined without parentheses",
                    self.source,
                    line,
                    col,
                )
            inner = self.build(operand)
            if run % 2 == 0:
                return inner
            if op.data == "unary_not":
                return Call(line, col, "!_", [inner])
            return Call(line, col, "-_", [inner])
        if d == "member_dot":
            operand, name = ch
            line, col = _pos(name)
            return Select(line, col, self.build(operand), str(name))
        if d == "member_dot_arg":
            operand, name, *rest = ch
            line, col = _pos(name)
            args = self._exprlist(rest[0]) if rest else []
            return Call(line, col, str(name), args, self.build(operand))
        if d == "member_index":
            operand, idx = ch
            return Call(line, col, "_[_]", [self.build(operand), self.build(idx)])
        if d == "member_object":
            operand, *rest = ch
            name = self._qualified(operand)
            fields: list[tuple[str, Node]] = []
            if rest:
                fi = rest[0].children
                for i in range(0, len(fi), 2):
                    fields.append((str(fi[i]), self.build(fi[i + 1])))
            return Struct(line, col, name, fields)
        if d == "literal":
            return Lit(line, col, self._literal(ch[0]))
        if d == "ident":
            return Ident(line, col, self._ident(ch[0]))
        if d == "dot_ident":
            return Ident(line, col, "." + self._ident(ch[0]))
        if d == "ident_arg":
            name, *rest = ch
            return Call(line, col, self._ident(name), self._exprlist(rest[0]) if rest else [])
        if d == "dot_ident_arg":
            name, *rest = ch
            return Call(line, col, "." + self._ident(name), self._exprlist(rest[0]) if rest else [])
        if d == "paren_expr":
            return self.build(ch[0])
        if d == "list_lit":
            return ListLit(line, col, self._exprlist(ch[0]) if ch else [])
        if d == "map_lit":
            entries: list[tuple[Node, Node]] = []
            if ch:
                mi = ch[0].children
                for i in range(0, len(mi), 2):
                    entries.append((self.build(mi[i]), self.build(mi[i + 1])))
            return MapLit(line, col, entries)
        raise self.err(f"unsupported syntax `{d}`", t)

    def _ident(self, tok: Any) -> str:
        name = str(tok)
        if name in _RESERVED:
            raise self.err(f"reserved identifier `{name}`", tok)
        return name

    def _qualified(self, t: Tree) -> str:
        parts: list[str] = []
        while True:
            while t.data in ("member", "primary") and len(t.children) == 1:
                t = t.children[0]
            if t.data == "member_dot":
                parts.append(str(t.children[1]))
                t = t.children[0]
            elif t.data == "ident":
                parts.append(str(t.children[0]))
                break
            elif t.data == "dot_ident":
                parts.append("." + str(t.children[0]))
                break
            else:
                raise self.err("invalid message construction", t)
        return ".".join(reversed(parts))

    def _exprlist(self, t: Tree) -> list[Node]:
        return [self.build(c) for c in t.children]

    def _literal(self, tok: Token) -> Any:
        try:
            return literal_value(tok.type, str(tok))
        except ValueError as e:
            raise self.err(str(e), tok) from None


def literal_value(kind: str, text: str) -> Any:
    """The value of a literal token; ValueError (with the user-facing message) when invalid."""
    if kind == "INT_LIT":
        v = _parse_int(text)
        if v < INT64_MIN or v > INT64_MAX:
            raise ValueError(f"integer literal out of range: `{text}`")
        return v
    if kind == "UINT_LIT":
        v = _parse_int(text[:-1])
        if v < 0 or v > UINT64_MAX:
            raise ValueError(f"unsigned integer literal out of range: `{text}`")
        return CelUint(v)
    if kind == "FLOAT_LIT":
        return float(text)
    if kind == "BOOL_LIT":
        return text == "true"
    if kind == "NULL_LIT":
        return None
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        return _unquote(text, as_bytes=False)
    if kind == "BYTES_LIT":
        return _unquote(text[1:], as_bytes=True)
    raise ValueError(f"unsupported literal `{text}`")


def _parse_int(text: str) -> int:
    neg = text.startswith("-")
    body = text[1:] if neg else text
    v = int(body[2:], 16) if body[:2].lower() == "0x" else int(body, 10)
    return -v if neg else v


_ESC = re.compile(
    r"\\(?:([abfnrtv\\'\"`?])|[xX]([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-3][0-7]{2})|(.|\n|$))"
)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?"}  # fmt: skip


def _unquote(text: str, *, as_bytes: bool) -> Any:
    raw = text[:1] in ("r", "R")
    if raw:
        text = text[1:]
    q = 3 if text[:3] in ('"""', "'''") else 1
    body = text[q:-q]
    if not as_bytes and not raw and "\\" not in body:
        return body.replace("\r\n", "\n")
    if raw:
        return body.encode() if as_bytes else body
    out: list[bytes] = []
    pos = 0
    for m in _ESC.finditer(body):
        out.append(body[pos : m.start()].encode())
        simple, hx, u4, u8, octal, bad = m.groups()
        if bad is not None:
            raise ValueError(f"invalid escape sequence `\\{bad}`")
        if simple is not None:
            out.append(_SIMPLE[simple].encode())
        elif hx is not None or octal is not None:
            n = int(hx, 16) if hx is not None else int(octal, 8)
            out.append(bytes([n]) if as_bytes else chr(n).encode())
        else:
            cp = int(u4 or u8, 16)
            if 0xD800 <= cp <= 0xDFFF or cp > 0x10FFFF:
                raise ValueError("invalid unicode code point in escape")
            out.append(chr(cp).encode())
        pos = m.end()
    out.append(body[pos:].encode())
    data = b"".join(out)
    if as_bytes:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValueError("invalid UTF-8 in string literal") from None


# At the end: _parser imports this module's node classes and helpers.
from pdp.cel._parser import parse_fast  # noqa: E402
