"""decide(): the decision semantics of DESIGN.md, per resource x action, failing closed.

Order: kind and action known → tenant isolation (with audited exceptions) → scopes of the
principal and of the actor → guards and deny rules (any match denies; an error denies) →
allow rules (first match allows; an error does not allow) → default deny.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pdp.cel import NEVER, STOP_AT, Deadline, Interrupted
from pdp.errors import brief
from pdp.model import decision as d
from pdp.model.decision import (
    ActionDecision,
    BundleInfo,
    CheckResponse,
    ResourceDecision,
    TraceStep,
)
from pdp.model.request import CheckRequest, ResourceRequest

from .compiled import (
    RULES_PER_CLOCK_READ,
    CompiledAction,
    CompiledKind,
    CompiledRule,
    PolicySet,
)
from .counters import Counters, MemoryCounters, Take
from .limits import LIMITS_LOG, apply_limits

Clock = Callable[[], datetime]

# Distinct missing-scope denials kept for reuse; bounded because scope sets come from callers.
_MAX_SCOPE_DENIALS = 4096
_NO_STOP = math.inf
# Between how many of a resource's actions a deadline is looked at (`_decide_resource`).
_ACTIONS_PER_CLOCK_READ = 4
_monotonic = time.monotonic


class DeadlineExceeded(Exception):
    """`Engine.check` passed its `stop_at` inside a resource: `done` of `total` resources were
    decided. No decision is returned, none partial (the servers answer DEADLINE_EXCEEDED / 504)."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"deadline exceeded after {done} of {total} resources")
        self.done = done
        self.total = total


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _MillisecondClock:
    """The server's clock at millisecond precision, with its RFC 3339 text made once per ms.

    Reading and formatting the time cost more than deciding a small request; under load many
    decisions fall in the same millisecond. One tuple attribute, swapped whole, keeps the time
    and its text consistent across threads.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[int, datetime, str] = (-1, _EPOCH, "")

    def __call__(self) -> tuple[datetime, str]:
        ms = time.time_ns() // 1_000_000
        last = self._last
        if last[0] != ms:
            now = datetime.fromtimestamp(ms / 1000, UTC)
            last = (ms, now, now.isoformat(timespec="milliseconds"))
            self._last = last
        return last[1], last[2]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Decision ids: a random per-process prefix and a counter, 32 hex digits. Unique across
# processes and restarts (64 random bits) and cheaper than 128 fresh random bits per decision.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


def _new_id_prefix() -> None:
    """Draw this process's prefix and counter again: a process forked after this module was
    imported (each worker of `pdp serve --workers N`) would otherwise number its decisions
    exactly as its siblings do, the same ids for different decisions."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex()
    _ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


os.register_at_fork(after_in_child=_new_id_prefix)


def new_decision_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


class _Undecided:
    """Per-resource memo of derived roles, so each is evaluated at most once per resource."""

    __slots__ = ("derived", "used_quota", "used_time")

    def __init__(self) -> None:
        self.derived: dict[str | tuple[str, str], bool | Exception] = {}
        # A rate limit was consulted: the answer depends on counters, never cacheable.
        self.used_quota = False
        # A condition that may read the clock was evaluated: the answer is not cacheable
        # unless the request fixed the time. Decided by tenant or scope alone, it is.
        self.used_time = False


class Engine:
    """Decides requests under one immutable `PolicySet`; safe to share between threads."""

    def __init__(
        self,
        policy_set: PolicySet,
        bundle: BundleInfo | None = None,
        *,
        clock: Clock = _utc_now,
        counters: Counters | None = None,
    ) -> None:
        self.policy_set = policy_set
        # Rate-limit buckets. A server's holder hands every engine it activates the same
        # store, so quotas outlive bundle swaps; alone, an engine keeps its own.
        self.counters: Counters = counters if counters is not None else MemoryCounters()
        self._limits = policy_set.limits
        self.bundle = bundle or BundleInfo(name="local", version="0.0.0", revision="")
        self._kinds: Mapping[str, CompiledKind] = policy_set.kinds
        self._clock = clock
        self._fast_clock = _MillisecondClock() if clock is _utc_now else None
        self._scope_denials: dict[tuple[str, str, frozenset[str]], ActionDecision] = {}

    def check(
        self,
        request: CheckRequest,
        *,
        coverage: set[tuple[str, str]] | None = None,
        before_next: Callable[[int, int], None] | None = None,
        stop_at: float | Deadline = _NO_STOP,
    ) -> CheckResponse:
        """Decide every resource x action of `request`.

        `coverage`, when given, receives (policy, rule) for every rule that matched — the test
        runner uses it; the serving path passes nothing. `before_next(done, total)`, when
        given, is called between one resource and the next and may raise to stop the batch
        (the server stops a call whose deadline passed). `stop_at` (monotonic seconds), the
        call's deadline, stops a resource being decided: among its actions, between its rules,
        and inside CEL comprehensions and RE2 scans (the activation's `pdp.cel.STOP_AT`); past
        it, `DeadlineExceeded` is raised, also when the last resource was decided past it
        (nothing is answered late). Given as a `pdp.cel.Deadline`, it is read afresh at each
        check, so its maker may bring it forward while the call runs (a server's drain)."""
        if request.time is not None:
            now = request.time
            now_text = now.isoformat()
        elif self._fast_clock is not None:
            now, now_text = self._fast_clock()
        else:
            now = self._clock()
            now_text = now.isoformat()
        context = request.context
        country_of = self.policy_set.country_of
        if not context.get("country") and context.get("ip") and country_of is not None:
            context = {**context, "country": country_of(context["ip"])}
        time_dependent = uses_quota = False
        results = []
        # The rate-limit takes granted so far, given back if the call stops: a call answered
        # with an error never got the allow it took quota for.
        spent: list[Take] | None = [] if self._limits else None
        resources = request.resources
        if isinstance(stop_at, Deadline):
            stop: Deadline | None = stop_at
        else:
            stop = None if stop_at == _NO_STOP else Deadline(stop_at)
        for i, res in enumerate(resources):
            if i and before_next is not None:
                before_next(i, len(resources))
            try:
                decisions, td, uq = self._decide_resource(
                    request, res, context, now, coverage, stop, spent
                )
            except Interrupted:
                self._give_back(spent, now)
                raise DeadlineExceeded(i, len(resources)) from None
            except BaseException:  # `before_next` stopped the batch, or a bug: not answered
                self._give_back(spent, now)
                raise
            time_dependent = time_dependent or td
            uses_quota = uses_quota or uq
            results.append(ResourceDecision(kind=res.kind, id=res.id, actions=decisions))
        if stop is not None and stop.at < _NO_STOP and _monotonic() >= stop.at:
            # Made, but late (the last operation ran past the deadline uninterrupted): a gRPC
            # caller has given up, and an HTTP caller is owed a 504, so it is not answered.
            self._give_back(spent, now)
            raise DeadlineExceeded(len(resources), len(resources))
        return CheckResponse(
            request_id=request.request_id,
            decision_id=new_decision_id(),
            bundle=self.bundle,
            results=tuple(results),
            evaluated_at=now_text,
            time_dependent=time_dependent,
            uses_quota=uses_quota,
            spent=tuple(spent) if spent else (),
        )

    def give_back(self, response: CheckResponse) -> None:
        """Give back the quota `response`'s decisions took: its call ended in an error (a
        later part of it stopped at its deadline, its caller went away) and the decision is
        never answered. Best effort: a store that fails keeps the quota spent (logged)."""
        if response.spent:
            self._give_back(list(response.spent), datetime.now(UTC))

    def _give_back(self, spent: list[Take] | None, now: datetime) -> None:
        if not spent:
            return
        try:
            self.counters.give_back(spent, now.timestamp())
        except Exception as exc:
            LIMITS_LOG.log(
                logging.WARNING, "give_back", f"rate-limit quota of a stopped call kept: {exc}"
            )

    def _decide_resource(
        self,
        request: CheckRequest,
        res: ResourceRequest,
        context: Mapping[str, Any],
        now: datetime,
        coverage: set[tuple[str, str]] | None,
        stop: Deadline | None,
        spent: list[Take] | None = None,
    ) -> tuple[dict[str, ActionDecision], bool, bool]:
        kind = self._kinds.get(res.kind)
        if kind is None:
            deny = ActionDecision(
                effect=d.DENY,
                reasons=(d.UNKNOWN_RESOURCE_KIND,),
                message=f"no policy governs resource kind `{res.kind}`",
            )
            return dict.fromkeys(res.actions, deny), False, False
        if kind.schemas is not None:
            refused = self._schema_check(request, res, kind, context)
            if refused is not None:  # denied before any rule: no time read, no quota taken
                return dict.fromkeys(res.actions, refused), False, False
        activation = {
            "principal": request.principal,
            "resource": res.resource,
            "action": "",
            "context": context,
            "now": now,
            STOP_AT: NEVER if stop is None else stop,  # CEL's charges, `_first_match` read it
        }
        memo = _Undecided()
        out: dict[str, ActionDecision] = {}
        for action in res.actions:
            # A resource may ask up to `max_checks` actions, each running its rules: with a
            # deadline, the clock is read after every `_ACTIONS_PER_CLOCK_READ` of them (inside
            # one, between its rules and at CEL's charges). The usual resource of one to three
            # actions reads no clock here.
            if (
                stop is not None
                and out
                and not len(out) % _ACTIONS_PER_CLOCK_READ
                and _monotonic() >= stop.at
            ):
                raise Interrupted
            compiled = kind.actions.get(action)
            if compiled is None:
                out[action] = ActionDecision(
                    effect=d.DENY,
                    policy=kind.policy,
                    reasons=(d.UNKNOWN_ACTION,),
                    message=f"resource kind `{res.kind}` has no action `{action}`",
                )
                continue
            activation["action"] = action
            try:
                decision = self._decide(request, res, kind, compiled, activation, memo, coverage)
                limits = self._limits.get((res.kind, action)) if self._limits else None
                if limits and decision.effect == d.ALLOW:
                    memo.used_quota = True
                    decision = apply_limits(decision, limits, activation, self.counters, now, spent)
                out[action] = decision
            except Exception as exc:  # fail closed on anything unexpected
                out[action] = ActionDecision(
                    effect=d.DENY,
                    policy=kind.policy,
                    reasons=(d.INTERNAL_ERROR,),
                    errors=(f"internal error: {type(exc).__name__}",),
                )
        return out, memo.used_time, memo.used_quota

    @staticmethod
    def _schema_check(
        request: CheckRequest, res: ResourceRequest, kind: CompiledKind, context: Mapping[str, Any]
    ) -> ActionDecision | None:
        """Attributes against the kind's schemas: a deny, or SchemaViolation in reject mode."""

        def index() -> int:  # only on a violation: the path names the resource
            return next(i for i, r in enumerate(request.resources) if r is res)

        bad = kind.schemas.violation(request.principal, res.resource, context, index)
        if bad is None:
            return None
        # Imported by a policy set with schemas (with fastjsonschema), not by every server.
        from .schemas import SCHEMA_VIOLATION, SchemaViolation

        if kind.schemas.reject:
            raise SchemaViolation(bad.field, bad.message)
        return ActionDecision(
            effect=d.DENY,
            policy=kind.policy,
            reasons=(SCHEMA_VIOLATION,),
            message=f"`{bad.field}` {bad.message}",
        )

    def _decide(
        self,
        request: CheckRequest,
        res: ResourceRequest,
        kind: CompiledKind,
        action: CompiledAction,
        act: dict[str, Any],
        memo: _Undecided,
        coverage: set[tuple[str, str]] | None,
    ) -> ActionDecision:
        trace: list[TraceStep] | None = [] if request.explain else None
        errors: list[str] = []
        reasons_extra: tuple[str, ...] = ()
        policy = kind.policy
        # A stage of many rules reads the stop time between them; the usual action's do not.
        first_match = self._first_match_watched if action.long_stages else self._first_match

        # 1. Tenant isolation.
        if kind.tenancy == "tenant":
            ptenant = request.principal["tenant"]
            rtenant = res.resource["tenant"]
            if not ptenant or not rtenant:
                who = "principal" if not ptenant else "resource"
                return self._deny(
                    policy, "", (d.MISSING_TENANT,), f"{who} has no tenant", trace, errors
                )
            if ptenant != rtenant:
                memo.used_time = memo.used_time or action.cross_tenant_uses_time
                exception = first_match(
                    action.cross_tenant, request, act, memo, trace, errors, deny=False
                )
                if exception is None:
                    return self._deny(
                        policy,
                        "",
                        (d.TENANT_MISMATCH,),
                        f"principal tenant `{ptenant}` differs from resource tenant `{rtenant}`",
                        trace,
                        errors,
                    )
                if coverage is not None:
                    coverage.add((exception.policy, exception.id))
                reasons_extra = (d.CROSS_TENANT_EXCEPTION,) + (
                    (exception.reason,) if exception.reason else ()
                )
            elif trace is not None:
                trace.append(TraceStep("tenant", policy, "", "passed", f"tenant `{ptenant}`"))

        # 2. Scopes, of the credential and of the acting agent.
        if action.scopes:
            missing = action.scopes - request.scopes
            if missing:
                return self._scope_denial(policy, d.MISSING_SCOPE, "principal", missing, trace)
            if request.actor_scopes is not None:
                missing = action.scopes - request.actor_scopes
                if missing:
                    return self._scope_denial(
                        policy, d.ACTOR_MISSING_SCOPE, "actor", missing, trace
                    )
        if trace is not None:
            trace.append(TraceStep("scope", policy, "", "passed", ", ".join(action.scope_list)))

        # 3. Deny overrides: guards first, then the policy's deny rules.
        memo.used_time = memo.used_time or action.uses_time
        for rules in (action.guards, action.denies):
            before = len(errors)
            rule = first_match(rules, request, act, memo, trace, errors, deny=True)
            if rule is not None:
                if coverage is not None:
                    coverage.add((rule.policy, rule.id))
                if not errors and trace is None:
                    return rule.decision  # type: ignore[return-value]
                reasons = (rule.reason,) if rule.reason else ()
                if len(errors) > before:  # matched because its condition failed: fail closed
                    reasons = (*reasons, d.CONDITION_ERROR)
                return ActionDecision(
                    effect=d.DENY,
                    policy=rule.policy,
                    rule=rule.id,
                    reasons=reasons,
                    errors=tuple(errors),
                    trace=tuple(trace) if trace is not None else (),
                )

        # 4. Allow.
        rule = first_match(action.allows, request, act, memo, trace, errors, deny=False)
        if rule is not None:
            if coverage is not None:
                coverage.add((rule.policy, rule.id))
            if not errors and trace is None and not reasons_extra:
                return rule.decision  # type: ignore[return-value]
            reasons = (rule.reason,) if rule.reason else ()
            return ActionDecision(
                effect=d.ALLOW,
                policy=rule.policy,
                rule=rule.id,
                reasons=reasons_extra + reasons,
                obligations=rule.obligations,
                errors=tuple(errors),
                trace=tuple(trace) if trace is not None else (),
            )

        # 5. Default deny.
        if not errors and trace is None:
            return action.no_rule
        reasons = (d.NO_MATCHING_RULE,) + ((d.CONDITION_ERROR,) if errors else ())
        return self._deny(policy, "", reasons, "", trace, errors)

    def _scope_denial(
        self,
        policy: str,
        code: str,
        who: str,
        missing: frozenset[str],
        trace: list[TraceStep] | None,
    ) -> ActionDecision:
        """Missing-scope denials repeat across a batch: each distinct one is made once."""
        key = (policy, code, missing)
        made = self._scope_denials.get(key)
        if made is None:
            names = ", ".join(f"`{s}`" for s in sorted(missing))
            made = ActionDecision(
                effect=d.DENY, policy=policy, reasons=(code,), message=f"{who} lacks scope {names}"
            )
            if len(self._scope_denials) < _MAX_SCOPE_DENIALS:
                self._scope_denials[key] = made
        if trace is not None:
            return self._deny(policy, "", made.reasons, made.message, trace, [])
        return made

    @staticmethod
    def _deny(
        policy: str,
        rule: str,
        reasons: tuple[str, ...],
        message: str,
        trace: list[TraceStep] | None,
        errors: list[str],
    ) -> ActionDecision:
        if trace is not None:
            trace.append(
                TraceStep("default" if not rule else "deny_rule", policy, rule, "deny", message)
            )
        return ActionDecision(
            effect=d.DENY,
            policy=policy,
            rule=rule,
            reasons=reasons,
            message=message,
            errors=tuple(errors),
            trace=tuple(trace) if trace is not None else (),
        )

    def _first_match(
        self,
        rules: tuple[CompiledRule, ...],
        request: CheckRequest,
        act: Mapping[str, Any],
        memo: _Undecided,
        trace: list[TraceStep] | None,
        errors: list[str],
        *,
        deny: bool,
    ) -> CompiledRule | None:
        """The first rule that matches. With `deny`, an error counts as a match (fail closed)."""
        roles = request.roles
        for rule in rules:
            if rule.any_principal:
                pass
            elif not self._principal_matches(rule, roles, act, memo, errors, deny=deny):
                if trace is not None:
                    trace.append(TraceStep(rule.stage, rule.policy, rule.id, "skipped", "roles"))
                continue
            cond = rule.condition
            if cond is None:
                if trace is not None:
                    trace.append(TraceStep(rule.stage, rule.policy, rule.id, "matched", ""))
                return rule
            try:
                matched = cond(act)
            except Exception as exc:
                message = _error_text(rule, exc)
                errors.append(message)
                if trace is not None:
                    trace.append(TraceStep(rule.stage, rule.policy, rule.id, "error", message))
                if deny:
                    return rule
                continue
            if trace is not None:
                trace.append(
                    TraceStep(
                        rule.stage,
                        rule.policy,
                        rule.id,
                        "matched" if matched else "not_matched",
                        rule.condition_source,
                    )
                )
            if matched:
                return rule
        return None

    def _first_match_watched(
        self,
        rules: tuple[CompiledRule, ...],
        request: CheckRequest,
        act: Mapping[str, Any],
        memo: _Undecided,
        trace: list[TraceStep] | None,
        errors: list[str],
        *,
        deny: bool,
    ) -> CompiledRule | None:
        """`_first_match` over a long stage, `RULES_PER_CLOCK_READ` rules at a time, looking
        at the stop time before each group after the first (`CompiledAction.long_stages`)."""
        stop: Deadline = act[STOP_AT]
        n = RULES_PER_CLOCK_READ
        for i in range(0, len(rules), n):
            if i and stop.at < _NO_STOP and _monotonic() >= stop.at:
                raise Interrupted
            rule = self._first_match(rules[i : i + n], request, act, memo, trace, errors, deny=deny)
            if rule is not None:
                return rule
        return None

    @staticmethod
    def _principal_matches(
        rule: CompiledRule,
        roles: frozenset[str],
        act: Mapping[str, Any],
        memo: _Undecided,
        errors: list[str],
        *,
        deny: bool,
    ) -> bool:
        if not rule.derived_only:
            if rule.roles is None or not rule.roles.isdisjoint(roles):
                return True
            if not rule.derived_roles:
                return False
        for role in rule.derived_roles:
            key = (role.name, act["action"]) if role.per_action else role.name
            held = memo.derived.get(key)
            if held is None:
                held = _derived_role_holds(role, roles, act)
                memo.derived[key] = held
            if held is True:
                return True
            if isinstance(held, Exception):
                errors.append(f"derived role `{role.name}`: {brief(held)}")
                if deny:
                    return True
        return False


def _derived_role_holds(
    role: Any, roles: frozenset[str], act: Mapping[str, Any]
) -> bool | Exception:
    if role.parent_roles is not None and role.parent_roles.isdisjoint(roles):
        return False
    if role.condition is None:
        return True
    try:
        return bool(role.condition(act))
    except Exception as exc:
        return exc


def _error_text(rule: CompiledRule, exc: Exception) -> str:
    return f"rule `{rule.policy}/{rule.id}`: {brief(exc)}"
