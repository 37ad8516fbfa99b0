from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


COMMON = """
apiVersion: pdp/v1
kind: Definitions
metadata: {id: common}
spec:
  constants:
    corporate_cidrs: ["10.0.0.0/8"]
    blocked_countries: ["KP"]
  variables:
    is_owner: resource.attr.owner == principal.id
  derivedRoles:
    owner:
      parentRoles: ["*"]
      condition: V.is_owner
"""

DOCS = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: documents}
spec:
  resource: document
  imports: [common]
  actions:
    read: {scopes: ["docs:read"]}
    write: {scopes: ["docs:write"]}
    delete: {scopes: ["docs:write", "docs:delete"]}
    share: {}
  crossTenant:
    - id: support-read
      actions: [read]
      roles: [support]
      condition: context.attr.ticket != ""
      reason: support_ticket
  rules:
    - id: owner-all
      actions: ["*"]
      effect: allow
      derivedRoles: [owner]
    - id: shared-read
      actions: [read]
      effect: allow
      roles: [user]
      condition: principal.id in resource.attr.shared_with
      obligations: {mask_fields: [email]}
    - id: support-read
      actions: [read]
      effect: allow
      roles: [support]
      obligations: {audit: true}
    - id: no-delete-legal-hold
      actions: [delete]
      effect: deny
      condition: resource.attr.legal_hold == true
      reason: legal_hold
    - id: broken-deny
      actions: [write]
      effect: deny
      condition: resource.attr.missing_key.deeper == 1
      reason: broken
    - id: broken-allow
      actions: [share]
      effect: allow
      condition: resource.attr.nope.x == 1
"""

GUARD = """
apiVersion: pdp/v1
kind: GuardPolicy
metadata: {id: geo}
spec:
  imports: [common]
  rules:
    - id: blocked-country
      resources: ["*"]
      actions: ["*"]
      condition: context.country in C.blocked_countries
      reason: blocked_country
"""

CATALOG = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: catalog}
spec:
  resource: catalog_model
  tenancy: global
  actions:
    list: {}
  rules:
    - id: anyone-lists
      actions: [list]
      effect: allow
"""

GEO = """
ranges:
  - {cidr: "175.45.176.0/22", country: "KP"}
  - {cidr: "81.2.69.0/24", country: "GB"}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "policies",
        {
            "common.yaml": COMMON,
            "documents.yaml": DOCS,
            "guard.yaml": GUARD,
            "catalog.yaml": CATALOG,
            "data/geoip.yaml": GEO,
        },
    )


@pytest.fixture
def engine(policy_dir: Path) -> Engine:
    return Engine(compile_policy_set(load_policy_dir(policy_dir)))


def alice(**over):
    p = {
        "id": "alice",
        "tenant": "acme",
        "roles": ["user"],
        "scopes": ["docs:read", "docs:write", "docs:delete"],
    }
    p.update(over)
    return p


def doc(**over):
    r = {
        "kind": "document",
        "id": "d1",
        "tenant": "acme",
        "attr": {"owner": "alice", "shared_with": []},
    }
    r.update(over)
    return r


def decide(engine: Engine, principal, resource, actions, context=None, **extra):
    raw = {"principal": principal, "resources": [{**resource, "actions": actions}], **extra}
    if context is not None:
        raw["context"] = context
    response = engine.check(parse_check_request(raw))
    return response.results[0].actions
