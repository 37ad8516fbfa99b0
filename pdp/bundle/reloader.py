"""Poll a bundle source, load new bundles aside, and swap them into an `EngineHolder`.

The active engine is replaced only by a bundle that verified, compiled and passed its tests
(and, when signatures are required, does not roll the version back); anything else is
refused with its reason (`holder.record_failure`) while the last good bundle keeps serving.
The last good archive is persisted to a cache directory; a restart serves it at once
(re-verified, with the same trust and rules, on the way in) and polls the source in the
background, so a slow or unreachable source does not hold readiness back.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pdp.engine import EngineHolder
from pdp.errors import BundleError

from .build import write_atomic
from .defaults import DEFAULT_POLL_INTERVAL
from .load import LoadedBundle, load_bundle
from .manifest import Manifest, SemVer, validate_name
from .sources import BundleSource, SourceUnavailable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger("pdp.bundle")

CACHE_FILE_NAME = "last-good.pdpb"
# Below this, polling is a load test on the bundle server rather than a refresh.
MIN_POLL_INTERVAL = 0.05

Loader = Callable[[bytes], LoadedBundle]


class Outcome(enum.Enum):
    ACTIVATED = "activated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"


class Reloader:
    """Keeps `holder` on the newest good bundle of `source`.

    `poll_once()` is one synchronous step (tests drive it directly); `start()` activates the
    cached last good bundle when there is one that passes, polls once (in the background when
    the cache serves), then polls in a daemon thread every `poll_interval` plus a random
    0..`jitter` seconds, so replicas do not poll in lockstep.

    With `require_signature`, a bundle ranking below the active one (semver), or of the same
    version with other content (manifest digest), is refused: whoever controls the source but
    not the signing key could otherwise serve an older, validly signed bundle (TUF's rollback
    attack). So is a bundle of another name than the active one (a team's `sandbox` bundle,
    signed by the same key, at a higher version, replacing `prod`): versions rank only within
    one name. `allow_rollback` lifts both; `min_version` refuses anything below it, and `name`
    anything of another name, signed or not.

    `publish(data)`, when given, is handed each bundle's archive once it has passed every
    check and before it is swapped in (`pdp serve --workers N`: the supervisor hands it to its
    workers, pdp.bundle.handoff); an OSError from it refuses the bundle. `after_poll()` runs
    after every poll; `wake()` makes the polling thread poll now. Without `keep_loaded` the
    active bundle's engine, sources and test report are let go once it is swapped in (`active`
    stays None; the manifest is kept for the rollback checks): the supervisor's case, which
    only judges.
    """

    def __init__(
        self,
        source: BundleSource,
        holder: EngineHolder,
        *,
        trust: Sequence[Ed25519PublicKey] | None = None,
        require_signature: bool = False,
        cache_dir: str | Path | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        jitter: float | None = None,
        loader: Loader | None = None,
        rng: random.Random | None = None,
        allow_rollback: bool = False,
        min_version: str | None = None,
        name: str | None = None,
        publish: Callable[[bytes], None] | None = None,
        after_poll: Callable[[], None] | None = None,
        keep_loaded: bool = True,
    ) -> None:
        if require_signature and not trust:
            raise BundleError("a signature is required but no trusted key was given")
        self._min_version = SemVer.parse(min_version) if min_version else None
        if name is not None:
            validate_name(name)
        self._name = name
        # Without a required signature whoever controls the source can serve anything, an old
        # bundle included: refusing rollbacks there would protect nothing and break the
        # documented way of rolling back unsigned bundles.
        self._guard_rollback = require_signature and not allow_rollback
        self.source = source
        self.holder = holder
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.poll_interval = max(poll_interval, MIN_POLL_INTERVAL)
        self.jitter = self.poll_interval / 10 if jitter is None else max(jitter, 0.0)
        self._trust = list(trust) if trust else None
        self._require_signature = require_signature
        self._loader: Loader = loader or self._default_loader
        self._rng = rng or random.Random()
        self._publish = publish
        self._after_poll = after_poll
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by `stop` and `wake`
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()  # one poll at a time, from the thread or a caller
        self._active_sha = ""  # archive sha256 of the active bundle
        self._refused_sha = ""  # the last refused archive, not retried until it changes
        self.active: LoadedBundle | None = None
        self._keep_loaded = keep_loaded
        self._active_manifest: Manifest | None = None
        # Before anything is active, rollbacks are judged against the cached last good bundle,
        # so a restart does not forget the version it served (TUF persists its metadata too).
        self._floor: Manifest | None = None
        # The active bundle came from the cache and the source has not yet offered a good one
        # (nor the same one): the status says so, and refusals name it `cached`.
        self._from_cache = False
        self._first_poll = threading.Event()  # set once the source has been polled

    def _default_loader(self, data: bytes) -> LoadedBundle:
        return load_bundle(data, self._trust, self._require_signature)

    # -- one step -------------------------------------------------------------------------

    def poll_once(self) -> Outcome:
        try:
            with self._poll_lock:
                return self._poll()
        finally:
            self._first_poll.set()
            if self._after_poll is not None:
                self._after_poll()

    @property
    def active_sha(self) -> str:
        """The archive sha256 of the active bundle ("" before one is)."""
        return self._active_sha

    @property
    def refused_sha(self) -> str:
        """The archive sha256 of the last bundle refused, while it is the newest one seen ("":
        none; cleared by an activation). A refused archive is not tried again."""
        return self._refused_sha

    def wait_first_poll(self, timeout: float | None = None) -> bool:
        """Wait until the source has been polled once (its outcome is in the status)."""
        return self._first_poll.wait(timeout)

    def _poll(self) -> Outcome:
        try:
            fetched = self.source.fetch()
        except SourceUnavailable as exc:
            log.warning("bundle source %s unavailable: %s", self.source.describe(), exc)
            self._record_failure(f"source unavailable: {exc}")
            return Outcome.UNAVAILABLE
        if fetched is None:
            return Outcome.UNCHANGED
        sha = hashlib.sha256(fetched.data).hexdigest()
        if sha == self._active_sha and self._from_cache:
            # The source offers the very bundle the cache served: nothing left to report.
            self._from_cache = False
            self.holder.note("")
            log.info("bundle source %s offers the cached bundle", self.source.describe())
        if sha in (self._active_sha, self._refused_sha):
            return Outcome.UNCHANGED
        if self._try_activate(fetched.data, fetched.origin, sha):
            self._persist(fetched.data)
            return Outcome.ACTIVATED
        return Outcome.REFUSED

    def _try_activate(self, data: bytes, origin: str, sha: str) -> bool:
        loaded: LoadedBundle | None = None
        try:
            loaded = self._loader(data)
        except BundleError as exc:
            reason = str(exc)
        except Exception as exc:  # a loader bug must not take the serving bundle down
            log.exception("unexpected error loading bundle from %s", origin)
            reason = f"internal error: {type(exc).__name__}: {exc}"
        else:
            reason = self._version_refusal(loaded.manifest)
        if loaded is not None and not reason and self._publish is not None:
            try:
                self._publish(data)
            except OSError as exc:  # a bundle the workers cannot get must not serve here alone
                reason = f"cannot hand the bundle to the workers: {exc}"
        if loaded is not None and not reason:
            self.holder.swap(loaded.engine)
            self.active = loaded if self._keep_loaded else None
            self._active_manifest = loaded.manifest
            self._active_sha = sha
            self._refused_sha = ""
            self._from_cache = False
            info = loaded.info
            log.info(
                "activated bundle %s %s (revision %s, digest %s) from %s",
                info.name,
                info.version,
                info.revision[:12] or "-",
                info.digest[:12],
                origin,
            )
            return True
        self._refused_sha = sha
        current = self.holder.current
        serving = f"{current.bundle.name} {current.bundle.version}" if current else "nothing"
        log.error("refused bundle from %s: %s (still serving %s)", origin, reason, serving)
        self._record_failure(f"refused bundle from {origin}: {reason}")
        return False

    def _record_failure(self, error: str) -> None:
        # While the cache serves, every failure says so: the source has given nothing good yet.
        prefix = ""
        if self._from_cache:
            prefix = "serving cached bundle; "
            # The note (`/readyz` shows it, not the failure) stops claiming "not answered".
            source = self.source.describe()
            self.holder.note(f"{prefix}source {source} has not offered a good bundle yet")
        self.holder.record_failure(prefix + error)

    def _version_refusal(self, manifest: Manifest) -> str:
        """Why the verified `manifest` may not replace the active bundle, or "" when it may."""
        version = SemVer.parse(manifest.version)
        if self._name is not None and manifest.name != self._name:
            return f"bundle name `{manifest.name}` is not `{self._name}` (--bundle-name)"
        if self._min_version is not None and version < self._min_version:
            return (
                f"version `{manifest.version}` is below the minimum version {self._min_version}"
                " (--bundle-min-version)"
            )
        active = self._active_manifest or self._floor
        if not self._guard_rollback or active is None:
            return ""
        which = "active" if self._active_manifest is not None and not self._from_cache else "cached"
        if manifest.name != active.name:
            return (
                f"bundle name `{manifest.name}` is not the {which} `{active.name}`: name the"
                " bundle to serve with --bundle-name, or serve with --bundle-allow-rollback"
            )
        hint = "publish the policies as a higher version, or serve with --bundle-allow-rollback"
        if version < SemVer.parse(active.version):
            return (
                f"rollback refused: version `{manifest.version}` ranks below the {which}"
                f" {active.version}; {hint}"
            )
        if version == SemVer.parse(active.version) and manifest.digest != active.digest:
            return (
                f"rollback refused: version `{manifest.version}` has other content than the"
                f" {which} {active.version} (digest {manifest.digest[:12]}, {which}"
                f" {active.digest[:12]}); {hint}"
            )
        return ""

    # -- the last good bundle, on disk ------------------------------------------------------

    @property
    def cache_path(self) -> Path | None:
        return self.cache_dir / CACHE_FILE_NAME if self.cache_dir is not None else None

    def _persist(self, data: bytes) -> None:
        path = self.cache_path
        if path is None:
            return
        try:
            write_atomic(path, data)
        except OSError as exc:  # serving matters more than the cache: warn and go on
            log.warning("cannot persist bundle to %s: %s", path, exc)

    def _load_floor(self) -> None:
        """Remember the cached last good bundle's manifest, verified, as the rollback floor
        (for when the cache was refused for another reason, say its tests under this pdp)."""
        path = self.cache_path
        if not self._guard_rollback or path is None or not path.is_file():
            return
        from .verify import open_bundle

        try:
            floor = open_bundle(path, self._trust, require_signature=True).manifest
        except (OSError, BundleError) as exc:  # load_cached refused it too
            log.warning("cached bundle %s gives no rollback floor: %s", path, exc)
            return
        if self._name is not None and floor.name != self._name:
            # The operator names another bundle: versions of `floor.name` rank nothing of it,
            # and as a floor it would refuse every bundle of the name asked for.
            log.warning(
                "cached bundle %s is `%s`, not `%s` (--bundle-name): no rollback floor",
                path, floor.name, self._name,
            )  # fmt: skip
            return
        self._floor = floor

    def load_cached(self) -> bool:
        """Activate the persisted last good bundle; True when it is now serving."""
        path = self.cache_path
        if path is None or not path.is_file():
            return False
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("cannot read cached bundle %s: %s", path, exc)
            return False
        sha = hashlib.sha256(data).hexdigest()
        with self._poll_lock:
            if self._try_activate(data, f"cache {path}", sha):
                return True
            # Judge the source's bundle on its own, even should it offer these very bytes.
            self._refused_sha = ""
            return False

    # -- the polling thread -----------------------------------------------------------------

    def next_delay(self) -> float:
        return self.poll_interval + self._rng.uniform(0, self.jitter)

    def start(self, *, wait: bool = True) -> None:
        """Serve the cached last good bundle now when there is one that passes, then poll the
        source: at once in the background thread when the cache serves, or when `wait` is
        False; else here, before returning. Then every interval, in that thread.

        The cache first, as OPA serves its persisted bundles: a verified good bundle is on
        disk, and a slow source (up to its fetch deadline) must not hold readiness back. A
        newer good bundle from the source replaces it at the first poll.
        """
        self._stop.clear()
        self._wake.clear()
        source = self.source.describe()
        if self.cache_path is not None and self.cache_path.is_file():
            if self.load_cached():
                self._from_cache = True
                log.info("serving the cached bundle until bundle source %s answers", source)
                self.holder.note(f"serving cached bundle; source {source} has not answered yet")
            else:
                self._load_floor()
                log.warning(
                    "cached bundle %s refused (above); nothing is served until bundle source %s"
                    " offers a good bundle",
                    self.cache_path, source,
                )  # fmt: skip
        poll_now = wait and not self._from_cache
        if poll_now:
            self.poll_once()
        self._thread = threading.Thread(
            target=self._run, args=(not poll_now,), name="pdp-bundle-reloader", daemon=True
        )
        self._thread.start()

    def _run(self, poll_first: bool) -> None:
        if poll_first and not self._stop.is_set():
            self._poll_logged()
        while True:
            self._wake.wait(self.next_delay())
            self._wake.clear()
            if self._stop.is_set():
                return
            self._poll_logged()

    def wake(self) -> None:
        """Poll now (in the polling thread) rather than at the end of the interval."""
        self._wake.set()

    def _poll_logged(self) -> None:
        try:
            self.poll_once()
        except Exception:  # the poller must outlive any single bad poll
            log.exception("bundle poll failed")

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
