"""The layering of docs/ARCHITECTURE.md ("What each package may import"), read from the source.

Every `import` in pdp, at module level or inside a function (a lazy import is still a
dependency), is checked: a package imports pdp only from the layers below it, and third-party
libraries only where the table allows them. A new arrow pointing up fails here, naming the file
and line, before it becomes a cycle or pulls grpc into the engine.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

PDP = Path(__file__).resolve().parent.parent / "pdp"

# docs/ARCHITECTURE.md's diagram, bottom up: a package may import the packages of a lower rank.
# Packages of one rank are siblings and import none of each other (pdp.server and
# pdp.telemetry above all: the CLI injects the observer).
RANK = {
    "errors": 0, "ratelog": 0, "bulk": 0,
    "model": 1,
    "cel": 2,
    "lint": 3,
    "engine": 4,
    "bundle": 5, "plan": 5, "limits": 5,
    "server": 6, "telemetry": 6,
    "gateway": 7, "client": 7, "http": 7,
    "cli": 8,
}  # fmt: skip
# The table's exceptions, each with its reason.
UPWARD = {
    # AuthZEN's subject/resource/action mapping is pure data shaping, shared by the planner's
    # AuthZEN search and the HTTP adapter (the table: "pdp.plan.api: the pure AuthZEN mapping").
    ("pdp.plan.api", "pdp.http.authzen"),
    # Fuzz seeds (tooling run by `make fuzz-native` and the tests, never by a server) build a
    # Check request the way the client does.
    ("pdp.server.native.fuzz.seeds", "pdp.client._convert"),
}
# Third-party libraries and the packages (or modules) allowed to import them.
ONLY_IN = {
    "yaml": ("pdp.model", "pdp.cli", "pdp.http.search"),
    "opentelemetry": ("pdp.telemetry",),
    "aiohttp": ("pdp.http",),
    "grpc": ("pdp.server", "pdp.gateway", "pdp.client", "pdp.cli"),
    "google": ("pdp.server", "pdp.gateway", "pdp.http", "pdp.client", "pdp.cli"),  # protobuf
    "redis": ("pdp.limits.redis",),
    "sqlalchemy": ("pdp.plan.sqlalchemy", "pdp.http.search"),
    "orjson": ("pdp.telemetry", "pdp.http"),
}


def _modules(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        if "_gen" in path.parts:  # protoc's output imports protobuf and its siblings only
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import in `path`, relative ones resolved: `from a
    import b` is `a.b`, which names module `a`'s layer and, for an exception, the submodule."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([source] if source else [])])
            for alias in node.names:  # a submodule, or a name: the layer is the same
                yield f"{source}.{alias.name}", node.lineno


def _layer(module: str) -> str:
    """`pdp.engine.holder` is in layer `engine`; `pdp` itself, and `pdp.__version__` (a name
    of its `__init__`), in none."""
    part = module.split(".")[1] if "." in module else ""
    return "" if part.startswith("__") else part


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(root: Path = PDP) -> list[str]:
    found = []
    for module, path in _modules(root):
        mine = _layer(module)
        where = path.relative_to(root.parent).as_posix()
        for target, line in _imports(module, path):
            top = target.split(".")[0]
            if top == "pdp":
                theirs = _layer(target)
                if not theirs or theirs == mine:
                    continue
                if RANK[theirs] >= RANK[mine] and not any(
                    module == m and _within(target, (t,)) for m, t in UPWARD
                ):
                    found.append(f"{where}:{line}: {module} ({mine}) imports {target} ({theirs})")
            elif top in ONLY_IN and not _within(module, ONLY_IN[top]):
                found.append(f"{where}:{line}: {module} imports {target}")
    return found


def test_every_package_is_in_the_layering() -> None:
    packages = {_layer(m) for m, _ in _modules(PDP)} - {""}
    assert packages <= RANK.keys(), (
        f"add to RANK and docs/ARCHITECTURE.md: {packages - RANK.keys()}"
    )


def test_imports_follow_the_layering() -> None:
    assert _violations() == []


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The checker itself, on a copy of pdp: an engine module importing the server, a lazy
    grpc import in the CEL compiler and yaml in the server are each reported, with file and
    line."""
    root = tmp_path / "pdp"
    shutil.copytree(PDP, root, ignore=shutil.ignore_patterns("__pycache__", "*.so", "_gen"))
    planted = {
        "engine/engine.py": "from pdp.server import cache\n",
        "cel/_compile.py": "def f():\n    import grpc\n",
        "server/cache.py": "import yaml\n",
    }
    for name, extra in planted.items():
        with (root / name).open("a", encoding="utf-8") as f:
            f.write(extra)
    found = "\n".join(_violations(root))
    assert "pdp.engine.engine (engine) imports pdp.server.cache (server)" in found
    assert "pdp/cel/_compile.py:" in found and "imports grpc" in found
    assert "pdp.server.cache imports yaml" in found
    assert _violations(PDP) == []  # the planted lines alone
