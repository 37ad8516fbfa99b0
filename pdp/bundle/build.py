"""Build a bundle from a policy directory: collect, compile, test, then write one archive.

Determinism: the file set and contents come from the tree, the build time from
`SOURCE_DATE_EPOCH` or the commit time (never the wall clock), and the archive writer fixes
everything else — building the same tree twice gives the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pdp import __version__
from pdp.engine import SuiteCheck, SuiteReport
from pdp.errors import BundleError, PolicyErrors
from pdp.lint import analyze, blocking
from pdp.model.loader import MAX_FILE_BYTES, MAX_FILES, classify

from .archive import FILES_PREFIX, check_path, pack
from .git import GIT_TIMEOUT_SECONDS, GitInfo, git_info  # noqa: F401  (part of build's interface)
from .load import bundle_info, compile_files
from .manifest import FileEntry, Manifest, SemVer, sha256_hex, validate_name

BUNDLE_SUFFIX = ".pdpb"
DEFAULT_VERSION = "0.0.0"


class TestsFailed(BundleError):
    """The bundle's test suites fail; nothing was written."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, report: SuiteReport) -> None:
        self.report = report
        super().__init__(f"{report.failed} test case(s) failed; bundle not written")


@dataclass(frozen=True, slots=True)
class Built:
    manifest: Manifest
    archive: bytes
    report: SuiteReport

    @property
    def file_name(self) -> str:
        return bundle_file_name(self.manifest.name, self.manifest.version)


def bundle_file_name(name: str, version: str) -> str:
    return f"{name}-{version}{BUNDLE_SUFFIX}"


def collect_files(directory: Path) -> dict[str, bytes]:
    """The files the policy loader reads, by relative POSIX path (hidden entries skipped)."""
    if not directory.is_dir():
        raise BundleError(f"`{directory}` is not a directory")
    files: dict[str, bytes] = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or p.is_symlink():
            continue
        path = rel.as_posix()
        if classify(path) is None:
            continue
        # The reader's rule, before any work: a name that is not UTF-8 (`n\xff.yaml`) could
        # not even be written into the manifest.
        check_path(FILES_PREFIX + path)
        if len(files) >= MAX_FILES:
            raise BundleError(f"`{directory}` has more than {MAX_FILES} policy files")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise BundleError(f"`{path}` is larger than {MAX_FILE_BYTES} bytes")
        files[path] = p.read_bytes()
    return files


def build_epoch(git: GitInfo, env: dict[str, str] | None = None) -> int:
    """SOURCE_DATE_EPOCH (reproducible-builds.org), else the commit time, else 0."""
    raw = (env if env is not None else os.environ).get("SOURCE_DATE_EPOCH", "").strip()
    if raw:
        if not raw.isdigit():
            raise BundleError(f"SOURCE_DATE_EPOCH `{raw}` is not a unix timestamp")
        return int(raw)
    return git.commit_time if git.commit_time is not None else 0


def build_bundle(
    directory: str | Path,
    *,
    name: str | None = None,
    version: str = DEFAULT_VERSION,
    env: dict[str, str] | None = None,
    checks: Sequence[SuiteCheck] = (),
    strict: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Built:
    """Collect, compile, lint and test `directory`, then pack it; `progress` hears each stage
    (a large policy set takes seconds to compile).

    Raises `PolicyErrors` when it does not load or compile, or has an error finding (or, when
    `strict`, the default, any finding at all: warnings too); `TestsFailed` when a test fails.
    """
    say = progress or (lambda message: None)
    root = Path(directory)
    say(f"collecting policy files in {root}")
    files = collect_files(root)
    say(f"loading, compiling and testing {len(files)} files")
    bundle_name = name or root.resolve().name
    validate_name(bundle_name)
    SemVer.parse(version)
    git = git_info(root)
    epoch = build_epoch(git, env)
    manifest = Manifest(
        name=bundle_name,
        version=version,
        revision=git.revision,
        dirty=git.dirty,
        build_time=datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        builder=f"pdp {__version__}",
        files={p: FileEntry(sha256_hex(c), len(c)) for p, c in files.items()},
    )
    compiled = compile_files(files, bundle_info(manifest), checks)
    findings = blocking(analyze(compiled.source), strict=strict)
    if findings:
        raise PolicyErrors(findings)
    if compiled.report.failed:
        raise TestsFailed(compiled.report)
    say(f"{len(compiled.report.results)} test cases passed; packing")
    archive = pack(manifest.canonical_bytes(), files, None, epoch)
    return Built(manifest, archive, compiled.report)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see a half-written bundle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
