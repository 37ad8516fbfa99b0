"""The candidate source of AuthZEN resource search: `--search-db URL` and `--search-map FILE`.

The map file names, per resource type (pdp kind), the table holding its resources and where
each resource field lives; it becomes a `pdp.plan.sqlalchemy.ColumnMap` over the reflected
table, so `pdp.plan.api.search_resource` pages through exactly the rows the plan's filter
selects (docs/AUTHZEN.md, "Resource search"):

    document:
      table: documents
      id: id                      # text column, the AuthZEN resource id (pages in its order)
      tenant: tenant              # optional: text column, the resource tenant
      attributes:                 # optional: resource.attr.NAME -> a plain column
        owner: owner
        classification: classification
      json_attributes:            # optional: resource.attr.NAME -> a JSON text column
        shared_with: shared_with
      json: attrs                 # optional: a JSON object column for every other attribute

SQLAlchemy is an optional extra (`pip install 'pdp[sqlalchemy]'`): it is imported only when
the flags are used. Tables are reflected at startup, so a missing table or column, or a
column of a type the filter cannot compare, stops `pdp serve` with the file and key named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pdp.plan import PlanRefused
from pdp.ratelog import RateLimitedLog

from .api import HttpError
from .cli import HttpConfigError

if TYPE_CHECKING:
    from pdp.plan import Plan

log = logging.getLogger("pdp.http")
_DB_FAILURES = RateLimitedLog(log)

_KEYS = frozenset({"table", "id", "tenant", "attributes", "json_attributes", "json"})


class SearchConfigError(HttpConfigError):
    """`--search-db`/`--search-map` cannot be used as given."""


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError:
        raise SearchConfigError(
            "--search-db needs SQLAlchemy, an optional extra: pip install 'pdp[sqlalchemy]'"
        ) from None
    return sqlalchemy


def _load_map(path: str) -> dict[str, Mapping[str, Any]]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SearchConfigError(f"--search-map `{path}`: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise SearchConfigError(f"--search-map `{path}`{where}: not YAML") from None
    if not isinstance(raw, Mapping) or not raw:
        raise SearchConfigError(f"--search-map `{path}`: must map resource types to tables")
    out: dict[str, Mapping[str, Any]] = {}
    for kind, spec in raw.items():
        where = f"--search-map `{path}`: `{kind}`"
        if not isinstance(kind, str) or not isinstance(spec, Mapping):
            raise SearchConfigError(f"{where}: must be a resource type mapping to an object")
        unknown = sorted(str(k) for k in spec if k not in _KEYS)
        if unknown:
            raise SearchConfigError(f"{where}: unknown key `{unknown[0]}`")
        for key in ("table", "id"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise SearchConfigError(f"{where}.{key}: must be a column or table name")
        for key in ("tenant", "json"):
            if key in spec and not isinstance(spec[key], str):
                raise SearchConfigError(f"{where}.{key}: must be a column name")
        for key in ("attributes", "json_attributes"):
            attrs = spec.get(key, {})
            if not isinstance(attrs, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()
            ):
                raise SearchConfigError(f"{where}.{key}: must map attribute names to columns")
        out[kind] = spec
    return out


Source = Callable[["Plan", str | None, int], Sequence[str]]


def _compares_exactly(sa: Any, engine: Any, column: Any) -> bool:
    """Whether the database compares `column`'s text as CEL does, code point by code point.

    Reflection does not report a column's collation, and a `NOCASE` tenant column makes
    `tenant = 'acme'` select the rows of tenant `ACME`: another tenant's resources. So ask the
    database: a value of the column's type and collation (a row-less select of the column,
    with literals appended) must equal neither `A` for `a` nor `b` for `b `."""
    probe = sa.union_all(
        sa.select(column.label("v")).where(sa.false()),
        sa.select(sa.literal("a").label("v")),
        sa.select(sa.literal("b ").label("v")),
    ).subquery()
    query = sa.select(sa.func.count()).select_from(probe).where(probe.c.v.in_(["A", "b"]))
    try:
        with engine.connect() as conn:
            return conn.scalar(query) == 0
    except sa.exc.SQLAlchemyError as exc:
        raise SearchConfigError(f"--search-db: cannot read the database: {exc}") from None


def search_source(db_url: str | None, map_path: str | None) -> Source | None:
    """The candidate source the flags describe (None when neither is given)."""
    if not db_url and not map_path:
        return None
    if not db_url or not map_path:
        raise SearchConfigError("--search-db and --search-map go together")
    spec = _load_map(map_path)
    sa = _sqlalchemy()
    from pdp.plan.sqlalchemy import ColumnMap, UnmappedField, candidates

    try:
        engine = sa.create_engine(db_url)
        metadata = sa.MetaData()
        metadata.reflect(engine, only=sorted({s["table"] for s in spec.values()}))
    except sa.exc.ArgumentError:
        raise SearchConfigError("--search-db: not a SQLAlchemy database URL") from None
    except sa.exc.InvalidRequestError as exc:
        raise SearchConfigError(f"--search-map `{map_path}`: {str(exc)[:200]}") from None
    except (sa.exc.SQLAlchemyError, ImportError) as exc:
        raise SearchConfigError(f"--search-db: cannot read the database: {exc}") from None

    sources: dict[str, Callable[[Plan, str | None, int], list[str]]] = {}
    for kind, s in spec.items():
        table = metadata.tables[s["table"]]
        where = f"--search-map `{map_path}`: `{kind}`"

        def col(name: str, key: str, table: Any = table, where: str = where) -> Any:
            if name not in table.c:
                raise SearchConfigError(f"{where}.{key}: table `{table.name}` has no `{name}`")
            return table.c[name]

        id_col = col(s["id"], "id")
        if not isinstance(id_col.type, sa.String):
            # Ids are strings to pdp, and pages follow their order as text.
            raise SearchConfigError(f"{where}.id: column `{s['id']}` must be a text column")
        fields: dict[str, Any] = {"resource.id": id_col}
        plain = [("id", id_col)]
        if "tenant" in s:
            fields["resource.tenant"] = col(s["tenant"], "tenant")
            plain.append(("tenant", fields["resource.tenant"]))
        for attr, name in s.get("attributes", {}).items():
            fields[f"resource.attr.{attr}"] = col(name, f"attributes.{attr}")
            plain.append((f"attributes.{attr}", fields[f"resource.attr.{attr}"]))
        for key, column in plain:
            if isinstance(column.type, sa.String) and not _compares_exactly(sa, engine, column):
                raise SearchConfigError(
                    f"{where}.{key}: column `{column.name}` compares text ignoring case or "
                    "trailing spaces (its collation); the filter needs exact comparison "
                    "(SQLite's default, BINARY), or it selects rows Check denies"
                )
        json: dict[str, Any] = {}
        for attr, name in s.get("json_attributes", {}).items():
            json[f"resource.attr.{attr}"] = col(name, f"json_attributes.{attr}")
        if "json" in s:
            json["resource.attr"] = col(s["json"], "json")
        sources[kind] = candidates(engine, id_col, ColumnMap(fields=fields, json=json))

    def page(plan: Plan, after: str | None, count: int) -> list[str]:
        source = sources.get(plan.resource_kind)
        if source is None:
            # Fail closed and say why: no table, no candidates to filter.
            raise PlanRefused(
                f"no table is configured for resource type `{plan.resource_kind}` (--search-map)"
            )
        try:
            return source(plan, after, count)
        except UnmappedField as exc:
            raise PlanRefused(f"{exc} in --search-map for `{plan.resource_kind}`") from None
        except sa.exc.SQLAlchemyError as exc:
            # Per call, it would be a traceback for every search while the database is down
            # (or a query it refuses): one per cause a minute.
            _DB_FAILURES.log(
                logging.ERROR,
                type(exc).__name__,
                "resource search: the database failed",
                exc_info=True,
            )
            raise HttpError(503, "the search database is unavailable", "", "UNAVAILABLE") from None

    return page
