"""`classify` reads paths as `PurePosixPath` did (it no longer builds one per file)."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from pdp.model.loader import _parts, classify


def _reference(path: str) -> str | None:
    """The pathlib-based classify this replaced."""
    p = PurePosixPath(path)
    suffix = p.suffix.lower()
    if "data" in p.parts[:-1] and suffix in (".json", ".yaml", ".yml"):
        return "data"
    if "schemas" in p.parts[:-1] and suffix == ".json":
        return "schema"
    if p.name.lower().endswith(("_test.yaml", "_test.yml")):
        return "test"
    if suffix in (".yaml", ".yml"):
        return "policy"
    return None


SEGMENTS = st.sampled_from(
    ["", ".", "..", "data", "schemas", "a", "x.yaml", "p.YML", "t_test.yaml", "T_TEST.YML",
     "s.json", ".yaml", "a.", "a..yaml", "d.json.yaml", "README.md", "x.yaml.bak", "...", "-"]
)  # fmt: skip


@given(st.lists(SEGMENTS, min_size=1, max_size=5), st.booleans())
def test_classify_matches_pathlib(segments: list[str], absolute: bool) -> None:
    path = ("/" if absolute else "") + "/".join(segments)
    assert classify(path) == _reference(path), path
    if not path.startswith("/"):  # relative: what the loader reads (it refuses the rest)
        assert _parts(path) == list(PurePosixPath(path).parts), path
