"""Red team (session 21): the decision log's JWT pattern cost its input's length squared.

`\\beyJ[\\w-]*\\.[\\w-]+\\.[\\w-]*` was searched for in every logged string holding `eyJ` (the
pre-filter lets it through). In `eyJ-eyJ-eyJ-…` every `eyJ` follows a word boundary (the `-`),
and each start scanned the run of `[\\w-]` to its end looking for a `.`: 64 Ki characters, an
attribute the request limits allow, cost ~15 s of CPU in the log writer (`Basic eyJ-…` the
same, through the span search). Now the search starts only where such a run starts, so one
scan per run. The spans found are the same (property test against the plain pattern).
"""

from __future__ import annotations

import re
import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pdp.telemetry.masking import (
    _INNER_CREDENTIAL,
    MASKED,
    _spans,
    holds_credential,
    redact_credentials,
)

# What the pattern matched before, searched the plain way (quadratic, fine on short text).
# Its head since: a header opening `{` and whitespace (session 22).
_PLAIN_JWT = re.compile(
    r"\b(?-i:eyJ|eyA[gJKNi]|ew[ko0][gJKNi])[\w-]*\.[\w-]+\.[\w-]*", re.IGNORECASE
)
HOSTILE = 64 * 1024  # the request's `max_string_length`

# Generous: each call below took ~15 s of CPU before, and ~0.03 s now.
CPU_CAP_S = 3.0


def _cpu(fn, arg) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    fn(arg)
    return time.process_time() - start


def test_a_run_of_eyj_words_costs_one_scan() -> None:
    text = "eyJ-" * (HOSTILE // 4)
    for fn in (redact_credentials, holds_credential, _INNER_CREDENTIAL.search):
        assert _cpu(fn, text) < CPU_CAP_S, fn
    assert redact_credentials(text) == text  # no `.`: no JWT


def test_a_run_of_the_other_heads_costs_one_scan() -> None:
    """`{ "` (`eyAi`), `{\\n\\n` (`ewoK`), `{\\r\\n` (`ew0K`) open a header as `eyJ` does."""
    for head in ("eyAi-", "ewoK-", "ew0K-", "ewki-", "eyAi-ewoK-"):
        text = head * (HOSTILE // len(head))
        for fn in (redact_credentials, holds_credential, _INNER_CREDENTIAL.search):
            assert _cpu(fn, text) < CPU_CAP_S, (head, fn)
        assert redact_credentials(text) == text


def test_a_scheme_before_the_run_costs_one_scan_too() -> None:
    text = "Basic " + "eyJ-" * (HOSTILE // 4)
    assert _cpu(redact_credentials, text) < CPU_CAP_S


def test_jwts_in_a_run_are_still_masked_from_their_eyj() -> None:
    assert redact_credentials("id-eyJhbGc.eyJzdWIi.sig done") == f"id-{MASKED} done"
    assert redact_credentials("eyJ-eyJ-x.y.z") == MASKED
    assert redact_credentials("a.eyJx.y.z") == f"a.{MASKED}"
    assert redact_credentials("xeyJa.b.c") == "xeyJa.b.c"  # no word boundary before it


_PIECES = st.sampled_from(
    ["eyJ", "eyJ", "-", ".", "_", "a", "9", " ", "é", "EYJ", "J", "`", "eyAi", "ewo", "K", "ew0"]
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(_PIECES, max_size=16).map("".join))
@example("x-eyJ-eyJ.a.b")
@example("eyJ.eyJ.eyJ.eyJ")
@example("x-ewoK-eyAi.a.b")
@example("ewo-ewoK.a.b")
def test_jwt_spans_are_the_plain_patterns(text: str) -> None:
    plain = [m.span() for m in _PLAIN_JWT.finditer(text)]
    assert _spans(text) == plain
    assert bool(_INNER_CREDENTIAL.search(text)) == bool(plain)
