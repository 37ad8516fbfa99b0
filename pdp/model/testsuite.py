"""Test suites (`*_test.yaml`, docs/POLICY_FORMAT.md): plain frozen values produced by the
loader, run by `pdp.engine.suites`. Apart from the policy values (`pdp.model.policy`): `pdp serve
--policies DIR` never loads a suite, and builds none of these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pdp.errors import SourceLocation
from pdp.model.policy import RuleEffect


@dataclass(frozen=True, slots=True)
class Expectation:
    effect: RuleEffect
    rule: str | None = None  # None = not checked
    policy: str | None = None
    reasons: tuple[str, ...] | None = None
    obligations: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TestCase:
    name: str
    location: SourceLocation
    principal: dict[str, Any]  # JSON-shaped, as a request would carry it
    resource: dict[str, Any]  # JSON-shaped, without `actions`
    expect: dict[str, Expectation]  # action -> expectation
    context: dict[str, Any] = field(default_factory=dict)
    now: datetime | None = None
    # Rate limits: the same request made `calls` times, evenly over the `within` seconds before
    # `now`, before the case itself is decided (a simulated clock; counters start empty).
    after: tuple[int, float] | None = None


@dataclass(frozen=True, slots=True)
class TestSuite:
    id: str
    file: str
    location: SourceLocation
    cases: tuple[TestCase, ...]
    now: datetime | None = None
    description: str = ""
