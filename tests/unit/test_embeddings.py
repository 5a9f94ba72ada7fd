"""Factors container, fitting with cornac / implicit on a toy set, fold-in, and the quality figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from peapod.config import EmbeddingConfig
from peapod.embeddings import Factors, embedding_quality, fit_factors, fold_in, rank_metrics
from peapod.embeddings.quality import format_quality
from peapod.errors import DataFormatError, PeapodError, UnknownIdError

torch.set_num_threads(1)

N_CLUSTERS, ITEMS_PER_CLUSTER, N_USERS = 3, 15, 60


@pytest.fixture(scope="module")
def toy():
    """60 users in 3 clusters; each user buys 8 items of its cluster's 15 (ids 1..45), plus held-out
    targets from the same cluster and 20 negatives. Items 46..48 occur only as targets."""
    rng = np.random.default_rng(0)
    items = [str(i) for i in range(1, N_CLUSTERS * ITEMS_PER_CLUSTER + 4)]
    train, targets, negatives = {}, {}, {}
    for u in range(N_USERS):
        c = u % N_CLUSTERS
        pool = np.arange(c * ITEMS_PER_CLUSTER, (c + 1) * ITEMS_PER_CLUSTER) + 1
        bought = rng.choice(pool, 8, replace=False)
        train[str(u + 1)] = [str(i) for i in bought]
        rest = [str(i) for i in pool if i not in bought]
        targets[str(u + 1)] = rest[u % len(rest)]
        others = [it for it in items[:45] if it not in train[str(u + 1)] and it != targets[str(u + 1)]]
        negatives[str(u + 1)] = list(rng.choice(others, 20, replace=False))
    return items, train, targets, negatives


CONFIGS = {
    "pmf": dict(dim=8, max_iter=50, learning_rate=0.01, lamda=0.001),
    "bivae": dict(dim=8, max_iter=30, learning_rate=0.01),
    "bpr": dict(dim=8, max_iter=100, learning_rate=0.05, lamda=0.01),
    "als": dict(dim=8, max_iter=15, lamda=0.1),
}


@pytest.fixture(scope="module")
def fitted(toy):
    items, train, _, _ = toy
    return {m: fit_factors(train, items, EmbeddingConfig(method=m, seed=3, **kw)) for m, kw in CONFIGS.items()}


# ---------------------------------------------------------------------------------------- Factors
def _small_factors(**kw) -> Factors:
    rng = np.random.default_rng(1)
    return Factors(
        users=["u1", "u2", "u3"], items=["a", "b"], user_factors=rng.normal(size=(3, 4)),
        item_factors=rng.normal(size=(2, 4)), method="als", settings={"dim": 4, "nested": {"x": [1, 2]}}, **kw,
    )


def test_factors_round_trip(tmp_path):
    f = _small_factors(item_bias=np.array([0.5, -1.0]))
    path = f.save(tmp_path / "sub" / "f.safetensors")
    g = Factors.load(path)
    assert g.users == f.users and g.items == f.items and g.method == "als" and g.fit_on == "train"
    assert g.user_factors.dtype == np.float32 and np.array_equal(g.user_factors, f.user_factors)
    assert np.array_equal(g.item_factors, f.item_factors) and np.array_equal(g.item_bias, f.item_bias)
    assert g.settings == {"dim": 4, "nested": {"x": [1, 2]}}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        producer = json.loads(fh.metadata()["producer"])
    assert "implicit" in producer and "peapod" in producer
    assert [p.name for p in path.parent.iterdir()] == ["f.safetensors"]  # no temporary left behind


def test_factors_user_rows_and_unknown_user():
    f = _small_factors()
    assert f.user_rows(["u3", "u1"]).tolist() == [2, 0]
    with pytest.raises(UnknownIdError, match="unknown user id.*'nobody'"):
        f.user_rows(["u1", "nobody"])
    with pytest.raises(KeyError):  # UnknownIdError is also a KeyError
        f.item_rows(["zzz"])


def test_factors_load_errors(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        Factors.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(PeapodError, match="bad.safetensors"):
        Factors.load(bad)
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(2, dtype=np.float32)}, str(other))
    with pytest.raises(DataFormatError, match="not a peapod factors file"):
        Factors.load(other)


def test_factors_shape_checks():
    with pytest.raises(ValueError, match="users"):
        Factors(["a"], ["x"], np.zeros((2, 3)), np.zeros((1, 3)), "pmf")
    with pytest.raises(ValueError, match="dim"):
        Factors(["a"], ["x"], np.zeros((1, 3)), np.zeros((1, 2)), "pmf")


# ---------------------------------------------------------------------------------------- fitting
@pytest.mark.parametrize("method", list(CONFIGS))
def test_each_method_fits_right_shapes(fitted, toy, method):
    items, train, _, _ = toy
    f = fitted[method]
    assert f.method == method and f.fit_on == "train"
    assert f.users == list(train) and f.items == items
    assert f.user_factors.shape == (N_USERS, 8) and f.item_factors.shape == (len(items), 8)
    assert np.isfinite(f.user_factors).all() and np.isfinite(f.item_factors).all()
    assert np.abs(f.user_factors).sum(axis=1).min() > 0  # every user has training data
    # items 46..48 were never trained on: zero vectors, counted
    assert f.settings["items_without_training_data"] == 3
    assert not f.item_factors[45:].any()
    assert f.settings["n_train_interactions"] == N_USERS * 8


def test_fit_is_seeded(toy):
    items, train, _, _ = toy
    config = EmbeddingConfig(method="bpr", seed=5, **CONFIGS["bpr"])
    a, b = fit_factors(train, items, config), fit_factors(train, items, config)
    assert np.array_equal(a.user_factors, b.user_factors)


def test_user_without_training_items_gets_zero_vector(toy):
    items, train, _, _ = toy
    f = fit_factors({**train, "cold": []}, items, EmbeddingConfig(method="als", seed=1, **CONFIGS["als"]))
    assert f.users[-1] == "cold" and not f.user_vectors(["cold"]).any()
    assert f.settings["users_without_training_data"] == 1
    assert np.abs(f.user_factors[:-1]).sum(axis=1).min() > 0


def test_fit_rejects_unknown_items_and_methods(toy):
    items, train, _, _ = toy
    with pytest.raises(UnknownIdError, match="999"):
        fit_factors({"1": ["1", "999"]}, items, EmbeddingConfig(method="als", dim=2, max_iter=1))
    with pytest.raises(PeapodError, match="unknown embedding method"):
        fit_factors(train, items, EmbeddingConfig(method="svd", dim=2))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["bpr", "als"])
def test_learned_embedding_beats_popularity(fitted, toy, method):
    _, train, targets, negatives = toy
    report = embedding_quality(fitted[method], train, targets, negatives, ks=(5, 10))
    for protocol in ("full", "sampled"):
        assert report["embedding"][protocol]["NDCG@10"] > report["popularity"][protocol]["NDCG@10"] + 0.2
        assert report["embedding"][protocol]["HR@5"] > 0.5


def test_fold_in_recovers_trained_als_user(fitted, toy):
    _, train, _, _ = toy
    f = fitted["als"]
    for user in ("1", "2", "30"):
        v = fold_in(f, train[user])
        t = f.user_vectors([user])[0]
        assert float(v @ t / np.linalg.norm(v) / np.linalg.norm(t)) > 0.9
    # a cold user who bought cluster-0 items scores cluster-0 items above cluster-1 items
    v = fold_in(f, ["1", "2", "3", "4"])
    scores = f.scores(v[None])[0]
    assert scores[4:15].mean() > scores[15:30].mean()


def test_fold_in_other_geometry_and_errors(fitted):
    f = fitted["bpr"]
    v = fold_in(f, ["1", "2", "3"], reg=0.01)
    assert v.shape == (8,) and np.isfinite(v).all()
    # the ridge solution fits the history: scores (with bias) close to the target 1.0
    assert np.allclose(f.scores(v[None])[0, :3], 1.0, atol=0.1)
    assert not fold_in(f, []).any()
    with pytest.raises(UnknownIdError, match="'nope'"):
        fold_in(f, ["1", "nope"])


# ---------------------------------------------------------------------------------------- quality
def test_rank_metrics_by_hand():
    m = rank_metrics(np.array([1, 2, 5, 11]), ks=(1, 5, 10))
    assert m["HR@1"] == pytest.approx(0.25)
    assert m["HR@5"] == pytest.approx(0.75)
    assert m["HR@10"] == pytest.approx(0.75)
    assert m["NDCG@1"] == pytest.approx(0.25)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(6)) / 4)
    assert m["NDCG@10"] == pytest.approx(m["NDCG@5"])


def test_embedding_quality_by_hand():
    # 2 users, 5 items, 1-d factors: scores = user * item
    items = ["i1", "i2", "i3", "i4", "i5"]
    item_f = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
    f = Factors(["a", "b"], items, np.array([[1.0], [-1.0]]), item_f, "test")
    train = {"a": ["i1"], "b": ["i5", "i4"]}
    targets = {"a": "i3", "b": "i1"}
    # a: scores 5,4,3,2,1; i1 known -> candidates i2(4) > i3(3): rank 2
    # b: scores -5..-1; i5, i4 known -> i3(-3) > i2(-4) > i1(-5): rank 3
    # popularity: counts i1=1, i4=1, i5=1, i2=i3=0. a: i1 known; i4,i5 (1) above i3, i2 ties (0) -> rank 4
    # b: i1 (1) vs i2, i3 (0): rank 1
    r = embedding_quality(f, train, targets, ks=(1, 2, 3))
    assert r["embedding"]["full"]["HR@1"] == 0 and r["embedding"]["full"]["HR@2"] == 0.5
    assert r["embedding"]["full"]["HR@3"] == 1.0
    assert r["embedding"]["full"]["NDCG@3"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 2)
    assert r["popularity"]["full"]["HR@1"] == 0.5 and r["popularity"]["full"]["HR@3"] == 0.5
    # sampled: a vs [i5, i4] -> rank 1; b vs [i2, i3, i1 (the target, ignored)] -> rank 3
    r = embedding_quality(f, train, targets, {"a": ["i5", "i4"], "b": ["i2", "i3", "i1"]}, ks=(1, 2, 3))
    s = r["embedding"]["sampled"]
    assert s["HR@1"] == 0.5 and s["HR@2"] == 0.5 and s["HR@3"] == 1.0
    assert s["NDCG@3"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    assert "sampled ranking" in format_quality(r)


def test_quality_ties_are_pessimistic_and_chunking_is_invisible(fitted, toy):
    _, train, targets, negatives = toy
    f = fitted["als"]
    zero = Factors(f.users, f.items, np.zeros_like(f.user_factors), f.item_factors, "zero")
    r = embedding_quality(zero, train, targets, negatives, ks=(10,))
    assert r["embedding"]["full"]["HR@10"] == 0 and r["embedding"]["sampled"]["HR@10"] == 0
    a = embedding_quality(f, train, targets, negatives, chunk_size=7)
    b = embedding_quality(f, train, targets, negatives, chunk_size=1000)
    assert a == b


def test_quality_unknown_ids(fitted, toy):
    _, train, targets, _ = toy
    with pytest.raises(UnknownIdError):
        embedding_quality(fitted["als"], train, {"nobody": "1"})
    with pytest.raises(UnknownIdError):
        embedding_quality(fitted["als"], train, {"1": "not-an-item"})


# ---------------------------------------------------------------------------------------- CLI
def _write_p5(folder, toy) -> None:
    items, train, targets, negatives = toy
    folder.mkdir()
    lines, neg_lines = [], []
    for u, seq in train.items():
        # items[:-2] = the toy's training items; then a validation and a test item of the same cluster
        c = (int(u) - 1) % N_CLUSTERS
        pool = [str(i) for i in range(c * ITEMS_PER_CLUSTER + 1, (c + 1) * ITEMS_PER_CLUSTER + 1) if str(i) not in seq]
        lines.append(" ".join([u, *seq, targets[u], next(p for p in pool if p != targets[u])]))
        neg_lines.append(" ".join([u, *[n for n in negatives[u] if n not in pool][:10]]))
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    (folder / "negative_samples.txt").write_text("\n".join(neg_lines) + "\n")


def test_cli_embed(tmp_path, toy, capsys):
    from peapod.cli import main
    from peapod.cli.embed import neighbors_path
    from peapod.embeddings import NeighborIndex

    _write_p5(tmp_path / "toy", toy)
    out = tmp_path / "out" / "als.safetensors"
    code = main([
        "embed", "--dataset", str(tmp_path / "toy"), "--method", "als", "--dim", "8", "--iters", "10",
        "--lamda", "0.1", "--neighbors", "3", "--split", "test", "--sampled",
        "--quality-json", str(tmp_path / "q.json"), "--out", str(out),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    f = Factors.load(out)
    assert f.method == "als" and f.fit_on == "train" and len(f.users) == N_USERS
    assert f.settings["dataset"] == "toy" and f.settings["item_id_scheme"] == "original"
    assert f.settings["n_train_interactions"] == N_USERS * 8  # the valid and test items were not seen
    index = NeighborIndex.load(neighbors_path(out))
    assert index.indices.shape == (N_USERS, 3) and index.users == f.users
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["split"] == "test" and set(report["embedding"]) == {"full", "sampled"}
    assert report["embedding"]["full"]["NDCG@10"] > report["popularity"]["full"]["NDCG@10"]
    assert "full ranking" in captured.out and "popularity" in captured.out
    assert "[embed] fitting als" in captured.err  # progress goes to stderr

    code = main(["embed", "--dataset", str(tmp_path / "nowhere"), "--out", str(out)])
    assert code == 2 and "nowhere" in capsys.readouterr().err
