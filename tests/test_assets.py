"""Assets: primitives with random dimensions, mesh files loaded and normalised (real meshes), the room."""

from __future__ import annotations

import numpy as np
import pytest

from synthseq.errors import DataError
from synthseq.generator import assets
from synthseq.generator.assets import (ObjectSpec, check_mesh_file, list_mesh_files, load_mesh, make_primitive,
                                       object_geometry, primitive_radius, room_geometry, sample_primitive,
                                       unit_mesh)
from synthseq.generator.config import PRIMITIVE_KINDS


@pytest.mark.parametrize("kind", PRIMITIVE_KINDS)
def test_primitive_size_centre_and_radius(kind):
    rng = np.random.default_rng(3)
    for size in (0.2, 0.45):
        params = sample_primitive(kind, size, rng)
        v, f = make_primitive(kind, params)
        assert v.dtype == np.float64 and f.dtype == np.int64 and f.shape[1] == 3 and len(f) > 0
        extents = v.max(axis=0) - v.min(axis=0)
        # Tessellation puts vertices on the true surface, so extents are at most the size (>= 95% of it).
        assert extents.max() == pytest.approx(size, rel=0.05) and extents.max() <= size + 1e-9
        np.testing.assert_allclose(0.5 * (v.max(axis=0) + v.min(axis=0)), 0.0, atol=1e-9)
        r = primitive_radius(kind, params)
        norms = np.linalg.norm(v, axis=1)
        assert norms.max() <= r + 1e-9 and norms.max() >= 0.9 * r


def test_unknown_primitive_kind():
    with pytest.raises(ValueError, match="unknown primitive kind 'blob'"):
        make_primitive("blob", (1.0,))
    with pytest.raises(ValueError, match="unknown primitive kind 'blob'"):
        sample_primitive("blob", 1.0, np.random.default_rng(0))


def test_every_shared_mesh_loads_and_normalises(meshes_dir):
    """Units vary per file, chair_model.obj lacks its .mtl, several binary STLs start with 'solid'."""
    files = list_mesh_files(meshes_dir)
    names = {f.rsplit("/", 1)[-1] for f in files}
    assert "chair_model.obj" in names and "angle_block.STL" in names and "bunny.ply" in names
    assert "PROVENANCE.md" not in names
    for path in files:
        v, f = unit_mesh(path)
        extents = v.max(axis=0) - v.min(axis=0)
        assert extents.max() == pytest.approx(1.0, abs=1e-9), path
        np.testing.assert_allclose(0.5 * (v.max(axis=0) + v.min(axis=0)), 0.0, atol=1e-9, err_msg=path)
        assert len(f) > 0 and f.min() >= 0 and f.max() < len(v)
        for size in (0.15, 0.5):
            obj = ObjectSpec(name="x", shape="m", path=path, size=size)
            sv, sf = object_geometry(obj)
            assert (sv.max(axis=0) - sv.min(axis=0)).max() == pytest.approx(size, abs=1e-9)
            assert not np.shares_memory(sv, v)  # never scales the cached arrays in place
    assert (unit_mesh(files[0])[0].max(axis=0) - unit_mesh(files[0])[0].min(axis=0)).max() == pytest.approx(1.0)


def test_binary_stl_with_solid_header_loads_as_binary(meshes_dir):
    path = meshes_dir / "angle_block.STL"
    assert path.read_bytes()[:5].lower() == b"solid"
    v, f = load_mesh(path)
    assert len(f) == 704  # the face count in the binary header (PROVENANCE.md)


def test_mesh_without_faces_fails_clearly(tmp_path):
    p = tmp_path / "cloud.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                 "end_header\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(DataError, match=r"cloud\.ply: mesh has no faces"):
        load_mesh(p)


def test_unreadable_and_missing_mesh_files(tmp_path):
    bad = tmp_path / "broken.glb"
    bad.write_bytes(b"not a glb at all")
    with pytest.raises(DataError, match=r"broken\.glb"):
        load_mesh(bad)
    with pytest.raises(FileNotFoundError, match=r"nope\.obj: mesh file not found"):
        load_mesh(tmp_path / "nope.obj")
    with pytest.raises(FileNotFoundError, match=r"generate.objects.mesh_files\[0\]: mesh file .*nope\.obj not found"):
        check_mesh_file(tmp_path / "nope.obj", "generate.objects.mesh_files[0]")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"unsupported mesh format '\.txt'"):
        check_mesh_file(tmp_path / "notes.txt")


def test_mesh_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"generate.objects.mesh_dir: mesh folder .*missing not found"):
        list_mesh_files(tmp_path / "missing")
    with pytest.raises(DataError, match=r"generate.objects.mesh_dir: no mesh files"):
        list_mesh_files(tmp_path)


def test_mesh_cache_is_bounded(tmp_path, monkeypatch):
    import trimesh

    monkeypatch.setattr(assets, "MESH_CACHE_SIZE", 3)
    assets.clear_mesh_cache()
    for i in range(6):
        p = tmp_path / f"box{i}.stl"
        trimesh.creation.box(extents=(1 + i, 1, 1)).export(p)
        unit_mesh(p)
        assert len(assets._mesh_cache) <= 3
    assert list(assets._mesh_cache)[-1].endswith("box5.stl")
    assets.clear_mesh_cache()


def test_room_faces_point_inwards():
    v, f = room_geometry((4.0, 6.0, 2.5), ceiling=True)
    assert f.shape == (12, 3)
    tri = v[f]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    to_centre = np.array([0.0, 0.0, 1.25]) - tri.mean(axis=1)
    assert np.all(np.einsum("ij,ij->i", normals, to_centre) > 0)
    np.testing.assert_allclose(v.min(axis=0), [-2, -3, 0])
    np.testing.assert_allclose(v.max(axis=0), [2, 3, 2.5])
    assert room_geometry((4.0, 6.0, 2.5))[1].shape == (10, 3)


# ------------------------------------------------------------------------------------------ simplification

def _fine_cube(subdivisions: int = 5):
    """A unit cube [-0.5, 0.5]^3 with many vertices on its faces (subdivided), outward-wound."""
    import trimesh

    v, f = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).vertices, trimesh.creation.box().faces
    for _ in range(subdivisions):
        v, f = trimesh.remesh.subdivide(v, f)
    return np.asarray(v, np.float64), np.asarray(f, np.int64)


def test_quadric_clustering_keeps_corners_and_faces_where_mean_clustering_shrinks():
    v, f = _fine_cube()
    mean_v, mean_f = assets.cluster_vertices(v, f, 7, placement="mean")
    quad_v, quad_f = assets.cluster_vertices(v, f, 7, placement="quadric")
    # the same clusters and faces, only the positions differ
    np.testing.assert_array_equal(mean_f, quad_f)
    assert len(quad_f) < len(f) / 10
    # quadric placement: every vertex stays on the cube's surface and the corners stay at the corners
    assert np.abs(np.abs(quad_v).max(axis=1) - 0.5).max() < 1e-9
    np.testing.assert_allclose(quad_v.min(axis=0), -0.5, atol=1e-12)
    np.testing.assert_allclose(quad_v.max(axis=0), 0.5, atol=1e-12)
    # mean placement pulls edge and corner clusters inside (the mesh shrinks by a fraction of a cell)
    assert np.abs(np.abs(mean_v).max(axis=1) - 0.5).max() > 0.01
    with pytest.raises(ValueError, match="placement"):
        assets.cluster_vertices(v, f, 7, placement="median")


def test_quadric_simplified_mesh_file_stays_on_the_full_surface(meshes_dir):
    from test_geometry import distance_to_mesh

    path = meshes_dir / "bunny.ply"
    full_v, full_f = unit_mesh(path)
    v, f = unit_mesh(path, 32, "quadric")
    assert len(f) < len(full_f) / 2 and f.max() < len(v) and not v.flags.writeable
    # kept in the full mesh's unit frame: inside its bounding box, extent within one cell of 1
    assert np.all(v.min(axis=0) >= full_v.min(axis=0) - 1e-12) and np.all(v.max(axis=0) <= full_v.max(axis=0) + 1e-12)
    assert 1 - 1 / 32 < (v.max(axis=0) - v.min(axis=0)).max() <= 1
    # every simplified vertex lies near the full surface: under half a cell (1/32 of the size)
    d = distance_to_mesh(full_v, full_f, v)
    assert np.median(d) < 0.001 and d.max() < 0.5 / 32  # (mean placement: 0.0024 and 0.017, measured)
    # an object of 0.35 m: its geometry is the simplified mesh at that size (what is rendered and stored)
    obj = ObjectSpec(name="s000000_o00_bunny", shape="bunny", path=str(path), size=0.35, detail=32, simplify="quadric")
    gv, gf = object_geometry(obj)
    np.testing.assert_allclose(gv, v * 0.35)
    np.testing.assert_array_equal(gf, f)
    assert assets.mesh_radius(path, 32, "quadric") == pytest.approx(float(np.sqrt((v ** 2).sum(1).max())))
