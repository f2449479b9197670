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
