"""What one CEL `matches` may cost is bounded (pdp/cel/_regex.py).

RE2 is linear in the text, but when its DFA gives up the cost per character is the
program's size: an author's `a.{999}b.{999}c` over a caller's 64 KiB string was one RE2 call
of ~1 s that no deadline interrupts, and caller-sent patterns of that size cost ~4 ms each to
compile (bench/one_resource.py). Now a program over 10,000 instructions is refused (a compile
error at file:line:column for an author's pattern, a CEL error for a caller's), a scan of
program x UTF-8 bytes over 2e7 is an error before it runs, and in a comprehension body a
caller's pattern and each scan are charged to the budget by program size. An error fails
closed: a deny rule denies, an allow rule does not allow. No duration is asserted.
"""

from __future__ import annotations

from typing import Any

import pytest

from pdp.bundle.load import compile_files
from pdp.engine import Engine
from pdp.errors import PolicyErrors
from pdp.model.request import parse_check_request

HEAVY = "a.{999}b.{999}c"  # ~16,000 instructions
AT_CAP = "a.{620}b.{620}c"  # ~9,900: compiles; reads at most ~2,000 characters
TEXT_64K = "".join("ab"[(i * 7919) % 3 == 0] for i in range(64 * 1024))


def _policy(condition: str, effect: str = "allow") -> bytes:
    rules = (
        """
    - id: open
      actions: [read]
      effect: allow
      roles: ["*"]"""
        if effect == "deny"
        else ""
    )
    return f"""apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: rx}}
spec:
  resource: doc
  actions:
    read: {{}}
  rules:
    - id: r
      actions: [read]
      effect: {effect}
      roles: ["*"]
      condition: '{condition.replace("'", "''")}'{rules}
""".encode()


def _decide(condition: str, *, effect: str = "allow", p: Any = None, r: Any = None) -> Any:
    engine = Engine(compile_files({"rx.yaml": _policy(condition, effect)}).policy_set)
    body = {
        "principal": {"id": "u", "tenant": "t", "roles": ["user"], "attr": p or {}},
        "resources": [
            {"kind": "doc", "id": "d", "tenant": "t", "attr": r or {}, "actions": ["read"]}
        ],
    }
    response = engine.check(parse_check_request(body))
    return response.results[0].actions["read"]


def test_an_authors_pattern_over_the_program_bound_is_a_compile_error_with_its_position() -> None:
    with pytest.raises(PolicyErrors) as e:
        compile_files({"rx.yaml": _policy(f'R.attr.text.matches("{HEAVY}")')})
    message = str(e.value)
    assert message.startswith("rx.yaml:13:"), message
    assert "pattern too large: its RE2 program is over 10,000 instructions" in message


def test_the_error_suggests_size_for_a_counted_unicode_class() -> None:
    # `\p{L}` is ~1,200 instructions, so `{1,64}` of it is ~77,000.
    with pytest.raises(PolicyErrors) as e:
        compile_files({"rx.yaml": _policy(r'R.attr.name.matches("^\\p{L}{1,64}$")')})
    assert "bound a length with `size()`" in str(e.value)


@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_a_scan_over_the_bound_is_an_error_before_it_runs(effect: str) -> None:
    decision = _decide(f'R.attr.text.matches("{AT_CAP}")', effect=effect, r={"text": TEXT_64K})
    assert decision.effect == "deny"
    assert "condition_error" in decision.reasons
    assert "a string of 65,536 bytes is too long for the pattern" in decision.errors[0]


def test_the_scan_bound_counts_the_utf8_bytes_re2_steps_over() -> None:
    # 1,100 characters would be within the bound; their 2,200 bytes are not.
    decision = _decide(f'R.attr.text.matches("{AT_CAP}")', r={"text": "é" * 1100})
    assert decision.effect == "deny"
    assert "a string of 2,200 bytes is too long for the pattern" in decision.errors[0]


def test_the_same_pattern_within_the_bound_still_matches() -> None:
    text = "x" + "a" + "b" * 620 + "b" + "c" * 621 + "x"
    decision = _decide(f'R.attr.text.matches("{AT_CAP}")', r={"text": text})
    assert (decision.effect, decision.errors) == ("allow", ())


@pytest.mark.parametrize("pattern", [HEAVY, ".{999}" * 50])  # the second: 300 bytes, 400k
def test_a_callers_pattern_over_the_program_bound_fails_closed(pattern: str) -> None:
    condition = "R.attr.name.matches(P.attr.pattern)"
    for effect in ("allow", "deny"):
        decision = _decide(condition, effect=effect, p={"pattern": pattern}, r={"name": "ab"})
        assert decision.effect == "deny"
        assert "pattern too large" in decision.errors[0], decision.errors


@pytest.mark.parametrize("prefix", ["a.{999}b.{", "a.{600}b.{"])  # refused / compiled
def test_distinct_callers_patterns_in_a_comprehension_spend_the_budget(prefix: str) -> None:
    patterns = [f"{prefix}{520 + i % 99}}}c{i}" for i in range(200)]
    decision = _decide(
        "P.attr.patterns.exists(p, R.attr.name.matches(p))",
        p={"patterns": patterns},
        r={"name": "zzz"},
    )
    assert decision.effect == "deny"
    assert "work more than 100000 iterations in one evaluation" in decision.errors[0]


def test_scans_in_a_comprehension_are_charged_by_program_size() -> None:
    # 20 scans of 1,000 characters: 200 iterations at 100 characters each, but ~200,000 at
    # the program's ~9,900 instructions per character.
    decision = _decide(
        f'P.attr.texts.exists(t, t.matches("{AT_CAP}"))', p={"texts": ["ab" * 500] * 20}
    )
    assert decision.effect == "deny"
    assert "work more than 100000 iterations in one evaluation" in decision.errors[0]


def test_an_ordinary_pattern_is_unaffected() -> None:
    rule = r"R.attr.email.matches('^[a-z]+@example\\.com$')"
    assert _decide(rule, r={"email": "alice@example.com"}).effect == "allow"
    long = _decide(rule, r={"email": "a" * 60_000 + "@example.org"})
    assert (long.effect, long.errors) == ("deny", ())  # scanned: no match, no error
    in_loop = _decide(
        r"P.attr.emails.all(e, e.matches('^[a-z]+@example\\.com$'))",
        p={"emails": ["alice@example.com"] * 1000},
    )
    assert (in_loop.effect, in_loop.errors) == ("allow", ())


# Outside any comprehension: each scan at the bound charges ~19,850 iterations (9,927
# instructions x 2,000 bytes / 1,000), so five fit in one evaluation's budget and a sixth
# does not. Distinct patterns, so that no two scans are one.
def _scans(n: int) -> str:
    return " || ".join(f'R.attr.text.matches("{AT_CAP}{j}")' for j in range(n))


@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_scans_outside_a_comprehension_share_the_budget(effect: str) -> None:
    """A condition of many capped scans (`a.matches(p1) || a.matches(p2) || ...`) added up
    without bound: 100 of them took ~1 s (bench/one_resource.py `regex-or-100`). Now the
    sixth is over the evaluation's budget: an error, so a deny rule denies and an allow rule
    does not allow."""
    decision = _decide(_scans(10), effect=effect, r={"text": TEXT_64K[:2000]})
    assert decision.effect == "deny"
    assert "work more than 100000 iterations in one evaluation" in decision.errors[0]
    fits = _decide(_scans(4), effect=effect, r={"text": TEXT_64K[:2000]})
    assert (fits.effect, fits.errors) == ("deny" if effect == "allow" else "allow", ())


def test_callers_patterns_outside_a_comprehension_share_the_budget() -> None:
    """The same for patterns a caller sends: each compile is charged by its program."""
    patterns = [f"a.{{600}}b.{{{520 + i}}}c{i}" for i in range(12)]
    condition = " || ".join(f"R.attr.name.matches(P.attr.p[{i}])" for i in range(12))
    decision = _decide(condition, p={"p": patterns}, r={"name": "zzz"})
    assert decision.effect == "deny"
    assert "work more than 100000 iterations in one evaluation" in decision.errors[0]
