"""AuthZEN resource search over a table whose text columns do not compare exactly.

The filter's SQL compares plain text columns with `=`/`IN`/`<`, so the column's collation
decides: over `tenant TEXT COLLATE NOCASE`, a search by a principal of tenant `acme` returned
the documents of tenant `ACME` (Check: `tenant_mismatch`), and over `owner ... NOCASE` those
of user `ALICE`. docs/AUTHZEN.md asked for the default (BINARY) collation but nothing checked
it, and SQLAlchemy's reflection does not report collations. Now `pdp serve` asks the database
at start-up and refuses such a column with the map key named; a BINARY table is served, and its
search returns exactly what Check allows.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

# tests/ on the path for the shared HTTP server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import POLICIES, pdp_serve

SEARCH_MAP = """\
document:
  table: documents
  id: id
  tenant: tenant
  attributes:
    owner: owner
    classification: classification
  json: attrs
"""
ROWS = [
    ("doc-1", "acme", "alice", "internal"),  # alice's own document: allowed
    ("doc-2", "ACME", "alice", "internal"),  # another tenant's: tenant_mismatch
    ("doc-3", "acme", "ALICE", "internal"),  # another user's: no_matching_rule
    ("doc-4", "acme ", "alice", "internal"),  # another tenant again (a trailing space)
]
SEARCH = {
    "subject": {
        "type": "user",
        "id": "alice",
        "properties": {"tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
    },
    "action": {"name": "read"},
    "resource": {"type": "document"},
    "context": {"ip": "10.20.30.40"},
}
START_CAP_S = 60  # a cap on waiting for `pdp serve` to give up, not a measured duration


def _database(tmp: Path, collations: dict[str, str]) -> list[str]:
    cols = {name: collations.get(name, "BINARY") for name in ("tenant", "owner", "classification")}
    with sqlite3.connect(tmp / "docs.db") as db:
        db.execute(
            "CREATE TABLE documents (id TEXT PRIMARY KEY, "
            + ", ".join(f"{name} TEXT COLLATE {c}" for name, c in cols.items())
            + ", attrs JSON)"
        )
        db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, '{}')", ROWS)
    (tmp / "search.yaml").write_text(SEARCH_MAP)
    return ["--search-db", f"sqlite:///{tmp / 'docs.db'}", "--search-map", str(tmp / "search.yaml")]


@pytest.mark.parametrize(
    ("column", "collation", "key"),
    [("tenant", "NOCASE", "tenant"), ("owner", "NOCASE", "attributes.owner"),
     ("tenant", "RTRIM", "tenant")],
)  # fmt: skip
def test_a_column_that_compares_loosely_stops_pdp_serve(
    tmp_path: Path, column: str, collation: str, key: str
) -> None:
    flags = _database(tmp_path, {column: collation})
    argv = [sys.executable, "-m", "pdp.cli.main", "serve", "--no-pin-workers"]
    argv += ["--policies", str(POLICIES), "--listen", "127.0.0.1:0"]
    argv += ["--http-listen", "127.0.0.1:0", "--otel", "off", *flags]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=START_CAP_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pdp serve served a search over a {collation} `{column}` column")
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"`document`.{key}: column `{column}` compares text ignoring case" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_binary_table_is_searched_exactly(tmp_path: Path) -> None:
    flags = _database(tmp_path, {})
    with pdp_serve(*flags) as pdp:
        reply = pdp.post("/access/v1/search/resource", SEARCH)
        assert reply.status == 200, reply.body[:300]
        assert [r["id"] for r in reply.json["results"]] == ["doc-1"]
        evaluations = [
            {"resource": {"type": "document", "id": i,
                          "properties": {"tenant": t, "owner": o, "classification": c}}}
            for i, t, o, c in ROWS[:3]  # doc-4: a tenant Check refuses outright
        ]  # fmt: skip
        body = {k: SEARCH[k] for k in ("subject", "action", "context")}
        checked = pdp.post("/access/v1/evaluations", {**body, "evaluations": evaluations})
        assert checked.status == 200, checked.body[:300]
        assert [e["decision"] for e in checked.json["evaluations"]] == [True, False, False]
