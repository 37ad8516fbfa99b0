"""Watch a policy directory and swap each good edit into an `EngineHolder` (`pdp serve --watch`).

The author's loop: save a file, and within a second the server decides under it — but only
once the whole set loads, compiles, has no validator error and passes its tests (the checks of
`pdp bundle build --no-strict`: validator warnings are logged, not refused). A bad edit is
refused with every error, file:line:column, and the last good set
keeps serving. Changes are noticed by the files' sizes and modification times (a stat per
file per poll), and acted on once the tree has stayed the same for one poll, so an editor's
save in several writes is judged once, whole.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pdp.engine import Engine, EngineHolder, SuiteCheck
from pdp.errors import BundleError, PolicyErrors
from pdp.lint import validator_errors
from pdp.model.decision import BundleInfo

from .build import collect_files
from .load import compile_files
from .reloader import Outcome

log = logging.getLogger("pdp.watch")

DEFAULT_WATCH_INTERVAL = 0.5
Stamp = tuple[tuple[str, int, int], ...]


def tree_stamp(directory: Path) -> Stamp:
    """(relative path, size, mtime) of every visible file under `directory`, sorted."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:  # removed between the listing and the stat: the next poll sees it
                continue
            out.append((os.path.relpath(path, directory), st.st_size, st.st_mtime_ns))
    out.sort()
    return tuple(out)


class DirectoryWatcher:
    """Keeps `holder` on the newest good state of a policy directory.

    `poll_once()` is one synchronous step (tests drive it directly); `start()` loads the
    directory now and then polls in a daemon thread every `interval` seconds.

    `publish(files, info)`, when given, is handed each good state's files before it is swapped
    in (`pdp serve --watch --workers N`: the supervisor hands it to its workers,
    pdp.bundle.handoff); an OSError or BundleError from it refuses the state.
    """

    def __init__(
        self,
        directory: str | Path,
        holder: EngineHolder,
        *,
        bundle_info: Callable[[], BundleInfo],
        checks: Sequence[SuiteCheck] = (),
        interval: float = DEFAULT_WATCH_INTERVAL,
        report: Callable[[str], None] | None = None,
        publish: Callable[[Mapping[str, bytes], BundleInfo], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.holder = holder
        self.interval = max(interval, 0.05)
        self._bundle_info = bundle_info
        self._checks = tuple(checks)
        self._report = report or (lambda message: None)
        self._publish = publish
        self._judged: Stamp | None = None  # the tree state last activated or refused
        self._seen: Stamp | None = None  # the tree state at the previous poll
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.activations = 0
        self.refusals = 0
        self.last_error = ""

    def poll_once(self, *, settle: bool = True) -> Outcome:
        """Judge the tree if it changed since it was last judged and, with `settle`, has not
        changed since the previous poll."""
        with self._lock:
            stamp = tree_stamp(self.directory)
            previous, self._seen = self._seen, stamp
            if stamp == self._judged or (settle and stamp != previous):
                return Outcome.UNCHANGED
            self._judged = stamp
            return self._judge()

    def _judge(self) -> Outcome:
        bundle = self._bundle_info()
        try:
            files = collect_files(self.directory)
            compiled = compile_files(files, bundle, self._checks)
        except PolicyErrors as exc:
            details = [err.render() for err in exc.errors]
            n = len(details)
            return self._refuse(f"{n} error{'s' if n != 1 else ''}", details)
        except BundleError as exc:
            return self._refuse(str(exc), [])
        if errors := validator_errors(compiled.source):
            n = len(errors)
            return self._refuse(
                f"{n} validator error{'s' if n != 1 else ''}", [f.render() for f in errors]
            )
        if compiled.report.failed:
            failed = [r for r in compiled.report.results if not r.passed]
            details = [
                f"FAIL {r.file}:{r.line} {r.suite} / {r.case} [{r.action}]: {r.failure}"
                for r in failed
            ]
            return self._refuse(f"{len(failed)} test case(s) failed", details)
        if not compiled.report.results and compiled.source.test_suites:
            return self._refuse("the test suites ran no case", [])
        if self._publish is not None:
            try:
                self._publish(files, bundle)
            except (OSError, BundleError) as exc:
                return self._refuse(f"cannot hand the policies to the workers: {exc}", [])
        self.holder.swap(Engine(compiled.policy_set, bundle))
        self.activations += 1
        self.last_error = ""
        # Worded as the bundle reloader words it: one vocabulary in the logs.
        message = (
            f"activated bundle {bundle.name} {bundle.version} (revision "
            f"{bundle.revision[:12] or '-'}) from {self.directory}: "
            f"{len(compiled.policy_set.rules)} rules, {compiled.report.passed} test cases passed"
        )
        log.info("%s", message)
        self._report(message)
        return Outcome.ACTIVATED

    def _refuse(self, summary: str, details: list[str]) -> Outcome:
        current = self.holder.current
        serving = (
            f"the last good set, {current.bundle.name} {current.bundle.version}"
            if current is not None
            else "nothing yet"
        )
        message = f"refused policies from {self.directory}: {summary}; still serving {serving}"
        self.refusals += 1
        self.last_error = "\n".join([message, *details])
        log.error("%s", self.last_error)
        self._report(self.last_error)
        self.holder.record_failure(f"{message}: {describe_details(details)}")
        return Outcome.REFUSED

    def start(self, *, wait: bool = True) -> Outcome:
        """Judge the directory now (unsettled: nothing to wait for), then poll in the background;
        without `wait` the first judgement is the background thread's too (UNCHANGED here)."""
        outcome = self.poll_once(settle=False) if wait else Outcome.UNCHANGED
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(not wait,), name="pdp-policy-watch", daemon=True
        )
        self._thread.start()
        return outcome

    def _run(self, judge_first: bool = False) -> None:
        if judge_first:
            try:
                self.poll_once(settle=False)
            except Exception:
                log.exception("policy watch poll failed")
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception:  # the watcher must outlive any single bad poll
                log.exception("policy watch poll failed")

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def describe_details(details: Sequence[str], limit: int = 5) -> str:
    shown = "; ".join(details[:limit])
    return shown + (f"; ... and {len(details) - limit} more" if len(details) > limit else "")


__all__ = ["DEFAULT_WATCH_INTERVAL", "DirectoryWatcher", "tree_stamp", "validator_errors"]
