"""A worker of `pdp serve --workers N` started by exec, not fork: `python -m pdp.cli.worker FD`.

The supervisor forks its first workers while it has no thread but its main one. A worker that
dies later is replaced while the supervisor runs threads (the bundle poller in urllib,
OpenSSL, hashlib or the policy compiler; a timer per download; one rate-limit counter thread
per worker): a child forked then inherits every lock those threads held at that instant,
locked, with no thread left to release it, and can hang on its first use of it. So a
replacement is a fresh interpreter, as gunicorn's re-exec and multiprocessing's forkserver
avoid forking a threaded process. It reads the supervisor's parsed settings (JSON) from the
descriptor FD and runs `serve` with them; the descriptors it needs (ready pipes, counter
channel) are inherited at the numbers the settings name.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# Entries of the parsed settings that are not settings (they do not cross to a new process).
NOT_SETTINGS = ("func", "serve_parser", "close")


def encode(args: argparse.Namespace, recheck_eviction: bool) -> bytes:
    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    return json.dumps({"args": settings, "recheck_eviction": recheck_eviction}).encode()


def main(argv: list[str]) -> int:
    fd = int(argv[0])
    with os.fdopen(fd, "rb") as f:
        payload = json.loads(f.read())
    args = argparse.Namespace(**payload["args"])
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    from .serve import serve

    return serve(args, recheck_eviction=bool(payload["recheck_eviction"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
