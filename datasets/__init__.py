"""The on-disk contract: core types, HDF5 shards, trajectories, real-capture readers and (lazily) torch Datasets.

``import synthseq.datasets`` imports numpy only: the torch Datasets live in ``synthseq.datasets.torch``
(import it explicitly) and Open3D is imported only when a PLY/PCD point cloud is read.
"""

from synthseq.datasets.real import load_capture

__all__ = ["load_capture"]
