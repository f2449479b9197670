"""Shared pytest fixtures: paths to the real data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SYNTHSEQ_SHARED_DATA", REPO.parent / "shared" / "data"))

# Keep the 2-core CI machine responsive: one BLAS/torch thread per process unless told otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def _shared(sub: str) -> Path:
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"real data folder {p} is absent (expected ../shared/data beside the checkout)")
    return p


@pytest.fixture(scope="session")
def meshes_dir() -> Path:
    """../shared/data/meshes: real CAD/scan meshes (STL/OBJ/PLY)."""
    return _shared("meshes")


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """../shared/data/real: real depth captures (TUM RGB-D, 7-Scenes, PCL clouds, ...)."""
    return _shared("real")


@pytest.fixture(scope="session")
def tum_rpy_dir() -> Path:
    return _shared("real/tum_fr1_rpy")


@pytest.fixture(scope="session")
def tum_xyz_pair_dir() -> Path:
    return _shared("real/tum_fr1_xyz_pair")


@pytest.fixture(scope="session")
def sevenscenes_dir() -> Path:
    return _shared("real/7scenes_redkitchen")
