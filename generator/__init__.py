"""Synthetic scene generation: assets, trajectories, cameras, scene specs, renderers, sensor noise, sequences.

Import-light on purpose: nothing here imports torch, ray, open3d or pyrender at import time.
"""
