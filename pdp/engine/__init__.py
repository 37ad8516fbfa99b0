"""The engine: compile a policy source once, then decide requests against it."""

from .compile import compile_policy_set
from .compiled import PolicySet, RuleRef
from .engine import DeadlineExceeded, Engine, new_decision_id
from .holder import Activation, EngineHolder
from .suites import CaseResult, SuiteCheck, SuiteReport, run_test_suites, with_checks

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
