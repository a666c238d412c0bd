"""The layers of docs/architecture.md, read from the code's own imports.

Each rule is checked over every ``import`` statement of every module, at any
depth (inside functions and ``if TYPE_CHECKING:`` blocks too): an import
that is only there for a type is still an arrow someone has to follow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The layers of the gateway package, bottom first.  A module may import its
#: own layer and those below it, never one above.  ``hw`` and ``net`` are
#: peers that do not import each other.
LAYERS: dict[str, int] = {
    "gateway.errors": 0,
    "gateway.clock": 0,
    "gateway.events": 0,
    "gateway.flags": 0,
    "gateway.retry": 0,
    "gateway": 0,  # the package's face: its docstring and version
    "gateway.core": 1,
    "gateway.wire": 2,
    "gateway.config": 3,
    "gateway.store": 4,
    "gateway.hw": 5,
    "gateway.net": 5,
    "gateway.app": 6,
    "gateway.tools": 7,
    "gateway.commands": 8,
    "gateway.__main__": 9,
}

#: Third-party (and stdlib) libraries that belong to exactly one layer.
OWNED_BY = {
    "sqlite3": "gateway.store",
    "aiosqlite": "gateway.store",
    "gpiozero": "gateway.hw",
    "serial": "gateway.hw",
    "osdp": "gateway.hw",
    "aiomqtt": "gateway.net",
    "paho": "gateway.net",
    "fastapi": "gateway.net",
    "starlette": "gateway.net",
    "uvicorn": "gateway.net",
    "prometheus_client": "gateway.net",
}

#: What the decision core may not import: anything that waits, stores or talks.
CORE_FORBIDDEN = {"asyncio", "threading", "socket", "gateway.clock", *OWNED_BY}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


GATEWAY = _modules("gateway")
SIM = _modules("sim")
ALL = {**GATEWAY, **SIM}


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, resolved to a module we know
    where it names one of ours (``from gateway.core import qr`` is ``gateway.core.qr``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in ALL else base


def _top(module: str) -> str:
    return module.split(".")[0]


def _layer_of(module: str) -> str | None:
    """The key of LAYERS that ``module`` belongs to (the longest prefix)."""
    best = None
    for layer in LAYERS:
        if (module == layer or module.startswith(layer + ".")) and (
            best is None or len(layer) > len(best)
        ):
            best = layer
    return best


def _violations() -> Iterator[str]:
    for name, path in GATEWAY.items():
        here = _layer_of(name)
        assert here is not None, f"{name} is in no layer: add it to LAYERS and the docs"
        for line, imported in _imports(name, path):
            where = f"{path.relative_to(ROOT)}:{line} imports {imported}"
            if _top(imported) == "sim":
                yield f"{where}: the gateway package never imports the simulator"
            owner = OWNED_BY.get(_top(imported))
            if owner is not None and here != owner:
                yield f"{where}: only {owner} imports {_top(imported)}"
            if here == "gateway.core" and (
                _top(imported) in CORE_FORBIDDEN or imported in CORE_FORBIDDEN
            ):
                yield f"{where}: the decision core does no I/O and reads no clock"
            if _top(imported) == "gateway":
                there = _layer_of(imported)
                assert there is not None, imported
                if LAYERS[there] > LAYERS[here] or (
                    LAYERS[there] == LAYERS[here] and there != here
                ):
                    yield f"{where}: {here} may not import {there}, which is above or beside it"
    for name, path in SIM.items():
        for line, imported in _imports(name, path):
            if imported.startswith("gateway.commands") and name != "sim.commands":
                yield (
                    f"{path.relative_to(ROOT)}:{line} imports {imported}: only sim.commands "
                    "joins the doorgw command line"
                )


def test_every_module_keeps_to_its_layer() -> None:
    assert list(_violations()) == []


def _cycles(modules: dict[str, Path]) -> list[list[str]]:
    graph = {
        name: sorted({imp for _, imp in _imports(name, path) if imp in modules and imp != name})
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


@pytest.mark.parametrize("package", ["gateway", "sim"])
def test_no_import_cycles(package: str) -> None:
    modules = GATEWAY if package == "gateway" else SIM
    assert [" -> ".join(c) for c in _cycles(modules)] == []


def test_the_rules_catch_what_they_are_for(tmp_path: Path) -> None:
    """The checker itself: a core module importing sqlite3, and a cycle, are found."""
    (tmp_path / "a.py").write_text("import sqlite3\nfrom gateway.app import sync\n")
    found = list(_imports("gateway.core.a", tmp_path / "a.py"))
    assert (1, "sqlite3") in found
    assert (2, "gateway.app.sync") in found
    assert _layer_of("gateway.core.a") == "gateway.core"
    assert LAYERS[_layer_of("gateway.app.sync") or ""] > LAYERS["gateway.core"]
    (tmp_path / "b.py").write_text("import x.c\n")
    (tmp_path / "c.py").write_text("from x import b\n")
    cyclic = {"x.b": tmp_path / "b.py", "x.c": tmp_path / "c.py"}
    global ALL
    saved, ALL = ALL, {**ALL, **cyclic}
    try:
        assert _cycles(cyclic) == [["x.b", "x.c", "x.b"]]
    finally:
        ALL = saved


def test_the_gateway_distribution_does_not_ship_the_simulator() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert all(p.startswith("gateway") for p in packages), packages


#: A class longer than this is doing more than one job (docs/architecture.md).
MAX_CLASS_LINES = 300


def test_no_class_in_the_gateway_is_over_300_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}"
        for path in GATEWAY.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert long == []


def test_a_gateway_without_the_staff_api_never_loads_fastapi() -> None:
    """FastAPI, uvicorn and prometheus_client cost a small Pi about 11 MB: only a
    gateway with ``[api]`` (or a command that serves it) may import them."""
    code = (
        "import sys, gateway.app.gateway, gateway.commands.cli\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'prometheus_client') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
