"""The layout keeps its shape: every import of bot/ and handlers/ — module level, deferred inside a
function, or under TYPE_CHECKING — is read from the source, and the rules of ARCHITECTURE.md are checked
on that graph. No file outside bot/sandbox/ grows past 500 lines."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers")
MAX_LINES = 500
# what the pure and the use-case layers may never import, whatever the route
OUTSIDE_WORLD = ("boto3", "botocore", "slack_sdk", "slack_bolt", "sqlite_utils", "sqlite3", "aiohttp", "moto")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = sources()


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports anywhere in its body, with the line: `from a.b import c` names a.b.c
    when that is a module of ours, else a.b."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return found


GRAPH = {m: imports_of(p) for m, p in MODULES.items()}


def ours(target: str) -> str | None:
    """The module of ours `target` names (a.b.c -> a.b when c is an attribute), else None."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def test_the_graph_is_read_from_every_source_file():
    assert len(MODULES) > 40 and "bot.wiring" in MODULES and "bot.domain.model" in MODULES
    # deferred and TYPE_CHECKING imports are part of it: this test file's own reader proves it on a sample
    sample = ast.parse(
        "def f():\n    from bot.domain import model\nif TYPE_CHECKING:\n    import bot.clock\n"
    )
    names = {
        getattr(n, "module", None) or n.names[0].name
        for n in ast.walk(sample)
        if isinstance(n, ast.Import | ast.ImportFrom)
    }
    assert names == {"bot.domain", "bot.clock"}


def _cycles() -> list[list[str]]:
    edges = {m: sorted({o for t, _ in deps if (o := ours(t)) and o != m}) for m, deps in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for m in edges:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_anywhere_deferred_and_type_checking_ones_included():
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle():
    # the same finder on a graph with a known cycle, so a pass above means something
    saved = dict(GRAPH)
    try:
        GRAPH["bot.clock"] = [*GRAPH["bot.clock"], ("bot.wiring", 1)]
        assert any("bot.clock" in c and "bot.wiring" in c for c in _cycles())
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_bot_imports_handlers_only_in_the_composition_root():
    offenders = [
        f"{m}:{line} imports {t}"
        for m, deps in GRAPH.items()
        if m.startswith("bot") and m != "bot.wiring"
        for t, line in deps
        if t == "handlers" or t.startswith("handlers.")
    ]
    assert offenders == []


def test_the_domain_is_pure_standard_library_and_itself():
    stdlib = sys.stdlib_module_names
    offenders = [
        f"{m}:{line} imports {t}"
        for m, deps in GRAPH.items()
        if m == "bot.domain" or m.startswith("bot.domain.")
        for t, line in deps
        if not (t == "bot.domain" or t.startswith("bot.domain.") or t.split(".")[0] in stdlib)
    ]
    assert offenders == []


@pytest.mark.parametrize("layer", ["bot.domain", "bot.app"])
def test_the_inner_layers_never_touch_aws_slack_or_sql_directly(layer):
    offenders = [
        f"{m}:{line} imports {t}"
        for m, deps in GRAPH.items()
        if m == layer or m.startswith(layer + ".")
        for t, line in deps
        if t.split(".")[0] in OUTSIDE_WORLD
    ]
    assert offenders == []


def test_no_file_outside_the_sandbox_is_over_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for m, p in MODULES.items()
        if not m.startswith("bot.sandbox") and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize("layer", ["bot.domain", "bot.config", "bot.app"])
def test_dependencies_point_inward_no_inner_layer_imports_an_adapter(layer):
    outer = ("bot.adapters", "bot.sandbox", "bot.wiring", "handlers")
    offenders = [
        f"{m}:{line} imports {t}"
        for m, deps in GRAPH.items()
        if m == layer or m.startswith(layer + ".")
        for t, line in deps
        if any(t == o or t.startswith(o + ".") for o in outer)
    ]
    assert offenders == []
