"""The layers of docs/ARCHITECTURE.md stay true: a lower layer never imports training or the commands.

Every `import quads...` and `from quads... import` in a module counts, at any depth (a lazy import inside a
function is still a dependency), read with `ast` so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "quads"

# layer (a folder of quads) -> the layers it must not import
FORBIDDEN = {
    "compression": ("training", "commands"),
    "runtime": ("training", "commands"),
    "data": ("training", "commands"),
    "models": ("training", "commands"),
    "synth": ("training", "commands"),
    "training": ("commands",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every quads import in the file, relative imports resolved."""
    found = []
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..y import z
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            found += [(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names]
    return [(line, name) for line, name in found if name == "quads" or name.startswith("quads.")]


def layer_violations(layer: str) -> list[str]:
    forbidden = tuple(f"quads.{name}" for name in FORBIDDEN[layer])
    violations = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, name in imported_modules(path):
            if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return violations


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_from_the_layers_above_it(layer):
    assert (PACKAGE / layer).is_dir(), f"quads.{layer} is gone: update FORBIDDEN and docs/ARCHITECTURE.md"
    violations = layer_violations(layer)
    assert not violations, (f"quads.{layer} may not import {' or '.join(FORBIDDEN[layer])} "
                            f"(docs/ARCHITECTURE.md):\n" + "\n".join(violations))


def test_the_shared_modules_at_the_top_import_no_layer_above_them():
    """audio, features, config, errors, atomic, cache_dir, folder_lock, onnx_session: used by every layer."""
    violations = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ("cli.py", "__init__.py"):  # the CLI lists commands by name; quads.load reaches runtime
            continue
        for line, name in imported_modules(path):
            if name.startswith(("quads.training", "quads.commands", "quads.runtime")):
                violations.append(f"{path.name}:{line} imports {name}")
    assert not violations, violations


def test_every_module_of_quads_is_in_a_layer_or_shared():
    layers = {*FORBIDDEN, "commands"}
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert folders <= layers, f"a new folder needs its place in FORBIDDEN: {sorted(folders - layers)}"
