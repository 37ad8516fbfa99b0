# The comparison workload (bench/compare.py) in Rego v1, for regopy (rego-cpp).
# Input: {principal: {id, tenant, roles, scopes}, resource: {id, tenant, owner,
# classification, actions}, context: {ip}}. Query: data.authz.decision -> {action: bool}.
# rego-cpp has no net.cidr_contains builtin, so the CIDR fence compares the IPv4 address as an
# integer against precomputed [first, last] ranges (10/8, 172.16/12, 192.168/16).
package authz

import rego.v1

required_scope := {"read": "docs:read", "write": "docs:write", "delete": "docs:delete"}

corporate_ranges := [
	[167772160, 184549375],
	[2886729728, 2887778303],
	[3232235520, 3232301055],
]

decision := {a: v | some a in input.resource.actions; v := allowed(a)}

allowed(a) := false if {
	denied(a)
} else := true if {
	permitted(a)
} else := false

denied(_) if input.principal.tenant == ""

denied(_) if input.principal.tenant != input.resource.tenant

denied(a) if not required_scope[a]

denied(a) if not required_scope[a] in input.principal.scopes

denied("delete") if not from_corp

from_corp if {
	parts := split(input.context.ip, ".")
	count(parts) == 4
	n := ((to_number(parts[0]) * 256 + to_number(parts[1])) * 256 + to_number(parts[2])) * 256 + to_number(parts[3])
	some r in corporate_ranges
	r[0] <= n
	n <= r[1]
}

permitted(_) if input.resource.owner == input.principal.id

permitted(a) if {
	a in {"read", "write"}
	"editor" in input.principal.roles
}

permitted("read") if {
	"viewer" in input.principal.roles
	input.resource.classification != "confidential"
}

permitted(a) if {
	a in {"read", "delete"}
	"admin" in input.principal.roles
}
