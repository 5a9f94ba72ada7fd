"""Multi-task training: templates, task samplers, collation, the accelerate trainer, checkpoints, run folders.

Importing this package is cheap; the trainer (torch, accelerate) loads on first use of its names.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .samplers import (
    MultiTaskSampler,
    TaskSchedule,
    TextBatch,
    build_train_samplers,
    build_validation,
    steps_per_epoch,
)
from .templates import BARE_TEMPLATE, EXP_TEMPLATES, ITEM_SEP, SEQ_TEMPLATES, TEMPLATES, TOPN_TEMPLATES

_LAZY = {
    "train": "trainer",
    "TrainResult": "trainer",
    "validate": "trainer",
    "Collator": "collate",
    "load_run": "run",
    "Run": "run",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
}

__all__ = [
    "BARE_TEMPLATE", "EXP_TEMPLATES", "ITEM_SEP", "SEQ_TEMPLATES", "TEMPLATES", "TOPN_TEMPLATES",
    "MultiTaskSampler", "TaskSchedule", "TextBatch", "build_train_samplers", "build_validation",
    "steps_per_epoch", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
