"""The package's imports run one way and form no cycle.

Layers, from the top: the tools and the package face (`cli`, `client`, `loadtest`,
`cluster`, `k8s`, `testing`, `agenthost/__init__.py`) → `runtime` → `web` → `turns` → the
backends (`stores`, `brokers`, `ratelimit`, `auth`, `llm`, `registry`, `frameworks`) → the
basics (`core`, `observability`, `connections`). A module imports only from its own layer or
the ones below it; every import counts, inside functions and under `TYPE_CHECKING` too. Only
`runtime` imports the private modules of uvicorn and websockets.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import agenthost

PACKAGE = Path(agenthost.__file__).parent

LAYERS: dict[str, int] = {
    "core": 0,
    "observability": 0,
    "connections": 0,
    "stores": 1,
    "brokers": 1,
    "ratelimit": 1,
    "auth": 1,
    "llm": 1,
    "registry": 1,
    "frameworks": 1,
    "queue": 1,
    "turns": 2,
    "web": 3,
    "runtime": 4,
    "client": 5,
    "loadtest": 5,
    "cluster": 5,
    "k8s": 5,
    "testing": 5,
    "cli": 5,
    "__init__": 5,
}

# Top-level modules: the package face and the command's entry point.
TOP_LEVEL_ALLOWED = {"__init__.py", "cli.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: Path) -> Iterator[str]:
    """The agenthost modules `path` imports (a `from package import name` of a submodule
    names the submodule)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name in MODULES and name.startswith("agenthost"):
                yield name


@functools.cache
def graph() -> dict[str, set[str]]:
    """Each module's agenthost imports; parsed when a test first asks (not at collection,
    which every xdist worker does)."""
    return {name: set(imported(path)) - {name} for name, path in MODULES.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = [m for m in MODULES if m != "agenthost" and m.split(".")[1] not in LAYERS]
    assert unplaced == []


def test_imports_run_down_the_layers() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module)
    )
    assert upward == []


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph()[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph()):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_top_of_the_package_holds_only_its_face_and_entry_point() -> None:
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_ALLOWED


def test_only_the_runtime_imports_server_internals() -> None:
    private = (
        "uvicorn.protocols",
        "uvicorn.server",
        "uvicorn.lifespan",
        "uvicorn.config",
        "websockets.protocol",
        "websockets.server",
        "websockets.streams",
    )
    found = []
    for name, path in MODULES.items():
        if name.startswith("agenthost.runtime"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{name}: {m}" for m in modules if m.startswith(private)]
    assert found == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    # The walk must find imports inside functions and under TYPE_CHECKING, or the tests
    # above would pass on a tree that breaks the layers.
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from agenthost.web import routes\n"
        "def f():\n"
        "    import agenthost.runtime.server\n"
    )
    assert set(imported(source)) == {
        "agenthost.web",
        "agenthost.web.routes",
        "agenthost.runtime.server",
    }
