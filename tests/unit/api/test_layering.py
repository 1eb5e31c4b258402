"""Views are thin: nothing in gymserve.api imports the registry, the idempotency keys, the forwarder or the replica
table (they reach envs through the Envs service and the pipeline's verbs), and the core never imports Flask."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gymserve

PACKAGE = Path(gymserve.__file__).parent
# What a view must never reach directly: each decides a rule that lives behind the Envs service or the pipeline.
FORBIDDEN_IN_API = {
    "gymserve.lifecycle.registry",
    "gymserve.lifecycle.idempotency",
    "gymserve.routing.forward",
    "gymserve.routing.replica",
}
FLASK_FREE = ("lifecycle", "envs", "pipeline", "routing", "codec", "tenancy", "client")


def imports_of(source: str, package: str) -> set[str]:
    """Every module the source of a module of `package` imports, absolute (relative imports resolved), and every
    name it imports from one (which may itself be a module)."""
    parts = package.split(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    return ".".join(("gymserve", *path.relative_to(PACKAGE).parent.parts))


@pytest.mark.parametrize("path", sorted((PACKAGE / "api").glob("*.py")), ids=lambda p: p.name)
def test_views_reach_envs_only_through_the_services(path: Path) -> None:
    assert imports_of(path.read_text(), package_of(path)) & FORBIDDEN_IN_API == set()


@pytest.mark.parametrize("folder", FLASK_FREE)
def test_the_core_never_imports_flask(folder: str) -> None:
    for path in (PACKAGE / folder).rglob("*.py"):
        imported = imports_of(path.read_text(), package_of(path))
        assert not {m for m in imported if m.split(".")[0] == "flask"}, path


@pytest.mark.parametrize(
    "source",
    [
        "from ..lifecycle.registry import EnvRecord\n",
        "from ..lifecycle import idempotency\n",
        "from gymserve.routing.forward import Forwarder\n",
        "import gymserve.routing.replica\n",
    ],
)
def test_the_walk_catches_each_way_of_importing_a_forbidden_module(source: str) -> None:
    assert imports_of(source, "gymserve.api") & FORBIDDEN_IN_API
