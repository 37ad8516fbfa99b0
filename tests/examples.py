"""The example policies, as tests that compare paths (in process, gRPC, HTTP) need them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def examples_without_limits(into: Path) -> Path:
    """A copy of the example policies without their LimitPolicy documents.

    Quota is state that every call consumes, so a long-running server and a fresh engine
    cannot be asked the same question twice; what such tests compare is how a request is read
    and decided (tests/limits covers the limits).
    """
    root = into / "policies"
    shutil.copytree(POLICIES, root)
    for path in sorted(root.rglob("*.yaml")):
        if path.exists() and re.search(r"^kind:\s*LimitPolicy\b", path.read_text(), re.M):
            path.unlink()
            test = path.with_name(f"{path.stem}_test.yaml")
            if test.exists():
                test.unlink()
    return root
