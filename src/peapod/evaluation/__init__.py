"""Evaluation: ranking and text metrics (clean and reference-compatible) and decoding helpers.

``metrics`` holds pure functions over plain data; ``decoding`` turns a T5 backbone plus encoder
states into constrained beams or exact candidate scores, and beams into rankings. Names are
re-exported lazily, so importing a light submodule (e.g. ``peapod.evaluation.results``) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "decoding": (
        "ItemTrie",
        "beams_to_ranking",
        "make_prefix_allowed_tokens_fn",
        "pad_candidates",
        "pad_sequences",
        "parse_item_clean",
        "parse_item_reference",
        "rank_candidates",
        "score_candidates",
        "split_generated",
    ),
    "metrics": (
        "array_ranking_metrics",
        "array_target_ranks",
        "bleu",
        "deduplicate",
        "hit_rate",
        "lcs_length",
        "ndcg",
        "ranking_metrics",
        "reference_bleu",
        "reference_hit_rate",
        "reference_ndcg",
        "reference_rouge",
        "rouge",
        "target_ranks",
        "text_metrics",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
