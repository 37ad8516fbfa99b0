from __future__ import annotations

import io
import json
from pathlib import Path

from pdp.telemetry import RotatingFileSink, StreamSink


def record(i: int) -> dict[str, object]:
    return {"decision_id": f"d{i:04d}", "pad": "x" * 80}


def test_file_rotation_keeps_n_backups_and_never_splits_a_record(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "decisions.jsonl"
    sink = RotatingFileSink(path, max_bytes=1000, backups=2)
    for i in range(50):
        sink.write([record(i)])
    sink.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"]
    seen = []
    for name in ["decisions.jsonl.2", "decisions.jsonl.1", "decisions.jsonl"]:
        data = (path.parent / name).read_bytes()
        assert len(data) <= 1000
        seen += [json.loads(line)["decision_id"] for line in data.splitlines()]
    # The newest records, in order, with no gap: rotation lost nothing it kept.
    assert seen == [f"d{i:04d}" for i in range(50 - len(seen), 50)]


def test_file_sink_appends_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    for i in range(2):
        sink = RotatingFileSink(path)
        sink.write([record(i)])
        sink.close()
    assert len(path.read_text().splitlines()) == 2


def test_zero_backups_truncates(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    sink = RotatingFileSink(path, max_bytes=300, backups=0)
    for i in range(10):
        sink.write([record(i)])
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["decisions.jsonl"]
    assert json.loads(path.read_text().splitlines()[-1])["decision_id"] == "d0009"


def test_stream_sink_writes_json_lines() -> None:
    out = io.StringIO()
    sink = StreamSink(out)
    sink.write([record(1), record(2)])
    sink.close()
    assert [json.loads(line)["decision_id"] for line in out.getvalue().splitlines()] == [
        "d0001",
        "d0002",
    ]
