"""The package's import graph: no cycles, layers that only look down, no recipe inside.

The graph is read from the source (``ast``), not by importing, so a cycle hidden in a
function-level import counts as much as one at the top of a file: both tie two modules so
neither can be understood, tested or replaced alone. Imports under ``if TYPE_CHECKING:``
are left out (they never run). Importing ``a.b.c`` also runs ``a.b/__init__.py``, so that
edge counts too; the top-level facade ``jvlm/__init__.py`` is the one exception, since every
module lives under it (the facade itself imports only ``config`` and ``errors`` eagerly).

The layers are the data flow of docs/architecture.md. A module may import its own layer and
any layer below; adding a module under a new top-level name means giving it a layer here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"

#: (module prefix, layer): the longest matching prefix decides
LAYERS: tuple[tuple[str, int], ...] = (
    ("jvlm.errors", 0), ("jvlm.paths", 0), ("jvlm.config", 0), ("jvlm.hardware", 0), ("jvlm.memory", 0),
    ("jvlm.processing", 1), ("jvlm.media", 1),
    ("jvlm.model", 2),
    ("jvlm.weights", 3), ("jvlm.layouts", 3), ("jvlm.loading", 3), ("jvlm.resolve", 3),
    ("jvlm.inference", 4), ("jvlm.efficiency", 4),
    ("jvlm.tools", 5), ("jvlm.random_model", 5),
    ("jvlm.train", 6), ("jvlm.eval", 6),
    ("jvlm.notices", 7), ("jvlm.serve", 7), ("jvlm.hf", 7), ("jvlm.integrations", 7),
    ("jvlm.cli", 8), ("jvlm.__main__", 8), ("jvlm", 9),
)
#: upward imports that exist for a reason, each with its way out
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
#: build-time tooling, and the layers that run a served or loaded model, which must not use it
TOOLS = ("jvlm.tools", "jvlm.random_model")
RUNTIME = ("jvlm.config", "jvlm.errors", "jvlm.paths", "jvlm.hardware", "jvlm.memory", "jvlm.processing", "jvlm.media",
           "jvlm.model", "jvlm.weights", "jvlm.layouts", "jvlm.loading", "jvlm.inference", "jvlm.serve", "jvlm.hf",
           "jvlm.integrations")


def _under(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def imported_names(name: str, path: Path) -> list[str]:
    """Every dotted name ``name``'s file imports (absolute; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip, is_package = _type_checking_nodes(tree), path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            out += [f"{base}.{alias.name}" for alias in node.names]  # a submodule, or an attribute
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "import_module")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append(node.args[0].value)
    return out


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (see the module docstring for what counts)."""
    mods = modules(src, package)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for target in imported_names(name, path):
            while target and target not in mods:  # an attribute: its module
                target = target.rpartition(".")[0]
            if not target:
                continue
            parts = target.split(".")
            chain = [".".join(parts[:k]) for k in range(2, len(parts) + 1)] or [target]
            edges.update(t for t in chain if t != name and not name.startswith(t + "."))
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer(module: str) -> int | None:
    matches = [(len(prefix), level) for prefix, level in LAYERS if _under(module, prefix)]
    return max(matches)[1] if matches else None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(SRC, "jvlm")


def test_the_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.b import B\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\n"
                                     "B = 1\ndef g():\n    from .. import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    found = cycles(import_graph(tmp_path, "pkg"))
    assert found == [["pkg.a", "pkg.sub", "pkg.sub.b"]]  # c's import is typing only: not in it


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles (break each with a leaf module or by moving code down a layer):\n" + \
        "\n".join("  " + " <-> ".join(c) for c in found)


def test_every_module_has_a_layer_and_imports_only_downward(graph):
    unplaced = sorted(m for m in graph if layer(m) is None)
    assert not unplaced, f"modules without a layer: {unplaced}; add them to LAYERS in this file"
    upward = sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})" for a, targets in graph.items()
                    for b in targets if layer(b) > layer(a) and (a, b) not in ALLOWED_UPWARD)
    assert not upward, "imports against the layer order of docs/architecture.md:\n  " + "\n  ".join(upward)
    stale = [pair for pair in ALLOWED_UPWARD if pair[1] not in graph.get(pair[0], ())]
    assert not stale, f"ALLOWED_UPWARD lists imports that no longer exist: {stale}; remove them"


def test_runtime_layers_never_import_build_time_tools(graph):
    bad = sorted(f"{a} imports {b}" for a, targets in graph.items() if _under(a, RUNTIME)
                 for b in targets if _under(b, TOOLS))
    assert not bad, "runtime modules import build-time tooling:\n  " + "\n  ".join(bad)


def test_the_library_never_imports_a_recipe():
    recipe_packages = {p.parent.name for p in RECIPES.glob("*/*/__init__.py")}
    assert "jvlm_demo" in recipe_packages  # the check looks where the recipes are
    bad = sorted(f"{name} imports {target}" for name, path in modules(SRC, "jvlm").items()
                 for target in imported_names(name, path) if target.split(".")[0] in recipe_packages)
    assert not bad, "the library imports a recipe (recipes build on jvlm, never the reverse):\n  " + "\n  ".join(bad)


def test_the_demo_recipe_has_no_import_cycles_either():
    found = cycles(import_graph(RECIPES / "jvlm_demo", "jvlm_demo"))
    assert not found, "import cycles in the recipe:\n" + "\n".join("  " + " <-> ".join(c) for c in found)


def test_the_readme_layout_matches_the_tree():
    """Every entry of src/jvlm is named in the README's layout block, and every path the block
    names exists (so the map cannot drift from the territory in either direction)."""
    import re

    root = SRC.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    tokens = set(re.findall(r"[\w./-]+", block))
    entries = {p.name + ("/" if p.is_dir() else "") for p in (SRC / "jvlm").iterdir()
               if p.name not in ("__init__.py", "__main__.py", "__pycache__", "py.typed")}
    named = {t.split("/")[0] + ("/" if "/" in t else "") for t in tokens}
    assert not sorted(entries - named), f"src/jvlm entries missing from the README layout: {sorted(entries - named)}"
    paths = [t for t in tokens if t.endswith((".py", "/", ".md")) and not t.startswith(("src/", "<"))]
    missing = [t for t in paths if not any((base / t).exists() for base in (SRC / "jvlm", root, root / "docs"))]
    assert not missing, f"the README layout names paths that do not exist: {missing}"


def test_the_installed_package_is_the_library_without_the_recipe():
    """``pip install .`` installs what pyproject.toml's package discovery finds: jvlm and its
    subpackages (with the demo weights as package data), never a recipe."""
    import tomllib

    from setuptools import find_packages

    project = tomllib.loads((SRC.parent / "pyproject.toml").read_text(encoding="utf-8"))
    find = project["tool"]["setuptools"]["packages"]["find"]
    found = find_packages(where=str(SRC.parent / find["where"][0]))
    assert "jvlm" in found and "jvlm.tools" in found and "jvlm.eval" in found
    assert not [p for p in found if not _under(p, "jvlm")], found
    assert not [p for p in found if p in ("jvlm.data", "jvlm.repro")], found
    assert "assets/**/*" in project["tool"]["setuptools"]["package-data"]["jvlm"]  # the demo weights ship
    recipe = tomllib.loads((RECIPES / "jvlm_demo" / "pyproject.toml").read_text(encoding="utf-8"))
    assert any(dep.startswith("jvlm") for dep in recipe["project"]["dependencies"])  # recipe -> library only


def test_no_behaviour_is_injected_through_tensor_subclasses_or_class_swaps():
    """Kernels, quantized weights and model classes are chosen through named seams (the
    Attention object, DecodeLinear modules, real subclasses), never by a tensor subclass's
    ``__torch_function__``, process-global extension slots or a swapped ``__class__``: code
    that reads the model must be able to see what runs."""
    pattern = re.compile(r"__torch_function__|\b_ext = |__class__ =")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, f"injection points found: {hits}"
