"""`context.ip` and the CEL network functions read a dotted quad with the C library's
`inet_pton` (a tenth of `ipaddress`'s cost, for client addresses that vary call to call): it must
accept exactly the strings `ipaddress` does, or a request would be refused on one path and
decided on another, or a fence read a different address than the one validated."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pdp.cel._network import _parse_ip_str
from pdp.cel._values import CelError
from pdp.model.request import is_ip_address

# Near-addresses: digits (ASCII and not), dots, hex, colons, signs, spaces, NUL, zone marks.
_ALPHABET = "0123456789..x:abcdefABCDEF +-%/\x00\n\t\u0661\uff11"
_near_ip = st.one_of(
    st.text(alphabet=_ALPHABET, max_size=20),
    st.lists(st.integers(-1, 300).map(str), min_size=1, max_size=6).map(".".join),
    st.lists(st.text(alphabet="0123456789", min_size=0, max_size=4), min_size=3, max_size=5).map(
        ".".join
    ),
    st.ip_addresses().map(str),
)


def _ipaddress_accepts(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _context_ip_accepts(text: str) -> bool:
    """What `context.ip` takes: what `ipaddress` accepts, less an IPv6 zone (`fe80::1%eth0`)."""
    return _ipaddress_accepts(text) and "%" not in text


@settings(max_examples=3000, deadline=None)
@given(_near_ip)
@example("01.2.3.4")
@example("1.2.3.04")
@example("0.0.0.0")
@example("255.255.255.255")
@example("256.1.1.1")
@example("1.2.3.4\x00")
@example(" 1.2.3.4")
@example("1.2.3.4\n")
@example("\u0661.2.3.4")
@example("::ffff:1.2.3.4")
@example("1.2.3")
@example("0x1.2.3.4")
@example("fe80::1%eth0")
def test_ip_text_is_read_as_ipaddress_reads_it(text: str) -> None:
    assert is_ip_address(text) is _context_ip_accepts(text)
    # The CEL functions refuse a zone too, as `ip()` does (test_redteam20_ip_zone.py).
    accepted = _context_ip_accepts(text)
    try:
        parsed = _parse_ip_str(text)
    except CelError:
        assert not accepted
        return
    assert accepted
    expected = ipaddress.ip_address(text)
    if expected.version == 6 and expected.ipv4_mapped is not None:
        expected = expected.ipv4_mapped
    assert parsed == expected
