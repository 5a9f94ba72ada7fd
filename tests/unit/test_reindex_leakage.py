"""Item-id schemes (consistent, bijective, seeded), the id-leak measure, leakage guards and stats."""

from __future__ import annotations

import numpy as np
import pytest

from peapod.data import (
    Dataset,
    ExplanationRecord,
    NegativeSampler,
    dataset_stats,
    drop_heldout_explanations,
    heldout_pairs,
    p5_negative_samples,
    reindex_items,
    successor_leak_rate,
)
from peapod.data.reindex import item_id_mapping
from peapod.data.stats import format_stats
from peapod.errors import ConfigError


def p5_numbered(n_users: int = 80, n_items: int = 400, seed: int = 0) -> Dataset:
    """Random purchase lists numbered as P5 does (items by first appearance while walking users)."""
    rng = np.random.default_rng(seed)
    raw = [rng.choice(n_items, int(rng.integers(4, 10)), replace=False).tolist() for _ in range(n_users)]
    ids: dict[int, str] = {}
    seqs = {str(u + 1): [ids.setdefault(i, str(len(ids) + 1)) for i in row] for u, row in enumerate(raw)}
    items = [str(i) for i in range(1, len(ids) + 1)]
    ds = Dataset("p5like", seqs, items, item_raw={i: f"ASIN{i}" for i in items})
    ds.negatives = p5_negative_samples(seqs, n=20)
    users = list(seqs)
    ds.explanations = {
        "train": [ExplanationRecord(u, seqs[u][k], f"text {u} {k}", "f", f"ASIN{seqs[u][k]}")
                  for u in users for k in (0, -1)],
        "val": [ExplanationRecord(users[0], seqs[users[0]][1], "v")],
        "test": [ExplanationRecord(users[1], seqs[users[1]][-2], "t")],
    }
    return ds


@pytest.mark.parametrize("scheme", ["random", "first-train"])
def test_reindex_is_a_consistent_bijection(scheme):
    ds = p5_numbered()
    new = reindex_items(ds, scheme, seed=11)
    assert (new.item_id_scheme, new.scheme_seed) == (scheme, 11)
    assert new.items == [str(i) for i in range(1, ds.n_items + 1)]
    back = new.item_original
    assert sorted(back.values(), key=int) == ds.items  # bijective onto the original ids
    fwd = {o: n for n, o in back.items()}
    assert new.sequences == {u: [fwd[i] for i in s] for u, s in ds.sequences.items()}
    assert new.negatives == {u: [fwd[i] for i in s] for u, s in ds.negatives.items()}
    for split in ("train", "val", "test"):
        assert [(r.user, back[r.item], r.explanation) for r in new.explanations[split]] == [
            (r.user, r.item, r.explanation) for r in ds.explanations[split]
        ]
    assert all(new.item_raw[r.item] == r.item_raw for r in new.explanations["train"])  # ASIN follows the item
    for u, negs in new.negatives.items():
        assert not set(negs) & set(new.sequences[u])
    assert new.n_interactions == ds.n_interactions and new.fingerprint != ds.fingerprint
    assert new.sequences != ds.sequences
    # seeded: same seed same ids, another seed other ids
    assert reindex_items(ds, scheme, seed=11).sequences == new.sequences
    # back to the original ids, and re-indexing a re-indexed dataset starts from the original ids
    orig = reindex_items(new, "original")
    assert orig.sequences == ds.sequences and orig.negatives == ds.negatives and orig.fingerprint == ds.fingerprint
    assert reindex_items(reindex_items(ds, "random", 3), scheme, 11).sequences == new.sequences
    # the sampler still excludes every positive under the new ids
    sampler = NegativeSampler(new)
    out = sampler.sample(np.arange(new.n_users), 15, np.random.default_rng(0))
    for row, u in zip(out, new.users):
        assert not {new.items[k] for k in row} & set(new.sequences[u])


def test_random_scheme_depends_on_the_seed_and_original_is_identity():
    ds = p5_numbered()
    assert reindex_items(ds, "random", 1).sequences != reindex_items(ds, "random", 2).sequences
    same = reindex_items(ds, "original")
    assert same.sequences == ds.sequences and same.item_id_scheme == "original"
    assert item_id_mapping(ds, "original") == {i: i for i in ds.items}
    with pytest.raises(ConfigError, match="unknown item-id scheme"):
        reindex_items(ds, "alphabetical")


def test_first_train_numbers_training_items_by_first_appearance():
    seqs = {"1": ["5", "6", "7", "1", "2"], "2": ["6", "3", "8", "4"], "3": ["9", "5", "10", "11"]}
    ds = Dataset("ft", seqs, [str(i) for i in range(1, 13)])
    m = item_id_mapping(ds, "first-train", seed=0)
    # training parts in file order: 5 6 7 | 6 3 | 9 5  ->  5:1 6:2 7:3 3:4 9:5
    assert [m[i] for i in ["5", "6", "7", "3", "9"]] == ["1", "2", "3", "4", "5"]
    unseen = ["1", "2", "4", "8", "10", "11", "12"]  # valid/test-only and never-bought items
    assert sorted(int(m[i]) for i in unseen) == list(range(6, 13))
    other = item_id_mapping(ds, "first-train", seed=1)
    assert [other[i] for i in ["5", "6", "7", "3", "9"]] == ["1", "2", "3", "4", "5"]
    assert [m[i] for i in unseen] != [other[i] for i in unseen]  # the tail order is seeded


def test_successor_leak_rate_by_hand_and_across_schemes():
    seqs = {
        "1": ["1", "2", "3", "4"],  # test 4 = max(1,2,3)+1; valid 3 = max(1,2)+1
        "2": ["7", "5", "9", "6"],  # test 6 != 10; valid 9 != 8
        "3": ["2", "8", "1", "9"],  # test 9 = 8+1; valid 1 != 9
        "4": ["3", "1", "5", "2"],  # no
    }
    ds = Dataset("leak", seqs, [str(i) for i in range(1, 10)])
    assert successor_leak_rate(ds, "test") == 0.5
    assert successor_leak_rate(ds, "valid") == 0.25
    with pytest.raises(ValueError):
        successor_leak_rate(ds, "train")
    p5 = p5_numbered(n_users=200, n_items=3000)
    assert successor_leak_rate(p5) > 0.5  # almost every test item is new and gets max + 1
    assert successor_leak_rate(reindex_items(p5, "random", 0)) < 0.05
    assert successor_leak_rate(reindex_items(p5, "first-train", 0)) < 0.05


# ------------------------------------------------------------------------------------ leakage guards
def test_heldout_explanations_are_dropped_and_counted():
    ds = p5_numbered(n_users=10)
    pairs = heldout_pairs(ds)
    assert pairs == {(u, s[-1]) for u, s in ds.sequences.items()} | {(u, s[-2]) for u, s in ds.sequences.items()}
    clean, dropped = drop_heldout_explanations(ds)
    assert dropped == 10  # every user's record on its test item (k = -1)
    assert [r.item for r in clean.explanations["train"]] == [s[0] for s in ds.sequences.values()]
    assert clean.explanations["val"] == ds.explanations["val"] and clean.explanations["test"] == ds.explanations["test"]
    assert clean.notes["explanation_train_heldout_dropped"] == 10
    assert len(ds.explanations["train"]) == 20 and "explanation_train_heldout_dropped" not in ds.notes
    again, n = drop_heldout_explanations(clean)
    assert n == 0 and again.notes["explanation_train_heldout_dropped"] == 10


# ------------------------------------------------------------------------------------ stats
def test_dataset_stats():
    ds = p5_numbered(n_users=10)
    stats = dataset_stats(ds)
    lengths = [len(s) for s in ds.sequences.values()]
    assert (stats["users"], stats["items"], stats["interactions"]) == (10, ds.n_items, sum(lengths))
    assert stats["density_percent"] == pytest.approx(sum(lengths) / (10 * ds.n_items) * 100)
    assert stats["sequence_length"] == {"min": min(lengths), "mean": np.mean(lengths), "max": max(lengths)}
    assert stats["explanations"] == {"train": 20, "val": 1, "test": 1}
    assert stats["explanation_train_on_heldout_item"] == 10
    assert stats["negatives_per_user"] == [20]
    assert stats["item_id_scheme"] == "original" and stats["fingerprint"] == ds.fingerprint
    assert stats["successor_leak"]["test"] == successor_leak_rate(ds, "test")
    table = format_stats(stats)
    assert "sparsity (%) [paper's label; = density]" in table and "id leak: test item" in table
    renum = dataset_stats(reindex_items(ds, "random", 5))
    assert renum["item_id_scheme"] == "random" and renum["scheme_seed"] == 5
    assert renum["fingerprint"] != stats["fingerprint"]
