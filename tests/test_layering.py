"""The package layering of issue 13: ``pipelines -> training -> datasets -> core <- generator``.

core is ``synthseq/*.py`` (types, geometry, config, errors, progress); it imports none of the four packages.
generator and datasets are siblings on top of core: each imports core only, never the other. training
imports datasets and core (it trains on shards and real captures, never on scenes generated on the fly).
pipelines, the command line, may import any of them. Every import counts: module level and inside
functions, ``import``/``from ... import`` (relative ones resolved) and the lazy tables that name a module
as a string for ``importlib.import_module`` (``_LAZY`` in ``generator/__init__.py``, ``training/__init__.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# folder -> the layer its modules belong to (``synthseq/`` holds the core modules; setup.cfg maps the
# other four folders to synthseq.generator, synthseq.datasets, synthseq.training, synthseq.pipelines)
FOLDERS = {"synthseq": "core", "generator": "generator", "datasets": "datasets", "training": "training",
           "pipelines": "pipelines"}
ALLOWED = {
    "core": {"core"},
    "generator": {"core", "generator"},
    "datasets": {"core", "datasets"},
    "training": {"core", "datasets", "training"},
    "pipelines": {"core", "generator", "datasets", "training", "pipelines"},
}
MODULE_STRING = re.compile(r"synthseq(\.[A-Za-z_][A-Za-z0-9_]*)+")


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; None for anything outside synthseq (stdlib, third party)."""
    parts = module.split(".")
    if parts[0] != "synthseq":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "synthseq":
        return FOLDERS[parts[1]]
    return "core"


def package_of(path: Path) -> list[str]:
    """The dotted package a source file lives in, e.g. training/evaluation/run.py -> synthseq.training.evaluation."""
    rel = path.relative_to(REPO)
    folder = rel.parts[0]
    return ["synthseq"] + ([] if folder == "synthseq" else [folder]) + list(rel.parts[1:-1])


def docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every synthseq module the file imports, at any depth in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..a import b
                base = package_of(path)[: len(package_of(path)) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from synthseq import generator` imports the sub-package, not the core
            found += [(node.lineno, f"{module}.{alias.name}" if module == "synthseq" else module)
                      for alias in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and MODULE_STRING.fullmatch(node.value)):
            found.append((node.lineno, node.value))  # a lazy import: importlib.import_module("synthseq.x.y")
    return [(line, m) for line, m in found if layer_of(m) is not None]


def source_files() -> list[Path]:
    files = []
    for folder in FOLDERS:
        pattern = "*.py" if folder == "synthseq" else "**/*.py"  # synthseq/ holds the core modules only
        files += sorted((REPO / folder).glob(pattern))
    return files


def layering_violations() -> list[str]:
    bad = []
    for path in source_files():
        layer = FOLDERS[path.relative_to(REPO).parts[0]]
        for line, module in imported_modules(path):
            target = layer_of(module)
            if target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(REPO)}:{line}: {layer} imports {module} ({target})")
    return bad


def test_the_walk_sees_every_package_and_every_kind_of_import():
    """The checker is not vacuous: it reads all five folders and finds function-level and lazy imports."""
    files = source_files()
    assert {p.relative_to(REPO).parts[0] for p in files} == set(FOLDERS)
    seen = {(str(p.relative_to(REPO)), m) for p in files for _, m in imported_modules(p)}
    assert ("pipelines/train.py", "synthseq.training.trainer") in seen  # inside a function
    assert ("training/__init__.py", "synthseq.training.trainer") in seen  # a lazy table entry
    assert ("generator/cameras.py", "synthseq.geometry") in seen  # module level
    assert layer_of("synthseq.geometry") == "core" and layer_of("synthseq.datasets.torch") == "datasets"
    assert layer_of("numpy") is None


def test_no_import_against_the_layering():
    """pipelines -> training -> datasets -> core <- generator: no file imports a layer it may not."""
    bad = layering_violations()
    assert not bad, "imports against pipelines -> training -> datasets -> core <- generator:\n" + "\n".join(bad)


def test_a_bad_import_is_named_with_file_and_line(tmp_path, monkeypatch):
    """The test fails where it should: an import of training from datasets, inside a function, and a
    relative import of generator from core are each reported as file:line."""
    for folder in FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "datasets" / "bad.py").write_text(
        '"""synthseq.training is named in a docstring: not an import."""\n\n'
        "def f():\n    from synthseq.training.trainer import train\n")
    (tmp_path / "synthseq" / "bad_core.py").write_text("from .generator import scene\n")
    (tmp_path / "generator" / "ok.py").write_text("from synthseq.geometry import look_at\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert layering_violations() == [
        "synthseq/bad_core.py:1: core imports synthseq.generator (generator)",
        "datasets/bad.py:4: datasets imports synthseq.training.trainer (training)",
    ]
