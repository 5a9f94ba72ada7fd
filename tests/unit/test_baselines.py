"""Classic baselines under the evaluation protocol: popularity by hand, exact top-k, factors, SASRec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peapod import baselines as B
from peapod.cli import main
from peapod.data.dataset import Dataset
from peapod.data.synthetic import generate_synthetic, write_synthetic
from peapod.evaluation import tasks as T
from peapod.evaluation.results import load_results, read_predictions, sidecar_paths
from peapod.evaluation.runner import baseline_sequential, baseline_topn

torch.set_num_threads(1)
L2 = np.log2


@pytest.fixture()
def hand() -> Dataset:
    """Training parts: u1 [4,5,1], u2 [4,1,6], u3 [5,4,7] -> counts 4:3, 1:2, 5:2, 6:1, 7:1, others 0."""
    seqs = {"1": ["4", "5", "1", "2", "3"], "2": ["4", "1", "6", "3", "2"], "3": ["5", "4", "7", "8", "1"]}
    negs = {"1": ["6", "7"], "2": ["5", "7"], "3": ["2", "6"]}
    return Dataset(name="hand", sequences=seqs, items=[str(i) for i in range(1, 9)], negatives=negs)


def test_popularity_hand_computed(hand):
    pop = B.fit_baseline("popularity", hand)
    assert pop.counts.tolist() == [2, 0, 0, 3, 2, 1, 1, 0]
    ex = T.sequential_examples(hand, hand.users, "test", 20)
    recs = baseline_sequential(pop, hand, ex, "test", 10, exclude_history=False)
    # full ranking, ties to the lower item: 4 1 5 6 7 2 3 8 -> targets 3, 2, 1 at ranks 7, 6, 2
    assert recs[0]["ranked"] == ["4", "1", "5", "6", "7", "2", "3", "8"]
    m = T.ranking_scores(recs, "clean")
    assert m["hr@1"] == 0 and m["hr@5"] == pytest.approx(1 / 3) and m["hr@10"] == 1
    assert m["ndcg@5"] == pytest.approx((1 / L2(3)) / 3)
    assert m["ndcg@10"] == pytest.approx((1 / L2(8) + 1 / L2(7) + 1 / L2(3)) / 3)
    # without the history (test history = items[:-1]): targets at ranks 3, 3, 1
    excl = T.ranking_scores(baseline_sequential(pop, hand, ex, "test", 10, exclude_history=True), "clean")
    assert excl["hr@1"] == pytest.approx(1 / 3)
    assert excl["ndcg@5"] == pytest.approx((2 / L2(4) + 1) / 3)
    # top-n over target + 2 negatives: u1 3(0) vs 6(1), 7(1) -> 3; u2 2(0) vs 5(2), 7(1) -> 3; u3 1(2) -> 1
    topn = baseline_topn(pop, hand, T.topn_examples(hand, hand.users, "test", seed=0), 10, [[]] * 3)
    assert [r["target_rank"] for r in topn] == [3, 3, 1]
    mt = T.ranking_scores(topn, "clean")
    assert mt["hr@1"] == pytest.approx(1 / 3) and mt["ndcg@5"] == pytest.approx(2 / 3)


def test_top_k_items_exact_with_ties_and_exclusion():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(40, 30)).astype(np.float32)
    exclude = rng.random((40, 30)) < 0.2
    for k in (1, 5, 10, 30):
        brute = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert (B.top_k_items(scores, k) == brute).all()
        masked = np.where(exclude, -np.inf, scores)
        assert (B.top_k_items(scores, k, exclude) == np.argsort(-masked, axis=1, kind="stable")[:, :k]).all()
    cand = np.array([[3, 1, 2], [0, 2, 1]])
    s = np.array([[0.0, 5.0, 5.0, 1.0], [2.0, 2.0, 9.0, 0.0]])
    assert B.rank_candidates(s, cand).tolist() == [[1, 2, 3], [2, 0, 1]]  # ties keep the given order


def test_factor_baseline_scores_are_dot_products_in_dataset_order(hand):
    from peapod.embeddings.factors import Factors

    rng = np.random.default_rng(1)
    items = hand.items[::-1]  # factor rows in another order than the dataset's
    f = Factors(users=hand.users, items=items, user_factors=rng.normal(size=(3, 4)),
                item_factors=rng.normal(size=(8, 4)), method="bpr", item_bias=rng.normal(size=8))
    base = B.FactorBaseline.from_factors(hand, f, name="bpr")
    got = base.score(["2"], [[]])[0]
    u = f.user_factors[1]
    want = [u @ f.item_factors[items.index(it)] + f.item_bias[items.index(it)] for it in hand.items]
    assert np.allclose(got, want, atol=1e-5)
    f.fit_on = "full"
    with pytest.raises(Exception, match="training interactions"):
        B.FactorBaseline.from_factors(hand, f)


def test_sasrec_beats_popularity_on_synthetic_sequences():
    ds = generate_synthetic(300, 200, seed=0).dataset
    ex = T.sequential_examples(ds, ds.users, "test", 20)
    pop = T.ranking_scores(baseline_sequential(B.fit_baseline("popularity", ds), ds, ex, "test", 10, False), "clean")
    settings = {"n_epochs": 4, "batch_size": 256, "embedding_dim": 32, "max_len": 20, "n_sample": 64, "dropout": 0.2}
    sas = B.fit_baseline("sasrec", ds, seed=0, sasrec=settings)
    assert sas.settings["fit_on"] == "train" and sas.settings["library"] == "cornac.models.SASRec"
    m = T.ranking_scores(baseline_sequential(sas, ds, ex, "test", 10, False), "clean")
    assert m["hr@10"] > pop["hr@10"] + 0.1, (m, pop)
    batched = sas.score(ds.users[:3], [e.history for e in ex[:3]])
    single = sas.score(ds.users[:1], [ex[0].history])
    assert np.allclose(batched[0], single[0], atol=1e-5)  # batching does not change a user's scores
    # `--sasrec seed=N` seeds the model (and is recorded) instead of colliding with the evaluation seed
    reseeded = B.fit_baseline("sasrec", ds, seed=0, sasrec={**settings, "n_epochs": 1, "seed": 5})
    assert reseeded.settings["seed"] == 5


def test_evaluate_baseline_cli_same_candidates_and_schema(tmp_path, capsys):
    data = write_synthetic(tmp_path / "data", n_users=120, n_items=150, seed=2)
    out = tmp_path / "als.json"
    code = main(["evaluate", "--baseline", "als", "--dataset", str(data), "--out", str(out), "--no-progress",
                 "--set", "embedding.dim=8", "--set", "embedding.max_iter=5", "--set", "embedding.lamda=0.1"])
    assert code == 0
    assert "Top-n recommendation" in capsys.readouterr().out
    res = load_results(out)
    assert res["model"]["type"] == "baseline" and res["model"]["name"] == "als"
    assert res["model"]["config"]["settings"]["fit_on"] == "train"
    assert res["model"]["config"]["embedding"]["dim"] == 8
    assert res["tasks"]["exp"]["status"] == "skipped"
    assert set(res["metrics"]) == {"seq", "topn"} and set(res["metrics"]["topn"]) == {"score"}
    preds = read_predictions(sidecar_paths(out)[0])
    from peapod.data import load_dataset

    ds = load_dataset(data)
    want = {e.user: e.candidates for e in T.topn_examples(ds, ds.users, "test", seed=2022)}
    topn = [p for p in preds if p["task"] == "topn"]
    assert len(topn) == ds.n_users and all(p["candidates"] == want[p["user"]] for p in topn)
    assert main(["evaluate", "--baseline", "popularity", "--dataset", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "x.json")]) == 2
