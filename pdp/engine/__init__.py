"""The engine: compile a policy source once, then decide requests against it.

The test-suite names (`run_test_suites`, `SuiteReport`, ...) are resolved when first used
(PEP 562): a server on a policy directory never runs a suite (bundle activation and `--watch`
do), and importing `.suites` was a few milliseconds of its start-up.
"""

from typing import TYPE_CHECKING, Any

from .compile import compile_policy_set
from .compiled import PolicySet, RuleRef
from .engine import DeadlineExceeded, Engine, new_decision_id
from .holder import Activation, EngineHolder

if TYPE_CHECKING:
    from .suites import CaseResult, SuiteCheck, SuiteReport, run_test_suites, with_checks

_SUITES = frozenset(["CaseResult", "SuiteCheck", "SuiteReport", "run_test_suites", "with_checks"])

__all__ = [
    "Activation",
    "CaseResult",
    "DeadlineExceeded",
    "Engine",
    "EngineHolder",
    "PolicySet",
    "RuleRef",
    "SuiteCheck",
    "SuiteReport",
    "compile_policy_set",
    "new_decision_id",
    "run_test_suites",
    "with_checks",
]


def __getattr__(name: str) -> Any:
    if name not in _SUITES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import suites

    value = getattr(suites, name)
    globals()[name] = value  # once
    return value
