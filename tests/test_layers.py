"""The layout's rules, read from the source: the command line on top, no imports in a circle.

Every ``import`` of an ``autoid_lib`` module counts, wherever it stands: at the top, inside a
function, or under ``TYPE_CHECKING`` (a lazy import is still a dependency). The notebooks' code
cells are read too, since they run the library in a kernel.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import autoid_lib
from autoid_lib.package_data import notebooks_dir

PACKAGE = Path(autoid_lib.__file__).resolve().parent
CLI = "autoid_lib.cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.AST, importer: str) -> set[str]:
    """The ``autoid_lib`` modules a syntax tree imports (a name imported from a package counts
    as its submodule when there is one)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importer's package
                package = importer.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {name for name in found if name == "autoid_lib" or name.startswith("autoid_lib.")}


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges[name] = {target for target in imported(tree, name) if target != name}
    return edges


def notebook_imports() -> dict[str, set[str]]:
    found = {}
    for path in sorted(notebooks_dir().glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        found[path.name] = imported(ast.parse(source), "autoid_lib.notebooks")
    return found


def is_cli(name: str) -> bool:
    return name == CLI or name.startswith(CLI + ".")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_walk_sees_the_imports_it_must():
    """Guard against a walker that finds nothing: known edges are present."""
    edges = graph()
    assert "autoid_lib.plan" in edges["autoid_lib.run"]
    assert (
        "autoid_lib.ids.generate" in edges["autoid_lib.plan.project"]
    )  # `from autoid_lib.ids import generate`
    assert "autoid_lib.cli.run" in edges["autoid_lib.cli.demo"]  # a lazy import inside run()
    assert len(MODULES) > 40


def test_nothing_below_the_command_line_imports_it():
    offenders = {
        name: sorted(filter(is_cli, targets))
        for name, targets in graph().items()
        if not is_cli(name) and any(map(is_cli, targets))
    }
    assert offenders == {}


def test_notebooks_import_no_command_line_module():
    offenders = {nb: sorted(filter(is_cli, names)) for nb, names in notebook_imports().items()}
    assert {nb: names for nb, names in offenders.items() if names} == {}
    assert all(notebook_imports().values())  # each notebook does import the library


def test_no_import_cycles():
    assert find_cycle(graph()) is None


def test_find_cycle_reports_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_pure_core_imports_no_io_module():
    """plan and the ids package compute; they import nothing that reads, writes or sends."""
    io_modules = {
        *(name for name in MODULES if name.startswith("autoid_lib.redcap.")),
        "autoid_lib.run",
        "autoid_lib.apply",
        "autoid_lib.lock",
        "autoid_lib.config",
    }
    io_modules |= {name for name in MODULES if name.startswith(("autoid_lib.records", CLI))}
    io_modules |= {name for name in MODULES if name.startswith("autoid_lib.mail")}
    edges = graph()
    pure = ["autoid_lib.audit.checks", "autoid_lib.explore.answers"]
    pure += [name for name in MODULES if name.split(".")[:2] == ["autoid_lib", "plan"]]
    assert {"autoid_lib.plan", "autoid_lib.plan.planner", "autoid_lib.plan.project"} <= set(pure)
    pure += ["autoid_lib.retired", "autoid_lib.repair.plan"]
    pure += [name for name in MODULES if name.startswith("autoid_lib.ids")]
    assert {
        name: sorted(edges[name] & io_modules) for name in pure if edges[name] & io_modules
    } == {}


def test_shipped_files_are_found_through_importlib_resources():
    """A wheel has no checkout around it: only ``cli.demo`` looks at ``__file__``, to tell a
    developer checkout (reports in its reports/) from an installed kit."""
    users = {name for name, path in MODULES.items() if "__file__" in path.read_text("utf-8")}
    assert users == {"autoid_lib.cli.demo"}


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the packages a module imports (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_redcap_package_talks_to_redcap():
    """PyCap (the ``redcap`` package) is imported in ``autoid_lib.redcap`` and nowhere else
    in the library: the one place that talks to REDCap is one package."""
    talkers = {name for name, path in MODULES.items() if "redcap" in third_party_imports(path)}
    assert talkers, "the walk found no PyCap import at all"
    assert {name for name in talkers if not name.startswith("autoid_lib.redcap.")} == set()
