"""A short condition's Python is compiled on its first call (`pdp.cel._compile._lazy`).

What must hold: the same results as compiling at once, the compiled function installed after
the first call, errors Python could raise still reported when the expression is compiled, and a
failure on the first call (not expected, but possible in principle) is an error, never a value.
"""

from __future__ import annotations

from typing import Any

import pytest

from pdp.cel import CelCompileError, CelEnv, CelEvalError, compile_cel, compile_cel_bool
from pdp.cel import _ast as A
from pdp.cel._compile import _lazy, _stub, generate

SOURCES = [
    "principal.id == 'alice' && resource.attr.level > 2",
    "principal.id in resource.attr.readers || principal.attr.level >= 3",
    "has(resource.attr.archived) ? resource.attr.archived == true : false",
    "resource.attr.tags.exists(t, t.startsWith('pub')) && size(principal.roles) > 0",
    "[1, 2, 3].map(x, x * resource.attr.level).filter(x, x > 4).size() == 2",
    "resource.attr.level / 0 > 1 || principal.id == 'alice'",
    "resource.attr.missing == 1",
]


def act(**resource_attr: Any) -> dict[str, Any]:
    attr = {"level": 3, "readers": ["bob"], "tags": ["public"], "archived": False}
    attr.update(resource_attr)
    return {
        "principal": {"id": "alice", "roles": ["user"], "attr": {"level": 1}},
        "resource": {"kind": "doc", "id": "1", "attr": attr},
        "action": "read",
        "context": {},
    }


def outcome(fn: Any, activation: dict[str, Any]) -> tuple[str, Any]:
    try:
        return ("value", fn(activation))
    except CelEvalError as e:
        return ("error", str(e))


@pytest.mark.parametrize("source", SOURCES)
def test_lazy_and_eager_agree_and_the_compiled_function_is_installed(source: str) -> None:
    env = CelEnv()
    lazy = compile_cel(source, env)
    assert lazy.__code__ is _stub.__code__  # type: ignore[attr-defined]  # not compiled yet
    eager = generate(env, source, A.parse(source), require_bool=False, names=frozenset()).fn
    assert eager is not None
    activations = [act(), act(level=0), act(readers=["alice"]), act(tags=[], archived=True)]
    first = [outcome(lazy, a) for a in activations]
    code = lazy.__code__  # type: ignore[attr-defined]
    assert code is not _stub.__code__ and code.co_name == "_cel"  # installed by the first call
    assert first == [outcome(eager, a) for a in activations]
    assert first == [outcome(lazy, a) for a in activations]  # and the same ever after


def test_a_condition_still_refuses_a_non_bool_after_a_lazy_compile() -> None:
    cond = compile_cel_bool("resource.attr.level + 1", CelEnv())
    with pytest.raises(CelEvalError):
        cond(act())
    with pytest.raises(CelEvalError):
        cond(act())


def test_text_python_would_refuse_is_still_a_compile_error_at_once() -> None:
    # 250 nested lists: more brackets than Python's tokenizer nests. Compiling lazily would
    # turn this into a policy that loads and then fails every call.
    source = "[" * 250 + "principal.id" + "]" * 250 + " == []"
    with pytest.raises(CelCompileError, match="too complex"):
        compile_cel(source, CelEnv())


def test_a_chain_too_long_to_generate_is_a_compile_error_not_a_crash() -> None:
    source = " + ".join(["principal.attr.level"] * 3000) + " > 1"
    with pytest.raises(CelCompileError, match="nests too deeply"):
        compile_cel_bool(source, CelEnv())


def test_a_first_call_python_refuses_is_an_error_every_time() -> None:
    fn = _lazy("def _cel(act):\n    return (", {})
    for _ in range(2):
        with pytest.raises(CelEvalError, match="could not be compiled"):
            fn({})
    assert fn.__code__.co_name == "_failed"
