"""Shard writer/reader round trips, atomic writes, format-version and checksum checks."""

import json

import h5py
import numpy as np
import pytest

from synthseq.datasets.shards import (FORMAT_VERSION, ShardReader, ShardWriter, check_shard_schema,
                                      read_manifest, sha256_file, verify_dataset, write_json_atomic)
from synthseq.errors import DataError, FormatVersionError
from synthseq.types import PointSequence


def make_sequence(rng, T=3, V=2, N=64, K=2, H=12, W=16, seed=7):
    box_v = rng.random((8, 3))
    meshes = {f"obj{k}": (box_v + k, np.array([[0, 1, 2], [2, 3, 4]], np.int64)) for k in range(K)}
    return PointSequence(
        points=rng.standard_normal((T, V, N, 3)).astype(np.float32),
        num_valid=rng.integers(0, N, (T, V)).astype(np.int32),
        intrinsics=np.tile(np.array([[50.0, 0, 8], [0, 50, 6], [0, 0, 1]]), (V, 1, 1)),
        image_size=np.tile(np.array([W, H], np.int32), (V, 1)),
        timestamps=np.arange(T) / 30.0,
        camera_poses=np.tile(np.eye(4), (T, V, 1, 1)),
        labels=rng.integers(-1, K, (T, V, N)).astype(np.int16),
        object_poses=np.tile(np.eye(4), (T, K, 1, 1)),
        normals=rng.standard_normal((T, V, N, 3)).astype(np.float16),
        depth=rng.integers(0, 5000, (T, V, H, W)).astype(np.uint16),
        instance=rng.integers(-1, K, (T, V, H, W)).astype(np.int16),
        object_names=tuple(meshes), meshes=meshes, seed=seed, fps=30.0, name="test")


def test_round_trip_exact(tmp_path):
    seq = make_sequence(np.random.default_rng(0))
    path = tmp_path / "shard-00000.h5"
    with ShardWriter(path, config={"a": 1}) as w:
        w.write("000000", seq)
        w.write("000001", seq.replace(seed=8))
    with ShardReader(path) as r:
        assert r.sequence_ids == ["000000", "000001"]
        assert r.config == {"a": 1}
        back = r.read("000000")
        assert r.read("000001").seed == 8
    for name in ("points", "num_valid", "labels", "normals", "depth", "instance", "camera_poses",
                 "object_poses", "intrinsics", "image_size", "timestamps"):
        a, b = getattr(seq, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert back.object_names == seq.object_names and back.seed == 7 and back.fps == 30.0
    for n in seq.object_names:
        assert np.array_equal(back.meshes[n][0], seq.meshes[n][0])


def test_same_content_gives_identical_bytes(tmp_path):
    seq = make_sequence(np.random.default_rng(1))
    for name in ("a.h5", "b.h5"):
        with ShardWriter(tmp_path / name) as w:
            w.write("000000", seq)
    assert sha256_file(tmp_path / "a.h5") == sha256_file(tmp_path / "b.h5")


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "shard-00000.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path) as w:
            w.write("000000", make_sequence(np.random.default_rng(2)))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_depth_compresses_points_stored_plain(tmp_path):
    seq = make_sequence(np.random.default_rng(3), H=48, W=64)
    seq = seq.replace(depth=np.full(seq.depth.shape, 1234, np.uint16))
    with ShardWriter(tmp_path / "s.h5") as w:
        w.write("000000", seq)
    with h5py.File(tmp_path / "s.h5") as f:
        g = f["sequences/000000"]
        assert g["depth"].compression == "gzip" and g["points"].compression is None
        assert g["points"].chunks == (1,) + seq.points.shape[1:]
        assert g["depth"].id.get_storage_size() < g["depth"].size * 2 / 10


def test_other_format_version_names_both(tmp_path):
    path = tmp_path / "s.h5"
    with ShardWriter(path) as w:
        w.write("000000", make_sequence(np.random.default_rng(4)))
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(FormatVersionError, match=rf"format_version {FORMAT_VERSION + 1}.*format_version {FORMAT_VERSION}"):
        ShardReader(path)


def test_not_hdf5_and_missing(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataError, match="bad.h5: not a readable HDF5 file"):
        ShardReader(bad)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        ShardReader(tmp_path / "nope.h5")


def test_unknown_sequence_lists_available(tmp_path):
    with ShardWriter(tmp_path / "s.h5") as w:
        w.write("000003", make_sequence(np.random.default_rng(5)))
    with ShardReader(tmp_path / "s.h5") as r, pytest.raises(KeyError, match="available: 000003"):
        r.read("000009")


def _dataset(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    with ShardWriter(root / "shard-00000.h5") as w:
        w.write("000000", make_sequence(np.random.default_rng(6)))
    f = root / "shard-00000.h5"
    write_json_atomic(root / "manifest.json", {
        "format": "synthseq", "format_version": FORMAT_VERSION, "complete": True,
        "shards": [{"file": f.name, "sequence_ids": ["000000"], "bytes": f.stat().st_size,
                    "sha256": sha256_file(f)}]})
    return root


def test_verify_dataset_detects_corruption(tmp_path):
    root = _dataset(tmp_path)
    assert verify_dataset(root) == []
    f = root / "shard-00000.h5"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    problems = verify_dataset(root)
    assert len(problems) == 1 and "shard-00000.h5: sha256 mismatch" in problems[0]
    f.unlink()
    assert "shard-00000.h5: missing" in verify_dataset(root)[0]


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "synthseq", "format_version": 99, "shards": []}))
    with pytest.raises(FormatVersionError, match="format_version 99"):
        read_manifest(tmp_path)


def test_schema_check_finds_missing_array(tmp_path):
    root = _dataset(tmp_path)
    f = root / "shard-00000.h5"
    with h5py.File(f, "r+") as h:
        del h["sequences/000000/num_valid"]
    assert "missing num_valid" in check_shard_schema(f)[0]


def test_manifest_index_is_checked_by_verify(tmp_path):
    """The per-sequence index datasets open with (no shard read) is what the shard stores; verify checks it."""
    import json

    root = tmp_path / "ds"
    root.mkdir()
    seq = make_sequence(np.random.default_rng(7))
    with ShardWriter(root / "shard-00000.h5") as w:
        w.write("000000", seq)
    assert w.sequence_index == {"000000": {"T": seq.num_frames, "V": seq.num_views, "N": seq.num_points,
                                           "K": seq.num_objects, "name": seq.name,
                                           "arrays": [n for n in ("labels", "normals", "depth", "instance",
                                                                  "camera_poses", "object_poses")
                                                      if getattr(seq, n) is not None]}}
    f = root / "shard-00000.h5"
    manifest = {"format": "synthseq", "format_version": FORMAT_VERSION, "complete": True,
                "shards": [{"file": f.name, "sequence_ids": ["000000"], "sequences": w.sequence_index,
                            "bytes": f.stat().st_size, "sha256": sha256_file(f)}]}
    write_json_atomic(root / "manifest.json", manifest)
    assert verify_dataset(root) == []
    manifest["shards"][0]["sequences"]["000000"]["N"] += 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_dataset(root)
    assert len(problems) == 1 and f"the manifest's index says N={seq.num_points + 1} (stored: {seq.num_points})" in problems[0]


def test_store_reads_clouds_and_pickles_without_handles(tmp_path):
    import pickle

    from synthseq.datasets.shards import ShardStore

    seq = make_sequence(np.random.default_rng(3))
    root = tmp_path / "data"
    root.mkdir()
    with ShardWriter(root / "shard-00000.h5") as w:
        w.write("000000", seq)
        w.write("000001", seq.replace(labels=None))
    f = root / "shard-00000.h5"
    write_json_atomic(root / "manifest.json", {"format": "synthseq", "format_version": FORMAT_VERSION, "shards": [
        {"file": f.name, "sequence_ids": ["000000", "000001"], "bytes": f.stat().st_size}]})
    store = ShardStore(root)
    assert [s["key"] for s in store.seqs] == ["000000", "000001"] and store.k_max == 2
    points, labels = store.read_cloud(0, 2, 1)
    np.testing.assert_array_equal(points, seq.points[2, 1])
    assert labels.dtype == np.int64 and np.array_equal(labels, seq.labels[2, 1])
    assert np.all(store.read_cloud(1, 0, 0)[1] == -1)  # no labels stored: background
    np.testing.assert_array_equal(store.sequence_arrays(0)["world_from_camera"], seq.camera_poses)
    blob = pickle.dumps(store)
    assert b"h5py" not in blob
    np.testing.assert_array_equal(pickle.loads(blob).read_cloud(0, 2, 1)[0], points)
    store.close()
