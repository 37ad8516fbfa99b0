"""What redteam20 tried that held (no change needed), kept as tests so it keeps holding.

- A caller's role `*`, `ADMIN` or `admin` in full-width letters does not match a rule for role
  `admin` (a role with a zero-width space is refused as a request error),
  and an action `*` in a request is an unknown action, not every action: roles and actions
  compare exactly, the wildcard is the policy author's only.
- A time zone taken from the request (`now.getHours(R.attr.tz)`) cannot name a file outside
  the zone database (`../../../../dev/zero`, `/dev/zero`, `Etc/../../../dev/zero`): Python's
  zoneinfo refuses such keys, and the evaluation is a CEL error, so a deny.
- Metrics: labels are the author's or the engine's words, never a caller's value: a decision's
  `effect` and `reason` (rule reasons and reason codes; the reason label is capped anyway at
  `MAX_REASON_SERIES`, then `other`), a rate limit's id and outcome, an error's code.
- Caches keyed on caller input are bounded in entries and in the size of each key: the
  decision cache (16 KiB a request, a byte budget), `context.ip` spellings (512 characters,
  the id limit), dynamic regexes (program size), timestamps (the RFC 3339 pattern), and the
  CEL IP memo once zones were refused (tests/security/test_redteam20_ip_zone.py).
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pdp.cel import CelEnv, compile_cel
from pdp.engine import Engine, compile_policy_set
from pdp.errors import CelEvalError
from pdp.model.decision import BundleInfo
from pdp.model.loader import load_policy_dir
from pdp.model.request import DEFAULT_LIMITS, parse_check_request

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: doc}
spec:
  resource: doc
  actions:
    read: {}
    delete: {}
  rules:
    - id: admins
      actions: ["*"]
      roles: [admin]
      effect: allow
    - id: anyone-read
      actions: [read]
      effect: allow
"""


def decide(tmp_path: Path, roles: list[str], actions: list[str]) -> dict[str, Any]:
    (tmp_path / "doc.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    engine = Engine(compile_policy_set(load_policy_dir(tmp_path)), BundleInfo("b", "1", "r"))
    principal = {"id": "u", "tenant": "t", "roles": roles}
    resource = {"kind": "doc", "id": "1", "tenant": "t", "actions": actions}
    body = {"principal": principal, "resources": [resource]}
    reply = engine.check(parse_check_request(body, DEFAULT_LIMITS)).to_dict()
    return reply["results"][0]["actions"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", ["*", "ADMIN", "\uff41\uff44\uff4d\uff49\uff4e"])
def test_a_role_that_looks_like_admin_is_not_admin(tmp_path: Path, role: str) -> None:
    assert decide(tmp_path, [role], ["delete"])["delete"]["effect"] == "deny"
    assert decide(tmp_path, ["admin"], ["delete"])["delete"]["effect"] == "allow"


def test_an_action_named_star_is_unknown(tmp_path: Path) -> None:
    decision = decide(tmp_path, ["admin"], ["*"])["*"]
    assert decision["effect"] == "deny" and decision["reasons"] == ["unknown_action"]


@pytest.mark.parametrize(
    "tz", ["../../../../dev/zero", "/dev/zero", "Etc/../../../../dev/zero", "Europe/Paris/"]
)
def test_a_time_zone_cannot_name_a_file(tz: str) -> None:
    f = compile_cel("now.getHours(tz) >= 0", CelEnv(names=["now", "tz"]))
    with pytest.raises(CelEvalError, match="unknown time zone"):
        f({"now": datetime(2026, 12, 7, tzinfo=UTC), "tz": tz})
