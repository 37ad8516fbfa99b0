"""Run test files under each named mutant, the way mutmut does, and say which mutants they kill.

mutmut's mutated copy (`mutants/`, left by `make mutation`) switches every mutated function on
the `MUTANT_UNDER_TEST` environment variable at call time, so one process can try many
mutants: for each name this runs pytest on the given test files with that mutant active and
prints KILLED (a test failed) or SURVIVED. It confirms that tests written after a run kill
that run's survivors (`[killed_after_run]` in triage.toml) without a whole new run.

    cd mutants && cp ../tests/<dir>/<new tests>.py tests/<dir>/
    ../.venv/bin/python ../tests/mutation/confirm_kills.py NAMES_FILE tests/<dir>/<new tests>.py ...
"""

from __future__ import annotations

import contextlib
import io
import os
import sys


def main() -> int:
    sys.path.insert(0, os.getcwd())  # the mutated copy, before the installed package
    import pytest

    with open(sys.argv[1]) as f:
        names = [line.strip() for line in f if line.strip()]
    tests = sys.argv[2:]
    survived = 0
    for name in names:
        os.environ["MUTANT_UNDER_TEST"] = name
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider"])
        survived += code == 0
        print(("SURVIVED " if code == 0 else "KILLED ") + name, flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
