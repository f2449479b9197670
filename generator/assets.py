"""Object geometry: trimesh primitives with random dimensions, mesh files loaded and normalised, and the room.

Every object's canonical geometry is centred on its axis-aligned bounding-box centre and scaled so that its
largest extent equals its target size in metres, whatever the file's units (STL has none). Loaded files are
kept in a bounded per-process LRU cache so that a long-lived worker's memory stays flat over many sequences.
Geometry is plain ``(vertices (M, 3) float64, faces (F, 3) int64)`` tuples; trimesh is imported lazily.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthseq.errors import DataError
from synthseq.generator.config import MESH_SUFFIXES, PRIMITIVE_KINDS

logger = logging.getLogger(__name__)

Geometry = tuple  # (vertices (M, 3) float64, faces (F, 3) int64)

# Loaded-and-normalised files kept per process (each at most a few MB). Bounded: memory stays flat.
MESH_CACHE_SIZE = 32
_mesh_cache: "OrderedDict[str, tuple]" = OrderedDict()  # path -> (vertices, faces, radius)

_SPHERE_SUBDIVISIONS = 2  # 320 faces
_SECTIONS = 24


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene as plain data (part of a ``SceneSpec``).

    Args:
        name: unique geometry name, ``s{index:06d}_o{k:02d}_{shape}`` (no '/').
        shape: a primitive kind (``box``, ``sphere``...) or the mesh file's stem.
        params: primitive dimensions in metres (see :func:`make_primitive`); empty for mesh files.
        path: absolute path of the mesh file, or "" for primitives.
        size: the target largest extent in metres (mesh files are scaled to it).
        radius: bounding-sphere radius about the object origin, metres (for the room check).
        detail: mesh files only: 0 = the file's full geometry; n > 0 = simplified by vertex clustering on a
            grid of n cells along its largest extent (:func:`cluster_vertices`; indoor clutter, which is
            small in the image, uses it to keep a room's triangle count down). The simplified mesh *is* the
            object's geometry: it is what gets rendered and what the ground truth refers to.
        simplify: how ``detail`` simplifies: ``"cluster"`` (mean vertex placement, then the simplified mesh is
            normalised again to the size: indoor scenes) or ``"quadric"`` (quadric vertex placement, kept in
            the full mesh's frame, so the size is the full mesh's largest extent: ``objects.mesh_detail``).
    """

    name: str
    shape: str
    params: tuple = ()
    path: str = ""
    size: float = 0.0
    radius: float = 0.0
    detail: int = 0
    simplify: str = "cluster"

    @property
    def is_mesh_file(self) -> bool:
        return bool(self.path)


# ------------------------------------------------------------------------------------------ primitives

def sample_primitive(kind: str, size: float, rng: np.random.Generator) -> tuple:
    """Random dimensions of a primitive whose largest bounding-box extent is ``size`` metres.

    Returns:
        box: (ex, ey, ez) extents; sphere: (radius,); cylinder / cone: (radius, height);
        capsule: (radius, cylinder height); torus: (major radius, minor radius).
    """
    if kind == "box":
        e = rng.uniform(0.3, 1.0, size=3)
        e[rng.integers(3)] = 1.0
        return tuple(float(x) for x in size * e)
    if kind == "sphere":
        return (0.5 * size,)
    if kind in ("cylinder", "cone"):
        # Either the height or the diameter is the largest extent.
        if rng.random() < 0.5:
            return (0.5 * size * float(rng.uniform(0.3, 1.0)), float(size))
        return (0.5 * size, float(size * rng.uniform(0.3, 1.0)))
    if kind == "capsule":
        # total length = h + 2 r = size, r in [0.15, 0.4] size.
        r = float(size * rng.uniform(0.15, 0.4))
        return (r, float(size - 2 * r))
    if kind == "torus":
        # outer diameter 2 (R + r) = size.
        ratio = float(rng.uniform(0.15, 0.4))
        minor = 0.5 * size * ratio
        return (0.5 * size - minor, minor)
    raise ValueError(f"unknown primitive kind {kind!r} (known: {', '.join(PRIMITIVE_KINDS)})")


def primitive_radius(kind: str, params: tuple) -> float:
    """Bounding-sphere radius about the bounding-box centre of :func:`make_primitive` (kind, params), metres."""
    if kind == "box":
        return 0.5 * math.sqrt(sum(x * x for x in params))
    if kind == "sphere":
        return params[0]
    if kind in ("cylinder", "cone"):
        r, h = params
        return math.sqrt(r * r + 0.25 * h * h)
    if kind == "capsule":
        r, h = params
        return 0.5 * h + r
    if kind == "torus":
        return params[0] + params[1]
    raise ValueError(f"unknown primitive kind {kind!r}")


def make_primitive(kind: str, params: tuple) -> Geometry:
    """Triangle mesh of a primitive, centred on its bounding-box centre (object frame, metres).

    Args:
        kind: box, sphere, cylinder, capsule, cone or torus.
        params: dimensions as returned by :func:`sample_primitive`.

    Returns:
        vertices (M, 3) float64, faces (F, 3) int64.
    """
    import trimesh.creation as tc

    if kind == "box":
        m = tc.box(extents=params)
    elif kind == "sphere":
        m = tc.icosphere(subdivisions=_SPHERE_SUBDIVISIONS, radius=params[0])
    elif kind == "cylinder":
        m = tc.cylinder(radius=params[0], height=params[1], sections=_SECTIONS)
    elif kind == "cone":
        m = tc.cone(radius=params[0], height=params[1], sections=_SECTIONS)
    elif kind == "capsule":
        m = tc.capsule(height=params[1], radius=params[0], count=[_SECTIONS, _SECTIONS])
    elif kind == "torus":
        m = tc.torus(major_radius=params[0], minor_radius=params[1], major_sections=_SECTIONS,
                     minor_sections=12)
    else:
        raise ValueError(f"unknown primitive kind {kind!r} (known: {', '.join(PRIMITIVE_KINDS)})")
    vertices = np.asarray(m.vertices, dtype=np.float64)
    vertices = vertices - 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    return vertices, np.asarray(m.faces, dtype=np.int64)


# ------------------------------------------------------------------------------------------ mesh files

def _relative_hint(given) -> str:
    if Path(given).expanduser().is_absolute():
        return ""
    return (f" (the relative path {str(given)!r} was resolved against the current directory; paths in a config "
            f"file resolve against its folder when loaded with load_generate_config / resolve_paths)")


def list_mesh_files(mesh_dir, key: str = "generate.objects.mesh_dir") -> tuple[str, ...]:
    """Mesh files (OBJ/STL/PLY/OFF/GLB/GLTF, any letter case) directly in ``mesh_dir``, sorted by name.

    Raises:
        FileNotFoundError: the folder does not exist (the message names the key and the folder).
        DataError: it holds no mesh file.
    """
    d = Path(mesh_dir).expanduser().resolve()
    if not d.is_dir():
        raise FileNotFoundError(f"{key}: mesh folder {d} not found{_relative_hint(mesh_dir)}")
    files = sorted(str(p) for p in d.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise DataError(f"{key}: no mesh files ({'/'.join(s[1:] for s in MESH_SUFFIXES)}) in {d}")
    return tuple(files)


def check_mesh_file(path, key: str = "generate.objects.mesh_files") -> str:
    """The absolute path of an existing mesh file with a known suffix.

    Raises:
        FileNotFoundError: no such file. DataError: an unknown suffix.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"{key}: mesh file {p} not found{_relative_hint(path)}")
    if p.suffix.lower() not in MESH_SUFFIXES:
        raise DataError(f"{key}: {p}: unsupported mesh format {p.suffix!r} "
                        f"(expected one of {', '.join(MESH_SUFFIXES)})")
    return str(p)


def load_mesh(path) -> Geometry:
    """Load a mesh file as one triangle mesh (scenes are flattened with their transforms), in file units.

    Missing material files (an OBJ's ``mtllib``) are tolerated: only geometry is used. Binary STLs whose
    header starts with "solid" are detected by trimesh from the file size.

    Returns:
        vertices (M, 3) float64, faces (F, 3) int64 (duplicate vertices merged).

    Raises:
        FileNotFoundError: no such file. DataError: unreadable, no faces, or no extent (naming the file).
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: mesh file not found")
    try:
        mesh = trimesh.load(str(p), force="mesh", process=True, skip_materials=True)
    except Exception as e:  # trimesh raises many types (ValueError, KeyError, struct.error...)
        raise DataError(f"{p}: cannot read mesh ({type(e).__name__}: {e})") from None
    faces = getattr(mesh, "faces", None)
    if faces is None or len(faces) == 0:
        raise DataError(f"{p}: mesh has no faces (a point cloud or an empty file?)")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if not np.all(np.isfinite(vertices)):
        raise DataError(f"{p}: mesh has non-finite vertices")
    used = vertices[np.unique(faces)]
    if float((used.max(axis=0) - used.min(axis=0)).max()) <= 0:
        raise DataError(f"{p}: mesh has zero extent")
    return vertices, faces


def normalize_geometry(vertices: np.ndarray, faces: np.ndarray, size: float = 1.0) -> Geometry:
    """Centre on the bounding-box centre (of the vertices used by faces) and scale the largest extent to
    ``size``. Unused vertices are dropped.

    Returns:
        vertices (M, 3) float64, faces (F, 3) int64.
    """
    used, inverse = np.unique(faces, return_inverse=True)
    v = vertices[used]
    lo, hi = v.min(axis=0), v.max(axis=0)
    v = (v - 0.5 * (lo + hi)) * (size / float((hi - lo).max()))
    return v, inverse.reshape(faces.shape).astype(np.int64)


def cluster_vertices(vertices: np.ndarray, faces: np.ndarray, cells: int, placement: str = "mean") -> Geometry:
    """Simplify a mesh by vertex clustering (Rossignac & Borrel 1993): vertices in the same cell of a grid with
    ``cells`` cells along the largest extent merge into one vertex; faces that collapse are dropped.

    Args:
        vertices: (M, 3). faces: (F, 3). cells: grid cells along the largest extent (>= 1).
        placement: where a cell's vertex goes: ``"mean"`` (the mean of its vertices) or ``"quadric"`` (the
            point of the cell closest, in the least-squares sense, to the planes of the faces around it:
            Lindstrom 2000, "Out-of-core simplification of large polygonal models"; flat and edge cells fall
            back towards the mean along the directions the planes leave free). Quadric placement keeps sharp
            edges and corners where they are and does not shrink the mesh: at 32 cells its depth images
            differ from the full mesh's about as little as mean placement's at 64 (docs/generator.md).

    Deterministic (no floating-point reductions whose order varies).

    Returns:
        vertices (M', 3) float64, faces (F', 3) int64 (duplicate faces removed).
    """
    if placement not in ("mean", "quadric"):
        raise ValueError(f"cluster_vertices: placement must be 'mean' or 'quadric', got {placement!r}")
    v = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    lo = v.min(axis=0)
    cells = max(int(cells), 1)
    cell = float((v.max(axis=0) - lo).max()) / cells
    keys = np.minimum(np.floor((v - lo) / cell).astype(np.int64), cells - 1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(first), 3))
    np.add.at(sums, inverse, v)
    counts = np.bincount(inverse, minlength=len(first)).astype(np.float64)
    positions = sums / counts[:, None]
    if placement == "quadric":
        positions = _quadric_positions(v, faces, inverse, positions, lo + keys[first] * cell, cell)
    f = inverse[faces]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = f[keep]
    # Two faces on the same three vertices (either winding) would be one surface twice.
    _, unique_rows = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    f = f[np.sort(unique_rows)]
    used, remap = np.unique(f, return_inverse=True)
    return positions[used], remap.reshape(f.shape).astype(np.int64)


def _quadric_positions(v, faces, cluster, mean, cell_lo, cell: float, rel: float = 1e-3) -> np.ndarray:
    """Per cluster, the point minimising the area-weighted squared distances to the planes of the faces that
    touch it (its quadric, sum of A n n^T), solved about the cluster mean with the quadric's eigenvalues below
    ``rel`` x its largest set to zero (a flat cell moves only along its normal, an edge cell only across the
    edge), then clamped to the cell."""
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    cross = np.cross(b - a, c - a)
    twice_area = np.sqrt((cross * cross).sum(axis=1))
    n = np.divide(cross, twice_area[:, None], out=np.zeros_like(cross), where=twice_area[:, None] > 0)
    w = 0.5 * twice_area
    d = -(n * a).sum(axis=1)
    face_a = (w[:, None, None] * n[:, :, None]) * n[:, None, :]
    face_b = (w * d)[:, None] * n
    k = len(mean)
    quad_a, quad_b = np.zeros((k, 3, 3)), np.zeros((k, 3))
    for corner in range(3):
        np.add.at(quad_a, cluster[faces[:, corner]], face_a)
        np.add.at(quad_b, cluster[faces[:, corner]], face_b)
    evals, evecs = np.linalg.eigh(quad_a)  # ascending; evecs[:, :, j] is eigenvector j
    keep = evals > rel * np.maximum(evals[:, -1:], 1e-300)
    inv = np.divide(1.0, evals, out=np.zeros_like(evals), where=keep)
    residual = -quad_b - np.einsum("nij,nj->ni", quad_a, mean)
    step = np.einsum("nij,nj->ni", evecs, np.einsum("nji,nj->ni", evecs, residual) * inv)
    return np.clip(mean + step, cell_lo, cell_lo + cell)


def _cached_unit_mesh(path, detail: int = 0, simplify: str = "cluster") -> tuple:
    """(vertices, faces, bounding radius) of the unit-size normalised mesh file (simplified to ``detail``
    cells when > 0, see :attr:`ObjectSpec.simplify`), through the LRU cache."""
    key = str(Path(path).resolve()) + (f"#{int(detail)}{simplify}" if detail else "")
    hit = _mesh_cache.get(key)
    if hit is not None:
        _mesh_cache.move_to_end(key)
        return hit
    if detail and simplify == "quadric":
        # clustered in the full mesh's unit frame and kept there: the size is the full mesh's extent
        full, full_faces, _ = _cached_unit_mesh(path)
        vertices, faces = cluster_vertices(full, full_faces, detail, placement="quadric")
        if len(faces) == 0:
            raise DataError(f"{path}: no faces left after simplification to {detail} cells")
    elif detail:
        full, full_faces, _ = _cached_unit_mesh(path)
        vertices, faces = normalize_geometry(*cluster_vertices(full, full_faces, detail), size=1.0)
    else:
        vertices, faces = normalize_geometry(*load_mesh(key), size=1.0)
    vertices.setflags(write=False)
    faces.setflags(write=False)
    hit = (vertices, faces, float(np.sqrt((vertices ** 2).sum(axis=1).max())))
    _mesh_cache[key] = hit
    while len(_mesh_cache) > MESH_CACHE_SIZE:
        _mesh_cache.popitem(last=False)
    return hit


def unit_mesh(path, detail: int = 0, simplify: str = "cluster") -> Geometry:
    """The mesh file at ``path`` normalised to unit largest extent (simplified to ``detail`` cells when > 0,
    see :attr:`ObjectSpec.detail` and :attr:`ObjectSpec.simplify`), from the per-process LRU cache.

    The arrays are read-only and shared: scale them into new arrays, never in place.
    """
    vertices, faces, _ = _cached_unit_mesh(path, detail, simplify)
    return vertices, faces


def clear_mesh_cache() -> None:
    """Forget every cached mesh file."""
    _mesh_cache.clear()


def mesh_radius(path, detail: int = 0, simplify: str = "cluster") -> float:
    """Bounding-sphere radius about the bbox centre of the unit-size normalised mesh at ``path``."""
    return _cached_unit_mesh(path, detail, simplify)[2]


def resting_height(obj: ObjectSpec) -> float:
    """Height in metres of the object's origin above its lowest point (canonical orientation): where its origin
    goes for it to rest on the floor z = 0. Analytic for primitives (the tessellated sphere sits up to ~1 %
    of its radius higher), exact for mesh files."""
    if obj.is_mesh_file:
        vertices, _ = unit_mesh(obj.path, obj.detail, obj.simplify)
        return float(-vertices[:, 2].min() * obj.size)
    kind, p = obj.shape, obj.params
    if kind == "box":
        return 0.5 * p[2]
    if kind in ("sphere", "torus"):
        return p[0] if kind == "sphere" else p[1]
    if kind in ("cylinder", "cone"):
        return 0.5 * p[1]
    if kind == "capsule":
        return 0.5 * p[1] + p[0]
    raise ValueError(f"unknown primitive kind {kind!r}")


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits, '-', '_' and '.' replaced by '_' (HDF5-safe, no '/')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "mesh"


def object_geometry(obj: ObjectSpec) -> Geometry:
    """Canonical geometry of an object (object frame, metres): a primitive or a scaled mesh file.

    Returns:
        vertices (M, 3) float64 (a new array), faces (F, 3) int64.
    """
    if obj.is_mesh_file:
        vertices, faces = unit_mesh(obj.path, obj.detail, obj.simplify)
        return vertices * obj.size, np.array(faces)
    return make_primitive(obj.shape, obj.params)


# ------------------------------------------------------------------------------------------ room

def room_geometry(size, ceiling: bool = False) -> Geometry:
    """The room: a floor at z = 0 and four walls (and a ceiling) as two triangles each, world frame.

    Args:
        size: (sx, sy, sz) interior extents, metres; x in [-sx/2, sx/2], y in [-sy/2, sy/2], z in [0, sz].
        ceiling: add the ceiling at z = sz.

    Returns:
        vertices (8, 3) float64 (the box corners), faces (10 or 12, 3) int64, wound to face inwards.
    """
    sx, sy, sz = (float(x) for x in size)
    x, y = 0.5 * sx, 0.5 * sy
    vertices = np.array([[-x, -y, 0], [x, -y, 0], [x, y, 0], [-x, y, 0],
                         [-x, -y, sz], [x, -y, sz], [x, y, sz], [-x, y, sz]], dtype=np.float64)
    quads = [(0, 1, 2, 3),  # floor, normal +z
             (0, 4, 5, 1),  # wall y = -y0, normal +y
             (1, 5, 6, 2),  # wall x = +x0, normal -x
             (2, 6, 7, 3),  # wall y = +y0, normal -y
             (3, 7, 4, 0)]  # wall x = -x0, normal +x
    if ceiling:
        quads.append((4, 7, 6, 5))  # normal -z
    faces = [f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))]
    return vertices, np.asarray(faces, dtype=np.int64)
