"""Safe, position-keeping YAML for the policy loader (the only place pdp touches `yaml`).

Documents are composed into PyYAML's node tree, never constructed into Python objects by
PyYAML, so that every value keeps its line and column and nothing can instantiate a tag.
Scalars are resolved with the YAML 1.2 core schema (what yaml-language-server uses), which
avoids YAML 1.1 surprises such as `country: NO` becoming `false` or `on:` becoming `true`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pdp.errors import PolicyError, SourceLocation

# A policy file is a few kilobytes; a megabyte is a mistake or an attack.
MAX_FILE_BYTES = 1024 * 1024
# Nesting beyond this is not a policy; it also keeps the recursive composer far from
# Python's recursion limit.
MAX_DEPTH = 64
# CEL's int, and the range of integers every encoder pdp answers with takes.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null"))
SEQ, MAP = f"{_TAG}seq", f"{_TAG}map"


class _CoreResolver(yaml.resolver.Resolver):
    """YAML 1.2 core schema: only null, bool, int and float are implicit; all else is a str."""

    yaml_implicit_resolvers: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}


for _tag, _regexp, _first in (
    (NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        FLOAT,
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
):
    _CoreResolver.add_implicit_resolver(_tag, re.compile(_regexp), _first)


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _CoreResolver,
):
    """Composer only (no constructor), with aliases forbidden and nesting bounded."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _CoreResolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            # Aliases are how "billion laughs" bombs work, and policies never need them.
            event = self.get_event()
            raise yaml.composer.ComposerError(
                None, None, "yaml aliases (`*name`) are not supported", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


try:
    from yaml._yaml import CParser as _CParser  # libyaml, when PyYAML was built with it
except ImportError:  # pragma: no cover - pure-Python PyYAML
    _CParser = None

if _CParser is not None:

    class _CLoader(_CParser, _CoreResolver):  # type: ignore[misc, valid-type]
        """libyaml's parser and composer (about 30x faster) with our YAML 1.2 resolver."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            _CoreResolver.__init__(self)

        # libyaml's composer calls these three in Python for every node. With no path
        # resolvers the first two do nothing, and a tag depends only on the arguments,
        # so it is memoized: policy files repeat the same keys and values over and over.
        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass

        def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
            # BaseResolver.resolve without path resolvers: only a plain scalar's text is
            # matched against the implicit patterns; any other scalar is a string.
            if kind is not ScalarNode:
                return SEQ if kind is SequenceNode else MAP
            if not implicit[0] or value[:1] not in _IMPLICIT_FIRST:
                return STR  # quoted, or no implicit pattern starts with its first character
            tag = _RESOLVED.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_RESOLVED) >= _RESOLVED_MAX:
                    _RESOLVED.clear()
                _RESOLVED[value] = tag
            return tag

    _RESOLVED: dict[str, str] = {}  # a plain scalar's tag by its text
    _IMPLICIT_FIRST = frozenset(_CoreResolver.yaml_implicit_resolvers)  # first characters
    _RESOLVED_MAX = 4096


# libyaml's only alias syntax: `*` then an anchor name of [0-9A-Za-z_-] (its scanner's IS_ALPHA).
# A text without this cannot hold an alias; one with it (even inside a quoted string) takes the
# event pre-scan, which tells for sure.
_MAYBE_ALIAS = re.compile(r"\*[0-9A-Za-z_-]")
# Every collection on a path from the root has at least one indicator character of its own
# (`-`, `?` or `:` for block collections, `[` or `{` for flow ones), so their count bounds the
# nesting depth without parsing.
_INDICATORS = "-?:[{"
# Up to this bound, libyaml's recursive composer is far from exhausting the C stack; the
# composed tree's depth is then checked in Python. Beyond it: the event pre-scan first.
_C_SAFE_DEPTH = 1000


def _compose_fast(text: str) -> Node | None:
    """Compose with libyaml when the document is plainly safe; None means "use the slow path".

    libyaml's composer recurses in C and resolves aliases itself, so aliases and deep nesting
    must be refused before it runs. Cheap text checks settle most policy files (no alias
    syntax, a bound on depth); otherwise walk the event stream first (iterative, in C).
    Anything unusual or malformed goes to the pure-Python loader, whose errors are the ones we
    report.
    """
    if _CParser is None:
        return None
    try:
        if _MAYBE_ALIAS.search(text) is None:
            bound = sum(map(text.count, _INDICATORS))
            if bound <= _C_SAFE_DEPTH:
                node = _CLoader(text).get_single_node()
                if bound > MAX_DEPTH and node is not None and _depth(node) > MAX_DEPTH:
                    return None
                return node
        scan = _CLoader(text)
        depth = 0
        while scan.check_event():
            event = scan.get_event()
            if isinstance(event, yaml.AliasEvent):
                return None
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return None
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
        return _CLoader(text).get_single_node()
    except yaml.YAMLError:
        return None


def _depth(root: Node) -> int:
    """Collection nesting depth of a composed tree (iterative: it may be deep)."""
    deepest = 0
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, SequenceNode):
            deepest = max(deepest, d)
            stack.extend((child, d + 1) for child in node.value)
        elif isinstance(node, MappingNode):
            deepest = max(deepest, d)
            for k, v in node.value:
                stack.append((k, d + 1))
                stack.append((v, d + 1))
    return deepest


class FileContext:
    """Collects the errors of one file and turns marks into `SourceLocation`s."""

    def __init__(self, file: str, errors: list[PolicyError]) -> None:
        self.file = file
        self.errors = errors
        self.lines: list[str] = []  # the decoded text, for block-scalar positions

    def loc(self, node: Node | None) -> SourceLocation:
        if node is None:
            return SourceLocation(self.file, 1, 1)
        return SourceLocation(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, message: str, node: Node | None = None) -> None:
        self.errors.append(PolicyError(message, self.loc(node)))

    def error_at(self, message: str, location: SourceLocation) -> None:
        self.errors.append(PolicyError(message, location))


def parse_yaml(ctx: FileContext, text: str) -> Node | None:
    """Compose one YAML document; on failure record the parser's error and return None."""
    node = _compose_fast(text)
    if node is None:
        node = _compose_slow(ctx, text)
    if node is not None and ("\\u" in text or "\\U" in text) and not _all_text(ctx, node):
        return None
    return node


def _all_text(ctx: FileContext, root: Node) -> bool:
    """False (errors recorded) when a scalar holds a lone surrogate: `"\\ud800"` is a valid
    YAML escape and no Unicode text. Loaded, it reached decisions (a rule's reason) that no
    UTF-8 encoder takes: every Check that rule decided ended as an internal error."""
    ok = True
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))  # popped in document order
        elif isinstance(node, MappingNode):
            for k, v in reversed(node.value):
                stack.extend((v, k))
        elif isinstance(node, ScalarNode) and not is_text(node.value):
            ctx.error(
                "string holds an unpaired surrogate (a `\\ud800`-style escape; write the "
                "character itself, or `\\U0001F600` for one beyond U+FFFF)",
                node,
            )
            ok = False
    return ok


def is_text(value: str) -> bool:
    """True for a string UTF-8 can encode (no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _compose_slow(ctx: FileContext, text: str) -> Node | None:
    try:
        return _Loader(text).get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = SourceLocation(ctx.file, mark.line + 1, mark.column + 1) if mark else ctx.loc(None)
        what = " ".join(p for p in (e.context, e.problem) if p)
        ctx.error_at(f"malformed yaml: {_clean(what)}", where)
    except yaml.YAMLError as e:  # ReaderError: a control character or bad encoding
        ctx.error_at(f"malformed yaml: {_clean(str(e).splitlines()[0])}", ctx.loc(None))
    except RecursionError:
        ctx.error_at(f"malformed yaml: nesting deeper than {MAX_DEPTH} levels", ctx.loc(None))
    return None


def meaning(text: str) -> list[Any]:
    """What the policy loader reads in each YAML document of `text`, as comparable values.

    `pdp fmt` compares this before and after a rewrite: the loader's YAML 1.2 core reading,
    not PyYAML's 1.1 one (which reads `1_0.5` and `010.5` alike, where the loader reads a
    string and a number). Each scalar is its tag and the `repr` of its value (so `1`, `1.0`
    and `true` differ), or its text when the loader refuses it; keys keep their order and
    duplicates. Raises `yaml.YAMLError` where the loader cannot compose the text.
    """
    loader = _Loader(text)
    ctx = FileContext("", [])
    docs = []
    while loader.check_node():
        docs.append(_meaning(ctx, loader.get_node()))
    return docs


def _meaning(ctx: FileContext, node: Node) -> Any:
    if isinstance(node, MappingNode):
        return ("map", node.tag, [(_meaning(ctx, k), _meaning(ctx, v)) for k, v in node.value])
    if isinstance(node, SequenceNode):
        return ("seq", node.tag, [_meaning(ctx, item) for item in node.value])
    errors = len(ctx.errors)
    value = scalar_value(ctx, node)
    if len(ctx.errors) > errors:
        return ("refused", node.tag, node.value)
    return (node.tag, repr(value))


def _clean(message: str) -> str:
    return message.strip().rstrip(".").replace("'", "`")


def decode(ctx: FileContext, content: bytes) -> str | None:
    if len(content) > MAX_FILE_BYTES:
        ctx.error(f"file is larger than {MAX_FILE_BYTES} bytes")
        return None
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        ctx.error(f"file is not valid utf-8 (byte offset {e.start})")
        return None


def type_name(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        NULL: "null",
        BOOL: "a bool",
        INT: "a number",
        FLOAT: "a number",
        STR: "a string",
    }.get(node.tag, f"a `{node.tag}` value")


def is_str(node: Node | None) -> bool:
    return isinstance(node, ScalarNode) and node.tag == STR


def expr_location(ctx: FileContext, node: ScalarNode) -> SourceLocation:
    """Where the first character of a scalar's content sits (not its quote or `|`)."""
    line, col = node.start_mark.line, node.start_mark.column
    if node.style in ("'", '"'):
        return SourceLocation(ctx.file, line + 1, col + 2)
    if node.style in ("|", ">"):
        indent = 0
        for text in ctx.lines[line + 1 : node.end_mark.line + 1]:
            if text.strip():
                indent = len(text) - len(text.lstrip(" "))
                break
        return SourceLocation(ctx.file, line + 2, indent + 1)
    return SourceLocation(ctx.file, line + 1, col + 1)


def scalar_value(ctx: FileContext, node: ScalarNode) -> Any:
    """A scalar's JSON value; records an error and returns None for what JSON cannot hold."""
    tag, text = node.tag, node.value
    try:
        if tag == STR:
            return text
        if tag == NULL:
            return None
        if tag == BOOL:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if tag == INT:
            n = int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)
            if not INT64_MIN <= n <= INT64_MAX:
                # No CEL int, and no integer the HTTP face's JSON encoder (orjson) writes.
                ctx.error(f"`{text[:64]}` is out of range (integers are 64-bit)", node)
                return None
            return n
        if tag == FLOAT:
            f = float(text.replace(".inf", "inf").replace(".Inf", "inf").replace(".INF", "inf"))
            if math.isnan(f) or math.isinf(f):
                ctx.error("numbers must be finite (no `.inf` or `.nan`)", node)
                return None
            return f
    except ValueError:
        ctx.error(f"`{text[:64]}` is not a valid `{tag.removeprefix(_TAG)}`", node)
        return None
    ctx.error(f"unsupported yaml tag `{tag}`", node)
    return None


def mapping_items(ctx: FileContext, node: MappingNode) -> dict[str, tuple[Node, Node]]:
    """A mapping's entries by key; duplicate and non-string keys are reported and dropped."""
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        if not is_str(key):
            ctx.error(f"mapping keys must be strings, got {type_name(key)}", key)
            continue
        if key.value in out:
            first = ctx.loc(out[key.value][0])
            ctx.error(f"duplicate key `{key.value}` (first defined at line {first.line})", key)
            continue
        out[key.value] = (key, value)
    return out


def to_json(ctx: FileContext, node: Node) -> Any:
    """A node as plain JSON values (dict/list/str/int/float/bool/None)."""
    if isinstance(node, MappingNode):
        if node.tag != MAP:
            ctx.error(f"unsupported yaml tag `{node.tag}`", node)
        return {k: to_json(ctx, v) for k, (_, v) in mapping_items(ctx, node).items()}
    if isinstance(node, SequenceNode):
        if node.tag != SEQ:
            ctx.error(f"unsupported yaml tag `{node.tag}`", node)
        return [to_json(ctx, item) for item in node.value]
    assert isinstance(node, ScalarNode)
    return scalar_value(ctx, node)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib  # only for a misspelt name

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


_MISSING = object()


class Fields:
    """Typed access to the keys of one mapping node, reporting every problem in `ctx`.

    When the node is not a mapping at all, one error is reported and every accessor returns
    its default, so one mistake does not cascade into a page of "missing field" errors.
    """

    def __init__(
        self,
        ctx: FileContext,
        node: Node | None,
        allowed: Iterable[str] | None,
        what: str,
    ) -> None:
        self.ctx = ctx
        self.node = node
        self.allowed = tuple(allowed) if allowed is not None else None  # None: free-form keys
        self.ok = isinstance(node, MappingNode)
        self.items: dict[str, tuple[Node, Node]] = {}
        if node is None:
            return
        if not isinstance(node, MappingNode):
            ctx.error(f"{what} must be a mapping, got {type_name(node)}", node)
            return
        self.items = mapping_items(ctx, node)
        for key, (key_node, _) in self.items.items():
            if self.allowed is not None and key not in self.allowed:
                ctx.error(
                    f"unknown key `{key}` in {what}{did_you_mean(key, self.allowed)}", key_node
                )

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def get(self, key: str, *, required: bool = False) -> Node | None:
        """The value node of `key`; a null value counts as absent."""
        entry = self.items.get(key)
        if entry is not None and not (isinstance(entry[1], ScalarNode) and entry[1].tag == NULL):
            return entry[1]
        if required and self.ok:
            at = entry[0] if entry is not None else self.node
            self.ctx.error(f"missing required field `{key}`", at)
        return None

    def key_node(self, key: str) -> Node | None:
        entry = self.items.get(key)
        return entry[0] if entry else None

    def str(self, key: str, *, required: bool = False, default: str = "") -> str:
        node = self.get(key, required=required)
        if node is None:
            return default
        if not is_str(node):
            self.ctx.error(f"`{key}` must be a string, got {type_name(node)}", node)
            return default
        assert isinstance(node, ScalarNode)
        if required and not node.value:
            self.ctx.error(f"`{key}` must not be empty", node)
        return node.value

    def str_list(self, key: str, *, required: bool = False) -> list[tuple[str, Node]] | None:
        """A list of strings as (value, node) pairs; None when absent. A lone string is an error."""
        node = self.get(key, required=required)
        if node is None:
            return None
        if not isinstance(node, SequenceNode):
            self.ctx.error(f"`{key}` must be a list of strings, got {type_name(node)}", node)
            return None
        out: list[tuple[str, Node]] = []
        for item in node.value:
            if not is_str(item) or not item.value:
                got = "an empty string" if is_str(item) else type_name(item)
                self.ctx.error(f"`{key}` must be a list of strings, got {got} in the list", item)
                continue
            out.append((item.value, item))
        if required and not node.value:
            self.ctx.error(f"`{key}` must not be empty", node)
        return out

    def mapping(self, key: str, *, required: bool = False) -> MappingNode | None:
        node = self.get(key, required=required)
        if node is None:
            return None
        if not isinstance(node, MappingNode):
            self.ctx.error(f"`{key}` must be a mapping, got {type_name(node)}", node)
            return None
        return node

    def sequence(self, key: str, *, required: bool = False) -> SequenceNode | None:
        node = self.get(key, required=required)
        if node is None:
            return None
        if not isinstance(node, SequenceNode):
            self.ctx.error(f"`{key}` must be a list, got {type_name(node)}", node)
            return None
        return node

    def choice(self, key: str, choices: tuple[str, ...], *, default: str = "") -> str:
        node = self.get(key)
        if node is None:
            return default
        if not is_str(node) or node.value not in choices:  # type: ignore[union-attr]
            shown = f"`{node.value}`" if isinstance(node, ScalarNode) else type_name(node)
            allowed = " or ".join(f"`{c}`" for c in choices)
            self.ctx.error(f"`{key}` must be {allowed}, got {shown}", node)
            return default
        return node.value  # type: ignore[union-attr]
