"""`pdp serve --bundle SOURCE`: the serve flags for bundles, and starting the bundle reloader.

Apart from the bundle CLI (pdp.cli.bundle), whose imports (signing keys, archives, diffs) a
server started on a policy directory does not need.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pdp.bundle.defaults import DEFAULT_POLL_INTERVAL, HTTP_FETCH_DEADLINE_SECONDS
from pdp.engine import EngineHolder
from pdp.errors import BundleError

from ._common import policy_checks

if TYPE_CHECKING:
    from .ready import WorkerGate


def add_serve_arguments(group: argparse._ArgumentGroup) -> None:
    """The `pdp serve` flags for serving bundles from a file, directory or URL."""
    group.add_argument(
        "--bundle",
        metavar="SOURCE",
        help="serve bundles from a file, a directory (highest version) or an http(s) URL",
    )
    group.add_argument(
        "--require-signature", action="store_true", help="refuse bundles not signed by --trust"
    )
    group.add_argument("--trust", action="append", metavar="PUB", help="trusted public key")
    group.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help=f"how often the bundle source is polled ({DEFAULT_POLL_INTERVAL:g})",
    )
    group.add_argument(
        "--poll-jitter",
        type=float,
        metavar="SECONDS",
        help="random extra delay per poll, 0..SECONDS (a tenth of the interval)",
    )
    group.add_argument(
        "--cache-dir", metavar="DIR", help="persist the last good bundle here, serve it on restart"
    )
    group.add_argument(
        "--bundle-allow-rollback",
        action="store_true",
        help="with --require-signature, accept a bundle older than the active one",
    )
    group.add_argument(
        "--bundle-min-version",
        metavar="SEMVER",
        help="refuse any bundle whose version ranks below SEMVER",
    )
    group.add_argument(
        "--bundle-name",
        metavar="NAME",
        help="refuse any bundle whose manifest name is not NAME",
    )
    # Set by the supervisor for its workers only: follow its bundles (pdp.bundle.handoff).
    group.add_argument("--bundle-handoff", metavar="DIR", help=argparse.SUPPRESS)
    group.add_argument(
        "--bundle-fetch-deadline",
        type=float,
        default=HTTP_FETCH_DEADLINE_SECONDS,
        metavar="SECONDS",
        help=f"give up an HTTP bundle download after SECONDS ({HTTP_FETCH_DEADLINE_SECONDS:g})",
    )


def _reloader(args: argparse.Namespace, holder: EngineHolder, source=None, **kw):  # -> Reloader
    """The reloader for `args` (trust, signature, rules, polling), on `args.bundle` unless
    `source` is given. Configuration mistakes raise ValueError."""
    from pdp.bundle import Reloader, load_bundle, load_public_keys, open_source

    if args.require_signature and not args.trust:
        raise ValueError("--require-signature needs --trust PUB")
    if not args.bundle_fetch_deadline > 0:
        raise ValueError("--bundle-fetch-deadline must be positive")
    try:
        trust = load_public_keys(args.trust) if args.trust else None
        if source is None:
            source = open_source(
                args.bundle, fetch_deadline=args.bundle_fetch_deadline, name=args.bundle_name
            )
        return Reloader(
            source,
            holder,
            trust=trust,
            require_signature=args.require_signature,
            poll_interval=args.poll_interval,
            jitter=args.poll_jitter,
            allow_rollback=args.bundle_allow_rollback,
            min_version=args.bundle_min_version,
            name=args.bundle_name,
            loader=lambda data: load_bundle(
                data, trust, args.require_signature, checks=policy_checks()
            ),
            **kw,
        )
    except BundleError as exc:
        raise ValueError(str(exc)) from None


def start_bundle_source(
    args: argparse.Namespace, holder: EngineHolder, gate: WorkerGate | None = None
) -> Callable[[], None]:
    """Start polling `args.bundle` into `holder`; returns the function that stops it.

    Configuration mistakes raise ValueError. A source that is down or offers a bad bundle does
    not: the server stays up (NOT_SERVING until a good bundle arrives, from the cache or the
    source) and keeps polling. A worker of `--workers N` (`args.bundle_handoff`) follows its
    supervisor's bundle instead (pdp.bundle.handoff), checked again here.
    """
    handoff = getattr(args, "bundle_handoff", None)
    if handoff:
        from pdp.bundle.handoff import BUNDLE_FILE, HandoffSource, adopt_status

        directory = Path(handoff)
        source = HandoffSource(
            directory / BUNDLE_FILE, generation=lambda: gate.generation if gate else 0
        )

        def after_poll() -> None:
            adopt_status(directory, holder, reloader.active_sha)
            if gate is not None:  # a refusal of the supervisor's bundle: it must know
                gate.refused(reloader.refused_sha)
                # What this worker serves now, read after hand-off N was announced: the
                # supervisor compares it with what it handed off (pdp.cli.ready).
                gate.polled(source.fetched_generation, reloader.active_sha)

        reloader = _reloader(args, holder, source, after_poll=after_poll)
        if gate is not None:
            gate.on_sync = reloader.wake
    else:
        reloader = _reloader(args, holder, cache_dir=args.cache_dir)
    # The cached bundle (when one passes) serves now; every poll of the source, the first
    # included, runs in the reloader's thread: a source that hangs until its fetch deadline
    # must hold neither readiness nor a SIGTERM's shutdown (pdp.cli.serve's main loop).
    reloader.start(wait=False)
    return reloader.stop


class SupervisorBundles:
    """`pdp serve --workers N --bundle SOURCE`: the supervisor polls the source (and keeps the
    cache) and hands each bundle that passes to the workers in a private directory
    (pdp.bundle.handoff has why). `tick()` from the supervisor's loop says when to poke them.
    With `--policies DIR --watch` it watches the directory instead (`watch`): one compile,
    validation and test run per edit, here, and every worker serves the same edit."""

    def __init__(self, args: argparse.Namespace, *, watch: bool = False) -> None:
        from pdp.bundle.handoff import Publisher, Verdicts, make_handoff_dir, remove_handoff_dir

        self.directory = make_handoff_dir()
        self.publisher = Publisher(self.directory)
        self.holder = Verdicts()  # judges bundles; keeps no engine, serves nobody
        self._poked = 0  # the hand-off the workers were last poked for
        self._last_judged: tuple[object, ...] = ()
        try:
            if watch:
                self._source = _supervisor_watch(args.policies, self.holder, self.publisher)
            else:
                self._source = _reloader(
                    args,
                    self.holder,
                    cache_dir=args.cache_dir,
                    publish=self.publisher.bundle,
                    keep_loaded=False,
                )
        except (OSError, ValueError):
            remove_handoff_dir(self.directory)
            raise

    def start(self) -> None:
        self._source.start(wait=False)

    def tick(self) -> bool:
        """Hand the workers the current status; True when they are to be poked (a bundle
        handed off, or its status changed)."""
        generation = self.publisher.handed.generation
        status = self.holder.status
        changed = self.publisher.status(self.active_sha, status)
        poke = changed or generation != self._poked
        self._poked = generation
        judged = self._judged()
        if judged != self._last_judged:  # a bundle (or an edit) was compiled since
            self._last_judged = judged
            from pdp.bundle.handoff import release_memory

            release_memory()
        return poke

    def _judged(self) -> tuple[object, ...]:
        """Changes whenever the source's offer was compiled (accepted or refused), and only
        then: a source that does not answer costs no collection."""
        from pdp.bundle.reloader import Reloader

        source = self._source
        if isinstance(source, Reloader):
            return (source.active_sha, source.refused_sha)
        return (source.activations, source.refusals)

    @property
    def active_sha(self) -> str:
        """The archive sha256 of the bundle the workers are to serve ("": none yet)."""
        return self.publisher.handed.sha

    def stop(self, timeout: float) -> None:
        from pdp.bundle.handoff import remove_handoff_dir

        self._source.stop(timeout)  # a download in progress is abandoned (a daemon thread)
        remove_handoff_dir(self.directory)


def _supervisor_watch(directory: str, holder: EngineHolder, publisher):  # -> DirectoryWatcher
    from pdp.bundle.handoff import directory_archive
    from pdp.bundle.watch import DirectoryWatcher

    from ._common import directory_bundle_info

    if not Path(directory).is_dir():
        raise ValueError(f"`{directory}` is not a directory")

    def publish(files, info) -> None:  # files: Mapping[str, bytes]; info: BundleInfo
        publisher.bundle(directory_archive(files, info))

    return DirectoryWatcher(
        directory,
        holder,
        bundle_info=lambda: directory_bundle_info(directory),
        checks=policy_checks(),
        publish=publish,
    )
