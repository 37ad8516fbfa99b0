"""How many CPUs this process may use: its affinity, capped by its cgroup's CPU quota.

`os.cpu_count()` counts the machine; a container limited to `cpus: 2` on a 64-core host, or a
process started under `taskset -c 0`, may use far fewer, and a worker per machine core would
then only contend. The quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`)
is read for this process's cgroup and every ancestor (the tightest wins) and rounds up: a
quota of 1.5 CPUs is 2 workers, each busy three quarters of the time. At least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_V1_CONTROLLER_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def usable_cpus(root: Path = Path("/"), affinity: set[int] | None = None) -> int:
    """CPUs this process may use. `root` is where `proc/` and `sys/` are found (a fake tree in
    tests); `affinity` defaults to `os.sched_getaffinity(0)`."""
    if affinity is None:
        affinity = os.sched_getaffinity(0)
    count = max(len(affinity), 1)
    quota = cgroup_quota(root)
    if quota is not None:
        count = min(count, max(math.ceil(quota), 1))
    return count


def cgroup_quota(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota, in CPUs, over this process's cgroup and its ancestors; None
    when there is none (or no cgroup file system to read)."""
    paths = _own_cgroups(root)
    quotas: list[float] = []
    base = root / "sys/fs/cgroup"
    for directory in _ancestors(base, paths.get("")):  # v2: the unified hierarchy
        quota = _v2_quota(directory / "cpu.max")
        if quota is not None:
            quotas.append(quota)
    v1 = next((paths[c] for c in paths if "cpu" in c.split(",")), None)
    for name in _V1_CONTROLLER_DIRS:
        for directory in _ancestors(base / name, v1):
            quota = _v1_quota(directory)
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def _own_cgroups(root: Path) -> dict[str, str]:
    """controllers -> cgroup path, from `/proc/self/cgroup` ("" is the v2 hierarchy)."""
    out: dict[str, str] = {}
    try:
        text = (root / "proc/self/cgroup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def _ancestors(mount: Path, path: str | None) -> list[Path]:
    """The cgroup's directory under `mount` and each parent up to the mount itself. Inside a
    container the mount is often the container's own cgroup while /proc/self/cgroup names the
    host's path; a directory that does not exist is skipped, the mount itself always read."""
    dirs = [mount]
    if path:
        current = mount
        for part in [p for p in path.split("/") if p and p not in (".", "..")]:
            current = current / part
            dirs.append(current)
    return dirs


def _v2_quota(path: Path) -> float | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
