"""Policy directory / bundle files → `PolicySource`, reporting every error at once.

See docs/POLICY_FORMAT.md. Files are classified by path: `*_test.yaml` are test suites, files
under a `data/` folder are data, other `*.yaml` are documents dispatched on `kind`. Each file is
composed into a YAML node tree (`pdp.model._yaml`) so that every value keeps its position, and
every problem becomes a `PolicyError` with file:line:column. Nothing is raised until all files
and all cross-file references have been checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from yaml.nodes import Node, ScalarNode, SequenceNode

from pdp.bulk import bulk
from pdp.errors import PolicyError, PolicyErrors, SourceLocation
from pdp.model._limits import load_limit_policy
from pdp.model._values import (
    condition,
    load_json,
    name_list,
    opt_name_list,
    parse_variables,
    refuse_null,
    rule_actions,
    rule_id,
    seq_items,
)
from pdp.model._values import suppressions as _suppressions
from pdp.model._yaml import (
    BOOL,
    INT,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    NULL,
    Fields,
    FileContext,
    decode,
    did_you_mean,
    is_str,
    meaning,
    parse_yaml,
    to_json,
    type_name,
)
from pdp.model.policy import (
    API_VERSION,
    WILDCARD,
    ActionSpec,
    CrossTenantRule,
    Definitions,
    DerivedRole,
    GuardPolicy,
    GuardRule,
    LimitPolicy,
    PolicySource,
    ResourcePolicy,
    Rule,
    Schema,
    SchemaRefs,
)
from pdp.model.request import MAX_EXACT_INT

if TYPE_CHECKING:
    from pdp.model._suite import ExpectRef
    from pdp.model.testsuite import TestSuite

__all__ = [
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "load_policy_dir",
    "load_policy_files",
    "meaning",
]

# A policy repository with more files than this is not one we were meant to load.
MAX_FILES = 100_000

KINDS = (
    "ResourcePolicy",
    "GuardPolicy",
    "LimitPolicy",
    "Definitions",
    "TestSuite",
    "RouteMapping",
)
_TOP_KEYS = ("apiVersion", "kind", "metadata", "spec")
_METADATA_KEYS = ("id", "description")
_YAML_SUFFIXES = (".yaml", ".yml")
_DATA_SUFFIXES = (".json", ".yaml", ".yml")


def classify(path: str) -> str | None:
    """`data`, `schema`, `test`, `policy`, or None for files the loader does not read."""
    parts = _parts(path)
    name = parts[-1].lower() if parts else ""
    dot = name.rfind(".")
    suffix = name[dot:] if 0 < dot < len(name) - 1 else ""  # PurePosixPath's `suffix`
    if "data" in parts[:-1] and suffix in _DATA_SUFFIXES:
        return "data"
    if "schemas" in parts[:-1] and suffix == ".json":
        return "schema"
    if name.endswith(("_test.yaml", "_test.yml")):
        return "test"
    if suffix in _YAML_SUFFIXES:
        return "policy"
    return None


def _parts(path: str) -> list[str]:
    """`PurePosixPath(path).parts` of a relative path, without building a path object (two
    per file were ~7% of loading 10,000 files): empty and `.` components dropped."""
    return [part for part in path.split("/") if part and part != "."]


def load_policy_dir(path: str | Path, *, tests: bool = True) -> PolicySource:
    """Load every policy, test and data file under `path` (hidden entries are skipped).

    With `tests=False` the `*_test.yaml` files are not read at all (`pdp serve --policies`,
    which never runs them, as Cerbos's server ignores `_test` files): `test_suites` is empty
    and a broken test file is no error."""
    root = Path(path)
    if not root.is_dir():
        raise PolicyErrors([PolicyError(f"`{path}` is not a directory")])
    files: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        kind = classify(rel.as_posix())
        if kind is None or (kind == "test" and not tests):
            continue
        with p.open("rb") as f:
            # One byte over the limit is enough for the size check to report it.
            files[rel.as_posix()] = f.read(MAX_FILE_BYTES + 1)
    return load_policy_files(files, tests=tests)


def load_policy_files(files: Mapping[str, bytes], *, tests: bool = True) -> PolicySource:
    """Load `{relative posix path: content}`; raise `PolicyErrors` listing every problem.
    `tests=False` skips the test files (`load_policy_dir`)."""
    # Loading builds many long-lived objects (YAML nodes, policy values) and no garbage
    # cycles to speak of: GC passes over them were ~10% of loading 10,000 files (`pdp.bulk`).
    with bulk():
        return _load_policy_files(files, tests)


def _load_policy_files(files: Mapping[str, bytes], tests: bool) -> PolicySource:
    errors: list[PolicyError] = []
    loader = _Loader(errors)
    if len(files) > MAX_FILES:
        raise PolicyErrors([PolicyError(f"more than {MAX_FILES} files")])
    for path in sorted(files):
        kind = classify(path)
        if kind is None or (kind == "test" and not tests):
            continue
        ctx = FileContext(path, errors)
        if path.startswith("/") or ".." in _parts(path) or "\\" in path:
            ctx.error(f"`{path}` is not a relative posix path")
            continue
        loader.files[path] = files[path]
        text = decode(ctx, files[path])
        if text is None:
            continue
        ctx.lines = text.splitlines()
        if kind == "data":
            loader.load_data(ctx, text)
        elif kind == "schema":
            loader.load_schema(ctx, text)
        else:
            loader.load_document(ctx, text, is_test=kind == "test")
    loader.check_references()
    if errors:
        errors.sort(
            key=lambda e: (
                (e.location.file, e.location.line, e.location.column) if e.location else ("", 0, 0)
            )
        )
        raise PolicyErrors(errors, partial=loader.result())
    return loader.result()


@dataclass
class _Refs:
    """Names a policy refers to, with where they were written, for the cross-file checks."""

    imports: list[tuple[str, SourceLocation]] = field(default_factory=list)
    derived_roles: list[tuple[str, SourceLocation]] = field(default_factory=list)
    schemas: list[tuple[str, SourceLocation]] = field(default_factory=list)


class _Loader:
    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        self.files: dict[str, bytes] = {}
        self.resource_policies: list[tuple[ResourcePolicy, _Refs]] = []
        self.guard_policies: list[tuple[GuardPolicy, _Refs]] = []
        self.limit_policies: list[tuple[LimitPolicy, _Refs]] = []
        self.definitions: list[Definitions] = []
        self.suites: list[TestSuite] = []
        self.expectations: list[ExpectRef] = []
        self.data: dict[str, Any] = {}
        self.data_files: dict[str, str] = {}
        self.route_mapping: dict[str, Any] | None = None
        self.route_mapping_file = ""
        self.schemas: dict[str, Schema] = {}
        self.broken_schemas: set[str] = set()
        # kind -> id -> location of the first definition
        self.ids: dict[str, dict[str, SourceLocation]] = {k: {} for k in KINDS}

    def result(self) -> PolicySource:
        return PolicySource(
            resource_policies=tuple(p for p, _ in self.resource_policies),
            guard_policies=tuple(p for p, _ in self.guard_policies),
            limit_policies=tuple(p for p, _ in self.limit_policies),
            definitions=tuple(self.definitions),
            test_suites=tuple(self.suites),
            data=self.data,
            route_mapping=self.route_mapping,
            route_mapping_file=self.route_mapping_file,
            files=self.files,
            schemas=self.schemas,
        )

    # -- data ------------------------------------------------------------------------------

    def load_data(self, ctx: FileContext, text: str) -> None:
        stem = PurePosixPath(ctx.file).stem
        if stem in self.data_files:
            ctx.error(
                f"duplicate data name `data.{stem}` (also defined by `{self.data_files[stem]}`)"
            )
            return
        self.data_files[stem] = ctx.file
        if ctx.file.lower().endswith(".json"):
            value = load_json(ctx, text)
        else:
            node = parse_yaml(ctx, text)
            if node is None:
                if not any(e.location and e.location.file == ctx.file for e in ctx.errors):
                    ctx.error("data file is empty")
                return
            value = to_json(ctx, node)
        self.data[stem] = value

    def load_schema(self, ctx: FileContext, text: str) -> None:
        parts = PurePosixPath(ctx.file).parts
        # The name a policy refers to: the path below the (last) `schemas/` folder.
        cut = len(parts) - 1 - list(reversed(parts[:-1])).index("schemas")
        name = "/".join(parts[cut:])
        if name in self.schemas:
            ctx.error(f"duplicate schema name `{name}` (also `{self.schemas[name].file}`)")
            return
        from pdp.model.schema import load_schema  # with fastjsonschema: only for schemas

        schema = load_schema(ctx, text)
        if schema is None:
            self.broken_schemas.add(name)  # reported where it is; not again where it is used
        else:
            self.schemas[name] = Schema(name=name, file=ctx.file, schema=schema)

    # -- documents ---------------------------------------------------------------------------

    def load_document(self, ctx: FileContext, text: str, *, is_test: bool) -> None:
        before = len(ctx.errors)
        node = parse_yaml(ctx, text)
        if node is None:
            if len(ctx.errors) == before:
                ctx.error("file is empty")
            return
        top = Fields(ctx, node, _TOP_KEYS, "the document")
        if not top.ok:
            return
        api = top.get("apiVersion", required=True)
        if api is not None and not (is_str(api) and api.value == API_VERSION):
            shown = f"`{api.value}`" if isinstance(api, ScalarNode) else type_name(api)
            ctx.error(f"unknown apiVersion {shown}, expected `{API_VERSION}`", api)
        kind_node = top.get("kind", required=True)
        if kind_node is None:
            return
        kind = kind_node.value if is_str(kind_node) else None
        if kind not in KINDS:
            shown = (
                f"`{kind_node.value}`"
                if isinstance(kind_node, ScalarNode)
                else type_name(kind_node)
            )
            choices = ", ".join(f"`{k}`" for k in KINDS)
            hint = (
                did_you_mean(str(kind_node.value), KINDS)
                if isinstance(kind_node, ScalarNode)
                else ""
            )
            ctx.error(f"unknown kind {shown}{hint}, expected one of {choices}", kind_node)
            return
        if is_test != (kind == "TestSuite"):
            if is_test:
                ctx.error(f"a `_test.yaml` file must hold a `TestSuite`, got `{kind}`", kind_node)
            else:
                ctx.error(
                    "a `TestSuite` must be in a file whose name ends in `_test.yaml`", kind_node
                )
            return
        if kind == "RouteMapping":
            self._route_mapping(ctx, node)
            return
        meta = Fields(ctx, top.get("metadata", required=True), _METADATA_KEYS, "`metadata`")
        doc_id = meta.str("id", required=True)
        description = meta.str("description")
        id_node = meta.get("id")
        location = ctx.loc(node)
        if doc_id:
            first = self.ids[kind].get(doc_id)
            if first is not None:
                ctx.error(f"duplicate {kind} id `{doc_id}` (first defined at {first})", id_node)
            else:
                self.ids[kind][doc_id] = ctx.loc(id_node)
        spec = top.get("spec", required=True)
        if spec is None:
            return
        if kind == "ResourcePolicy":
            self._resource_policy(ctx, spec, doc_id, description, location)
        elif kind == "GuardPolicy":
            self._guard_policy(ctx, spec, doc_id, description, location)
        elif kind == "LimitPolicy":
            refs = _Refs()
            limits = load_limit_policy(ctx, spec, doc_id, description, location, refs.imports)
            if limits is not None:
                self.limit_policies.append((limits, refs))
        elif kind == "Definitions":
            self._definitions(ctx, spec, doc_id, description, location)
        else:
            from pdp.model._suite import load_suite  # not imported by a server (no tests)

            suite, refs = load_suite(ctx, spec, doc_id, description, location)
            if suite is not None:
                self.suites.append(suite)
            self.expectations.extend(refs)

    def _route_mapping(self, ctx: FileContext, node: Node) -> None:
        if self.route_mapping is not None:
            ctx.error(f"more than one RouteMapping (first in `{self.route_mapping_file}`)", node)
            return
        value = to_json(ctx, node)
        if isinstance(value, dict):
            self.route_mapping = value
            self.route_mapping_file = ctx.file

    # -- ResourcePolicy --------------------------------------------------------------------------

    _RESOURCE_SPEC_KEYS = (
        "resource",
        "tenancy",
        "imports",
        "actions",
        "variables",
        "crossTenant",
        "rules",
        "schemas",
        "suppress",
    )
    _RULE_KEYS = (
        "id",
        "actions",
        "effect",
        "roles",
        "derivedRoles",
        "condition",
        "reason",
        "obligations",
        "suppress",
    )
    _CROSS_KEYS = (
        "id",
        "actions",
        "roles",
        "derivedRoles",
        "condition",
        "reason",
        "unconditional",
        "suppress",
    )

    def _resource_policy(
        self, ctx: FileContext, spec: Node, doc_id: str, description: str, location: SourceLocation
    ) -> None:
        f = Fields(ctx, spec, self._RESOURCE_SPEC_KEYS, "`spec`")
        if not f.ok:
            return
        refs = _Refs()
        resource = f.str("resource", required=True)
        tenancy = f.choice("tenancy", ("tenant", "global"), default="tenant")
        imports = name_list(f.str_list("imports"), ctx, refs.imports)
        actions = self._actions(ctx, f)
        variables = parse_variables(ctx, f.mapping("variables"))
        declared = set(actions)
        cross = []
        cross_ids: dict[str, SourceLocation] = {}
        for item in seq_items(f.sequence("crossTenant")):
            r = Fields(ctx, item, self._CROSS_KEYS, "a `crossTenant` rule")
            if not r.ok:
                continue
            refuse_null(ctx, r, "roles", "derivedRoles", "condition")
            rid = rule_id(ctx, r, cross_ids, "crossTenant rule")
            acts = rule_actions(ctx, r, declared, bool(actions))
            roles = opt_name_list(r.str_list("roles"))
            derived = name_list(r.str_list("derivedRoles"), ctx, refs.derived_roles)
            cond = condition(ctx, r.get("condition"))
            reason = r.str("reason")
            unconditional = _flag(ctx, r, "unconditional")
            if unconditional and not reason:
                ctx.error(
                    "an `unconditional: true` crossTenant rule must give its `reason`",
                    r.key_node("unconditional"),
                )
            cross.append(
                CrossTenantRule(
                    id=rid,
                    actions=acts,
                    location=ctx.loc(item),
                    roles=roles,
                    derived_roles=derived,
                    condition=cond,
                    reason=reason,
                    unconditional=unconditional,
                    suppress=_suppressions(ctx, r),
                    positions=_positions(ctx, r),
                )
            )
        rules = []
        rule_ids: dict[str, SourceLocation] = {}
        for item in seq_items(f.sequence("rules")):
            r = Fields(ctx, item, self._RULE_KEYS, "a rule")
            if not r.ok:
                continue
            refuse_null(ctx, r, "roles", "derivedRoles", "condition")
            rid = rule_id(ctx, r, rule_ids, "rule")
            acts = rule_actions(ctx, r, declared, bool(actions))
            effect_node = r.get("effect", required=True)
            effect = r.choice("effect", ("allow", "deny"), default="") if effect_node else ""
            roles = opt_name_list(r.str_list("roles"))
            derived = name_list(r.str_list("derivedRoles"), ctx, refs.derived_roles)
            cond = condition(ctx, r.get("condition"))
            reason = r.str("reason")
            obligations_node = r.mapping("obligations")
            obligations = to_json(ctx, obligations_node) if obligations_node is not None else {}
            if obligations_node is not None:
                _exact_numbers(ctx, obligations_node)
                obligations = _json_numbers(obligations)
            rules.append(
                Rule(
                    id=rid,
                    actions=acts,
                    effect=effect or "deny",  # type: ignore[arg-type]
                    location=ctx.loc(item),
                    roles=roles,
                    derived_roles=derived,
                    condition=cond,
                    reason=reason,
                    obligations=obligations,
                    suppress=_suppressions(ctx, r),
                    positions=_positions(ctx, r),
                )
            )
        if resource:
            first = self.ids.setdefault("resource", {}).get(resource)
            if first is not None:
                ctx.error(
                    f"resource kind `{resource}` already has a policy (at {first})",
                    f.get("resource"),
                )
            else:
                self.ids["resource"][resource] = ctx.loc(f.get("resource"))
        policy = ResourcePolicy(
            id=doc_id,
            resource=resource,
            file=ctx.file,
            location=location,
            actions=actions,
            rules=tuple(rules),
            tenancy=tenancy,  # type: ignore[arg-type]
            imports=imports,
            variables=variables,
            cross_tenant=tuple(cross),
            description=description,
            schemas=self._schema_refs(ctx, f.mapping("schemas"), refs),
            suppress=_suppressions(ctx, f),
            import_locations=tuple(loc for _, loc in refs.imports),
        )
        self.resource_policies.append((policy, refs))

    def _actions(self, ctx: FileContext, f: Fields) -> dict[str, ActionSpec]:
        node = f.mapping("actions", required=True)
        out: dict[str, ActionSpec] = {}
        if node is None:
            return out
        for name, (key, value) in Fields(ctx, node, None, "`actions`").items.items():
            if name == WILDCARD:
                ctx.error("`*` is not an action name; declare every action of the kind", key)
                continue
            if isinstance(value, ScalarNode) and value.tag == NULL:
                value = None  # `share:` declares an action that needs no scope
            a = Fields(ctx, value, ("scopes",), f"action `{name}`")
            scopes = tuple(s for s, _ in a.str_list("scopes") or ())
            out[name] = ActionSpec(name=name, scopes=scopes, location=ctx.loc(key))
        if not node.value:
            ctx.error("`actions` must declare at least one action", node)
        return out

    _SCHEMA_KEYS = ("principal", "resource", "context", "enforcement")

    def _schema_refs(self, ctx: FileContext, node: Node | None, refs: _Refs) -> SchemaRefs | None:
        if node is None:
            return None
        s = Fields(ctx, node, self._SCHEMA_KEYS, "`schemas`")
        names: dict[str, str | None] = {}
        for key in ("principal", "resource", "context"):
            names[key] = s.str(key) or None
            if names[key]:
                refs.schemas.append((names[key], ctx.loc(s.get(key))))  # type: ignore[arg-type]
        enforcement = s.choice("enforcement", ("deny", "reject"), default="deny")
        return SchemaRefs(
            principal=names["principal"],
            resource=names["resource"],
            context=names["context"],
            enforcement=enforcement,  # type: ignore[arg-type]
            location=ctx.loc(node),
            positions=_positions(ctx, s),
        )

    # -- GuardPolicy -----------------------------------------------------------------------------

    _GUARD_SPEC_KEYS = ("imports", "variables", "rules", "suppress")
    _GUARD_RULE_KEYS = (
        "id",
        "resources",
        "actions",
        "roles",
        "effect",
        "condition",
        "reason",
        "suppress",
    )

    def _guard_policy(
        self, ctx: FileContext, spec: Node, doc_id: str, description: str, location: SourceLocation
    ) -> None:
        f = Fields(ctx, spec, self._GUARD_SPEC_KEYS, "`spec`")
        if not f.ok:
            return
        refs = _Refs()
        imports = name_list(f.str_list("imports"), ctx, refs.imports)
        variables = parse_variables(ctx, f.mapping("variables"))
        rules = []
        ids: dict[str, SourceLocation] = {}
        for item in seq_items(f.sequence("rules", required=True)):
            r = Fields(ctx, item, self._GUARD_RULE_KEYS, "a guard rule")
            if not r.ok:
                continue
            refuse_null(ctx, r, "roles", "condition")
            rid = rule_id(ctx, r, ids, "rule")
            resources = tuple(n for n, _ in r.str_list("resources", required=True) or ())
            acts = tuple(n for n, _ in r.str_list("actions", required=True) or ())
            effect = r.get("effect")
            if effect is not None:
                if is_str(effect) and effect.value == "allow":
                    ctx.error(
                        "a guard rule can never allow: `effect` must be `deny` or omitted", effect
                    )
                else:
                    r.choice("effect", ("deny",))
            rules.append(
                GuardRule(
                    id=rid,
                    resources=resources,
                    actions=acts,
                    reason=r.str("reason", required=True),
                    location=ctx.loc(item),
                    roles=opt_name_list(r.str_list("roles")),
                    condition=condition(ctx, r.get("condition")),
                    suppress=_suppressions(ctx, r),
                    positions=_positions(ctx, r, lists=True),
                )
            )
        policy = GuardPolicy(
            id=doc_id,
            file=ctx.file,
            location=location,
            rules=tuple(rules),
            imports=imports,
            variables=variables,
            description=description,
            suppress=_suppressions(ctx, f),
            import_locations=tuple(loc for _, loc in refs.imports),
        )
        self.guard_policies.append((policy, refs))

    # -- Definitions -----------------------------------------------------------------------------

    def _definitions(
        self, ctx: FileContext, spec: Node, doc_id: str, description: str, location: SourceLocation
    ) -> None:
        f = Fields(ctx, spec, ("constants", "variables", "derivedRoles", "suppress"), "`spec`")
        if not f.ok:
            return
        constants_node = f.mapping("constants")
        constants = to_json(ctx, constants_node) if constants_node is not None else {}
        variables = parse_variables(ctx, f.mapping("variables"))
        derived: dict[str, DerivedRole] = {}
        roles_node = f.mapping("derivedRoles")
        if roles_node is not None:
            for name, (key, value) in Fields(ctx, roles_node, None, "`derivedRoles`").items.items():
                d = Fields(
                    ctx,
                    value,
                    ("parentRoles", "condition", "suppress"),
                    f"derived role `{name}`",
                )
                if not d.ok:
                    continue
                refuse_null(ctx, d, "condition")
                parents = tuple(n for n, _ in d.str_list("parentRoles", required=True) or ())
                derived[name] = DerivedRole(
                    name=name,
                    parent_roles=parents,
                    location=ctx.loc(key),
                    condition=condition(ctx, d.get("condition")),
                    suppress=_suppressions(ctx, d),
                )
        constant_locations: dict[str, SourceLocation] = {}
        for key, _ in constants_node.value if constants_node is not None else ():
            if is_str(key):
                constant_locations.setdefault(key.value, ctx.loc(key))
        self.definitions.append(
            Definitions(
                id=doc_id,
                file=ctx.file,
                location=location,
                constants=constants,
                variables=variables,
                derived_roles=derived,
                description=description,
                constant_locations=constant_locations,
                suppress=_suppressions(ctx, f),
            )
        )

    # -- cross-file checks -------------------------------------------------------------------------

    def check_references(self) -> None:
        defs = {d.id: d for d in self.definitions}
        policies: list[tuple[Any, _Refs]] = [
            *self.resource_policies,
            *self.guard_policies,
            *self.limit_policies,
        ]
        for _, refs in policies:
            known = True
            for name, loc in refs.imports:
                if name not in defs:
                    known = False
                    hint = did_you_mean(name, defs)
                    self.errors.append(
                        PolicyError(f"imports unknown Definitions `{name}`{hint}", loc)
                    )
            if not known:
                continue  # the derived roles may well live in the missing import
            available = {role for name, _ in refs.imports for role in defs[name].derived_roles}
            for name, loc in refs.derived_roles:
                if name not in available:
                    hint = did_you_mean(name, available)
                    self.errors.append(
                        PolicyError(
                            f"derived role `{name}` is not defined in any imported Definitions{hint}",
                            loc,
                        )
                    )
        for _, refs in self.resource_policies:
            for name, loc in refs.schemas:
                if name not in self.schemas and name not in self.broken_schemas:
                    hint = did_you_mean(name, self.schemas)
                    self.errors.append(
                        PolicyError(f"unknown schema `{name}` (no `schemas/{name}`){hint}", loc)
                    )
        by_kind = {p.resource: p for p, _ in self.resource_policies}
        for ref in self.expectations:
            policy = by_kind.get(ref.kind)
            if policy is not None and ref.action not in policy.actions:
                hint = did_you_mean(ref.action, policy.actions)
                self.errors.append(
                    PolicyError(
                        f"action `{ref.action}` is not declared by the policy of resource kind `{ref.kind}`{hint}",
                        ref.location,
                    )
                )


def _positions(ctx: FileContext, f: Fields, *, lists: bool = False) -> dict[str, SourceLocation]:
    """Where the fields the validator points at were written: `roles`, `derivedRoles`, and with
    `lists` each item of `actions` and `resources` (only those: this runs for every rule)."""
    out: dict[str, SourceLocation] = {}
    items = f.items
    for key in ("roles", "derivedRoles"):
        entry = items.get(key)
        if entry is not None:
            out[key] = ctx.loc(entry[1])
    if lists:
        for key in ("actions", "resources"):
            entry = items.get(key)
            if entry is not None and isinstance(entry[1], SequenceNode):
                for i, item in enumerate(entry[1].value):
                    out[f"{key}[{i}]"] = ctx.loc(item)
    return out


def _flag(ctx: FileContext, f: Fields, key: str) -> bool:
    node = f.get(key)
    if node is None:
        return False
    if not (isinstance(node, ScalarNode) and node.tag == BOOL):
        ctx.error(f"`{key}` must be `true` or `false`, got {type_name(node)}", node)
        return False
    return node.value.lower() == "true"


def _exact_numbers(ctx: FileContext, node: Node) -> None:
    """An error for each integer of `node` (an obligations value) past +-2**53: a gRPC answer
    carries obligations in a protobuf Struct, every number a double, so such an integer would
    reach a gRPC caller as another number than AuthZEN, the JSON mirror and `pdp check` give
    (`9007199254740993` as 9007199254740992). Iterative: a value nests as deep as YAML lets it."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, SequenceNode):
            stack.extend(item.value)
        elif isinstance(item, ScalarNode):
            if item.tag != INT:
                continue
            text = item.value
            try:
                n = int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)
            except ValueError:
                continue  # reported by `to_json`
            if abs(n) > MAX_EXACT_INT and INT64_MIN <= n <= INT64_MAX:
                ctx.error(
                    f"`{text[:64]}` is past +-2**53: a gRPC answer carries obligation numbers as "
                    "doubles and would give another number; write it as a string",
                    item,
                )
        else:  # a mapping: its values (its keys are strings)
            stack.extend(v for _, v in item.value)


def _json_numbers(value: Any) -> Any:
    """An obligations value with the requests' number rule (`pdp.model.request.number`):
    `2.0` is the int 2, as every answer reads it back from JSON or a Struct, so one policy
    gives one value on every path."""
    if value.__class__ is float and value.is_integer() and abs(value) <= MAX_EXACT_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value
