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
