"""Configs of the train and evaluate stages (PLACEHOLDER: the trainer work replaces this)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    epochs: int = 1


@dataclass
class EvaluateConfig:
    gaps: list = None
