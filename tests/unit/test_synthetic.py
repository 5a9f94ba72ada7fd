"""The synthetic default dataset: determinism, P5 conventions, and structure a model can learn."""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict

import numpy as np
import pytest

from peapod.data import load_dataset, p5_negative_samples
from peapod.data.synthetic import CATEGORIES, generate_synthetic, write_synthetic
from peapod.errors import ConfigError

FILES = ("sequential_data.txt", "negative_samples.txt", "datamaps.json", "explanation.json")


def _digests(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}


@pytest.fixture(scope="module")
def synth():
    return generate_synthetic(seed=0)


def test_byte_deterministic_for_a_seed(tmp_path):
    a = _digests(write_synthetic(tmp_path / "a", seed=3))
    b = _digests(write_synthetic(tmp_path / "b", seed=3))
    c = _digests(write_synthetic(tmp_path / "c", seed=4))
    assert a == b
    assert all(a[f] != c[f] for f in FILES)


def test_fast():
    start = time.perf_counter()
    generate_synthetic(n_users=300, n_items=200, seed=1)
    assert time.perf_counter() - start < 1.0


def test_round_trip_through_the_loader(tmp_path, synth):
    ds = synth.dataset
    write_synthetic(tmp_path, seed=0)
    back = load_dataset(tmp_path, drop_explanation_leaks=False)
    assert back.sequences == ds.sequences
    assert back.items == ds.items
    assert back.negatives == ds.negatives
    assert back.item_raw == ds.item_raw and back.user_raw == ds.user_raw
    for split in ("train", "val", "test"):
        assert back.explanations[split] == ds.explanations[split]


def test_shape_and_p5_conventions(synth):
    ds = synth.dataset
    assert ds.n_users == 300
    assert 190 <= ds.n_items <= 200  # items nobody bought are dropped, as in P5
    lengths = [len(s) for s in ds.sequences.values()]
    assert min(lengths) >= 5 and max(lengths) <= 20 and 7 <= np.mean(lengths) <= 11
    assert all(len(set(s)) == len(s) for s in ds.sequences.values())
    # users 1..U in file order; items 1..I numbered by first appearance while walking users
    assert ds.users == [str(k) for k in range(1, 301)]
    walked = list(dict.fromkeys(i for s in ds.sequences.values() for i in s))
    assert walked == [str(k) for k in range(1, ds.n_items + 1)] == ds.items
    assert ds.sequences["1"] == [str(k) for k in range(1, len(ds.sequences["1"]) + 1)]  # the id leak
    # P5's negatives, seed 2022
    assert ds.negatives == p5_negative_samples(ds.sequences, n=99, seed=2022)
    assert all(len(n) == 99 and not set(n) & set(ds.sequences[u]) for u, n in ds.negatives.items())


def test_explanations(synth):
    ds = synth.dataset
    exps = ds.explanations
    total = sum(len(v) for v in exps.values())
    assert 0.85 * ds.n_interactions <= total <= 0.95 * ds.n_interactions
    assert 0.75 <= len(exps["train"]) / total <= 0.85
    assert abs(len(exps["val"]) - len(exps["test"])) <= 0.3 * len(exps["val"])
    pairs = {(u, i) for u, s in ds.sequences.items() for i in s}
    for records in exps.values():
        for r in records:
            assert (r.user, r.item) in pairs
            aspects = CATEGORIES[synth.item_cluster[r.item]][1]
            assert r.feature in aspects and r.feature in r.explanation
            assert r.item_raw == ds.item_raw[r.item]
    assert len({r.explanation for r in exps["train"]}) > 300  # vocabulary variation


def test_explanations_are_personal_and_item_specific(synth):
    """Train statistics of (user, item) predict the test sentence's aspect far better than the global mode."""
    exps = synth.dataset.explanations
    global_mode = Counter(r.feature for r in exps["train"]).most_common(1)[0][0]
    by_item = defaultdict(Counter)
    by_user_cat = defaultdict(Counter)
    for r in exps["train"]:
        by_item[r.item][r.feature] += 1
        by_user_cat[r.user, synth.item_cluster[r.item]][r.feature] += 1
    held = exps["val"] + exps["test"]
    hit_global = np.mean([r.feature == global_mode for r in held])
    hit_profile = np.mean(
        [
            (by_user_cat[r.user, synth.item_cluster[r.item]] + by_item[r.item]).most_common(1)[0][0] == r.feature
            if by_item[r.item] or by_user_cat[r.user, synth.item_cluster[r.item]]
            else False
            for r in held
        ]
    )
    assert hit_profile > hit_global + 0.4, (hit_profile, hit_global)


def _popularity(ds):
    pop = Counter(i for u in ds.users for i in ds.train_items(u))
    return pop, [i for i, _ in pop.most_common()]


def test_sequential_structure_beats_popularity(synth):
    """A first-order transition counter fit on training parts beats popularity on next-item HR@10."""
    ds = synth.dataset
    pop, ranked = _popularity(ds)
    trans = defaultdict(Counter)
    for u in ds.users:
        s = ds.train_items(u)
        for a, b in zip(s, s[1:]):
            trans[a][b] += 1
    hit_pop = hit_markov = 0
    for u in ds.users:
        history, target = ds.history(u, "test")
        hit_pop += target in ranked[:10]
        rec = [i for i, _ in trans[history[-1]].most_common(10)]
        rec += [i for i in ranked if i not in rec][: 10 - len(rec)]
        hit_markov += target in rec
    hr_pop, hr_markov = hit_pop / ds.n_users, hit_markov / ds.n_users
    assert hr_markov > hr_pop + 0.25, (hr_markov, hr_pop)


def test_topn_user_profile_beats_popularity(synth):
    """On the 100 test candidates, a user-category profile and an item co-occurrence CF beat popularity."""
    ds = synth.dataset
    pop, _ = _popularity(ds)
    co = defaultdict(Counter)
    for u in ds.users:
        s = ds.sequences[u][:-1]  # everything but the test target
        for a in s:
            co[a].update(b for b in s if b != a)
    hits = Counter()
    for u in ds.users:
        target = ds.test_target(u)
        cands = [target, *ds.negatives[u]]
        seen = ds.sequences[u][:-1]
        profile = Counter(synth.item_cluster[i] for i in seen)
        scores = {
            "pop": {c: pop[c] for c in cands},
            "profile": {c: profile[synth.item_cluster[c]] + 1e-3 * pop[c] for c in cands},
            "cf": {c: sum(co[h][c] for h in seen) + 1e-3 * pop[c] for c in cands},
        }
        for name, s in scores.items():
            top = sorted(cands, key=lambda c: (-s[c], int(c)))[:10]
            hits[name] += target in top
    hr = {k: v / ds.n_users for k, v in hits.items()}
    assert hr["profile"] > hr["pop"] + 0.2, hr
    assert hr["cf"] > hr["pop"] + 0.25, hr


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(n_clusters=11), "n_clusters"),
        (dict(n_clusters=1), "n_clusters"),
        (dict(n_items=100), "max_length \\+ n_negatives"),
        (dict(n_users=0), "n_users"),
        (dict(min_length=2), "min_length"),
        (dict(p_successor=0.95, p_noise=0.1), "probabilities"),
        (dict(n_users=3), "too few"),
    ],
)
def test_bad_parameters(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        generate_synthetic(**kwargs)


def test_small_variant_with_fewer_negatives():
    data = generate_synthetic(n_users=40, n_items=40, seed=5, n_clusters=4, max_length=10, n_negatives=20)
    ds = data.dataset
    assert ds.n_users == 40 and all(len(n) == 20 for n in ds.negatives.values())
    assert set(data.item_cluster.values()) <= set(range(4))
    assert all(p != s for p, s in data.user_clusters.values())
