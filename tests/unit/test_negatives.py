"""P5's fixed negatives (exact procedure), the vectorised sampler, and the candidate lists."""

from __future__ import annotations

import numpy as np
import pytest

from peapod.data import Dataset, NegativeSampler, p5_negative_samples, test_candidates, validation_candidates
from peapod.data.formats import read_negatives
from peapod.data.negatives import format_negatives, write_negatives
from peapod.errors import PeapodError


def p5_notebook(lines: list[str], test_num: int = 99) -> str:
    """P5's sample_test_data (random), verbatim in logic, on the global numpy state."""
    user_items, item_count = {}, {}
    for line in lines:
        user, items = line.strip().split(" ", 1)
        items = [int(item) for item in items.split(" ")]
        user_items[user] = items
        for item in items:
            item_count[item] = item_count.get(item, 0) + 1
    all_item = list(item_count.keys())
    out = []
    for user, user_seq in user_items.items():
        test_samples = []
        while len(test_samples) < test_num:
            sample_ids = np.random.choice(all_item, test_num, replace=False).tolist()  # same values, faster
            sample_ids = [str(item) for item in sample_ids if item not in user_seq and item not in test_samples]
            test_samples.extend(sample_ids)
        out.append(user + " " + " ".join(test_samples[:test_num]) + "\n")
    return "".join(out)


def random_sequences(n_users: int, n_items: int, seed: int, max_len: int = 12) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_items) + 1  # first appearance not in id order
    seqs = {}
    for u in range(1, n_users + 1):
        k = int(rng.integers(3, max_len + 1))
        seqs[str(u)] = [str(perm[j]) for j in rng.choice(n_items, k, replace=False)]
    return seqs


def make_dataset(n_users: int = 40, n_items: int = 60, seed: int = 0, max_len: int = 12) -> Dataset:
    seqs = random_sequences(n_users, n_items, seed, max_len)
    return Dataset("toy", seqs, [str(i) for i in range(1, n_items + 1)])


# ------------------------------------------------------------------------------------ P5 file
@pytest.mark.parametrize("n", [99, 20])
def test_p5_negatives_match_the_notebook_on_the_global_state(n):
    seqs = random_sequences(30, 140, seed=3, max_len=40)  # long sequences force second rounds
    lines = [f"{u} {' '.join(s)}" for u, s in seqs.items()]
    saved = np.random.get_state()
    try:
        np.random.seed(2022)
        expected = p5_notebook(lines, n)
    finally:
        np.random.set_state(saved)
    before = np.random.get_state()[1].copy()
    got = p5_negative_samples(seqs, n=n, seed=2022)
    assert format_negatives(got) == expected
    if n == 99:  # second rounds happened, and P5's repeats across rounds are kept
        assert any(len(set(row)) < n for row in got.values())
    assert np.array_equal(np.random.get_state()[1], before)  # the global state is untouched
    assert p5_negative_samples(seqs, n=n, seed=2023) != got


def test_p5_negatives_properties_and_write(tmp_path):
    seqs = random_sequences(30, 150, seed=1)
    negs = p5_negative_samples(seqs)
    assert list(negs) == list(seqs)
    for u, row in negs.items():
        assert len(row) == 99 and not set(row) & set(seqs[u])
    path = tmp_path / "out" / "negative_samples.txt"
    write_negatives(path, negs)
    assert path.read_text() == format_negatives(negs)
    assert path.read_text().splitlines()[0] == "1 " + " ".join(negs["1"])
    assert read_negatives(path, sequences=seqs, items={str(i) for i in range(1, 151)}) == negs
    assert [p.name for p in path.parent.iterdir()] == ["negative_samples.txt"]


def test_p5_negatives_refuse_impossible_requests():
    seqs = {"1": ["1", "2", "3"], "2": ["3", "4", "5", "6"]}
    with pytest.raises(PeapodError, match="only 6 distinct items"):
        p5_negative_samples(seqs, n=10)
    with pytest.raises(PeapodError, match="user 2: fewer than 3 items outside"):
        p5_negative_samples(seqs, n=3)


# ------------------------------------------------------------------------------------ sampler
def test_sampler_draws_distinct_non_positive_items():
    ds = make_dataset()
    sampler = NegativeSampler(ds)
    rows = np.array([0, 5, 5, 39, 12])
    out = sampler.sample(rows, 30, np.random.default_rng(1))
    assert out.shape == (5, 30) and out.dtype == np.int64
    assert out.min() >= 0 and out.max() < ds.n_items
    for r, u in zip(out, rows):
        user = ds.users[u]
        assert len(set(r.tolist())) == 30
        positives = {ds.item_index[i] for i in ds.sequences[user]}  # includes valid and test targets
        assert not positives & set(r.tolist())
    assert sampler.is_positive(np.array([0]), np.array([[ds.item_index[ds.test_target("1")]]]))[0, 0]


def test_sampler_is_deterministic_per_seed():
    sampler = NegativeSampler(make_dataset())
    rows = np.arange(40)
    a = sampler.sample(rows, 20, np.random.default_rng(7))
    b = sampler.sample(rows, 20, np.random.default_rng(7))
    c = sampler.sample(rows, 20, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_sampler_fills_dense_rows_exactly_and_refuses_impossible_ones():
    # user "1" owns 12 of 15 items: exactly 3 negatives exist
    seqs = {"1": [str(i) for i in range(1, 13)], "2": ["13", "14", "15"]}
    ds = Dataset("dense", seqs, [str(i) for i in range(1, 16)])
    sampler = NegativeSampler(ds)
    out = sampler.sample(np.array([0, 0, 1]), 3, np.random.default_rng(0))
    assert sorted(out[0].tolist()) == sorted(out[1].tolist()) == [12, 13, 14]
    assert len(set(out[2].tolist())) == 3 and max(out[2].tolist()) < 12
    with pytest.raises(PeapodError, match="user row 0 has only 3 non-positive items"):
        sampler.sample(np.array([1, 0]), 4, np.random.default_rng(0))
    assert sampler.sample(np.array([0, 1]), 0, np.random.default_rng(0)).shape == (2, 0)


def test_sampler_is_uniform_over_allowed_items():
    seqs = {"1": ["1", "2", "3"]}
    ds = Dataset("u", seqs, [str(i) for i in range(1, 11)])  # 7 allowed items
    out = NegativeSampler(ds).sample(np.zeros(20000, dtype=np.int64), 2, np.random.default_rng(3))
    counts = np.bincount(out.ravel(), minlength=10)
    assert counts[:3].sum() == 0
    expected = 40000 / 7
    assert np.all(np.abs(counts[3:] - expected) < 5 * np.sqrt(expected))
    # first and second positions are equally spread (order is random too)
    first = np.bincount(out[:, 0], minlength=10)[3:]
    assert np.all(np.abs(first - 20000 / 7) < 5 * np.sqrt(20000 / 7))


# ------------------------------------------------------------------------------------ candidates
def test_validation_candidates_are_seeded_and_exclude_positives():
    ds = make_dataset(n_users=30, n_items=200)
    cands = validation_candidates(ds, seed=5, n=99, chunk_size=7)
    assert list(cands) == ds.users
    for u, row in cands.items():
        assert row[0] == ds.valid_target(u) and len(row) == 100 and len(set(row)) == 100
        assert not set(row[1:]) & set(ds.sequences[u])
    assert validation_candidates(ds, seed=5, n=99, chunk_size=7) == cands
    assert validation_candidates(ds, seed=6, n=99) != cands


def test_test_candidates_use_the_fixed_negatives():
    ds = make_dataset(n_users=10, n_items=100)
    with pytest.raises(PeapodError, match="no negative_samples.txt"):
        test_candidates(ds)
    ds.negatives = p5_negative_samples(ds.sequences, n=20)
    cands = test_candidates(ds)
    for u, row in cands.items():
        assert row == [ds.test_target(u), *ds.negatives[u]]
