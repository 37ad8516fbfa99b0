"""Every numeric `pdp serve` setting is refused out of its range, at start, in one line naming
the flag (or variable, or file key) and the range: never a traceback, never a silent clamp.

Before, only `--workers` had a bound. A real `pdp serve`:

- `--max-message-bytes 99999999999999999999` and `--max-connections 99999999999999999999`
  died in grpc with an OverflowError traceback; `--threads 0` with a ValueError one;
- `--grace nan` started, and drained "in nans"; `--http-timeout inf` started;
- `--decision-cache -5` started with the cache silently off;
- `PDP_LOG_QUEUE_SIZE=99999999999999999999` started with an unbounded decision-log queue.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_sweep19_config import _serve

HUGE = "99999999999999999999"
CASES = [
    (["--max-message-bytes", HUGE], {}, "--max-message-bytes", "takes 1024 to 67108864 bytes"),
    (["--max-connections", HUGE], {}, "--max-connections", "takes 0 (no limit) or a whole"),
    (["--threads", "0"], {}, "--threads", "takes a whole number from 1 to 1024, not `0`"),
    (["--grace", "nan"], {}, "--grace", "takes 0 to 3600 seconds, not `nan`"),
    (["--decision-cache", "-5"], {}, "--decision-cache", "takes 0 (off) or a whole number"),
    ([], {"PDP_LOG_QUEUE_SIZE": HUGE}, "PDP_LOG_QUEUE_SIZE", "from 1 to 1000000"),
    ([], {"PDP_HTTP_TIMEOUT": "inf"}, "PDP_HTTP_TIMEOUT", "takes 0.1 to 3600 seconds"),
    ([], {"PDP_MAX_CONCURRENT_RPCS": "ten"}, "PDP_MAX_CONCURRENT_RPCS", "to 100000, not `ten`"),
    (["--grpc-idle-timeout", "-1"], {}, "--grpc-idle-timeout", "takes 0 (never) or 0.1 to"),
    (["--grpc-keepalive-time", "nan"], {}, "--grpc-keepalive-time", "takes 0 (never) or 0.1"),
    ([], {"PDP_GRPC_KEEPALIVE_TIMEOUT": "0"}, "PDP_GRPC_KEEPALIVE_TIMEOUT", "takes 0.1 to 86400"),
]


@pytest.mark.parametrize(("args", "env", "name", "range_"), CASES)
def test_an_out_of_range_number_is_refused_in_one_line(
    args: list[str], env: dict[str, str], name: str, range_: str
) -> None:
    code, out = _serve("--listen", "127.0.0.1:0", "--no-ext-authz", *args, env=env)
    assert code == 2, out
    assert "Traceback" not in out and "listening on" not in out, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(("error: ", "pdp serve: error: ")), out
    assert name in lines[0] and range_ in lines[0], out


def test_a_config_file_value_out_of_range_names_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "pdp.yaml"
    config.write_text("max_attr_depth: 100000\n")
    code, out = _serve("--listen", "127.0.0.1:0", "--config", str(config))
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1, out
    assert f"config {config}: `max_attr_depth`" in out, out
    assert "takes a whole number from 1 to 64, not `100000`" in out, out


def test_values_in_range_start() -> None:
    code, out = _serve(
        "--listen", "127.0.0.1:0", "--no-ext-authz", "--decision-cache", "0", "--grace", "0",
        "--max-connections", "0", "--threads", "1024", "--log-queue-bytes", "1048576",
        env={"PDP_GRPC_IDLE_TIMEOUT": "0"},
    )  # fmt: skip
    assert code == 0, out
    assert "Traceback" not in out, out
