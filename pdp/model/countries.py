"""ISO 3166-1 alpha-2 country codes `context.country` may hold.

`ASSIGNED`: the 249 officially assigned codes, vendored from Debian's iso-codes 4.15.0
(`data/iso_3166-1.json`, https://salsa.debian.org/iso-codes-team/iso-codes), which follows
the ISO 3166 Maintenance Agency's list (https://www.iso.org/obp/ui/#search/code/). Refresh
with:

    python3 -c "import json; print(' '.join(sorted(c['alpha_2'] for c in
        json.load(open('/usr/share/iso-codes/json/iso_3166-1.json'))['3166-1'])))"

`USER_ASSIGNED`: AA, QM-QZ, XA-XZ and ZZ, which ISO 3166-1 leaves to its users and will never
assign to a country. They are accepted: geolocation services send them (`XK` for Kosovo,
`XX` or `ZZ` for unknown), and no country can later take one over, so a policy written for a
real code never meets it under another meaning.

Everything else with the shape of a code is refused: reserved or withdrawn codes (`UK`, `EU`,
`FX`, `SU`, `YU`, `AN`) and unassigned ones. A rule on `GB` does not match `UK`, nor one on
`RS` `YU`: an upstream that spells a country so would pass rules written for it.
"""

from __future__ import annotations

# In alphabetical order, as vendored (module docstring).
_ASSIGNED = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
    GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
    KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
    MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
    TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM
    ZW
"""
ASSIGNED = frozenset(_ASSIGNED.split())

USER_ASSIGNED = frozenset(
    ["AA", "ZZ"]
    + ["Q" + c for c in "MNOPQRSTUVWXYZ"]
    + ["X" + chr(c) for c in range(ord("A"), ord("Z") + 1)]
)

COUNTRY_CODES = ASSIGNED | USER_ASSIGNED
