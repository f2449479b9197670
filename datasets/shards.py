"""The on-disk contract between the stages: HDF5 shards of PointSequences and the dataset manifest, and
read access to a built dataset (``ShardStore``: its index and per-process handles, for the torch Datasets).

Layout of one shard (``shard-00000.h5``)::

    /                     attrs: format="synthseq", format_version, synthseq_version, config (JSON)
    /sequences/<id>/      attrs: seed, fps, num_frames, num_views, object_names (JSON), name
      points        float32 (T, V, N, 3)  camera frame, metres   (chunked per frame, uncompressed)
      num_valid     int32   (T, V)
      labels        int16   (T, V, N)     object index, -1 = background/room       (optional)
      normals       float16 (T, V, N, 3)                                           (optional)
      depth         uint16  (T, V, H, W)  millimetres, 0 = invalid (gzip)          (optional)
      instance      int16   (T, V, H, W)  (gzip)                                   (optional)
      camera_poses  float64 (T, V, 4, 4)  world_from_camera                        (optional)
      object_poses  float64 (T, K, 4, 4)  world_from_object                        (optional)
      intrinsics    float64 (V, 3, 3); image_size int32 (V, 2) as (W, H); timestamps float64 (T,)
    /meshes/<name>/ vertices float64 (M, 3), faces int64 (F, 3): canonical geometry, object frame

Float point arrays do not compress (measured ratio <= 1.09), so they are stored chunked and uncompressed;
depth and instance images are compressed. Object modification times are not recorded, so the same
sequences give byte-identical shards (and checksums) on every build.

The dataset root holds ``manifest.json`` (config, per-shard sequence ids, byte sizes, sha256) and the
resolved ``config.yaml``. Shards and the manifest are written to ``*.tmp`` and renamed, so no partial
file is ever visible under its final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from synthseq.errors import DataError, FormatVersionError
from synthseq.geometry import invert_pose
from synthseq.types import BACKGROUND_LABEL, PointSequence

log = logging.getLogger(__name__)

FORMAT = "synthseq"
# 2: the N points of a (frame, view) are stored in random order (``types.sample_fixed`` no longer sorts its
#    indices); format_version 1 stored them in raster order, so "the first k points" were the top rows of
#    the image (issue 9). Version-1 shards and datasets are refused with a message saying to rebuild them:
#    reading them and shuffling on load would give a different cloud order than a rebuild, so the same
#    dataset would train differently depending on when it was built.
FORMAT_VERSION = 2
_OLDER_VERSIONS = {1: "its clouds are stored in raster order (top image rows first), which format_version 2 "
                      "fixed; rebuild it with `synthseq build`"}
MANIFEST = "manifest.json"

_ARRAYS = ("points", "num_valid", "labels", "normals", "depth", "instance", "camera_poses", "object_poses",
           "intrinsics", "image_size", "timestamps")
_REQUIRED = ("points", "num_valid", "intrinsics", "image_size", "timestamps")


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a core dependency
        raise ImportError("synthseq shards need h5py: pip install h5py") from e
    return h5py


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.h5``."""
    return f"shard-{index:05d}.h5"


def sequence_key(sequence_id: int) -> str:
    """Group name of sequence ``sequence_id`` inside /sequences: zero-padded so that names sort."""
    return f"{int(sequence_id):06d}"


class ShardWriter:
    """Writes PointSequences into one shard, atomically: ``path + '.tmp'`` then renamed on close.

    Usage::

        with ShardWriter(out / shard_name(0), config={"...": ...}) as w:
            w.write(sequence_key(i), seq)

    If the ``with`` block raises, the temporary file is removed and nothing appears under ``path``.
    """

    def __init__(self, path, config: dict | None = None, compression: str = "gzip", compression_level: int = 1):
        self.path = Path(path)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.config = config or {}
        self.compression = compression
        self.compression_opts = compression_level if compression == "gzip" else None
        self._file = None
        self._meshes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.sequence_ids: list[str] = []
        # key -> what a reader needs to index the sequence without opening the shard (``sequence_index_entry``);
        # the build copies it into the manifest, so opening a dataset reads no shard (issue 11).
        self.sequence_index: dict[str, dict] = {}

    def __enter__(self) -> "ShardWriter":
        from synthseq import __version__

        h5py = _h5py()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.tmp_path, "w", track_order=True)
        self._file.attrs["format"] = FORMAT
        self._file.attrs["format_version"] = FORMAT_VERSION
        self._file.attrs["synthseq_version"] = __version__
        self._file.attrs["config"] = json.dumps(self.config, sort_keys=True)
        self._file.create_group("sequences", track_order=True)
        self._file.create_group("meshes", track_order=True)
        return self

    def write(self, key: str, seq: PointSequence) -> None:
        """Write one sequence under /sequences/<key> and its meshes under /meshes (each name once)."""
        if self._file is None:
            raise RuntimeError("ShardWriter.write outside its `with` block")
        if key in self._file["sequences"]:
            raise ValueError(f"{self.path}: sequence {key!r} written twice")
        g = self._file["sequences"].create_group(key)
        g.attrs["seed"] = -1 if seq.seed is None else int(seq.seed)
        g.attrs["fps"] = float(seq.fps)
        g.attrs["num_frames"] = seq.num_frames
        g.attrs["num_views"] = seq.num_views
        g.attrs["object_names"] = json.dumps(list(seq.object_names))
        g.attrs["name"] = seq.name
        T, V, N, _ = seq.points.shape
        for name in _ARRAYS:
            arr = getattr(seq, name)
            if arr is None:
                continue
            kw = dict(track_times=False)
            if name in ("depth", "instance"):
                kw.update(chunks=(1, 1) + arr.shape[2:], compression=self.compression,
                          compression_opts=self.compression_opts, shuffle=True)
            elif name in ("points", "normals", "labels"):
                kw.update(chunks=(1,) + arr.shape[1:])
            g.create_dataset(name, data=arr, **kw)
        for mesh_name in seq.object_names:
            vertices, faces = seq.meshes[mesh_name]
            self._write_mesh(mesh_name, np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
        self.sequence_ids.append(key)
        self.sequence_index[key] = sequence_index_entry(seq)

    def _write_mesh(self, name: str, vertices: np.ndarray, faces: np.ndarray) -> None:
        if name in self._meshes:
            v0, f0 = self._meshes[name]
            if v0.shape != vertices.shape or f0.shape != faces.shape or not (
                    np.array_equal(v0, vertices) and np.array_equal(f0, faces)):
                raise ValueError(f"{self.path}: two different meshes named {name!r}")
            return
        self._meshes[name] = (vertices, faces)
        g = self._file["meshes"].create_group(name)
        g.create_dataset("vertices", data=vertices, track_times=False)
        g.create_dataset("faces", data=faces, track_times=False)

    def __exit__(self, exc_type, exc, tb) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
        if exc_type is not None:
            self.tmp_path.unlink(missing_ok=True)
            return
        _fsync(self.tmp_path)
        os.replace(self.tmp_path, self.path)


def sequence_index_entry(seq: PointSequence) -> dict:
    """The manifest's per-sequence index entry: ``{"T", "V", "N", "K", "name", "arrays"}`` (the optional
    arrays stored: labels, camera_poses, object_poses, ...). ``ShardStore`` builds its index from
    these when the manifest has them, without opening any shard."""
    T, V, N, _ = seq.points.shape
    arrays = [n for n in _ARRAYS if n not in _REQUIRED and getattr(seq, n) is not None]
    return {"T": int(T), "V": int(V), "N": int(N), "K": len(seq.object_names), "name": str(seq.name),
            "arrays": arrays}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardReader:
    """Reads one shard; checks ``format`` and ``format_version`` on open.

    Arrays are read lazily: ``reader.dataset(key, "points")[t, v]`` reads one (N, 3) slice.
    Use as a context manager, or call ``close()``.

    Raises:
        FileNotFoundError: no such file.
        DataError: not an HDF5 file, or not a synthseq shard.
        FormatVersionError: written with another format_version (the message names both).
    """

    def __init__(self, path):
        h5py = _h5py()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: shard not found")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise DataError(f"{self.path}: not a readable HDF5 file ({_short(e)})") from None
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            self._file.close()
            raise DataError(f"{self.path}: not a synthseq shard (format attribute {attrs.get('format')!r})")
        version = int(attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            self._file.close()
            raise FormatVersionError(
                f"{self.path}: shard format_version {version}, this synthseq reads format_version "
                f"{FORMAT_VERSION}{_why_old(version)}")
        self.config = json.loads(attrs.get("config", "{}"))
        self.synthseq_version = str(attrs.get("synthseq_version", ""))

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def sequence_ids(self) -> list[str]:
        return list(self._file["sequences"].keys())

    @property
    def mesh_names(self) -> list[str]:
        return list(self._file["meshes"].keys())

    def _group(self, key: str):
        try:
            return self._file["sequences"][key]
        except KeyError:
            avail = ", ".join(self.sequence_ids[:20])
            raise KeyError(f"{self.path}: no sequence {key!r} (available: {avail})") from None

    def dataset(self, key: str, name: str):
        """The h5py Dataset ``name`` of sequence ``key`` (lazy; slice it to read)."""
        return self._group(key)[name]

    def attrs(self, key: str) -> dict:
        """Sequence attributes: seed, fps, num_frames, num_views, object_names (list), name."""
        a = dict(self._group(key).attrs)
        a["object_names"] = json.loads(a.get("object_names", "[]"))
        return a

    def read_mesh(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(vertices (M, 3) float64, faces (F, 3) int64) of canonical mesh ``name``."""
        g = self._file["meshes"][name]
        return g["vertices"][()], g["faces"][()]

    def read(self, key: str, fields: Iterable[str] | None = None) -> PointSequence:
        """Read sequence ``key`` into a PointSequence (all arrays, or ``fields`` plus the required ones)."""
        g = self._group(key)
        wanted = set(_ARRAYS if fields is None else tuple(fields) + _REQUIRED)
        try:
            arrays = {n: g[n][()] for n in _ARRAYS if n in wanted and n in g}
            a = self.attrs(key)
            meshes = {n: self.read_mesh(n) for n in a["object_names"]}
            seed = int(a.get("seed", -1))
            return PointSequence(
                **arrays,
                object_names=tuple(a["object_names"]),
                meshes=meshes,
                seed=None if seed < 0 else seed,
                fps=float(a.get("fps", 30.0)),
                name=str(a.get("name", key)),
            )
        except (KeyError, ValueError, OSError) as e:
            raise DataError(f"{self.path}: sequence {key}: {_short(e)}") from None

    def __iter__(self) -> Iterator[tuple[str, PointSequence]]:
        for key in self.sequence_ids:
            yield key, self.read(key)


def _why_old(version) -> str:
    """The reason an older format_version is refused ("; ..."), or "" for an unknown one."""
    try:
        reason = _OLDER_VERSIONS.get(int(version))
    except (TypeError, ValueError):
        reason = None
    return f" ({reason})" if reason else ""


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else e.__class__.__name__


# --------------------------------------------------------------------------------------------- manifest

def sha256_file(path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk_bytes)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_json_atomic(path, data) -> None:
    """Write JSON to ``path.tmp``, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(root) -> dict:
    """Read ``root/manifest.json`` and check its format version.

    Raises:
        FileNotFoundError: no manifest (not a built dataset directory).
        DataError: not JSON, or missing keys.
        FormatVersionError: another format_version.
    """
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (is {root} a dataset built by `synthseq build`?)")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({_short(e)})") from None
    if not isinstance(m, dict) or "shards" not in m or m.get("format") != FORMAT:
        raise DataError(f"{path}: not a synthseq manifest (expected format={FORMAT!r} and a 'shards' list)")
    if int(m.get("format_version", -1)) != FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: dataset format_version {m.get('format_version')}, this synthseq reads "
            f"format_version {FORMAT_VERSION}{_why_old(m.get('format_version'))}")
    return m


def verify_shard_file(root, entry: dict, checksum: bool = True) -> str | None:
    """Check one manifest shard entry against the file on disk; returns a problem string or None.

    Args:
        checksum: also compare the file's sha256 (reads every byte); False checks existence and size only
            (one ``stat``: what opening a dataset for training or evaluation does, issue 11).
        root: a ``Path`` or a normalised path string (it is joined as is).
    """
    path = os.path.join(root, entry["file"])  # os.path, not pathlib: a dataset opening runs this per shard
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: missing"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: missing"
    if st.st_size != entry.get("bytes"):
        return f"{path}: size {st.st_size} bytes, manifest says {entry.get('bytes')}"
    if not checksum:
        return None
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        return f"{path}: sha256 mismatch (corrupt or modified)"
    return None


def verify_dataset(root, deep: bool = True) -> list[str]:
    """Check a dataset directory: manifest, every shard's size and sha256, and (``deep``) each shard's
    schema: format attributes, sequence ids as listed, required arrays with consistent shapes.

    Returns:
        A list of problems, each naming the file; empty when the dataset is sound.
    """
    root = Path(root)
    try:
        m = read_manifest(root)
    except (FileNotFoundError, DataError) as e:
        return [str(e)]
    problems = []
    for entry in m["shards"]:
        problem = verify_shard_file(root, entry)
        if problem:
            problems.append(problem)
            continue
        if deep:
            problems.extend(check_shard_schema(root / entry["file"], entry.get("sequence_ids"),
                                               entry.get("sequences")))
    return problems


def check_shard_schema(path, expected_ids: list[str] | None = None, index: dict | None = None) -> list[str]:
    """Schema check of one shard: readable, right format, expected sequences, arrays of consistent shape, and
    the manifest's per-sequence ``index`` (``sequence_index_entry``; what datasets open with) as stored."""
    problems = []
    try:
        with ShardReader(path) as r:
            ids = r.sequence_ids
            if expected_ids is not None and sorted(ids) != sorted(expected_ids):
                problems.append(f"{path}: holds sequences {ids}, manifest lists {expected_ids}")
            for key in ids:
                g = r._group(key)
                missing = [n for n in _REQUIRED if n not in g]
                if missing:
                    problems.append(f"{path}: sequence {key}: missing {', '.join(missing)}")
                    continue
                T, V, N, three = g["points"].shape
                expect = {"num_valid": (T, V), "labels": (T, V, N), "normals": (T, V, N, 3),
                          "camera_poses": (T, V, 4, 4), "intrinsics": (V, 3, 3), "image_size": (V, 2),
                          "timestamps": (T,)}
                for n, shape in expect.items():
                    if n in g and g[n].shape != shape:
                        problems.append(f"{path}: sequence {key}: {n} has shape {g[n].shape}, expected {shape}")
                for n in r.attrs(key)["object_names"]:
                    if n not in r._file["meshes"]:
                        problems.append(f"{path}: sequence {key}: mesh {n!r} missing under /meshes")
                listed = (index or {}).get(key)
                if listed is not None:
                    actual = {"T": T, "V": V, "N": N, "K": len(r.attrs(key)["object_names"]),
                              "arrays": [n for n in _ARRAYS if n not in _REQUIRED and n in g]}
                    wrong = {k: (listed.get(k), v) for k, v in actual.items() if listed.get(k) != v}
                    if wrong:
                        problems.append(f"{path}: sequence {key}: the manifest's index says "
                                        + ", ".join(f"{k}={a} (stored: {b})" for k, (a, b) in wrong.items()))
    except (FileNotFoundError, DataError, OSError) as e:
        problems.append(str(e) if str(path) in str(e) else f"{path}: {_short(e)}")
    return problems


def iter_dataset(root, verify: bool | str = "size") -> Iterator[tuple[Path, str]]:
    """Yield (shard path, sequence key) for every sequence listed in the manifest of ``root``.

    Args:
        verify: ``"size"`` (default): each shard must exist with the manifest's byte size (cheap);
            True or ``"sha256"``: also its sha256 (reads every byte, as ``synthseq verify``); False: nothing.

    Raises:
        DataError: a shard is missing or does not match the manifest (names the file).
    """
    root = Path(root)
    m = read_manifest(root)
    checksum = verify is True or verify == "sha256"
    for entry in m["shards"]:
        if verify:
            problem = verify_shard_file(root, entry, checksum=checksum)
            if problem:
                raise DataError(problem)
        for key in entry["sequence_ids"]:
            yield root / entry["file"], key


# --------------------------------------------------------------------------------------------- store

class ShardStore:
    """Read access to a built dataset directory for the torch Datasets (``synthseq.datasets.torch``): which
    sequences it holds, and their arrays through per-process HDF5 handles.

    Opening is cheap (issue 11): each shard's size is compared with the manifest (one ``stat``; the full
    sha256 is ``synthseq verify``'s job, or ``verify="sha256"``), and when the manifest carries the
    per-sequence index (``sequences``, written by ``synthseq build`` from ``sequence_index_entry``) no shard is
    opened at all; older manifests fall back to opening each shard once. A shard whose content does not match
    the manifest still fails on first read: ``ShardReader`` checks the format, h5py the structure.

    Shards are opened lazily in the process that reads, and the handles are dropped when the process id
    changes and when the store is pickled, so a DataLoader worker (``fork`` or ``spawn``) opens its own.

    Args:
        root: dataset directory with ``manifest.json``.
        verify: ``"size"`` (default), ``"sha256"`` (or True: also the checksum) or False (neither).

    Attributes:
        root: the dataset directory; files: shard paths; k_max: the largest K.
        seqs: per sequence a dict: file (index into ``files``), key, T, V, N, K, name, has_labels,
            has_camera_poses, has_object_poses.

    Raises:
        FileNotFoundError: no manifest.
        DataError / FormatVersionError: a shard does not match the manifest (names the file).
    """

    def __init__(self, root, verify: bool | str = "size"):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest.get("complete") is False:
            log.warning("%s: manifest marked incomplete (build still running or interrupted); using the %d "
                        "shards it lists", self.root / MANIFEST, len(manifest["shards"]))
        if verify not in (True, False, "size", "sha256"):
            raise ValueError(f"verify: expected 'size', 'sha256', True (= 'sha256') or False, got {verify!r}")
        root_text = str(self.root)  # plain os.path below: pathlib costs ~100 us per shard, os.stat ~5 us
        self.files: list[str] = []
        self.seqs: list[dict] = []
        for entry in manifest["shards"]:
            for k in ("file", "sequence_ids"):
                if k not in entry:
                    raise DataError(f"{self.root / MANIFEST}: shard entry without {k!r}: {entry}")
            if verify:
                problem = verify_shard_file(root_text, entry, checksum=verify is True or verify == "sha256")
                if problem:
                    raise DataError(f"{problem}; refusing to read it (rebuild or `synthseq verify`)")
            path = os.path.join(root_text, entry["file"])
            self.files.append(path)
            listed = entry.get("sequences")
            if isinstance(listed, dict) and all(key in listed for key in entry["sequence_ids"]):
                infos = [(key, listed[key]) for key in entry["sequence_ids"]]
            else:
                infos = _index_from_shard(path, entry["sequence_ids"])
            for key, info in infos:
                arrays = set(info.get("arrays", ()))
                self.seqs.append(dict(
                    file=len(self.files) - 1, key=key, T=int(info["T"]), V=int(info["V"]), N=int(info["N"]),
                    K=int(info["K"]), name=str(info.get("name") or key), has_labels="labels" in arrays,
                    has_camera_poses="camera_poses" in arrays, has_object_poses="object_poses" in arrays))
        if not self.seqs:
            raise DataError(f"{self.root / MANIFEST}: lists no sequences")
        self.k_max = max(s["K"] for s in self.seqs)
        self._open: dict | None = None

    def __getstate__(self):
        return dict(self.__dict__, _open=None)

    def _handles(self) -> dict:
        """This process's open readers, h5py Datasets and per-sequence arrays (a new process starts empty)."""
        if self._open is None or self._open["pid"] != os.getpid():
            self._open = {"pid": os.getpid(), "readers": {}, "arrays": {}, "small": {}}
        return self._open

    def array(self, seq_index: int, name: str):
        """The h5py Dataset ``name`` of sequence ``seq_index`` (lazy; slice it to read)."""
        h = self._handles()
        ds = h["arrays"].get((seq_index, name))
        if ds is None:
            seq = self.seqs[seq_index]
            reader = h["readers"].get(seq["file"])
            if reader is None:
                reader = h["readers"][seq["file"]] = ShardReader(self.files[seq["file"]])
            ds = h["arrays"][(seq_index, name)] = reader.dataset(seq["key"], name)
        return ds

    def read_cloud(self, seq_index: int, t: int, v: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored cloud of frame ``t``, view ``v``: points (N, 3) float32, labels (N,) int64 (all
        ``BACKGROUND_LABEL`` when the sequence stores none). Rows past ``num_valid`` repeat valid ones."""
        points = self.array(seq_index, "points")[t, v]
        if self.seqs[seq_index]["has_labels"]:
            labels = self.array(seq_index, "labels")[t, v].astype(np.int64)
        else:
            labels = np.full(len(points), BACKGROUND_LABEL, dtype=np.int64)
        return points, labels

    def sequence_arrays(self, seq_index: int) -> dict:
        """The small arrays of a sequence, read once per process, with the inverses every sample needs:
        num_valid (T, V); world_from_camera / camera_from_world (T, V, 4, 4) (absent without poses);
        world_from_object / object_from_world (T, K_max, 4, 4) padded with identity; object_valid (K_max,)."""
        h = self._handles()
        out = h["small"].get(seq_index)
        if out is None:
            seq = self.seqs[seq_index]
            out = {"num_valid": self.array(seq_index, "num_valid")[()]}
            if seq["has_camera_poses"]:
                out["world_from_camera"] = self.array(seq_index, "camera_poses")[()]
                out["camera_from_world"] = invert_pose(out["world_from_camera"])
            w_from_o = np.tile(np.eye(4), (seq["T"], self.k_max, 1, 1))
            valid = np.zeros(self.k_max, dtype=bool)
            if seq["has_object_poses"]:
                poses = self.array(seq_index, "object_poses")[()]
                w_from_o[:, :poses.shape[1]] = poses
                valid[:poses.shape[1]] = True
            out.update(world_from_object=w_from_o, object_from_world=invert_pose(w_from_o), object_valid=valid)
            h["small"][seq_index] = out
        return out

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next read)."""
        if self._open is not None and self._open["pid"] == os.getpid():
            for reader in self._open["readers"].values():
                try:
                    reader.close()
                except Exception:  # noqa: BLE001 - closing during interpreter shutdown
                    pass
        self._open = None


def _index_from_shard(path: str, keys: list[str]) -> list[tuple[str, dict]]:
    """``sequence_index_entry``-like entries of ``keys`` read from the shard (manifests without the index)."""
    out = []
    with ShardReader(path) as reader:
        present = set(reader.sequence_ids)
        for key in keys:
            if key not in present:
                raise DataError(f"{path}: manifest lists sequence {key!r}, the shard does not hold it")
            g = reader._group(key)
            T, V, N, _ = g["points"].shape
            out.append((key, dict(T=T, V=V, N=N, K=len(reader.attrs(key)["object_names"]),
                                  name=str(g.attrs.get("name", key)), arrays=[n for n in _ARRAYS if n in g])))
    return out
