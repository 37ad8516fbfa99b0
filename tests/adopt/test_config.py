"""`pdp serve --config FILE`, `PDP_*` variables and `--print-config`: every flag has a key,
the command line beats the environment beats the file, bad values name their key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pdp.cli.config import env_name, keyed_actions
from pdp.cli.main import build_parser, main

from ._support import ROOT, Served, free_port, wait_serving


def serve_parser():
    return build_parser().parse_args(["serve"]).serve_parser


def print_config(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch, env=None
) -> dict:
    for name in [n for n in os.environ if n.startswith("PDP_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    assert main(["serve", *argv, "--print-config"]) == 0
    out = capsys.readouterr().out
    return {"values": yaml.safe_load(out), "text": out}


def test_every_flag_has_a_key_and_the_example_documents_them_all() -> None:
    keys = keyed_actions(serve_parser())
    assert {"listen", "policies", "bundle", "workers", "grace", "decision_log", "watch"} <= set(
        keys
    )
    documented = yaml.safe_load((ROOT / "deploy/pdp.yaml").read_text())
    missing = sorted(set(keys) - set(documented))
    assert not missing, f"deploy/pdp.yaml lacks keys {missing}: see `pdp serve --print-config`"
    assert not set(documented) - set(keys)


def test_precedence_command_line_then_env_then_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "pdp.yaml"
    conf.write_text(
        "listen: [127.0.0.1:7001]\nworkers: 4\ngrace: 3\ndecision_cache: 5\n"
        "pin_workers: false\nmask: [principal.attr.email]\notel: off\n"
    )
    got = print_config(["--config", str(conf)], capsys, monkeypatch)["values"]
    assert got["listen"] == ["127.0.0.1:7001"] and got["workers"] == 4 and got["grace"] == 3.0
    assert got["pin_workers"] is False and got["mask"] == ["principal.attr.email"]
    assert got["otel"] == "off"  # YAML's `off` is a boolean; the flag's choice is meant

    env = {"PDP_WORKERS": "2", "PDP_LISTEN": "127.0.0.1:7002,127.0.0.1:7003"}
    got = print_config(["--config", str(conf)], capsys, monkeypatch, env)["values"]
    assert got["workers"] == 2 and got["listen"] == ["127.0.0.1:7002", "127.0.0.1:7003"]
    assert got["decision_cache"] == 5  # the file still fills what the environment leaves

    # The command line wins, even with the flag's default value, and replaces repeated flags.
    argv = ["--config", str(conf), "--workers", "1", "--listen", "127.0.0.1:7004"]
    result = print_config(argv, capsys, monkeypatch, env)
    assert result["values"]["workers"] == 1
    assert result["values"]["listen"] == ["127.0.0.1:7004"]
    assert "workers: 1  # command line" in result["text"]
    assert f"decision_cache: 5  # config {conf}" in result["text"]


def test_printed_configuration_is_a_config_file_that_gives_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = print_config(["--config", str(ROOT / "deploy/pdp.yaml")], capsys, monkeypatch)
    again = tmp_path / "again.yaml"
    again.write_text(first["text"])
    second = print_config(["--config", str(again)], capsys, monkeypatch)
    assert second["values"] == first["values"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "workers: many\n",
            "`workers`: argument --workers: takes a whole number from 1 to 256, or `auto`, "
            "not `many`",
        ),
        ("telemetry_writer: sideways\n", "`telemetry_writer`"),
        ("no_such_flag: 1\n", "unknown key(s) `no_such_flag`"),
        ("listen: {a: 1}\n", "`listen` takes plain values"),
        ("watch: maybe\n", "`watch` takes true or false"),
        ("- a list\n", "expected a mapping"),
        ("listen: [\n", "config"),
    ],
)
def test_bad_configuration_is_refused_naming_key_and_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    needle: str,
) -> None:
    monkeypatch.delenv("PDP_WORKERS", raising=False)  # tests/conftest.py: it would beat the file
    conf = tmp_path / "pdp.yaml"
    conf.write_text(text)
    assert main(["serve", "--config", str(conf), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(conf) in err
    assert "Traceback" not in err


def test_bad_environment_value_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDP_GRACE", "soon")
    assert main(["serve", "--print-config"]) == 2
    assert "env PDP_GRACE: `grace`" in capsys.readouterr().err
    assert env_name("decision_log") == "PDP_DECISION_LOG"


def test_a_real_server_takes_its_configuration_from_file_and_environment(tmp_path: Path) -> None:
    file_port, env_port = free_port(), free_port()
    conf = tmp_path / "pdp.yaml"
    conf.write_text(
        f"policies: {ROOT / 'policies'}\nlisten: [127.0.0.1:{file_port}]\nworkers: 1\n"
        "decision_cache: 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
    env["PDP_LISTEN"] = f"127.0.0.1:{env_port}"
    with Served(["--config", str(conf)], env=env) as served:
        wait_serving(env_port, served)
        health = [sys.executable, "-m", "pdp.cli.main", "health", "--address"]
        ok = subprocess.run([*health, f"127.0.0.1:{env_port}"], capture_output=True, text=True)
        assert ok.returncode == 0 and "SERVING" in ok.stdout
        off = subprocess.run(
            [*health, f"127.0.0.1:{file_port}", "--timeout", "2"], capture_output=True, text=True
        )
        assert off.returncode == 1  # the environment's address replaced the file's


def test_port_clash_suggests_listen(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(ROOT / "policies"),
             "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 2
    assert "choose another with --listen" in proc.stderr and "Traceback" not in proc.stderr
