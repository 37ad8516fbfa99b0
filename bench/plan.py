"""Query-planning benchmark (not a test): plan latency, and listing with the filter vs. Check.

Reproduce:  .venv/bin/python bench/plan.py              (from the repository root)
            .venv/bin/python bench/plan.py --rows 20000 (a smaller table)

1. Loads and compiles the example policies (policies/).
2. Plan latency: median and p90 wall-clock µs, and CPU µs per plan (process time: what the
   plan costs when the machine is shared), of `pdp.plan.plan` (request already parsed) for the
   `document`/`read` plan of a user, an admin and a support engineer, and of `parse + plan`;
   the first plan of a policy set (which compiles its folded subexpressions) separately.
3. Listing: a real SQLite file with `--rows` documents (default 100,000; ~1/3 of them in the
   caller's tenant, owners, shares, classifications and KBs drawn at random). Two ways to
   list what alice may read:
     filter      plan once, `SELECT ... WHERE <plan as SQL>` (pdp.plan.sqlalchemy)
     check-each  `SELECT` every row, build its resource, `Engine.check` in batches of 500
   Both must return the same ids (asserted) — a benchmark of wrong answers is worthless. The
   median of `--rounds` wall-clock times of each, and their ratio, are printed.

The SQL filter has no index to use here (attributes live in one JSON column), so the filter
side is a full scan inside SQLite; the ratio is what moving the decision into the query buys
before any indexing. Timing is wall clock on a shared machine: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdp.engine import Engine, compile_policy_set  # noqa: E402
from pdp.model.loader import load_policy_dir  # noqa: E402
from pdp.model.request import ResourceRequest, make_check_request  # noqa: E402
from pdp.plan import parse_plan_request, plan  # noqa: E402
from pdp.plan.sqlalchemy import ColumnMap, where_clause  # noqa: E402

NOW = "2026-03-10T12:00:00Z"
CONTEXT = {"ip": "10.20.30.40", "time": NOW}
PRINCIPALS = {
    "user": {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"],
             "attr": {"kbs": ["kb-eng"]}},
    "admin": {"id": "dana", "tenant": "acme", "roles": ["admin"], "scopes": ["docs:read"]},
    "support": {"id": "sam", "tenant": "platform", "roles": ["support"], "scopes": ["docs:read"]},
}  # fmt: skip
SUPPORT_CONTEXT = {**CONTEXT, "attr": {"support_ticket": {"id": "T", "tenant": "acme",
                                                           "status": "open"}}}  # fmt: skip

TABLE = sa.Table(
    "documents",
    sa.MetaData(),
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("tenant", sa.String, nullable=False),
    sa.Column("attrs", sa.Text, nullable=False),
)
COLUMNS = ColumnMap(
    fields={"resource.id": TABLE.c.id, "resource.tenant": TABLE.c.tenant},
    json={"resource.attr": TABLE.c.attrs},
)


def _timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _us(xs: list[float]) -> str:
    xs = sorted(xs)
    return (
        f"median {statistics.median(xs) * 1e6:8.1f} µs   p90 {xs[int(len(xs) * 0.9)] * 1e6:8.1f} µs"
    )


def bench_latency(engine: Engine, n: int) -> None:
    print("plan latency (document/read):")
    for who, principal in PRINCIPALS.items():
        ctx = SUPPORT_CONTEXT if who == "support" else CONTEXT
        body = {"principal": principal, "context": ctx, "resource": {"kind": "document"},
                "action": "read"}  # fmt: skip
        req = parse_plan_request(body)
        plan(engine, req)  # warm: the folded subexpressions compile on first use
        cpu0 = time.process_time()
        wall = _timed(lambda req=req: plan(engine, req), n)
        cpu = (time.process_time() - cpu0) / n
        print(f"  {who:8s} plan        {_us(wall)}   cpu {cpu * 1e6:7.1f} µs/plan")
        print(
            f"  {who:8s} parse+plan  "
            f"{_us(_timed(lambda body=body: plan(engine, parse_plan_request(body)), n))}"
        )


CLASSES = ["public", "internal", "internal", "confidential", "secret"]


def _rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    r = random.Random(seed)
    users = ["alice", "bob", "carol", "dana", "erin", "frank"]
    out = []
    for i in range(n):
        attr: dict[str, Any] = {
            "owner": r.choice(users),
            "classification": r.choice(CLASSES),
            "kb": r.choice(["kb-eng", "kb-sales", "kb-ops"]),
        }
        if r.random() < 0.5:
            attr["shared_with"] = r.sample(users, r.randint(0, 2))
        out.append({"id": f"d{i:07d}", "tenant": r.choice(["acme", "globex", "initech"]),
                    "attr": attr})  # fmt: skip
    return out


def bench_listing(engine: Engine, n_rows: int, rounds: int) -> None:
    principal = PRINCIPALS["user"]
    with tempfile.TemporaryDirectory() as tmp:
        db = sa.create_engine(f"sqlite:///{tmp}/docs.db")
        TABLE.metadata.create_all(db)
        rows = _rows(n_rows)
        with db.begin() as c:
            c.execute(TABLE.insert(), [{"id": r["id"], "tenant": r["tenant"],
                                        "attrs": json.dumps(r["attr"])} for r in rows])  # fmt: skip
        body = {"principal": principal, "context": CONTEXT, "resource": {"kind": "document"},
                "action": "read"}  # fmt: skip
        base = parse_plan_request(body).check

        def with_filter() -> list[str]:
            p = plan(engine, parse_plan_request(body))
            with db.connect() as c:
                return list(c.scalars(sa.select(TABLE.c.id).where(where_clause(p, COLUMNS))))

        def check_each() -> list[str]:
            allowed = []
            with db.connect() as c:
                result = c.execute(sa.select(TABLE.c.id, TABLE.c.tenant, TABLE.c.attrs))
                while batch := result.fetchmany(500):
                    resources = [
                        ResourceRequest(
                            {"kind": "document", "id": i, "tenant": t, "attr": json.loads(a)},
                            ("read",),
                        )
                        for i, t, a in batch
                    ]
                    req = make_check_request(base.principal, resources, base.context,
                                             time=base.time)  # fmt: skip
                    allowed += [r.id for r in engine.check(req).results
                                if r.actions["read"].allowed]  # fmt: skip
            return allowed

        a, b = with_filter(), check_each()
        assert sorted(a) == sorted(b), "the filter and Check disagree"
        tf = _timed(with_filter, rounds)
        tc = _timed(check_each, rounds)
        mf, mc = statistics.median(tf), statistics.median(tc)
        print(f"\nlisting {n_rows:,} documents as alice (user, acme): {len(a):,} allowed")
        print(f"  filter      median {mf * 1e3:9.1f} ms  (plan + one SELECT ... WHERE)")
        print(f"  check-each  median {mc * 1e3:9.1f} ms  (SELECT all + Engine.check per row)")
        print(f"  ratio check-each / filter: {mc / mf:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--plans", type=int, default=2000, help="plans timed per principal")
    args = ap.parse_args()
    t0 = time.perf_counter()
    engine = Engine(compile_policy_set(load_policy_dir(ROOT / "policies")))
    print(f"policies compiled in {(time.perf_counter() - t0) * 1e3:.0f} ms")
    fresh = Engine(compile_policy_set(load_policy_dir(ROOT / "policies")))
    req = parse_plan_request({"principal": PRINCIPALS["user"], "context": CONTEXT,
                              "resource": {"kind": "document"}, "action": "read"})  # fmt: skip
    t0 = time.perf_counter()
    plan(fresh, req)
    print(f"first plan of a fresh policy set: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    bench_latency(engine, args.plans)
    bench_listing(engine, args.rows, args.rounds)


if __name__ == "__main__":
    main()
