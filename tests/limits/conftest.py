from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._procs import start_redis, stop


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop(proc)


LIMITED = {
    "note.yaml": """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: []}
    write: {scopes: []}
    archive: {scopes: []}
  rules:
    - {id: blocked, actions: ["*"], effect: deny, condition: "P.id == 'mallory'", reason: blocked}
    - {id: members, actions: ["*"], effect: allow, roles: [member]}
""",
    "limits.yaml": """
apiVersion: pdp/v1
kind: LimitPolicy
metadata: {id: limits}
spec:
  limits:
    - {id: per-user-reads, resources: [note], actions: [read], key: P.id, limit: 5, per: 1d}
    - id: tenant-write-units
      resources: [note]
      actions: [write]
      key: P.tenant
      cost: context.attr.units
      limit: 10
      per: 1d
    - id: per-ip-archive
      resources: [note]
      actions: [archive]
      key: context.ip
      limit: 3
      per: 1d
      onStoreError: allow
""",
}


def write_policies(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root
