"""A real SQLite table of documents and the `--search-map` for it, for resource search tests.

Rows mix plain columns (owner, classification, kb: NULL when absent), a JSON column per
attribute (shared_with) and a JSON object column for the rest (attrs), so every kind of
`ColumnMap` entry the map file makes is exercised. `authzen_resource` builds the AuthZEN
resource of a row the way docs/AUTHZEN.md says the map describes it: the oracle's view.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

SEARCH_MAP = """\
document:
  table: documents
  id: id
  tenant: tenant
  attributes:
    owner: owner
    classification: classification
    kb: kb
  json_attributes:
    shared_with: shared_with
  json: attrs
note:
  table: notes
  id: id
  tenant: tenant
  json: attrs
"""

# A kind the planner refuses (a string function of a resource attribute).
NOTE_POLICY = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions: {read: {}}
  rules:
    - id: drafts-by-prefix
      actions: [read]
      effect: allow
      condition: R.attr.title.startsWith("draft-")
"""

USERS = ["alice", "bob", "carol", "dana"]


def rows(n: int = 160, seed: int = 7) -> list[dict[str, Any]]:
    r = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            {
                "id": f"doc-{i:03d}",
                "tenant": r.choice(["acme", "acme", "globex", None]),
                "owner": r.choice([*USERS, None]),
                "classification": r.choice(["public", "internal", "confidential", "secret", None]),
                "kb": r.choice(["kb-eng", "kb-sales", None]),
                "shared_with": r.choice([None, [], ["carol"], ["bob", "carol"], ["dana"]]),
                "attrs": r.choice([{}, {"title": "q3 plan"}, {"pinned": True}]),
            }
        )
    return out


def seed(path: Path, data: list[dict[str, Any]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE documents (id TEXT PRIMARY KEY, tenant TEXT, owner TEXT, "
            "classification TEXT, kb TEXT, shared_with JSON, attrs JSON)"
        )
        db.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, tenant TEXT, attrs JSON)")
        db.executemany(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    row["id"],
                    row["tenant"],
                    row["owner"],
                    row["classification"],
                    row["kb"],
                    None if row["shared_with"] is None else json.dumps(row["shared_with"]),
                    json.dumps(row["attrs"]),
                )
                for row in data
            ],
        )
        db.execute("INSERT INTO notes VALUES ('n-1', 'acme', '{\"title\": \"draft-1\"}')")


def authzen_resource(row: dict[str, Any]) -> dict[str, Any]:
    """The AuthZEN resource of a row: NULL columns are absent attributes."""
    props: dict[str, Any] = dict(row["attrs"])
    for key in ("owner", "classification", "kb", "shared_with"):
        if row[key] is not None:
            props[key] = row[key]
    if row["tenant"] is not None:
        props["tenant"] = row["tenant"]
    return {"type": "document", "id": row["id"], "properties": props}


def search_setup(tmp: Path, policies: Path) -> tuple[list[str], list[dict[str, Any]], Path]:
    """(`pdp serve` flags, the rows, the policy folder): the example policies plus `note`,
    a seeded database and its map file."""
    import shutil

    pol = tmp / "policies"
    shutil.copytree(policies, pol)
    (pol / "resources" / "note.yaml").write_text(NOTE_POLICY)
    data = rows()
    seed(tmp / "docs.db", data)
    (tmp / "search.yaml").write_text(SEARCH_MAP)
    flags = [
        "--search-db",
        f"sqlite:///{tmp / 'docs.db'}",
        "--search-map",
        str(tmp / "search.yaml"),
    ]
    return flags, data, pol
