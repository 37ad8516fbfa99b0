"""The documented commands, run on a fresh clone with nothing beside it.

`git clone` of the committed HEAD into an empty temporary folder; `.venv` there is a link to
the current virtual environment (no second install) and `PYTHONPATH` puts the clone's own
`pdp` first, so every command runs the clone's code and reads only the clone's files. Then
each `sh` block of the README and of docs/BUNDLES.md and docs/EXAMPLES.md runs line by line,
in order, from the clone's root: every command must exit 0, and a `# → TEXT` comment after a
command is output it must print. `pdp serve` lines run until SERVING (on a free port, since
a developer's `make serve` may hold the default one) and must stop cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pdp.client import Client

from ._support import ROOT, Served, free_port, wait_serving

DOCS = ("README.md", "docs/BUNDLES.md", "docs/EXAMPLES.md")
DEFAULT_ADDRESS = "127.0.0.1:50051"
# Commands that cannot run here, each with the reason.
UNRUNNABLE = {
    "https://bundles.example.com/": "an example URL: no bundle server behind it",
    "/var/cache/pdp": "a production path",
}


@dataclass
class Command:
    doc: str
    line: int
    text: str  # the shell command, without its comment
    expect: str  # what a `# → TEXT` comment says it prints ("" when none)


def commands(doc: str) -> list[Command]:
    """The commands of a document's ```sh blocks, multi-line ones joined."""
    out: list[Command] = []
    in_block, pending, start = False, "", 0
    for n, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block = line.strip() == "```sh"
            continue
        if not in_block:
            continue
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending, start = (pending + "\n" + line, start) if pending else (line, n)
        if pending.endswith("\\"):
            continue
        try:
            lexer = shlex.shlex(pending, posix=True, punctuation_chars=False)
            lexer.whitespace_split = True
            lexer.commenters = ""
            tokens = list(lexer)
        except ValueError:  # an open quote: the command goes on
            continue
        cut = next((i for i, t in enumerate(tokens) if t.startswith("#")), len(tokens))
        comment = " ".join(tokens[cut:]).lstrip("#").strip()
        expect = comment[1:].strip() if comment.startswith("→") else ""
        text = pending.replace("\\\n", " ")
        text = text[: text.index(" #")] if cut < len(tokens) else text
        out.append(Command(doc, start, text.strip(), expect))
        pending = ""
    return out


@pytest.fixture
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone per test: each document is followed on its own, as a reader would."""
    where = tmp_path_factory.mktemp("clean") / "pdp"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(where)], check=True, timeout=300)
    assert not (where / "tests/cel/conformance").is_symlink()
    (where / ".venv").symlink_to(Path(sys.prefix))
    return where


def clone_env(clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDP_", "OTEL_"))}
    env["PYTHONPATH"] = str(clone)  # the clone's pdp before the editable install's
    env["PATH"] = f"{clone / '.venv/bin'}:{env.get('PATH', '')}"
    return env


def run(cmd: Command, clone: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    text = cmd.text.replace("/tmp/pdp-cache", str(tmp / "pdp-cache"))
    return subprocess.run(
        ["bash", "-c", text], cwd=clone, env=clone_env(clone), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def serve(cmd: Command, clone: Path, tmp: Path, port: int) -> Served:
    args = shlex.split(cmd.text)
    assert args[:2] in (["pdp", "serve"], [".venv/bin/pdp", "serve"]), cmd
    args = [a.replace("/tmp/pdp-cache", str(tmp / "pdp-cache")) for a in args[2:]]
    return Served([*args, "--listen", f"127.0.0.1:{port}"], cwd=clone, env=clone_env(clone))


def test_the_clone_runs_its_own_code(clone: Path) -> None:
    out = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", "import pdp; print(pdp.__file__)"],
        cwd=clone, env=clone_env(clone), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == str(clone / "pdp/__init__.py")


def test_docs_never_point_outside_the_repository() -> None:
    texts = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    outside = ("..", "/work")  # the sibling folder a developer machine has and a user does not
    for path, text in texts.items():
        for prefix in outside:
            assert f"{prefix}/shared" not in text, path


def test_readme_tour_against_the_make_serve_command(clone: Path, tmp_path: Path) -> None:
    """`make serve`'s own command (without the install step), then the README's grpcurl and
    Python examples against it."""
    recipe = re.search(r"^serve:.*\n\t(.+)$", (clone / "Makefile").read_text(), re.M)
    assert recipe, "Makefile has no serve recipe"
    line = recipe[1].replace("$(BIN)", ".venv/bin")
    assert "--watch" in line and "--policies policies" in line
    args = shlex.split(line)
    # Another server (a developer's `make serve`) may hold the recipe's ports here: each
    # loopback address it names gets a free port instead.
    ports: dict[str, int] = {}

    def local(match: re.Match[str]) -> str:
        return f"127.0.0.1:{ports.setdefault(match[0], free_port())}"

    args = [re.sub(r"127\.0\.0\.1:\d+", local, a) for a in args[2:]]
    port = ports[DEFAULT_ADDRESS]
    with Served(args, cwd=clone, env=clone_env(clone)) as served:
        wait_serving(port, served)
        grpcurl = [c for c in commands("README.md") if c.text.startswith(".venv/bin/grpcurl")]
        assert grpcurl
        for cmd in grpcurl:
            cmd.text = cmd.text.replace(DEFAULT_ADDRESS, f"127.0.0.1:{port}")
            done = run(cmd, clone, tmp_path)
            assert done.returncode == 0, f"README.md:{cmd.line}: {done.stderr}"
            assert '"effect": "EFFECT_ALLOW"' in done.stdout  # the documented vocabulary
            assert '"name": "policies"' in done.stdout  # the directory names the bundle
        snippet = re.search(r"```python\n(.*?)```", (clone / "README.md").read_text(), re.S)
        assert snippet
        code = snippet[1].replace(DEFAULT_ADDRESS, f"127.0.0.1:{port}")
        done = subprocess.run(
            [str(clone / ".venv/bin/python"), "-c", code], cwd=clone, env=clone_env(clone),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr  # it raises PermissionError on a deny
    assert served.proc.returncode == 0, served.output()


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_succeed_and_print_what_they_say(
    doc: str, clone: Path, tmp_path: Path
) -> None:
    cmds = commands(doc)
    assert cmds, f"no commands found in {doc}"
    ran = 0
    for cmd in cmds:
        head = shlex.split(cmd.text)[0] if cmd.text else ""
        if head not in ("pdp", ".venv/bin/pdp"):
            continue  # make (the install) and grpcurl run in the tour test
        if any(marker in cmd.text for marker in UNRUNNABLE):
            continue
        where = f"{doc}:{cmd.line}: `{cmd.text}`"
        if " serve " in f" {cmd.text} " and "--print-config" not in cmd.text:
            port = free_port()
            with serve(cmd, clone, tmp_path, port) as served:
                wait_serving(port, served)
                with Client(f"127.0.0.1:{port}", timeout=10) as client:
                    assert client.server_info() is not None, where
            assert served.proc.returncode == 0, f"{where}\n{served.output()}"
        else:
            done = run(cmd, clone, tmp_path)
            # `bundle diff` exits 1 when a decision flips, as documented: the tracked example
            # bundle and today's policies may well differ.
            allowed = (0, 1) if " bundle diff " in f" {cmd.text} " else (0,)
            assert done.returncode in allowed, f"{where} exited {done.returncode}\n{done.stderr}"
            if cmd.expect:
                printed = done.stdout + done.stderr
                assert cmd.expect.rstrip("…") in printed, (
                    f"{where}: no `{cmd.expect}` in\n{printed}"
                )
        ran += 1
    assert ran >= 3, f"{doc}: only {ran} commands ran"
    assert not list(clone.glob("keys/*.key")) or "keys/" in (clone / ".gitignore").read_text()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "bundles"], cwd=clone, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert status.stdout == "", f"{doc} changed the tracked example bundle"
    untracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ".key" not in untracked, f"a private key is not ignored by git:\n{untracked}"
