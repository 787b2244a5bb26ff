"""How the shipped package is put together: no import circles, nothing test-only or from the Pulumi program in it.

Every import statement counts, at module level or inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "healthcheck"
# Test tools, the VM harness and the Pulumi program never ship in, or are needed by, the installed package.
NEVER_IMPORTED = ("moto", "pytest", "hypothesis", "drill", "infra", "pulumi", "pulumi_aws", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[str]:
    """Every module an import statement in `path` names (for `from a import b`, both a and a.b)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {
    name: sorted({found for found in imports(path) if found in MODULES and found != name})
    for name, path in MODULES.items()
}


def cycle_from(start: str) -> list[str] | None:
    """A path of imports that leads from `start` back to it, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for successor in GRAPH[node]:
            if successor == start:
                return [*path, start]
            if successor not in seen:
                seen.add(successor)
                stack.append((successor, [*path, successor]))
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_of_the_package_imports_itself_back(module: str) -> None:
    assert cycle_from(module) is None, " -> ".join(cycle_from(module) or [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_package_imports_nothing_test_only_nor_the_pulumi_program(module: str) -> None:
    found = sorted({name for name in imports(MODULES[module]) if name.split(".")[0] in NEVER_IMPORTED})

    assert found == []


def test_the_circle_check_would_find_a_circle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GRAPH, "healthcheck.status", ["healthcheck.errors"])
    monkeypatch.setitem(GRAPH, "healthcheck.errors", ["healthcheck.status"])

    assert cycle_from("healthcheck.status") == ["healthcheck.status", "healthcheck.errors", "healthcheck.status"]
