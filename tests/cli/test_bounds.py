"""Every numeric `pdp serve` setting has a range (pdp.cli.bounds), and the parser holds it:
what is inside is taken as given, anything else (out of range, a fraction for a count, NaN,
infinity, overflowing, not a number) is refused with a message naming the range."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.cli.bounds import BOUNDS, Bound, _number
from pdp.cli.config import keyed_actions
from pdp.cli.main import build_parser


def _serve_parser() -> argparse.ArgumentParser:
    return build_parser(["serve"]).parse_args(["serve"]).serve_parser


def test_every_numeric_flag_has_a_range_and_every_range_a_flag() -> None:
    actions = keyed_actions(_serve_parser())
    numeric = {
        key
        for key, action in actions.items()
        if action.metavar in ("N", "SECONDS")
        or (type(action.default) in (int, float) and not action.choices)
    }
    assert numeric - set(BOUNDS) == set(), "a numeric flag without a row in pdp.cli.bounds"
    assert set(BOUNDS) - set(actions) == set(), "a row in pdp.cli.bounds names no flag"
    for key in BOUNDS:
        assert f"[{BOUNDS[key].describe()}]" in (actions[key].help or ""), key


def test_every_default_is_in_its_range() -> None:
    actions = keyed_actions(_serve_parser())
    for key, bound in BOUNDS.items():
        default = actions[key].default
        if default is not None:
            assert bound.parse(str(default)) == default, key


ROWS = sorted(BOUNDS.items())


def _refused(bound: Bound, text: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        bound.parse(text)
    message = str(caught.value)
    assert message.startswith(f"takes {bound.describe()}, not `"), message
    assert "\n" not in message and len(message) < 200, message
    return message


@settings(max_examples=300, deadline=None)
@given(row=st.sampled_from(ROWS), data=st.data())
def test_values_inside_a_range_are_taken_as_given(row: tuple[str, Bound], data) -> None:
    _key, bound = row
    if bound.whole:
        value: float = data.draw(st.integers(int(bound.low), int(bound.high)))
    else:
        value = data.draw(st.floats(bound.low, bound.high, allow_nan=False))
    assert bound.parse(repr(value)) == value
    if bound.off:
        assert bound.parse("0") == 0


@settings(max_examples=300, deadline=None)
@given(row=st.sampled_from(ROWS), data=st.data())
def test_values_outside_a_range_are_refused_naming_it(row: tuple[str, Bound], data) -> None:
    _key, bound = row
    below = data.draw(st.floats(-1e300, bound.low, exclude_max=True, allow_nan=False))
    above = data.draw(st.floats(bound.high, 1e300, exclude_min=True, allow_nan=False))
    for value in (below, above):
        if value == 0 and bound.off:
            continue
        text = str(int(value)) if bound.whole and value.is_integer() else repr(value)
        if bound.whole and not value.is_integer():
            text = repr(value)  # a fraction where a count is meant is refused too
        _refused(bound, text)


@pytest.mark.parametrize(("key", "bound"), ROWS)
def test_what_is_not_a_number_in_range_is_refused(key: str, bound: Bound) -> None:
    overflowing = ("9" * 400, "-" + "9" * 400, "9" * 5000)  # past a float; past int()'s limit
    for text in ("nan", "NaN", "inf", "-inf", "1e999", "ten", "", "0x10", *overflowing):
        _refused(bound, text)
    huge = _refused(bound, "9" * 5000)
    assert "9" * 41 not in huge  # the value is not repeated back in full
    if bound.whole:
        _refused(bound, "1.5")
    assert math.isfinite(bound.low) and math.isfinite(bound.high) and bound.low <= bound.high


def test_the_deploy_guide_states_every_range() -> None:
    """docs/DEPLOY.md's table of ranges says what the table in pdp.cli.bounds holds."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs/DEPLOY.md").read_text()
    seen = set()
    for flags, cell in re.findall(r"^\| (`--[^|]+) \| ([^|]+) \|$", text, re.M):
        for flag in re.findall(r"`--([a-z-]+)`", flags):
            bound = BOUNDS[flag.replace("-", "_")]
            assert f"{_number(bound.low)} to {_number(bound.high)}" in cell, (flag, cell)
            assert (f"0 ({bound.off})" in cell) == bool(bound.off), (flag, cell)
            seen.add(flag.replace("-", "_"))
    assert seen == set(BOUNDS)


def test_the_hidden_worker_flags_have_ranges_too() -> None:
    """`--cpu`, `--limits-fd`, `--siblings` and `--ready-fds` are set by the supervisor for its
    workers; typed by hand, a value out of range is one line naming the flag (exit 2), not a
    traceback from sched_setaffinity or socket(fileno=)."""
    from pdp.cli.bounds import HIDDEN_BOUNDS

    parser = _serve_parser()
    hidden = {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.help is argparse.SUPPRESS and a.type is not None
    }
    numeric = {d for d, a in hidden.items() if a.type in (int, float) or d in HIDDEN_BOUNDS}
    assert numeric == set(HIDDEN_BOUNDS), "a hidden numeric flag without a range"
    assert hidden["ready_fds"].type is not str
    for flag, value in (
        ("--cpu", "99999"), ("--cpu", "-1"), ("--cpu", "nan"), ("--limits-fd", "9" * 400),
        ("--limits-fd", "-3"), ("--siblings", "0"), ("--siblings", "100000"),
        ("--ready-fds", "abc"), ("--ready-fds", "3"), ("--ready-fds", "3,-1"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            build_parser(["serve"]).parse_args(["serve", flag, value])
        assert exit_.value.code == 2, (flag, value)
    args = build_parser(["serve"]).parse_args(
        ["serve", "--cpu", "0", "--limits-fd", "7", "--siblings", "4", "--ready-fds", "5,6"]
    )
    assert (args.cpu, args.limits_fd, args.siblings, args.ready_fds) == (0, 7, 4, "5,6")


def test_a_cpu_this_process_may_not_use_is_one_line(tmp_path, capfd) -> None:
    """`--cpu 8000` is in range but names no CPU here: refused naming the flag, exit 2."""
    from pdp.cli.main import main

    (tmp_path / "p").mkdir()
    code = main(["serve", "--policies", str(tmp_path / "p"), "--workers", "1", "--cpu", "8000"])
    err = capfd.readouterr().err
    assert code == 2 and "--cpu 8000" in err and "Traceback" not in err, err
