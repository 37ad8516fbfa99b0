"""Settings for every test.

`pdp serve` runs a worker per usable CPU by default (docs/SERVING.md). A test that is not about
workers runs one process: on a shared 2-core machine a supervisor and N workers per server only
slow every end-to-end test down, and each worker writes its own decision-log file. Tests about
workers pass `--workers N` (the command line beats `PDP_WORKERS`), and the tests of the default
itself (tests/server/test_workers_default.py) remove the variable for the servers they start.
"""

from __future__ import annotations

import os

os.environ.setdefault("PDP_WORKERS", "1")
# A decision record waits up to 0.5 s in a server whose telemetry is written by a separate
# process (docs/DECISION_LOG.md); the tests that read a record back waited that long for each
# one. The servers they start hand records over within 50 ms instead.
os.environ.setdefault("PDP_DECISION_LOG_MAX_DELAY", "0.05")
