"""A list endpoint that returns only what the caller may read: pdp's plan as a SQL WHERE clause.

    python examples/list_service/app.py --policies policies --db /tmp/docs.db seed
    python examples/list_service/app.py --policies policies --db /tmp/docs.db list --as carol
    python examples/list_service/app.py --policies policies --db /tmp/docs.db serve --port 8080
    curl -H 'X-Principal: {"id": "carol", "tenant": "acme", "roles": ["user"],
              "scopes": ["docs:read"]}' localhost:8080/documents

The table keeps `owner`, `classification` and `kb` as plain columns and everything else in a
JSON column; `ColumnMap` tells the adapter which is which. One query per request, with the
policy's tenant isolation, shares and deny rules in its WHERE clause — no row is fetched only
to be thrown away, and no policy is re-implemented by hand. (The X-Principal header stands for
whatever authenticated the caller; a real service takes it from a verified token.)
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pdp.engine import Engine, compile_policy_set
from pdp.errors import RequestError
from pdp.model.loader import load_policy_dir
from pdp.plan import ALWAYS_DENIED, PlanRefused, parse_plan_request, plan
from pdp.plan.sqlalchemy import ColumnMap, where_clause


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[str] = mapped_column(primary_key=True)
    tenant: Mapped[str]
    title: Mapped[str]
    owner: Mapped[str | None]
    classification: Mapped[str | None]
    kb: Mapped[str | None]
    extra: Mapped[str] = mapped_column(default="{}")  # other attributes, as a JSON object

    def resource(self) -> dict[str, Any]:
        """The resource Check would be asked about for this row (what the mapping describes)."""
        attr = json.loads(self.extra)
        for name in ("owner", "classification", "kb"):
            if getattr(self, name) is not None:
                attr[name] = getattr(self, name)
        return {"kind": "document", "id": self.id, "tenant": self.tenant, "attr": attr}


COLUMNS = ColumnMap(
    fields={
        "resource.id": Document.id,
        "resource.tenant": Document.tenant,
        "resource.attr.owner": Document.owner,
        "resource.attr.classification": Document.classification,
        "resource.attr.kb": Document.kb,
    },
    json={"resource.attr": Document.extra},
)

SEED = [
    ("d-100", "acme", "Roadmap", "alice", "internal", "kb-eng", {"shared_with": ["carol"]}),
    ("d-101", "acme", "Salaries", "alice", "confidential", "kb-eng", {"shared_with": []}),
    ("d-102", "acme", "Launch codes", "alice", "secret", "kb-eng", {"shared_with": ["bob"]}),
    ("d-200", "acme", "Pipeline", "bob", "internal", "kb-sales", {}),
    ("d-300", "acme", "Style guide", "bob", "public", "kb-eng", {}),
    ("d-400", "acme", "Draft", "carol", None, "kb-eng", {}),
    ("d-500", "acme", "Notes", "carol", "internal", None, {"shared_with": ["alice"]}),
    ("g-900", "globex", "Globex plan", "eve", "internal", "kb-x", {}),
]

PRINCIPALS = {
    "alice": {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"],
              "attr": {"kbs": ["kb-eng"]}},
    "bob": {"id": "bob", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"],
            "attr": {"kbs": ["kb-sales"]}},
    "carol": {"id": "carol", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"],
              "attr": {"kbs": ["kb-eng"]}},
    "dana": {"id": "dana", "tenant": "acme", "roles": ["admin"], "scopes": ["docs:read"]},
    "eve": {"id": "eve", "tenant": "globex", "roles": ["user"], "scopes": ["docs:read"]},
}  # fmt: skip


def seed(db: sa.Engine) -> None:
    Base.metadata.create_all(db)
    with Session(db) as s, s.begin():
        s.query(Document).delete()
        for id_, tenant, title, owner, cls, kb, extra in SEED:
            s.add(Document(id=id_, tenant=tenant, title=title, owner=owner, classification=cls,
                           kb=kb, extra=json.dumps(extra)))  # fmt: skip


def list_documents(
    engine: Engine, db: sa.Engine, principal: dict[str, Any], context: dict[str, Any]
) -> list[dict[str, Any]]:
    """The documents `principal` may read: one plan, one query."""
    p = plan(engine, parse_plan_request({"principal": principal, "context": context,
                                         "resource": {"kind": "document"}, "action": "read"}))  # fmt: skip
    if p.kind == ALWAYS_DENIED:
        return []
    with Session(db) as s:
        rows = s.scalars(sa.select(Document).where(where_clause(p, COLUMNS)).order_by(Document.id))
        return [{"id": d.id, "title": d.title, "classification": d.classification} for d in rows]


def serve(engine: Engine, db: sa.Engine, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/documents":
                return self._send(404, {"error": "not found"})
            try:
                principal = json.loads(self.headers.get("X-Principal", ""))
                ip = self.client_address[0]
                docs = list_documents(engine, db, principal, {"ip": ip})
            except (ValueError, RequestError) as e:
                return self._send(400, {"error": str(e)})
            except PlanRefused as e:
                return self._send(500, e.to_dict())
            self._send(200, {"documents": docs})

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", required=True)
    ap.add_argument("--db", required=True, help="SQLite file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("seed")
    lp = sub.add_parser("list")
    lp.add_argument("--as", dest="who", choices=sorted(PRINCIPALS), required=True)
    lp.add_argument("--ip", default="10.20.30.40")
    sp = sub.add_parser("serve")
    sp.add_argument("--port", type=int, default=8080)
    args = ap.parse_args(argv)
    db = sa.create_engine(f"sqlite:///{args.db}")
    if args.cmd == "seed":
        seed(db)
        return 0
    engine = Engine(compile_policy_set(load_policy_dir(args.policies)))
    if args.cmd == "list":
        docs = list_documents(engine, db, PRINCIPALS[args.who], {"ip": args.ip})
        json.dump(docs, sys.stdout, indent=1)
        print()
        return 0
    serve(engine, db, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
