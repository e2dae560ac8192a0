"""The package's layers import downward only, and no modules import each other in a circle.

Data flows one way (docs/architecture.md): API (CLI, HTTP, bench) -> engine -> scheduling -> tasks /
backends -> models / tokenization -> core. A module may import its own layer and the layers below it,
never one above, whether at the top of the file, inside a function or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "m3engine"

# Lowest first. A module's layer is that of its first part after `m3engine.`.
LAYERS: list[set[str]] = [
    {"errors", "types", "settings", "results", "metrics", "process", "version", "sparse_formats", "accuracy"},
    # the HTTP client: core records and httpx only, so that a caller of a server never loads torch
    {"client"},
    {"models", "tokenization"},
    {"backends"},
    {"tasks"},
    {"scheduling"},
    {"engine", "precision"},
    {"server"},
    {"bench", "distributed", "deploy"},
    {"cli", "__init__", "__main__"},
]


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and docs/architecture.md)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every m3engine module `path` imports, anywhere in the file."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("m3engine"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base])
            if not base.startswith("m3engine"):
                continue
            for alias in node.names:  # `from m3engine.x import y`: y may be a module
                candidate = f"{base}.{alias.name}"
                found.add(
                    candidate
                    if (SRC / candidate.replace(".", "/")).exists()
                    or (SRC / (candidate.replace(".", "/") + ".py")).exists()
                    else base
                )
    return {m.rstrip(".") for m in found}


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def upward(module: str, targets: set[str]) -> list[str]:
    return sorted(t for t in targets if t in MODULES and layer_of(t) > layer_of(module))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    bad = upward(module, MODULES[module])
    assert not bad, f"{module} (layer {layer_of(module)}) imports upward: {bad}"


def test_no_import_circle() -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(MODULES.get(module, ())):
            if target not in MODULES or target == module:
                continue
            # a package's __init__ importing its own submodules is how a package exports them
            if target.startswith(module + "."):
                continue
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


def test_the_checker_sees_upward_imports() -> None:
    assert upward("m3engine.models.heads", {"m3engine.server.app", "m3engine.types"}) == [
        "m3engine.server.app"
    ]
    assert upward("m3engine.server.app", {"m3engine.models.heads"}) == []
    assert "m3engine.scheduling.pipeline" in MODULES["m3engine.engine"]  # function-level imports count too
