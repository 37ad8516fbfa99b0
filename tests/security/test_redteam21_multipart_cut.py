"""Red team (session 21): a cut multipart body's reduced parse read `POST` where the whole
body's parse read another method.

`multipart_method_values` hands `email`'s parser each part's headers and the line after them,
and the payload only of a part whose headers spell `method`. A part named `_method` through
RFC 2231 continuations (`name*0="_me"; name*1="thod"`) whose headers run straight into its
payload (no blank line: a defect, refused in a complete body, read on in a cut one) kept that
first line as its whole value: `POST`, passed, where the whole body's parse reads `POST`, a
blank line and the `DELETE` after it, another method. Under `bodyMethodOverride: false` a cut
body is decided on what was read. Now such a part reads another method, as the whole does.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pdp.gateway.forms import FormError, multipart_method_values

_B = "XyZb"
CONTENT_TYPE = f"multipart/form-data; boundary={_B}"


def _passes(shrink: bool, body: bytes) -> bool:
    """Whether a cut `POST` with this body would pass: at most one `_method`, naming POST."""
    try:
        values = multipart_method_values(CONTENT_TYPE, body, False, shrink=shrink)
    except FormError:
        return False
    return len(values) <= 1 and all(v.strip().upper() == "POST" for v in values)


def test_a_continued_name_run_into_its_payload_is_another_method() -> None:
    body = (
        f"--{_B}\r\n"
        'Content-Disposition: form-data; name*0="_me"; name*1="thod"\r\n'
        "POST\r\n"
        "\r\n"
        "DELETE\r\n"
        "aaaa"  # cut here by Envoy's max_request_bytes
    ).encode()
    assert not _passes(False, body)  # the whole body's parse: `POST\r\n\r\nDELETE\r\naaaa`
    assert not _passes(True, body)


_LINES = st.sampled_from(
    [
        f"--{_B}",
        f"--{_B}--",
        'Content-Disposition: form-data; name*0="_me"; name*1="thod"',
        "Content-Disposition: form-data; name*=utf-8''%5F%6Dethod",
        'Content-Disposition: form-data; name="_method"',
        'Content-Disposition: form-data; name="text"',
        "Content-Transfer-Encoding: base64",
        "X-Other: y",
        "",
        "POST",
        "DELETE",
        "x",
    ]
)
_EOL = st.sampled_from(["\r\n", "\n", "\r"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.tuples(_LINES, _EOL), max_size=12))
@example(
    lines=[
        (f"--{_B}", "\r\n"),
        ('Content-Disposition: form-data; name*0="_me"; name*1="thod"', "\r\n"),
        ("POST", "\r"),
        ("DELETE", "\n"),
    ]
)
def test_a_cut_body_the_whole_parse_refuses_is_refused(lines: list[tuple[str, str]]) -> None:
    """The reduced parse may refuse more (a `_method` its headers do not spell reads as
    another method), never less."""
    body = "".join(text + eol for text, eol in lines).encode()
    if not _passes(False, body):
        assert not _passes(True, body)
