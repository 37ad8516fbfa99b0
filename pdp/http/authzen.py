"""AuthZEN 1.0 requests to pdp decision requests, and pdp decisions to AuthZEN answers.

Pure translation: no HTTP, no engine. An AuthZEN evaluation becomes the JSON-shaped request
that `pdp.model.request.parse_check_request` validates — the same validation, limits and
field checks every other JSON caller gets — and a field it names is renamed back to where the
caller wrote it (`principal.tenant` -> `subject.properties.tenant`).

The mapping (docs/AUTHZEN.md):

    subject.id                        principal.id
    subject.type                      required, not seen by policies (pdp principals are untyped)
    subject.properties.tenant         principal.tenant
    subject.properties.roles          principal.roles
    subject.properties.scopes         principal.scopes
    subject.properties.actor          principal.actor: {type, id, properties: {scopes, ...attr}}
    subject.properties.*  (the rest)  principal.attr
    resource.type / resource.id       resource kind / id
    resource.properties.tenant        resource tenant
    resource.properties.* (the rest)  resource attr
    action.name                       the one action asked
    action.properties                 context.attr.action
    context.time / ip / country       context.time / ip / country
    context.*             (the rest)  context.attr

A resource search maps the same way (`plan_body`, for `pdp.plan.api.search_resource`), with
`resource.type` the kind and `resource.properties.tenant` the only property it takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pdp.errors import LimitExceeded, RequestError
from pdp.model.decision import ALLOW, ActionDecision
from pdp.model.request import CheckRequest, Limits, id_problem, parse_check_request

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
# subject.properties keys that are pdp principal fields rather than attributes.
SUBJECT_FIELDS = ("tenant", "roles", "scopes", "actor")
CONTEXT_FIELDS = ("time", "ip", "country")
# Where action.properties land, inside context.attr.
ACTION_ATTR = "action"
# The context of evaluations that give none: one shared object, so that they group together.
NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "object"
    if isinstance(v, list):
        return "list"
    return type(v).__name__


def _obj(v: Any, path: str) -> Mapping[str, Any]:
    if v is None:
        raise RequestError(path, "is required")
    if not isinstance(v, Mapping):
        raise RequestError(path, f"must be an object, got {_type_name(v)}")
    return v


def _opt_obj(v: Any, path: str) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise RequestError(path, f"must be an object, got {_type_name(v)}")
    return v


def _name(v: Any, path: str) -> str:
    if v is None:
        raise RequestError(path, "is required")
    if not isinstance(v, str):
        raise RequestError(path, f"must be a string, got {_type_name(v)}")
    if not v:
        raise RequestError(path, "must not be empty")
    problem = id_problem(v)  # `subject.type` goes no further; the others would be checked again
    if problem:
        raise RequestError(path, problem)
    return v


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One AuthZEN evaluation with its defaults applied, and where each part came from."""

    subject: Mapping[str, Any]
    action: Mapping[str, Any]
    resource: Mapping[str, Any]
    context: Mapping[str, Any]
    # Path prefixes of where the caller wrote each part ("" or "evaluations[3].").
    where: Mapping[str, str]


def _principal(subject: Mapping[str, Any], path: str) -> dict[str, Any]:
    _name(subject.get("type"), f"{path}.type")
    props = dict(_opt_obj(subject.get("properties"), f"{path}.properties"))
    principal: dict[str, Any] = {"id": _name(subject.get("id"), f"{path}.id")}
    for key in ("tenant", "roles", "scopes"):
        if key in props:
            principal[key] = props.pop(key)
    actor = props.pop("actor", None)
    if actor is not None:
        a = _obj(actor, f"{path}.properties.actor")
        aprops = dict(_opt_obj(a.get("properties"), f"{path}.properties.actor.properties"))
        principal["actor"] = {
            "id": a.get("id"),
            "type": a.get("type"),
            "scopes": aprops.pop("scopes", None),
            "attr": aprops,
        }
    principal["attr"] = props
    return principal


def _resource(resource: Mapping[str, Any], action: str, path: str) -> dict[str, Any]:
    props = dict(_opt_obj(resource.get("properties"), f"{path}.properties"))
    out: dict[str, Any] = {
        "kind": _name(resource.get("type"), f"{path}.type"),
        "id": _name(resource.get("id"), f"{path}.id"),
        "actions": [action],
    }
    if "tenant" in props:
        out["tenant"] = props.pop("tenant")
    out["attr"] = props
    return out


def _context(
    context: Mapping[str, Any], action: Mapping[str, Any], cpath: str, apath: str
) -> dict[str, Any]:
    attr = {k: v for k, v in context.items() if k not in CONTEXT_FIELDS}
    out: dict[str, Any] = {k: context[k] for k in CONTEXT_FIELDS if k in context}
    if "properties" in action:
        props = _opt_obj(action["properties"], f"{apath}.properties")
        if props:
            if ACTION_ATTR in attr:
                raise RequestError(
                    f"{cpath}.{ACTION_ATTR}",
                    f"clashes with `{apath}.properties`, which pdp passes as context.attr.action",
                )
            attr[ACTION_ATTR] = dict(props)
    out["attr"] = attr
    return out


def evaluations_of(body: Mapping[str, Any], limits: Limits) -> tuple[list[Evaluation], str]:
    """The evaluations of an Access Evaluations request, defaults applied, and its semantic.

    No `evaluations` (or an empty one) is a single evaluation, as the spec says."""
    options = _opt_obj(body.get("options"), "options")
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise RequestError(
            "options.evaluations_semantic",
            f"must be one of {', '.join(SEMANTICS)}, got `{str(semantic)[:64]}`",
        )
    items = body.get("evaluations")
    if items is None or items == []:
        return [single(body)], semantic
    if not isinstance(items, list):
        raise RequestError("evaluations", f"must be a list, got {_type_name(items)}")
    if len(items) > limits.max_resources:
        raise LimitExceeded("evaluations", f"more than {limits.max_resources} evaluations")
    defaults = {k: body.get(k) for k in ("subject", "action", "resource", "context")}
    out = []
    for i, raw in enumerate(items):
        item = _obj(raw, f"evaluations[{i}]")
        parts: dict[str, Any] = {}
        where: dict[str, str] = {}
        for key in ("subject", "action", "resource", "context"):
            if item.get(key) is not None:
                parts[key], where[key] = item[key], f"evaluations[{i}]."
            elif defaults[key] is not None:
                parts[key], where[key] = defaults[key], ""
            elif key == "context":
                parts[key], where[key] = NO_CONTEXT, ""
            else:
                raise RequestError(f"evaluations[{i}].{key}", "is required (no top-level default)")
        out.append(Evaluation(where=where, **parts))
    return out, semantic


def single(body: Mapping[str, Any]) -> Evaluation:
    """The one evaluation of an Access Evaluation request."""
    ctx = body.get("context")
    return Evaluation(
        subject=_obj(body.get("subject"), "subject"),
        action=_obj(body.get("action"), "action"),
        resource=_obj(body.get("resource"), "resource"),
        context=NO_CONTEXT if ctx is None else ctx,
        where={"subject": "", "action": "", "resource": "", "context": ""},
    )


def _paths(ev: Evaluation) -> tuple[str, str, str, str]:
    w = ev.where
    return (
        f"{w['subject']}subject",
        f"{w['action']}action",
        f"{w['resource']}resource",
        f"{w['context']}context",
    )


def check_request(
    evals: list[Evaluation], actions: list[list[str]] | None, limits: Limits, request_id: str
) -> CheckRequest:
    """One pdp request for evaluations that share their subject and context: one resource per
    evaluation (asking its action, or `actions[i]` when given, for action search)."""
    first = evals[0]
    spath, apath, _rpath, cpath = _paths(first)
    s = _obj(first.subject, spath)
    c = _opt_obj(first.context, cpath)
    a = _obj(first.action, apath) if actions is None else {}
    raw = {
        "request_id": request_id,
        "principal": _principal(s, spath),
        "resources": [],
        "context": _context(c, a, cpath, apath),
    }
    for i, ev in enumerate(evals):
        _, apath_i, rpath, _ = _paths(ev)
        r = _obj(ev.resource, rpath)
        if actions is None:
            action = _obj(ev.action, apath_i)
            # The first evaluation's properties went into the context; the others' share the
            # group only when empty, and must be checked all the same.
            _opt_obj(action.get("properties"), f"{apath_i}.properties")
            name = _name(action.get("name"), f"{apath_i}.name")
            raw["resources"].append(_resource(r, name, rpath))
        else:
            res = _resource(r, "-", rpath)
            res["actions"] = actions[i]
            raw["resources"].append(res)
    try:
        return parse_check_request(raw, limits)
    except RequestError as exc:
        exc.field = _rename(exc.field, evals)
        exc.args = (f"{exc.field}: {exc.message}",)
        raise


def plan_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """An AuthZEN resource search (subject, action, resource {type}, context) as the JSON-shaped
    request `pdp.plan.parse_plan_request` validates, by the same mapping as an evaluation.

    A search asks about every resource of the type, so `resource.id` is ignored and
    `resource.properties` may only fix the tenant: any other property would read as a filter
    the plan does not apply."""
    s = _obj(body.get("subject"), "subject")
    a = _obj(body.get("action"), "action")
    r = _obj(body.get("resource"), "resource")
    c = _opt_obj(body.get("context"), "context")
    rprops = _opt_obj(r.get("properties"), "resource.properties")
    for key in rprops:
        if key != "tenant":
            raise RequestError(
                f"resource.properties.{str(key)[:64]}",
                "cannot narrow a resource search (only `tenant` can)",
            )
    resource: dict[str, Any] = {"kind": _name(r.get("type"), "resource.type")}
    if "tenant" in rprops:
        resource["tenant"] = rprops["tenant"]
    return {
        "principal": _principal(s, "subject"),
        "resource": resource,
        "action": _name(a.get("name"), "action.name"),
        "context": _context(c, a, "context", "action"),
    }


_PLAN_FIELDS = {
    "resource.kind": "resource.type",
    "resource.tenant": "resource.properties.tenant",
    "action": "action.name",
    "request": "body",
}


def plan_field(field: str) -> str:
    """A field `parse_plan_request` names, as the AuthZEN caller of `plan_body` wrote it."""
    if field in _PLAN_FIELDS:
        return _PLAN_FIELDS[field]
    if field.startswith(("principal", "context")):
        ev = Evaluation(
            {}, {}, {}, {}, {"subject": "", "action": "", "resource": "", "context": ""}
        )
        return _rename(field, [ev])
    return field


_RES = re.compile(r"^resources\[(\d+)\]")


def _rename(field: str, evals: list[Evaluation]) -> str:
    """A pdp request field path as the AuthZEN caller wrote it."""
    spath, apath, _, cpath = _paths(evals[0])
    m = _RES.match(field)
    if m:
        i = int(m.group(1))
        ev = evals[i] if i < len(evals) else evals[0]
        _, apath_i, rpath, _ = _paths(ev)
        rest = field[m.end() :]
        for pdp_name, authzen in (
            (".kind", ".type"),
            (".id", ".id"),
            (".tenant", ".properties.tenant"),
            (".attr", ".properties"),
        ):
            if rest.startswith(pdp_name):
                return rpath + authzen + rest[len(pdp_name) :]
        if rest.startswith(".actions"):
            return f"{apath_i}.name"
        return rpath + rest
    if field == "resources":
        return "evaluations" if len(evals) > 1 else f"{_paths(evals[0])[2]}"
    if field.startswith("principal.actor."):
        rest = field[len("principal.actor.") :]
        base = f"{spath}.properties.actor"
        if rest.startswith("scopes"):
            return f"{base}.properties.{rest}"
        if rest.startswith("attr"):
            return f"{base}.properties{rest[4:]}"
        return f"{base}.{rest}"
    if field.startswith("principal."):
        rest = field[len("principal.") :]
        if rest.startswith(("tenant", "roles", "scopes", "actor")):
            return f"{spath}.properties.{rest}"
        if rest.startswith("attr"):
            return f"{spath}.properties{rest[4:]}"
        return f"{spath}.{rest}"
    if field.startswith("context.attr"):
        rest = field[len("context.attr") :]
        if rest.startswith(f".{ACTION_ATTR}"):
            return f"{apath}.properties{rest[len(ACTION_ATTR) + 1 :]}"
        return cpath + rest
    if field.startswith("context."):
        return cpath + field[len("context") :]
    return field


def _size(v: Any, memo: dict[int, int]) -> int:
    """JSON values in `v` (containers and scalars alike), each distinct object counted once."""
    key = id(v)
    if key not in memo:
        n, stack = 0, [v]
        while stack:
            item = stack.pop()
            n += 1
            if isinstance(item, Mapping):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        memo[key] = n
    return memo[key]


def check_batch_size(groups: list[list[Evaluation]], limits: Limits) -> None:
    """Refuse a batch whose groups would validate more values than one request may hold.

    A subject, context or action given once as a default is validated again for every group
    (`group_key`) it is part of: 500 evaluations with their own action properties and a default
    subject of 19,000 values made one 150 KB body cost ten seconds of validation. Counted
    before any of it, the whole call gets the value budget of one gRPC Check."""
    memo: dict[int, int] = {}
    total = 0
    for group in groups:
        first = group[0]
        total += _size(first.subject, memo) + _size(first.context, memo)
        total += _size(first.action, memo)
        total += sum(_size(ev.resource, memo) for ev in group)
    if total > limits.max_attr_values:
        raise LimitExceeded(
            "evaluations",
            f"the evaluations hold more than {limits.max_attr_values} values, counting a "
            "default subject, action and context once per distinct subject, context and "
            "action properties they are evaluated with",
        )


def group_key(ev: Evaluation) -> tuple[int, int, int]:
    """Evaluations with the same subject, context and action properties (the same objects,
    as defaults make them) are decided in one engine call."""
    props = ev.action.get("properties") if isinstance(ev.action, Mapping) else None
    return id(ev.subject), id(ev.context), id(props) if props else 0


def decision(d: ActionDecision, decision_id: str, hide_reasons: bool) -> dict[str, Any]:
    """An AuthZEN Decision. Its context carries pdp's reasons, deciding policy and rule and
    obligations; with `hide_reasons` only the decision id and obligations (the PEP must still
    enforce them)."""
    ctx: dict[str, Any] = {"decision_id": decision_id}
    if not hide_reasons:
        ctx["reasons"] = list(d.reasons)
        if d.policy:
            ctx["policy"] = d.policy
        if d.rule:
            ctx["rule"] = d.rule
        if d.message:
            ctx["message"] = d.message
        if d.errors:
            ctx["errors"] = list(d.errors)
    if d.obligations:
        ctx["obligations"] = dict(d.obligations)
    return {"decision": d.effect == ALLOW, "context": ctx}


# -- pdp -> AuthZEN (for callers and tests: the inverse of the mapping above) -----------------


def subject_of(principal: Mapping[str, Any], subject_type: str = "user") -> dict[str, Any]:
    """The AuthZEN subject that maps to a pdp principal (JSON shape of `parse_check_request`)."""
    props: dict[str, Any] = dict(principal.get("attr") or {})
    clash = set(props) & set(SUBJECT_FIELDS)
    if clash:
        raise ValueError(f"principal.attr keys {sorted(clash)} cannot be expressed in AuthZEN")
    for key in ("tenant", "roles", "scopes"):
        if principal.get(key):
            props[key] = principal[key]
    actor = principal.get("actor")
    if actor:
        aprops = dict(actor.get("attr") or {})
        if actor.get("scopes"):
            aprops["scopes"] = actor["scopes"]
        props["actor"] = {"type": actor.get("type") or "", "id": actor["id"], "properties": aprops}
        if not props["actor"]["type"]:
            del props["actor"]["type"]
    out: dict[str, Any] = {"type": subject_type, "id": principal["id"]}
    if props:
        out["properties"] = props
    return out


def resource_of(resource: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = dict(resource.get("attr") or {})
    if "tenant" in props:
        raise ValueError("resource.attr key `tenant` cannot be expressed in AuthZEN")
    if resource.get("tenant"):
        props["tenant"] = resource["tenant"]
    out: dict[str, Any] = {"type": resource["kind"], "id": resource["id"]}
    if props:
        out["properties"] = props
    return out


def context_of(context: Mapping[str, Any] | None) -> dict[str, Any]:
    context = context or {}
    out: dict[str, Any] = dict(context.get("attr") or {})
    clash = set(out) & {*CONTEXT_FIELDS, ACTION_ATTR}
    if clash:
        raise ValueError(f"context.attr keys {sorted(clash)} cannot be expressed in AuthZEN")
    for key in CONTEXT_FIELDS:
        if context.get(key):
            value = context[key]
            out[key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


# -- strict mode (`--http-reject-unknown-fields`) ------------------------------------------------

_ENTITY_KEYS = {
    "subject": frozenset({"type", "id", "properties"}),
    "resource": frozenset({"type", "id", "properties"}),
    "action": frozenset({"name", "properties"}),
}
_TUPLE_KEYS = frozenset({"subject", "action", "resource", "context"})
_TOP_KEYS = {
    "evaluation": _TUPLE_KEYS,
    "evaluations": _TUPLE_KEYS | {"evaluations", "options"},
    "search_action": frozenset({"subject", "resource", "context", "page"}),
    "search_resource": _TUPLE_KEYS | {"page"},
}
_OPTIONS_KEYS = frozenset({"evaluations_semantic"})
_PAGE_KEYS = frozenset({"token", "next_token", "limit", "properties"})


def _unknown(obj: Any, allowed: frozenset[str], path: str) -> None:
    if isinstance(obj, Mapping):
        for key in obj:
            if key not in allowed:
                raise RequestError(f"{path}.{key}" if path else key, "is an unknown field")


def _entities(obj: Mapping[str, Any], prefix: str) -> None:
    for name, keys in _ENTITY_KEYS.items():
        _unknown(obj.get(name), keys, f"{prefix}{name}")
    subject = obj.get("subject")
    if isinstance(subject, Mapping) and isinstance(subject.get("properties"), Mapping):
        actor = subject["properties"].get("actor")
        _unknown(actor, _ENTITY_KEYS["subject"], f"{prefix}subject.properties.actor")


def reject_unknown_fields(body: Mapping[str, Any], endpoint: str) -> None:
    """Refuse keys the spec does not define outside `properties` and `context` (the spec asks
    receivers to ignore them; an operator may prefer a typo to be an error)."""
    _unknown(body, _TOP_KEYS[endpoint], "")
    _entities(body, "")
    _unknown(body.get("options"), _OPTIONS_KEYS, "options")
    _unknown(body.get("page"), _PAGE_KEYS, "page")
    items = body.get("evaluations")
    if isinstance(items, list):
        for i, item in enumerate(items):
            _unknown(item, _TUPLE_KEYS, f"evaluations[{i}]")
            if isinstance(item, Mapping):
                _entities(item, f"evaluations[{i}].")
