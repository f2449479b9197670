"""Packaging: the four folders install under synthseq.*, never as top-level names; imports stay light."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest


def _run(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("name", ["datasets", "generator", "pipelines", "training"])
def test_no_top_level_module(name, tmp_path):
    # From a neutral directory, the repo's folders must not be importable under their bare names.
    found = _run(f"import importlib.util as u; s = u.find_spec({name!r}); "
                 f"print(s.origin if s else None)", tmp_path)
    repo = str(Path(__file__).resolve().parents[1])
    assert found == "None" or not found.startswith(repo), f"{name} is importable from the repo: {found}"


def test_distribution_files_live_under_synthseq():
    files = metadata.files("synthseq") or []
    tops = {str(f).split("/")[0] for f in files if str(f).endswith(".py")}
    assert not tops & {"datasets", "generator", "pipelines", "training"}, tops


@pytest.mark.parametrize("module", ["synthseq.generator", "synthseq.datasets", "synthseq.datasets.shards",
                                    "synthseq.pipelines.cli"])
def test_light_imports(module, tmp_path):
    heavy = _run(f"import sys, {module}; print(sorted(m for m in ('torch', 'ray', 'open3d', 'pyrender') "
                 f"if m in sys.modules))", tmp_path)
    assert heavy == "[]", f"{module} imports {heavy}"


def test_console_script_help():
    exe = Path(sys.executable).with_name("synthseq")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("build", "info", "verify", "train", "evaluate", "view", "export"):
        assert cmd in out.stdout


# import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "OpenGL": "pyopengl", "open3d": "open3d-cpu", "grpc": "grpcio"}


def _declared_requirements() -> tuple[set[str], set[str]]:
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")

    def names(text: str) -> set[str]:
        return {re.split(r"[\[<>=!~ ]", line.strip(), maxsplit=1)[0].lower()
                for line in text.splitlines() if line.strip() and not line.strip().startswith("#")}

    base = names(cfg["options"]["install_requires"])
    extras = set().union(*(names(v) for v in cfg["options.extras_require"].values()))
    return base, extras


def test_setup_cfg_declares_every_imported_package():
    """Every third-party module the four packages import is in install_requires or an extra (issue 13.4:
    Pillow and scipy were missing, so a base install could not read a TUM folder)."""
    import ast

    repo = Path(__file__).resolve().parents[1]
    base, extras = _declared_requirements()
    used: dict[str, str] = {}
    for folder in ("generator", "datasets", "training", "pipelines", "synthseq"):
        for f in (repo / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                        [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                        else [])
                for m in mods:
                    top = m.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("synthseq", "__future__"):
                        used.setdefault(top, str(f.relative_to(repo)))
    missing = {m: f for m, f in used.items() if DISTRIBUTION.get(m, m).lower() not in base | extras}
    assert not missing, f"imported but not declared in setup.cfg: {missing}"
    # the readers of real captures and the viewer's images need these without any extra
    assert {"scipy", "pillow", "numpy", "h5py", "pyyaml"} <= base
