"""libyaml's composer (`_compose_fast`) gives the tree the pure-Python one (`_Loader`) gives:
the same tags (YAML 1.2 core schema), values and positions, whatever the scalar's style."""

from __future__ import annotations

from typing import Any

import pytest
from yaml.nodes import MappingNode, Node, SequenceNode

from pdp.model._yaml import _compose_fast, _CParser, _Loader

TEXTS = [
    "a: 1\nb: '1'\nc: \"1\"\nd: 1.5\ne: .inf\nf: -.5e3\ng: 0x1F\nh: 0o17\ni: 010\nj: +1\n",
    "a: true\nb: True\nc: TRUE\nd: yes\ne: NO\nf: on\ng: 'true'\nh: |\n  true\ni: >\n  1\n",
    "a: ~\nb: null\nc: Null\nd:\ne: ''\nf: 'null'\ng: [~, null, '', x]\n",
    "a: !!str 1\nb: !!int '2'\nc: !custom 3\nd: ! 4\ne: !!map {x: 1}\nf: !!seq [1]\n",
    "- 1\n- [2, '2', 2.0, {three: 3}]\n- {? complex : key}\n- - nested\n  - 1_000\n",
    "plain text with: colon inside\n",
    "a: tenant\nb: nullish\nc: Falsey\nd: 1x\ne: -x\nf: .x\ng: ~x\nh: +\ni: _1\nj: é\n",
    "k: 1e5\nl: 1E-5\nm: .NaN\nn: -.Inf\no: 1.\np: .5\nq: 12:30\nr: 2024-01-01\n",
]


def _shape(node: Node | None) -> Any:
    if node is None:
        return None
    where = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, MappingNode):
        return ("map", node.tag, where, [(_shape(k), _shape(v)) for k, v in node.value])
    if isinstance(node, SequenceNode):
        return ("seq", node.tag, where, [_shape(x) for x in node.value])
    return (node.tag, node.value, node.style or None, where)  # plain: "" (libyaml), None


@pytest.mark.skipif(_CParser is None, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("text", TEXTS)
def test_libyaml_and_python_composers_agree(text: str) -> None:
    fast = _compose_fast(text)
    assert fast is not None  # the fast path was taken
    assert _shape(fast) == _shape(_Loader(text).get_single_node())
