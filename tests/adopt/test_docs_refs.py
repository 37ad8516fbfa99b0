"""What the documents point at exists: links, sections, repository paths and command flags;
and the defaults they state for `pdp serve` flags are the parser's.

A reader who follows docs/*.md, bench/README.md or the README must not hit a link to a file or
section that is not there, a path the repository does not hold, or a flag the command does
not take. The checks read the documents' markdown links, code spans and code blocks (not
their prose) and compare them with the repository's files and with the `pdp` parsers
themselves (`pdp.cli.main.build_parser`, what `pdp VERB --help` prints).
"""

from __future__ import annotations

import argparse
import itertools
import re

import pytest

from pdp.cli.main import build_parser

from ._support import ROOT

DOCS = [
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
    "bench/README.md",
    "README.md",
]
# Documents whose bare `--flag` code spans are `pdp serve`'s (their tables and prose).
SERVE_DOCS = {
    "docs/SERVING.md",
    "docs/DEPLOY.md",
    "docs/DECISION_LOG.md",
    "docs/AUTHZEN.md",
    "docs/RATE_LIMITS.md",
    "docs/GATEWAY.md",
    "docs/CLIENT.md",
}
# Other programs whose flags a document names bare: the files that define those flags.
OTHER_FLAG_SOURCES = {
    "docs/AUTHZEN.md": ["bench/authzen.py", "bench/http_servers.py"],  # their run settings
    "docs/MUTATION.md": ["Makefile"],  # mutmut's flags, as the Makefile passes them
    "bench/README.md": ["Makefile", *(f"bench/{p.name}" for p in (ROOT / "bench").glob("*.py"))],
    "README.md": ["Makefile", *(f"bench/{p.name}" for p in (ROOT / "bench").glob("*.py"))],
}
# Top-level folders whose paths, in a code span, must exist.
REPO_DIRS = ("pdp", "tests", "docs", "bench", "deploy", "policies", "examples", "proto")
# Paths that are not files of the repository on purpose, each with the reason.
NOT_FILES = {
    "pdp/v1": "the policies' apiVersion",
    "bench/.cache": "git-ignored: made by `make bench-driver` and the benches",
}

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:-\*)?")
PDP_COMMAND = re.compile(r"(?:^|[\s(`$])(?:\.venv/bin/)?pdp ([a-z]+)(?: ([a-z]+))?")


def text(doc: str) -> str:
    return (ROOT / doc).read_text()


def code_spans(doc: str) -> list[tuple[int, str]]:
    """(line, content) of every inline code span outside fenced blocks."""
    out: list[tuple[int, str]] = []
    fenced = False
    for n, line in enumerate(text(doc).splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out += [(n, m.group(1)) for m in re.finditer(r"`([^`]+)`", line)]
    return out


def block_commands(doc: str) -> list[tuple[int, str]]:
    """(line, command) of every line of a fenced block, with `\\` continuations joined."""
    out: list[tuple[int, str]] = []
    fenced, pending, start = False, "", 0
    for n, line in enumerate(text(doc).splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        pending, start = (pending + " " + line.strip(), start) if pending else (line, n)
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        out.append((start, pending))
        pending = ""
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(doc: str) -> list[str]:
    fenced, out = False, []
    for line in text(doc).splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*)", line)):
            out.append(m.group(1).replace("`", ""))
    return out


def _parsers() -> dict[str, argparse.ArgumentParser]:
    def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    out: dict[str, argparse.ArgumentParser] = {}
    for verb, parser in subparsers(build_parser()).items():
        out[verb] = parser
        out.update({f"{verb} {sub}": p for sub, p in subparsers(parser).items()})
    return out


PARSERS = _parsers()


def flags_of(verb: str) -> set[str]:
    """The long options `pdp VERB --help` prints (its usage lists every one, hidden ones not)."""
    usage = PARSERS[verb].format_usage()
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", usage)) | {"--help"}


def known(flag: str, flags: set[str]) -> bool:
    if flag.endswith("-*"):  # `--max-*`: a family of flags
        return any(f.startswith(flag[:-1]) for f in flags)
    return flag in flags


def pdp_commands(doc: str) -> list[tuple[int, str, str]]:
    """(line, verb, its arguments) of every `pdp VERB ...` in a code span or block."""
    out: list[tuple[int, str, str]] = []
    for n, code in code_spans(doc) + block_commands(doc):
        for m in PDP_COMMAND.finditer(code):
            verb = f"{m.group(1)} {m.group(2)}" if m.group(2) else m.group(1)
            if verb not in PARSERS:
                verb = m.group(1)
            if verb in PARSERS:
                rest = code[m.end() :]
                # Up to the next command or comment on the line.
                rest = re.split(r"\s(?:#|\||&&|;|\$ )", rest)[0]
                out.append((n, verb, rest))
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_reaches_a_file_and_section(doc: str) -> None:
    broken = []
    for n, line in enumerate(text(doc).splitlines(), 1):
        for m in re.finditer(r"\]\(([^)\s]+)\)", line):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (ROOT / doc).parent / path if path else ROOT / doc
            if not file.exists():
                broken.append(f"{doc}:{n}: `{target}`: no such file")
            elif (
                anchor
                and file.suffix == ".md"
                and anchor not in map(slug, headings(str(file.relative_to(ROOT))))
            ):
                broken.append(f"{doc}:{n}: `{target}`: no such section")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_document_and_section_exists(doc: str) -> None:
    """`docs/X.md`, `docs/X.md, "Section"` and `(see *Section*)` name what is there."""
    flat = re.sub(r"\s+", " ", text(doc))
    broken = []
    for m in re.finditer(r"(?<![\w/])(docs/[A-Z_]+\.md)(?:, \"([^\"]+)\")?", flat):
        named, section = m.group(1), m.group(2)
        if not (ROOT / named).exists():
            broken.append(f"{doc}: {named}: no such document")
        elif section and not any(f"{h} ".startswith(f"{section} ") for h in headings(named)):
            broken.append(f'{doc}: {named}, "{section}": no such section')
    for m in re.finditer(r"\(see \*([^*]+)\*\)", flat):
        if m.group(1) not in headings(doc):
            broken.append(f"{doc}: (see *{m.group(1)}*): no such section here")
    assert not broken, "\n".join(broken)


def expand_braces(path: str) -> list[str]:
    """`test_gateway_{paths,xff}.py` -> both names."""
    parts = re.split(r"\{([^{}]*,[^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_in_code_exists(doc: str) -> None:
    """In a code span or the arguments of a `pdp` command: `tests/security/test_drain.py`."""
    dirs = "|".join(REPO_DIRS)
    missing = []
    commands = [(n, rest) for n, _, rest in pdp_commands(doc)]  # a `pdp` command's files too
    for n, code in code_spans(doc) + commands:
        for m in re.finditer(rf"(?<![\w./-])((?:{dirs})/[\w./{{}},-]*)", code):
            path = m.group(1).rstrip(".,").split("::")[0]
            if any(path.startswith(p) for p in NOT_FILES):
                continue
            if re.search(r"(^|/)[A-Z_]+(\.\w+)?/?$", path):  # a placeholder: bench/NAME.py
                continue
            missing += [f"{doc}:{n}: `{p}`" for p in expand_braces(path) if not (ROOT / p).exists()]
    assert not missing, "paths that are not in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_of_a_pdp_command_exists(doc: str) -> None:
    wrong = []
    for n, verb, rest in pdp_commands(doc):
        wrong += [
            f"{doc}:{n}: `pdp {verb}` has no `{flag}`"
            for flag in FLAG.findall(rest)
            if flag != "--help" and not known(flag, flags_of(verb))
        ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_named_alone_exists(doc: str) -> None:
    """A code span that is a flag (`--grace`, `--http-timeout SECONDS`): in a document about
    `pdp serve`, one of its flags; elsewhere one of any `pdp` verb, or of the program the
    document names (a bench script, mutmut through the Makefile)."""
    serve = flags_of("serve")
    any_verb = set().union(*(flags_of(v) for v in PARSERS))
    others = " ".join((ROOT / f).read_text() for f in OTHER_FLAG_SOURCES.get(doc, []))
    wrong = []
    for n, code in code_spans(doc):
        if not code.startswith("--"):
            continue  # a command (its flags are checked with it) or not a flag at all
        for flag in FLAG.findall(code):
            if known(flag, serve if doc in SERVE_DOCS else any_verb):
                continue
            if re.search(rf"{re.escape(flag)}(?![\w-])", others):
                continue
            owner = "pdp serve" if doc in SERVE_DOCS else "any pdp verb"
            wrong.append(f"{doc}:{n}: `{flag}` is not a flag of {owner}")
    assert not wrong, "\n".join(wrong)


def test_bench_script_flags_exist() -> None:
    """`.venv/bin/python bench/NAME.py [--flag]` in the bench README: the script takes it."""
    wrong = []
    for doc in DOCS:
        for n, code in code_spans(doc) + block_commands(doc):
            for m in re.finditer(r"(?<![\w/])bench/([a-z_]+\.py)((?:\s+\[?--[^`\]]*\]?)*)", code):
                source = (ROOT / "bench" / m.group(1)).read_text()
                wrong += [
                    f"{doc}:{n}: bench/{m.group(1)} has no `{flag}`"
                    for flag in FLAG.findall(m.group(2))
                    if f'"{flag}"' not in source
                ]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_the_documents() -> None:
    """The patterns above match what the documents hold (else every check passes empty)."""
    commands = [c for doc in DOCS for c in pdp_commands(doc)]
    assert {"serve", "bundle build", "check", "plan", "compile"} <= {v for _, v, _ in commands}
    assert any("--http-listen" in rest for _, v, rest in commands if v == "serve")
    assert any(code.startswith("--grace") for _, code in code_spans("docs/SERVING.md"))
    assert "record-format-pdpdecision_logv1" in map(slug, headings("docs/DECISION_LOG.md"))
    assert expand_braces("a_{x,y}.py") == ["a_x.py", "a_y.py"]


def documented_defaults() -> list[tuple[str, str, str, float]]:
    """(document, flag, text, value) of every `--flag ...` followed, before the next flag or
    table row, by `(default N` (`10,000`, `100 MiB`, `60`)."""
    out = []
    for doc in DOCS:
        flat = re.sub(r"\s+", " ", text(doc))
        for m in re.finditer(r"`(--[a-z][a-z0-9-]*)[^`]*`", flat):
            tail = flat[m.end() : m.end() + 300]
            tail = re.split(r"`--|\| `| - ", tail)[0]
            if d := re.search(r"\(default (\d[\d,]*(?:\.\d+)?)( MiB)?", tail):
                value = float(d.group(1).replace(",", "")) * (2**20 if d.group(2) else 1)
                out.append((doc, m.group(1), d.group(0), value))
    return out


def test_documented_defaults_are_the_flags_defaults() -> None:
    serve = PARSERS["serve"]
    found = documented_defaults()
    wrong = [
        f"{doc}: `{flag}` {said}: the default is {serve.get_default(flag[2:].replace('-', '_'))}"
        for doc, flag, said, value in found
        if serve.get_default(flag[2:].replace("-", "_")) != value
    ]
    assert not wrong, "\n".join(wrong)
    # The documents state these; a pattern that stopped matching would check nothing.
    assert {"--grace", "--max-connections", "--grpc-idle-timeout", "--http-timeout"} <= {
        flag for _, flag, _, _ in found
    }


def test_every_make_target_exists() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = [
        (doc, n, m.group(1))
        for doc in DOCS
        for n, code in code_spans(doc) + block_commands(doc)
        for m in re.finditer(r"(?:^|[\s`(])make ([a-z][\w-]*)", code)
    ]
    assert {"serve", "test", "mutation", "bench-compare"} <= {t for _, _, t in named}
    wrong = [f"{doc}:{n}: `make {t}`: no such target" for doc, n, t in named if t not in targets]
    assert not wrong, "\n".join(wrong)
