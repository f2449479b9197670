"""Config of the generate stage (PLACEHOLDER: the generator work replaces this with the full schema)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerateConfig:
    num_frames: int = 8
