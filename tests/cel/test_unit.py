"""Unit tests of the CEL compiler: API, errors, extensions."""

from __future__ import annotations

import contextlib
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.cel import CelCompileError, CelEnv, CelEvalError, CelUint, compile_cel, compile_cel_bool

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def act(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "principal": {
            "id": "alice",
            "tenant": "acme",
            "roles": ["user"],
            "scopes": ["kb:read", "kb:write"],
            "attr": {"dept": "eng"},
            "actor": None,
        },
        "resource": {
            "kind": "document",
            "id": "d1",
            "tenant": "acme",
            "attr": {"owner": "alice", "level": 3.0},
        },
        "action": "read",
        "context": {"ip": "10.1.2.3", "attr": {"mfa": True}},
        "now": NOW,
    }
    base.update(over)
    return base


def ev(src: str, env: CelEnv | None = None, **over: Any) -> Any:
    return compile_cel(src, env or CelEnv())(act(**over))


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ('resource.attr.owner == principal.id && "kb:read" in principal.scopes', True),
        ("R.attr.owner == P.id", True),
        ("resource.attr.level >= 3", True),
        ("resource.attr.level == 3", True),
        ("1 == 1.0", True),
        ("1u == 1", True),
        ("true == 1", False),
        ("actor == null", True),
        ("has(resource.attr.owner)", True),
        ("has(resource.attr.nope)", False),
        ("resource.attr.nope == 1 || true", True),
        ("false && resource.attr.nope == 1", False),
        ("principal.roles.exists(r, r == 'user')", True),
        ("[1, 2, 3].map(x, x * 2)", [2, 4, 6]),
        ("[1, 2, 3].filter(x, x > 1)", [2, 3]),
        ("'abc'.startsWith('a') && 'abc'.matches('^a.c$')", True),
        ("size(principal.scopes)", 2),
        ("type(1u) == uint", True),
        ("type(1) == int", True),
        ("principal.scopes.containsAll(['kb:read'])", True),
        ("hasAny(principal.scopes, ['x', 'kb:write'])", True),
        ("isSubset(['kb:read'], principal.scopes)", True),
        ("intersect(principal.scopes, ['kb:write', 'z'])", ["kb:write"]),
        ("'A.b'.lowerAscii().split('.')", ["a", "b"]),
    ],
)
def test_values(src: str, want: Any) -> None:
    got = ev(src)
    assert got == want and type(got) is type(want)


def test_uint_is_distinct() -> None:
    v = ev("1u")
    assert isinstance(v, CelUint) and v == 1


@pytest.mark.parametrize(
    ("src", "msg"),
    [
        ("resource.attr.nope", "no such key: `nope`"),
        ("1 / 0", "division by zero"),
        ("9223372036854775807 + 1", "overflow"),
        ("'a' < 1", "no matching overload"),
        ("has(resource.nope.x)", "no such key"),
        ("1 && true", "no matching overload"),
    ],
)
def test_eval_errors(src: str, msg: str) -> None:
    with pytest.raises(CelEvalError, match=msg):
        ev(src)


@pytest.mark.parametrize("src", ["size(null.meta_u1) > 0", "true.meta_u2 == 1", "false.x.y"])
def test_a_field_of_a_null_or_bool_literal_fails_at_run_time_without_a_python_warning(
    src: str,
) -> None:
    """`None['meta']` in the generated text made Python print a SyntaxWarning at compile time
    (found by the checker's property test): noise on the server's stderr about code the author
    never wrote. It is still a run-time error, which denies."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CelEvalError, match="no matching overload"):
            ev(src)


def test_require_bool() -> None:
    c = compile_cel_bool("resource.attr.level", CelEnv())
    with pytest.raises(CelEvalError, match="want bool"):
        c(act())
    assert compile_cel_bool("resource.attr.level > 1.0", CelEnv())(act()) is True


@pytest.mark.parametrize(
    ("src", "msg", "line", "column"),
    [
        ("1 +", "syntax error", 1, 4),
        ("a.b == 1", "undeclared reference to `a`", 1, 1),
        ("principal.id == 'x' &&\n  nosuch(1)", "unknown function `nosuch`", 2, 3),
        ("size(1, 2)", "wrong number of arguments", 1, 1),
        ("C.nope", "undefined constant `C.nope`", 1, 3),
        ("V.nope", "undefined variable `V.nope`", 1, 3),
        ("data.nope", "undefined data entry", 1, 6),
        ("Foo{a: 1}", "not supported", 1, 1),
    ],
)
def test_compile_errors(src: str, msg: str, line: int, column: int) -> None:
    with pytest.raises(CelCompileError, match=msg) as ei:
        compile_cel(src, CelEnv())
    e = ei.value
    assert (e.line, e.column) == (line, column)
    assert e.variable is None  # type: ignore[attr-defined]
    assert "^" in str(e)


def test_variables_inline_and_cycles() -> None:
    env = CelEnv(
        variables={
            "is_owner": "resource.attr.owner == principal.id",
            "ok": "V.is_owner && C.flag",
            "a": "V.b",
            "b": "V.a",
            "bad": "1 +",
        },
        constants={"flag": True},
    )
    assert compile_cel("V.ok", env)(act()) is True
    with pytest.raises(CelCompileError, match="cycle") as ei:
        compile_cel("V.a", env)
    assert ei.value.variable in ("a", "b")  # type: ignore[attr-defined]
    with pytest.raises(CelCompileError) as ei:
        compile_cel("true && V.bad", env)
    assert ei.value.variable == "bad"  # type: ignore[attr-defined]
    assert ei.value.expression == "1 +"


def test_uses_time() -> None:
    env = CelEnv(variables={"late": "now.getHours() > 18"})
    assert compile_cel("now > timestamp('2020-01-01T00:00:00Z')", env).uses_time
    assert compile_cel("now().getFullYear() == 2026", env).uses_time
    assert compile_cel("context.time < now", env).uses_time
    assert compile_cel("has(context.time)", env).uses_time
    assert compile_cel("V.late", env).uses_time
    assert not compile_cel("principal.id == 'x'", env).uses_time


def test_time_functions() -> None:
    assert ev("now.getHours('Europe/Paris')") == 13
    assert ev("now.getHours()") == 12
    assert ev("now.getDayOfWeek()") == 4  # 2026-01-01 is a Thursday
    assert ev("now.getFullYear('America/Los_Angeles')") == 2026
    assert ev("now - duration('24h') < now")
    assert ev("string(duration('1h30m'))") == "5400s"
    with pytest.raises(CelEvalError, match="time zone"):
        ev("now.getHours('Mars/Olympus')")


def test_network_and_country() -> None:
    env = CelEnv(
        data={
            "geoip": {
                "ranges": [
                    {"cidr": "81.2.69.0/24", "country": "GB"},
                    {"cidr": "10.0.0.0/8", "country": "ZZ"},
                    {"cidr": "10.1.0.0/16", "country": "FR"},
                    {"cidr": "2001:db8::/32", "country": "DE"},
                ]
            }
        },
        constants={"corp": ["10.0.0.0/8", "192.168.0.0/16"]},
    )
    assert ev("country(context.ip)", env) == "FR"
    assert ev("country('10.2.0.1')", env) == "ZZ"
    assert ev("country('81.2.69.160')", env) == "GB"
    assert ev("country('2001:db8::1')", env) == "DE"
    assert ev("country('8.8.8.8')", env) == ""
    assert ev("country('garbage')", env) == ""
    assert ev("inCIDRs(context.ip, C.corp)", env) is True
    assert ev("inCIDRs('8.8.8.8', C.corp)", env) is False
    assert ev("inCIDRs(context.ip, ['10.1.2.0/24'])", env) is True
    assert ev("cidr('10.0.0.0/8').containsIP(context.ip)", env) is True
    assert ev("ip(context.ip).isLoopback()", env) is False
    with pytest.raises(CelEvalError, match="parse error"):
        ev("inCIDRs('nope', C.corp)", env)


def test_incidrs_of_a_constant_that_is_not_a_list_is_a_compile_error() -> None:
    """A constant second argument is read into CIDR ranges when compiling: a bool was iterated
    (a TypeError traceback out of `pdp validate` and policy loading) and a string read as
    one-character CIDRs. Found by the checker's property test (session 19)."""
    env = CelEnv(constants={"flag": True, "one": "10.0.0.0/8"})
    for expr, column in [
        ("inCIDRs(context.ip, true)", 1),
        ("inCIDRs(context.ip, C.flag)", 23),
        ("inCIDRs(context.ip, C.one)", 23),
        ('inCIDRs(context.ip, "10.0.0.0/8")', 21),
    ]:
        with pytest.raises(CelCompileError, match="must be a list of CIDRs") as e:
            compile_cel(expr, env)
        assert e.value.column == column, (expr, e.value.column)


def test_fail_closed_absorption() -> None:
    # An error on one side of || is absorbed only by a true on the other.
    assert ev("resource.attr.missing || true") is True
    with pytest.raises(CelEvalError):
        ev("resource.attr.missing || false")
    with pytest.raises(CelEvalError):
        ev("true && resource.attr.missing")


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    st.lists(
        st.sampled_from(
            [
                *"abxyz019._'\"()[]{}!-+*/%<>=&|?:,$ \n\\",
                " in ",
                "has(",
                "principal",
                "R.attr",
                "true",
                "false",
                "null",
                "1u",
                "2.5",
                "b'x'",
                "r'x'",
                ".all(",
                ".map(",
                "size(",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_fuzz_compiler_raises_only_compile_errors(src: str) -> None:
    try:
        compiled = compile_cel(src, CelEnv())
    except CelCompileError:
        return
    with contextlib.suppress(CelEvalError):
        compiled(act())


def test_deep_nesting_compiles() -> None:
    deep = "(" * 60 + "1" + ")" * 60
    assert ev(deep) == 1
    chain = " && ".join(["true"] * 200)
    assert ev(chain) is True
    nested = "true"
    for _ in range(30):
        nested = f"(principal.id == 'alice' ? {nested} : false)"
    assert ev(nested) is True
    macros = "[1].all(x, " * 25 + "true" + ")" * 25
    assert ev(macros) is True


@pytest.mark.parametrize("source", ["true{}", "false{a: 1}", "null{}"])
def test_message_construction_on_a_literal_is_a_compile_error(source: str) -> None:
    # These tokens carry no position in the parser: the error must still render.
    with pytest.raises(CelCompileError) as info:
        compile_cel(source, CelEnv())
    assert "^" in str(info.value)


def test_same_shape_shares_code_not_constants() -> None:
    # Constants are globals of each function, so expressions that differ only in constants
    # compile to one code object; each function still sees its own values.
    env = CelEnv()
    srcs = [
        "resource.attr.level >= 3.0 && principal.id == 'alice' && [1, 2][0] == 1",
        "resource.attr.level >= 4.0 && principal.id == 'bob' && [1, 2][0] == 1",
        "resource.attr.level >= 3.0 && principal.id == 'alice' && [7, 2][0] == 7",
    ]
    fns = [compile_cel_bool(s, env) for s in srcs]
    assert [f(act()) for f in fns] == [True, False, True]
    # After the first call (which compiles the Python), each function runs the generated code.
    codes = {f.__code__ for f in fns}  # type: ignore[attr-defined]
    assert len(codes) == 1 and next(iter(codes)).co_name == "_cel"
    bob = act(principal={**act()["principal"], "id": "bob"})
    assert [f(bob) for f in fns] == [False, False, False]
    bob["resource"]["attr"]["level"] = 4.0
    assert [f(bob) for f in fns] == [False, True, False]


def test_batch_shares_only_environment_independent_expressions() -> None:
    from pdp.cel import batch

    one, two = CelEnv(constants={"n": 1}), CelEnv(constants={"n": 2})
    with batch():
        a, b = (
            compile_cel_bool("principal.id == 'alice'", one),
            compile_cel_bool("principal.id == 'alice'", two),
        )
        assert a is b  # reads nothing from its environment: one compiled object
        c, d = compile_cel("C.n", one), compile_cel("C.n", two)
        assert c is not d and (c(act()), d(act())) == (1, 2)
        # require_bool is part of the key
        assert compile_cel("principal.id == 'alice'", one) is not a
    assert compile_cel_bool("principal.id == 'alice'", one) is not a  # batch over: no sharing


# --- matches: RE2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "want"),
    [
        ("^a.c$", "abc", True),
        ("b", "abc", True),  # unanchored search, as the spec says
        (r"\d", "٣", False),  # RE2's \d is ASCII (Python's re would match an Arabic-Indic 3)
        (r"^\w+$", "héllo", False),
        (r"^\pL+$", "héllo", True),
        ("(?i)ABC", "xabcx", True),
        ("a.c", "a\nc", False),
        ("(?s)a.c", "a\nc", True),
        (r"^x\z", "x", True),
    ],
)
def test_matches_is_re2(pattern: str, subject: str, want: bool) -> None:
    env = CelEnv(names=("s", "p"))
    assert compile_cel("s.matches(p)", env)({"s": subject, "p": pattern}) is want
    # The same through a constant pattern, compiled once at compile time.
    literal = "'" + pattern.replace("\\", "\\\\") + "'"
    assert compile_cel(f"s.matches({literal})", env)({"s": subject}) is want
    assert compile_cel(f"matches(s, {literal})", env)({"s": subject}) is want


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(", r"missing \)"),
        (r"(a)\\1", "invalid escape sequence"),  # backreference
        ("(?=a)", "invalid perl operator"),  # lookahead
        (r"a\\Z", "invalid escape sequence"),  # Python's \Z; RE2 spells it \z
        ("a{1001}", "invalid repetition size"),
    ],
)
def test_constant_pattern_re2_refuses_is_a_compile_error(pattern: str, reason: str) -> None:
    src = f"principal.id.matches('{pattern}')"
    with pytest.raises(CelCompileError, match=reason) as info:
        compile_cel(src, CelEnv())
    assert (info.value.line, info.value.column) == (1, src.index("'") + 1)
    # From a constant too: C.x is inlined, so its pattern is checked when compiled.
    with pytest.raises(CelCompileError, match=reason):
        compile_cel(
            "principal.id.matches(C.p)", CelEnv(constants={"p": pattern.replace("\\\\", "\\")})
        )


def test_dynamic_pattern_re2_refuses_is_a_run_time_error() -> None:
    f = compile_cel("principal.id.matches(resource.attr.p)", CelEnv())
    a = act()
    a["resource"]["attr"]["p"] = "("
    with pytest.raises(CelEvalError, match="invalid regular expression"):
        f(a)
    a["resource"]["attr"]["p"] = "^ali"
    assert f(a) is True


def test_matches_type_errors_and_unencodable_strings() -> None:
    env = CelEnv(names=("s",))
    with pytest.raises(CelEvalError, match="no matching overload"):
        compile_cel("s.matches('a')", env)({"s": 1})
    with pytest.raises(CelEvalError, match="no matching overload"):
        compile_cel("'a'.matches(s)", env)({"s": 1})
    with pytest.raises(CelEvalError, match="not valid unicode"):
        compile_cel("s.matches('a')", env)({"s": "\ud800"})
    # A constant subject and pattern fold to a constant.
    assert compile_cel("'abc'.matches('^a')", env).python_source.count("_rx") == 0
