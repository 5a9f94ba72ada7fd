"""Datasets in the P5 layout: readers, splits, negatives, item-id schemes, leakage guards, statistics."""

from .dataset import EXPLANATION_SPLITS, Dataset, ExplanationRecord
from .leakage import drop_heldout_explanations, heldout_pairs
from .loader import load_dataset
from .negatives import NegativeSampler, p5_negative_samples, test_candidates, validation_candidates
from .reindex import ITEM_ID_SCHEMES, reindex_items, successor_leak_rate
from .stats import dataset_stats

__all__ = [
    "EXPLANATION_SPLITS",
    "ITEM_ID_SCHEMES",
    "Dataset",
    "ExplanationRecord",
    "NegativeSampler",
    "dataset_stats",
    "drop_heldout_explanations",
    "heldout_pairs",
    "load_dataset",
    "p5_negative_samples",
    "reindex_items",
    "successor_leak_rate",
    "test_candidates",
    "validation_candidates",
]
