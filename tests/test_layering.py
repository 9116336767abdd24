"""The core (`hpo_ray/` outside `hpo_ray/cli/`) never imports `ray`, `actors` or the CLI on top of it.

Imports are read from the syntax tree, so function-level imports, `from ray.x import y` and
`importlib.import_module("ray")` count; text that merely mentions ray (docstrings) does not.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("ray", "actors", "hpo_ray.cli")
DYNAMIC = {"import_module", "__import__"}


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def _imported_modules(tree: ast.AST):
    """(line, module) for every import statement and dynamic import with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in DYNAMIC and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def layering_violations(source: str, filename: str) -> list[str]:
    """`file:line imports module` for each forbidden import in one core module's source."""
    found = {(line, mod) for line, mod in _imported_modules(ast.parse(source, filename)) if _forbidden(mod)}
    return [f"{filename}:{line} imports {mod}" for line, mod in sorted(found)]


def core_modules() -> list[Path]:
    cli = ROOT / "hpo_ray" / "cli"
    return sorted(p for p in (ROOT / "hpo_ray").rglob("*.py") if cli not in p.parents)


def test_core_never_imports_ray_actors_or_the_cli():
    modules = core_modules()
    assert len(modules) > 50  # the walk found the core
    violations = [v for p in modules for v in layering_violations(p.read_text(), str(p.relative_to(ROOT)))]
    assert not violations, "the core must not import ray/actors/hpo_ray.cli:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    "snippet",
    [
        "import ray",
        "import ray.util.metrics as m",
        "from ray import remote",
        "from ray.util.placement_group import placement_group",
        "def f():\n    import ray\n    return ray",
        "class A:\n    def m(self):\n        from actors.controller import Controller",
        "import actors",
        "from hpo_ray.cli import train_cmd",
        "import importlib\nimportlib.import_module('ray')",
        "__import__('actors.learner_group')",
    ],
)
def test_checker_flags_every_form_of_a_forbidden_import(snippet):
    assert layering_violations(snippet, "x.py")


@pytest.mark.parametrize(
    "snippet",
    [
        '"""Never imports `ray`."""',
        "import rayon\nfrom raylib import x\nimport actorsx",
        "from . import actors",  # a sibling module inside the package, not the top-level `actors`
        "from hpo_ray.config import RunConfig",
        "x = {'ray': 1}",
    ],
)
def test_checker_accepts_names_that_only_look_alike(snippet):
    assert layering_violations(snippet, "x.py") == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _load_time_imports(tree: ast.Module) -> set[str]:
    """Modules imported outside function bodies (module level, `if TYPE_CHECKING:` blocks, class bodies)."""
    found: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        else:
            stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """module → project modules it imports when loaded (names that are not modules are dropped)."""
    modules = {_module_name(p): p for p in paths}
    return {
        name: {m for m in _load_time_imports(ast.parse(p.read_text(), str(p))) if m in modules and m != name} for name, p in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles_in_hpo_ray_or_actors():
    paths = sorted((ROOT / "hpo_ray").rglob("*.py")) + sorted((ROOT / "actors").rglob("*.py"))
    graph = import_graph(paths)
    assert sum(map(len, graph.values())) > 50  # the walk found the edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_cycle_finder_reports_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_type_checking_imports_count_but_function_imports_do_not():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.q\ndef f():\n    import p.r\n"
    assert "p.q" in _load_time_imports(ast.parse(source)) and "p.r" not in _load_time_imports(ast.parse(source))
