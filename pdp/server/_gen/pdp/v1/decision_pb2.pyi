import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Effect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EFFECT_UNSPECIFIED: _ClassVar[Effect]
    EFFECT_ALLOW: _ClassVar[Effect]
    EFFECT_DENY: _ClassVar[Effect]
EFFECT_UNSPECIFIED: Effect
EFFECT_ALLOW: Effect
EFFECT_DENY: Effect

class CheckRequest(_message.Message):
    __slots__ = ("request_id", "principal", "resources", "context", "explain")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    principal: Principal
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    context: Context
    explain: bool
    def __init__(self, request_id: _Optional[str] = ..., principal: _Optional[_Union[Principal, _Mapping]] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., explain: _Optional[bool] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("id", "tenant", "roles", "scopes", "attr", "actor")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    scopes: _containers.RepeatedScalarFieldContainer[str]
    attr: _struct_pb2.Struct
    actor: Actor
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., scopes: _Optional[_Iterable[str]] = ..., attr: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., actor: _Optional[_Union[Actor, _Mapping]] = ...) -> None: ...

class Actor(_message.Message):
    __slots__ = ("id", "type", "scopes", "attr")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    attr: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., attr: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("kind", "id", "tenant", "attr", "actions")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    tenant: str
    attr: _struct_pb2.Struct
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ..., tenant: _Optional[str] = ..., attr: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("ip", "country", "time", "attr")
    IP_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    ip: str
    country: str
    time: _timestamp_pb2.Timestamp
    attr: _struct_pb2.Struct
    def __init__(self, ip: _Optional[str] = ..., country: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attr: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("decision_id", "request_id", "bundle", "results", "evaluated_at", "time_dependent")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_FIELD_NUMBER: _ClassVar[int]
    TIME_DEPENDENT_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    request_id: str
    bundle: Bundle
    results: _containers.RepeatedCompositeFieldContainer[ResourceResult]
    evaluated_at: str
    time_dependent: bool
    def __init__(self, decision_id: _Optional[str] = ..., request_id: _Optional[str] = ..., bundle: _Optional[_Union[Bundle, _Mapping]] = ..., results: _Optional[_Iterable[_Union[ResourceResult, _Mapping]]] = ..., evaluated_at: _Optional[str] = ..., time_dependent: _Optional[bool] = ...) -> None: ...

class ResourceResult(_message.Message):
    __slots__ = ("kind", "id", "actions")
    class ActionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ActionResult
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ActionResult, _Mapping]] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    actions: _containers.MessageMap[str, ActionResult]
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ..., actions: _Optional[_Mapping[str, ActionResult]] = ...) -> None: ...

class ActionResult(_message.Message):
    __slots__ = ("effect", "policy", "rule", "reasons", "obligations", "message", "errors", "trace", "limits")
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    effect: Effect
    policy: str
    rule: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    obligations: _struct_pb2.Struct
    message: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    trace: _containers.RepeatedCompositeFieldContainer[TraceStep]
    limits: _containers.RepeatedCompositeFieldContainer[LimitStatus]
    def __init__(self, effect: _Optional[_Union[Effect, str]] = ..., policy: _Optional[str] = ..., rule: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., obligations: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., message: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ..., trace: _Optional[_Iterable[_Union[TraceStep, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[LimitStatus, _Mapping]]] = ...) -> None: ...

class LimitStatus(_message.Message):
    __slots__ = ("id", "policy", "limit", "window_seconds", "remaining", "reset_seconds", "exceeded", "retry_after_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    policy: str
    limit: int
    window_seconds: float
    remaining: int
    reset_seconds: int
    exceeded: bool
    retry_after_seconds: int
    def __init__(self, id: _Optional[str] = ..., policy: _Optional[str] = ..., limit: _Optional[int] = ..., window_seconds: _Optional[float] = ..., remaining: _Optional[int] = ..., reset_seconds: _Optional[int] = ..., exceeded: _Optional[bool] = ..., retry_after_seconds: _Optional[int] = ...) -> None: ...

class TraceStep(_message.Message):
    __slots__ = ("stage", "policy", "rule", "outcome", "detail")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    policy: str
    rule: str
    outcome: str
    detail: str
    def __init__(self, stage: _Optional[str] = ..., policy: _Optional[str] = ..., rule: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("name", "version", "revision", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    revision: str
    digest: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., revision: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class ServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfoResponse(_message.Message):
    __slots__ = ("pdp_version", "active_bundle", "activated_at", "last_attempt_at", "last_error", "limits")
    PDP_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    pdp_version: str
    active_bundle: Bundle
    activated_at: _timestamp_pb2.Timestamp
    last_attempt_at: _timestamp_pb2.Timestamp
    last_error: str
    limits: Limits
    def __init__(self, pdp_version: _Optional[str] = ..., active_bundle: _Optional[_Union[Bundle, _Mapping]] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_checks", "max_resources", "max_attr_depth", "max_attr_values", "max_string_length", "max_id_length", "max_message_bytes")
    MAX_CHECKS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTR_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTR_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_STRING_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_ID_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_checks: int
    max_resources: int
    max_attr_depth: int
    max_attr_values: int
    max_string_length: int
    max_id_length: int
    max_message_bytes: int
    def __init__(self, max_checks: _Optional[int] = ..., max_resources: _Optional[int] = ..., max_attr_depth: _Optional[int] = ..., max_attr_values: _Optional[int] = ..., max_string_length: _Optional[int] = ..., max_id_length: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...
