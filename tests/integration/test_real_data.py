"""The data core on the real P5 files in ../shared/data (skipped when absent).

Beauty's and Sports' negatives checks take ~25 s more: they run with PEAPOD_SLOW_TESTS=1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pytest

from peapod.data import (
    drop_heldout_explanations,
    load_dataset,
    p5_negative_samples,
    reindex_items,
    successor_leak_rate,
    validation_candidates,
)
from peapod.data.formats import read_sequences
from peapod.data.negatives import format_negatives
from peapod.data.stats import dataset_stats

pytestmark = pytest.mark.integration

TABLE_1 = {  # users, items, interactions, "sparsity (%)" as printed in the paper
    "beauty": (22_363, 12_101, 198_502, "0.0734"),
    "sports": (35_598, 18_357, 296_337, "0.0453"),
    "toys": (19_412, 11_924, 167_597, "0.0724"),
}
NEGATIVES_SHA256 = {
    "toys": "a349a543365f0b4b8b8c95ab7123bd7cf470ea42c2952a16ae358ac5fb398d7a",
    "beauty": "b9a0fb7d1e3b2f4928aaa71f4965dc15b808730b8b38cca4665bed7e03b0b6b6",
    "sports": "5735dc83cac1e632ee21c3d0a8a830f1facd10caf7769611286e5b19692d277d",
}
slow = pytest.mark.skipif(not os.environ.get("PEAPOD_SLOW_TESTS"), reason="slow: set PEAPOD_SLOW_TESTS=1")


@pytest.fixture(scope="module")
def toys(shared_data):
    return load_dataset(shared_data / "toys", drop_explanation_leaks=False)


@pytest.mark.parametrize("name", ["beauty", "sports"])
def test_table_1_counts(shared_data, name):
    ds = load_dataset(shared_data / name)  # checks every negative against the sequences too
    _check_table_1(ds, name)
    assert ds.user_raw is not None and len(ds.item_raw) == ds.n_items
    assert all(len(n) == 99 for n in ds.negatives.values())


def test_table_1_counts_toys(toys):
    _check_table_1(toys, "toys")


def _check_table_1(ds, name):
    users, items, inter, density = TABLE_1[name]
    stats = dataset_stats(ds)
    assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, inter)
    assert f"{stats['density_percent']:.4f}" == density
    assert stats["sequence_length"]["min"] >= 5
    assert ds.items == [str(i) for i in range(1, items + 1)]


def test_toys_negatives_are_byte_identical(shared_data):
    seqs = read_sequences(shared_data / "toys" / "sequential_data.txt")
    text = format_negatives(p5_negative_samples(seqs, n=99, seed=2022)).encode()
    assert hashlib.sha256(text).hexdigest() == NEGATIVES_SHA256["toys"]


@slow
@pytest.mark.slow
@pytest.mark.parametrize("name", ["beauty", "sports"])
def test_beauty_and_sports_negatives_are_byte_identical(shared_data, name):
    seqs = read_sequences(shared_data / name / "sequential_data.txt")
    text = format_negatives(p5_negative_samples(seqs, n=99, seed=2022)).encode()
    assert hashlib.sha256(text).hexdigest() == NEGATIVES_SHA256[name]


def test_toys_explanation_leak(toys, shared_data):
    assert len(toys.explanations["train"]) == 37_559
    assert (len(toys.explanations["val"]), len(toys.explanations["test"])) == (10_230, 10_328)
    assert toys.notes["explanation_train_heldout_found"] == 9_299
    clean, dropped = drop_heldout_explanations(toys)
    assert dropped == 9_299 and len(clean.explanations["train"]) == 37_559 - 9_299
    assert clean.notes["explanation_train_heldout_dropped"] == 9_299
    assert toys.item_raw[toys.explanations["train"][0].item] == toys.explanations["train"][0].item_raw


def test_toys_item_id_schemes_remove_the_successor_leak(toys):
    original = successor_leak_rate(toys)
    assert original > 0.05  # P5's numbering: the test item is often the largest id seen + 1
    light = dataclasses.replace(toys, negatives=None)  # the negatives' mapping is covered by unit tests
    for scheme in ("random", "first-train"):
        new = reindex_items(light, scheme, seed=2022)
        assert successor_leak_rate(new) < original / 10
        assert new.n_interactions == toys.n_interactions and new.n_items == toys.n_items
        u = toys.users[123]
        assert [new.item_original[i] for i in new.sequences[u]] == toys.sequences[u]


def test_toys_validation_candidates(toys):
    cands = validation_candidates(toys, seed=2022)
    rng = np.random.default_rng(0)
    for u in rng.choice(toys.users, 300, replace=False).tolist():
        row = cands[u]
        assert row[0] == toys.valid_target(u) and len(set(row)) == 100
        assert not set(row[1:]) & set(toys.sequences[u])
