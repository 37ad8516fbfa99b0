"""Every finding code, its severity and a one-line title (docs/POLICY_FORMAT.md lists them).

Codes are stable: a code is never reused for another problem. `PDP1xx` are errors (a bundle
with one is refused); `PDP2xx` are warnings (errors under `pdp validate --strict` and
`pdp bundle build`).
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    severity: str
    title: str


CODES: dict[str, Code] = {
    "PDP100": Code("error", "invalid attribute schema file"),
    "PDP101": Code("error", "derived role defined by two imported Definitions"),
    "PDP102": Code("error", "variable defined by two imported Definitions"),
    "PDP103": Code("error", "constant defined by two imported Definitions"),
    "PDP104": Code("error", "guard action that no policy of its kinds declares"),
    "PDP105": Code("error", "guard resource kind that no policy governs"),
    "PDP106": Code("error", "empty role list"),
    "PDP107": Code("error", "crossTenant exception with neither roles nor condition"),
    "PDP108": Code("error", "rule that can never match (its condition is always false)"),
    "PDP109": Code("error", "rule shadowed by an earlier unconditional rule"),
    "PDP120": Code("error", "field that the request never has"),
    "PDP121": Code("error", "no matching overload for the operand types"),
    "PDP122": Code("error", "attribute that its schema does not declare"),
    "PDP123": Code("error", "condition that is not a bool"),
    "PDP124": Code("error", "constant or data path that does not exist"),
    "PDP125": Code("error", "field selection on a value without fields"),
    "PDP126": Code("error", "rate-limit key that is not a string, an integer or a list of them"),
    "PDP127": Code("error", "rate-limit cost that is not a number"),
    "PDP201": Code("warning", "import that the policy never uses"),
    "PDP202": Code("warning", "local variable that nothing uses"),
    "PDP203": Code("warning", "condition that is always true"),
    "PDP204": Code("warning", "deny rule without a reason"),
    "PDP205": Code("warning", "untyped attribute compared with a bool or number literal"),
    "PDP206": Code("warning", "suppression that silences nothing"),
    "PDP207": Code("warning", "schema file that no policy uses"),
    "PDP208": Code("warning", "comparison whose result never depends on the request"),
}


def severity(code: str) -> str:
    return CODES[code].severity
