"""The Python API (``peapod.load`` -> Recommender) on a tiny run trained once per session on synthetic data.

The ``tiny_run`` fixture is shared with test_serving.py and test_cli_serve.py (they import it from here):
it trains into the session's base temp folder once and reuses the folder afterwards.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import peapod
from peapod import api
from peapod.api import MAX_K, RankResult, Recommendation, Recommender, RequestError
from peapod.errors import PeapodError, UnknownIdError

torch.set_num_threads(1)

#: The tiny run: ALS embeddings (exact fold-in), 20-candidate top-n, short explanations; ~20 s on 2 busy cores.
TINY_OVERRIDES = [
    "train.max_steps=30",
    "train.batch_size=8",
    "train.valid_max_users=12",
    "embedding.method=als",
    "embedding.max_iter=10",
    "model.tokenizer_vocab_size=400",
    "data.n_negatives=19",
    "eval.num_beams=8",
    "eval.exp_num_beams=2",
    "eval.exp_min_length=3",
    "eval.exp_max_new_tokens=12",
]


def build_tiny_run(base: Path) -> Path:
    """Train (once: reused when ``base/run`` is complete) the tiny run on synthetic data."""
    from peapod.config import load_config
    from peapod.data.synthetic import write_synthetic
    from peapod.training import train

    run = base / "run"
    if (run / "train_result.json").is_file():
        return run
    data = write_synthetic(base / "data", n_users=80, n_items=120, seed=0, n_negatives=19)
    train(load_config("tiny", None, TINY_OVERRIDES), data, run, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A trained run folder (tiny preset, 30 steps) on a synthetic dataset; shared by the serving tests."""
    base = tmp_path_factory.getbasetemp() / "peapod-tiny-run"
    base.mkdir(exist_ok=True)
    return build_tiny_run(base)


@pytest.fixture(scope="module")
def rec(tiny_run) -> Recommender:
    return peapod.load(tiny_run, device="cpu")


def _user_with_long_history(rec: Recommender) -> str:
    return max(rec.dataset.users, key=lambda u: len(rec.dataset.sequences[u]))


def _check_ranked(recs: list[Recommendation], rec: Recommender, k: int) -> None:
    assert len(recs) == k
    assert [r.rank for r in recs] == list(range(1, k + 1))
    items = [r.item for r in recs]
    assert len(set(items)) == k and set(items) <= set(rec.dataset.items)
    scores = [r.score for r in recs]
    assert all(np.isfinite(scores)) and all(s <= 0 for s in scores)
    assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------------------------------ loading
def test_load_is_exported_lazily_and_import_stays_light():
    assert peapod.load is api.load and peapod.Recommender is api.Recommender
    code = "import sys, peapod; print('torch' in sys.modules, 'peapod.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_load_reports_a_missing_run_folder(tmp_path):
    with pytest.raises(PeapodError, match="run folder not found"):
        peapod.load(tmp_path / "nope")


def test_info_describes_the_run(rec, tiny_run):
    info = rec.info()
    assert info["run"] == str(tiny_run) and info["n_users"] == 80 and info["user_prompt"] == "components"
    assert info["embedding_method"] == "als" and info["n_items"] == rec.n_items


def test_cold_start_placeholder_is_not_a_training_user(rec):
    assert rec.cold_start_user not in rec.user_index
    assert rec.cold_start_user == str(max(int(u) for u in rec.dataset.users) + 1)


# ------------------------------------------------------------------------------------------ recommend
def test_recommend_returns_k_distinct_valid_items_best_first(rec):
    user = rec.dataset.users[0]
    _check_ranked(rec.recommend(user, k=5), rec, 5)
    _check_ranked(rec.recommend(user, k=12), rec, 12)  # more than eval.num_beams (8): beams widen


def test_encoder_input_matches_the_model_for_known_users(rec):
    """The API's own encode (needed for cold-start prompts) equals PeaPOD.encode for known users."""
    from peapod.training.templates import BARE_TEMPLATE, render

    users = rec.dataset.users[:3]
    resolved = rec._resolve(users)
    sources = [render(BARE_TEMPLATE, r.token, rec._history_window(r.history)) for r in resolved]
    with torch.no_grad():
        ours, mask = rec._encode("seq", resolved, sources)
        enc = rec.tokenizer.encode_sources(sources)
        theirs, their_mask = rec.model.encode(
            enc["input_ids"], enc["attention_mask"], enc["whole_word_ids"],
            task_ids=torch.full((3,), 1), user_rows=rec.model.user_rows(users),
        )
    assert torch.equal(mask, their_mask)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state)


def test_exclude_history_never_returns_a_history_item(rec):
    user = _user_with_long_history(rec)
    history = set(rec.dataset.sequences[user])
    recs = rec.recommend(user, k=10, exclude_history=True)
    _check_ranked(recs, rec, 10)
    assert not {r.item for r in recs} & history


def test_excluding_trie_keeps_exactly_the_other_items(rec):
    """Every complete path through the pruned trie is an item, and the banned ones are unreachable."""
    banned = rec.dataset.items[::3]
    trie = rec.trie
    view = api._ExcludingTrie(trie, rec._trie_counts, [rec._item_tokens[i] for i in banned])
    reached, stack = set(), [[0]]  # decoder prefixes start with the start token
    while stack:
        prefix = stack.pop()
        for tok in view.allowed(prefix):
            if tok == trie.eos_token_id:
                item = trie.item_of(prefix[1:] + [tok])
                assert item is not None, prefix
                reached.add(item)
            else:
                stack.append(prefix + [tok])
    assert reached == set(rec.dataset.items) - set(banned)


def test_k_out_of_range_is_rejected(rec):
    user = rec.dataset.users[0]
    for k in (0, -1, MAX_K + 1):
        with pytest.raises(RequestError, match="k must be between 1 and"):
            rec.recommend(user, k=k)
    assert issubclass(RequestError, ValueError) and issubclass(RequestError, PeapodError)
    history = rec.dataset.items[:40]
    n_left = rec.n_items - 40
    assert n_left < MAX_K
    with pytest.raises(RequestError, match=f"{n_left} items remain after excluding"):
        rec.recommend(history=history, k=n_left + 1, exclude_history=True)
    assert len(rec.recommend(history=history, k=n_left, exclude_history=True)) == n_left


def test_unknown_ids_raise_clear_errors(rec):
    with pytest.raises(UnknownIdError, match=r"unknown user id 'nobody'.*history=") as err:
        rec.recommend("nobody")
    assert isinstance(err.value, KeyError)
    with pytest.raises(UnknownIdError, match=r"unknown item id\(s\) in history: '99999'"):
        rec.recommend(history=["1", "99999"])
    with pytest.raises(UnknownIdError, match="'x1'"):
        rec.rank(rec.dataset.users[0], ["1", "x1"])
    with pytest.raises(UnknownIdError, match="'x2'"):
        rec.explain(rec.dataset.users[0], "x2")
    with pytest.raises(RequestError, match="at least one item"):
        rec.recommend(history=[])
    with pytest.raises(RequestError, match="exactly one of user or history"):
        rec.recommend("1", history=["1"])


# ------------------------------------------------------------------------------------------ rank
def test_rank_orders_every_candidate_by_its_exact_log_likelihood(rec):
    from peapod.model import sequence_loss
    from peapod.training.templates import BARE_TEMPLATE, render

    user = rec.dataset.users[1]
    candidates = rec.dataset.items[:15]
    result = rec.rank(user, candidates)
    assert isinstance(result, RankResult) and result.user == user
    assert sorted(result.order) == sorted(candidates)
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True) and [r.rank for r in result.items] == list(range(1, 16))
    # the same order whatever order the candidates come in
    assert rec.rank(user, list(reversed(candidates))).order == result.order
    # each score is the teacher-forced log-likelihood of the id under the top-n prompt
    source = render(BARE_TEMPLATE, user, rec.prompt_order(candidates))
    enc = rec.tokenizer.encode_sources([source] * 3)
    labels = rec.tokenizer.encode_targets(result.order[:3])
    with torch.no_grad():
        out = rec.model(**enc, task_ids=torch.full((3,), 2), user_rows=rec.model.user_rows([user] * 3),
                        labels=labels)
    per_token = sequence_loss(out.logits, labels, reduction="none")
    expected = (-per_token * (labels != -100).sum(1)).tolist()
    np.testing.assert_allclose([r.score for r in result.items[:3]], expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ explain
def test_explain_uses_the_run_beam_settings(rec):
    user = rec.dataset.users[2]
    item = rec.dataset.sequences[user][-1]
    e = rec.explain(user, item)
    assert e.user == user and e.item == item and isinstance(e.text, str)  # (a 30-step model may say little)
    assert rec.explain(user, item) == e  # deterministic
    ev = rec.config.eval
    assert (e.num_beams, e.min_length, e.max_new_tokens) == (ev.exp_num_beams, ev.exp_min_length, ev.exp_max_new_tokens)
    assert e.score is not None and np.isfinite(e.score)
    assert len(rec.tokenizer.encode_ids([e.text], add_eos=False)[0]) <= ev.exp_max_new_tokens


# ------------------------------------------------------------------------------------------ batching
def test_batched_calls_equal_single_calls(rec):
    users = rec.dataset.users[:4]
    history = rec.dataset.sequences[users[0]][:3]
    queries = [*users, history]
    batched = rec.recommend_batch(queries, k=6)
    single = [rec.recommend(u, k=6) for u in users] + [rec.recommend(history=history, k=6)]
    assert [[r.item for r in b] for b in batched] == [[r.item for r in s] for s in single]
    np.testing.assert_allclose([r.score for b in batched for r in b], [r.score for s in single for r in s],
                               atol=1e-4)

    cands = [rec.dataset.items[i:i + 5 + i] for i in range(len(queries))]  # different lengths in one batch
    ranked = rec.rank_batch(queries, cands)
    alone = [rec.rank(u, c) for u, c in zip(users, cands)] + [rec.rank(None, cands[-1], history=history)]
    assert [r.order for r in ranked] == [r.order for r in alone]
    np.testing.assert_allclose([x.score for r in ranked for x in r.items],
                               [x.score for r in alone for x in r.items], atol=1e-4)

    items = [rec.dataset.sequences[u][-1] for u in users] + [rec.dataset.items[0]]
    explained = rec.explain_batch(queries, items)
    assert [e.text for e in explained] == [rec.explain(u, i).text for u, i in zip(users, items[:4])] + [
        rec.explain(None, items[-1], history=history).text
    ]


# ------------------------------------------------------------------------------------------ cold start
def test_cold_start_user_gets_recommendations_from_history(rec):
    user = rec.dataset.users[5]
    history = rec.dataset.train_items(user)
    recs = rec.recommend(history=history, k=5)
    _check_ranked(recs, rec, 5)
    assert rec.recommend_history(history, k=5) == recs
    excluded = rec.recommend(history=history, k=5, exclude_history=True)
    assert not {r.item for r in excluded} & set(history)
    assert rec.rank(None, rec.dataset.items[:5], history=history).user is None


def test_fold_in_recovers_the_trained_embedding_als(rec):
    """A training user treated as new: folding in their training items gives back their ALS vector."""
    cosines = []
    for user in rec.dataset.users[:20]:
        trained = rec.user_embedding(user)
        folded = rec.user_embedding(history=rec.dataset.train_items(user))
        cosines.append(float(folded @ trained / (np.linalg.norm(folded) * np.linalg.norm(trained))))
    assert min(cosines) > 0.98, cosines


def test_fold_in_is_close_to_the_trained_embedding_bpr(rec):
    """BPR factors of the synthetic data: a user's folded-in vector is far nearer their own trained
    vector than other users' (their own is in the top 5% of all users by cosine). BPR's ranking loss
    is not the fold-in's least squares, so the cosine is high (~0.7) rather than ~1 as for ALS."""
    from peapod.config import EmbeddingConfig
    from peapod.embeddings import fit_factors, fold_in

    ds = rec.dataset
    factors = fit_factors(ds.train_sequences(), ds.items,
                          EmbeddingConfig(method="bpr", dim=32, max_iter=300, learning_rate=0.05, lamda=0.01))
    table = factors.user_factors / np.linalg.norm(factors.user_factors, axis=1, keepdims=True)
    own_cos, ranks = [], []
    for row, user in enumerate(ds.users[:30]):
        v = fold_in(factors, ds.train_items(user))
        cos = table @ (v / np.linalg.norm(v))
        own_cos.append(cos[row])
        ranks.append(int((cos > cos[row]).sum()))
    assert np.mean(own_cos) > 0.6, own_cos
    assert max(ranks) < 0.05 * len(ds.users), ranks


def test_cold_start_prompt_equals_the_trained_prompt_for_the_same_vector(rec):
    """components: the prompt of an explicit vector is the module's prompt of the user holding it."""
    rows = torch.tensor([0, 7, 11])
    vectors = rec.model.user_prompt.users(rows)
    with torch.no_grad():
        torch.testing.assert_close(rec._prompts_from_vectors(vectors), rec.model.user_prompt(rows))


def test_neighbors_design_cold_start(rec, tiny_run):
    """neighbors: chunked cosine finds the stored neighbours, and the attention on explicit inputs
    equals the trained module's; a cold-start user then gets recommendations end to end."""
    from peapod.embeddings.neighbors import NeighborIndex
    from peapod.model import PeaPOD

    index = NeighborIndex.load(tiny_run / "neighbors.safetensors")
    config = dataclasses.replace(rec.config.model, user_prompt="neighbors")
    torch.manual_seed(0)
    model = PeaPOD(config, rec.model.backbone, torch.from_numpy(rec.factors.user_factors.copy()),
                   torch.from_numpy(index.indices.copy()), user_ids=rec.dataset.users).eval()
    run = dataclasses.replace(rec.run, model=model,
                              config=dataclasses.replace(rec.config, model=config))
    nrec = Recommender(run, rec.dataset, torch.device("cpu"))
    for row in (0, 9, 40):
        own = nrec.factors.user_factors[row]
        found = nrec.neighbors(own, index.k + 1)
        assert found[0] == row  # the user itself is the nearest to its own vector
        np.testing.assert_array_equal(found[1:], index.indices[row])
    rows = torch.tensor([3, 8])
    with torch.no_grad():
        module = model.user_prompt  # the entry point the API uses for folded-in users
        explicit = module.prompts_from_embeddings(module.users(rows), module.users(module.neighbor_index[rows]))[0]
        torch.testing.assert_close(explicit, model.user_prompt(rows))
    user = rec.dataset.users[3]
    _check_ranked(nrec.recommend(history=rec.dataset.train_items(user), k=4), nrec, 4)
