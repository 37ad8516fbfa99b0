"""ReDoS: CEL `matches` is RE2, so a caller's string cannot stall the server.

Issue 19, point 1: with Python's backtracking `re`, the rule below and the email
`"a"*28 + "!"` froze every call of a real `pdp serve` for 14 s. Against a real server these
tests send that input and far longer ones, and a pattern of the caller's own choosing, and
hold every call to a gRPC deadline (no measured duration is asserted): each is decided (a
deny, checked), and an ordinary call made while they run gets its answer within its own.
Invalid constant patterns are `pdp validate` errors with file:line:column; the hypothesis
tests check `matches` against Google's reference CEL engine (cel-cpp, RE2).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.cel import CelEnv, compile_cel
from pdp.client._convert import request_to_proto
from pdp.errors import CelCompileError, CelEvalError
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

# The rule, verbatim; a nested quantifier that backtracking engines explore
# exponentially on a near-miss.
EMAIL_RULE = r'principal.attr.email.matches("^([a-zA-Z0-9]+)*@example\\.com$")'

POLICY = f"""
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: mail}}
spec:
  resource: mailbox
  actions:
    read: {{}}
  rules:
    - id: company-email
      actions: [read]
      effect: allow
      condition: >-
        {EMAIL_RULE}
      reason: company_email
---
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: filters}}
spec:
  resource: filter
  actions:
    apply: {{}}
  rules:
    - id: blocked-id
      actions: [apply]
      effect: deny
      condition: principal.id.matches(resource.attr.block)
      reason: blocked
    - id: caller-pattern
      actions: [apply]
      effect: allow
      condition: principal.attr.email.matches(resource.attr.pattern)
      reason: pattern_matched
---
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: notes}}
spec:
  resource: note
  actions:
    read: {{}}
  rules:
    - id: owner
      actions: [read]
      effect: allow
      condition: resource.attr.owner == principal.id
      reason: owner
"""

DEADLINE_S = 5.0  # generous: backtracking took 14 s on the shortest input below
LENGTHS = (28, 1_000, 10_000, 60_000)  # 60,000 is under the 64 KiB string limit


def pathological(n: int) -> str:
    return "a" * n + "!"


def mailbox_check(email: str) -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"email": email}}
    resource = {"kind": "mailbox", "id": "m1", "tenant": "t", "actions": ["read"]}
    return request_to_proto(principal, [resource])


def filter_check(email: str, pattern: str, block: str = "^nobody$") -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"email": email}}
    attr = {"pattern": pattern, "block": block}
    resource = {"kind": "filter", "id": "f1", "tenant": "t", "attr": attr, "actions": ["apply"]}
    return request_to_proto(principal, [resource])


NOTE_CHECK = request_to_proto(
    {"id": "bob", "tenant": "t"},
    [{"kind": "note", "id": "n1", "tenant": "t", "attr": {"owner": "bob"}, "actions": ["read"]}],
)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("redos")
    for i, doc in enumerate(textwrap.dedent(POLICY).split("---\n")):
        (root / f"policy{i}.yaml").write_text(doc.lstrip())
    return root


@pytest.fixture(scope="module")
def served(policy_dir: Path) -> Iterator[Served]:
    # No decision cache: every call below is evaluated, none answered from memory.
    with pdp_serve(policy_dir, "--decision-cache", "0") as s:
        yield s


def action(reply: pb.CheckResponse, name: str) -> pb.ActionResult:
    return reply.results[0].actions[name]


def test_ordinary_email_is_allowed(served: Served) -> None:
    reply = served.check(mailbox_check("alice@example.com"), timeout=DEADLINE_S)
    assert action(reply, "read").effect == pb.EFFECT_ALLOW
    assert list(action(reply, "read").reasons) == ["company_email"]


@pytest.mark.parametrize("n", LENGTHS)
def test_pathological_email_is_decided_within_the_deadline(served: Served, n: int) -> None:
    reply = served.check(mailbox_check(pathological(n)), timeout=DEADLINE_S)
    decision = action(reply, "read")
    assert decision.effect == pb.EFFECT_DENY
    assert list(decision.reasons) == ["no_matching_rule"]
    assert not decision.errors  # a clean non-match, not an error


def test_ordinary_calls_keep_their_deadline_while_attacks_run(served: Served) -> None:
    attackers, calls_each = 4, 6
    started = threading.Event()
    outcomes: list[Any] = []
    lock = threading.Lock()

    def attack(k: int) -> None:
        for i in range(calls_each):
            started.set()
            try:
                reply = served.check(
                    mailbox_check(pathological(60_000 - 10 * k - i)), timeout=DEADLINE_S
                )
                got: Any = action(reply, "read").effect
            except grpc.RpcError as e:
                got = e.code()
            with lock:
                outcomes.append(got)

    threads = [threading.Thread(target=attack, args=(k,)) for k in range(attackers)]
    for t in threads:
        t.start()
    assert started.wait(DEADLINE_S)
    ordinary = []
    while any(t.is_alive() for t in threads) or not ordinary:
        reply = served.check(NOTE_CHECK, timeout=DEADLINE_S)  # raises DEADLINE_EXCEEDED if stalled
        ordinary.append(action(reply, "read").effect)
    for t in threads:
        t.join()
    assert ordinary and set(ordinary) == {pb.EFFECT_ALLOW}
    assert outcomes == [pb.EFFECT_DENY] * (attackers * calls_each)


@pytest.mark.parametrize("n", LENGTHS)
def test_caller_chosen_pattern_cannot_stall_either(served: Served, n: int) -> None:
    """The pattern itself from the request: `(a+)+$` is the classic catastrophic one."""
    reply = served.check(filter_check(pathological(n), "^(a+)+$"), timeout=DEADLINE_S)
    assert action(reply, "apply").effect == pb.EFFECT_DENY
    assert list(action(reply, "apply").reasons) == ["no_matching_rule"]
    reply = served.check(filter_check("a" * n, "^(a+)+$"), timeout=DEADLINE_S)
    assert action(reply, "apply").effect == pb.EFFECT_ALLOW


@pytest.mark.parametrize("pattern", ["(", "(a)\\1", "(?=a)", "a{2000}"])
def test_dynamic_pattern_re2_refuses_fails_closed(served: Served, pattern: str) -> None:
    # In an allow rule: an error, so no match; in a deny rule: a match (condition_error).
    reply = served.check(filter_check("a", pattern), timeout=DEADLINE_S)
    decision = action(reply, "apply")
    assert decision.effect == pb.EFFECT_DENY
    assert list(decision.reasons) == ["no_matching_rule", "condition_error"]
    assert any("invalid regular expression" in e for e in decision.errors)
    reply = served.check(filter_check("a", "^a$", block=pattern), timeout=DEADLINE_S)
    decision = action(reply, "apply")
    assert decision.effect == pb.EFFECT_DENY
    assert "condition_error" in decision.reasons


# -- invalid constant patterns are load errors -----------------------------------------------

BAD_PATTERNS = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: bad}
spec:
  resource: thing
  actions:
    read: {}
  rules:
    - id: unbalanced
      actions: [read]
      effect: allow
      condition: principal.id.matches("(")
    - id: lookahead
      actions: [read]
      effect: allow
      condition: matches(principal.id, '^(?=admin)')
"""


def test_invalid_constant_patterns_fail_validate_with_position(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_PATTERNS)
    out = subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "bad.yaml:12:39: invalid regular expression `(`: missing ): (" in text
    assert "bad.yaml:16:40: invalid regular expression `^(?=admin)`" in text
    assert '  | principal.id.matches("(")\n  |                      ^' in text


def test_invalid_constant_pattern_is_a_compile_error_at_the_pattern() -> None:
    expr = "principal.id == 'x' || principal.id.matches('a(b')"
    with pytest.raises(CelCompileError) as info:
        compile_cel(expr, CelEnv())
    assert (info.value.line, info.value.column) == (1, expr.index("'a(b'") + 1)
    assert "missing )" in info.value.message


# -- agreement with RE2 (hypothesis) ---------------------------------------------------------

cel_ref = pytest.importorskip("cel_expr_python.cel")
REF_ENV = cel_ref.NewEnv(variables={"s": cel_ref.Type.DYN, "p": cel_ref.Type.DYN})
OURS = CelEnv(names=("s", "p"))

# Pieces of patterns: RE2 syntax, Perl/Python syntax RE2 refuses, and unbalanced bits.
TOKENS = st.sampled_from(
    ["a", "b", "é", "日", ".", "^", "$", "|", "*", "+", "?", "*?", "{2}", "{1,3}", "{,2}",
     "(", ")", "(?:", "(?i)", "(?s)", "[a-c]", "[^a]", "[[:alpha:]]", "\\d", "\\w", "\\s",
     "\\b", "\\B", "\\A", "\\z", "\\pL", "\\p{Greek}", "\\x41", "\\n", "\\.", "(?P<n>",
     "\\1", "(?=", "(?!", "(?<=", "\\Z", "(?<n>", "a{1001}", "\\C", "[z-a]", "x**"]
)  # fmt: skip
PATTERNS = st.lists(TOKENS, min_size=0, max_size=6).map("".join)
SUBJECTS = st.text(alphabet="ab é日AΩ\n1_.", max_size=12)


def cel_literal(s: str) -> str:
    escaped = s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def ours(expr: str, data: dict[str, str]) -> tuple[str, Any]:
    try:
        return "value", compile_cel(expr, OURS)(data)
    except (CelCompileError, CelEvalError) as e:
        return "error", str(e)


def reference(expr: str, data: dict[str, str]) -> tuple[str, Any]:
    try:
        result = REF_ENV.compile(expr, disable_check=True).eval(data=data)
    except Exception as e:  # the reference may refuse a constant pattern at compile time
        return "error", str(e)
    if result.type().name() == "ERROR":
        return "error", repr(result)
    return "value", result.value()


def re2_refuses(pattern: str) -> bool:
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error:
        return True
    return False


AGREEMENT = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@AGREEMENT
@given(pattern=PATTERNS, subject=SUBJECTS)
def test_dynamic_matches_agrees_with_the_reference(pattern: str, subject: str) -> None:
    data = {"s": subject, "p": pattern}
    got, want = ours("s.matches(p)", data), reference("s.matches(p)", data)
    assert got[0] == want[0], f"{pattern!r} on {subject!r}: ours={got} reference={want}"
    assert got[0] == "value" or re2_refuses(pattern)
    if got[0] == "value":
        assert got[1] == bool(want[1]), f"{pattern!r} on {subject!r}: {got} vs {want}"


@AGREEMENT
@given(pattern=PATTERNS, subject=SUBJECTS)
def test_constant_pattern_refused_at_compile_exactly_when_re2_refuses(
    pattern: str, subject: str
) -> None:
    expr = f"s.matches({cel_literal(pattern)})"
    try:
        compiled = compile_cel(expr, OURS)
    except CelCompileError as e:
        assert re2_refuses(pattern), f"{pattern!r} refused but RE2 accepts it: {e}"
        assert reference(expr, {"s": subject})[0] == "error"
        return
    assert not re2_refuses(pattern), f"{pattern!r} compiled but RE2 refuses it"
    want = reference(expr, {"s": subject})
    assert want[0] == "value" and compiled({"s": subject}) == bool(want[1])
