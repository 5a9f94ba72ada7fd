"""Templates (exact strings), per-task samplers (protocol windows, many draws), schedule, resume state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from peapod.config import DataConfig
from peapod.data.dataset import Dataset, ExplanationRecord
from peapod.training import templates as T
from peapod.training.samplers import (
    ExpTrainSampler,
    MultiTaskSampler,
    SeqTrainSampler,
    TaskSchedule,
    TopNTrainSampler,
    build_train_samplers,
    build_validation,
    steps_per_epoch,
)


def make_dataset(n_users: int = 60, n_items: int = 300, seed: int = 0, with_exp: bool = True) -> Dataset:
    """An in-memory dataset: lengths 4..40, distinct items per user, a few explanation records."""
    rng = np.random.default_rng(seed)
    items = [str(i) for i in range(1, n_items + 1)]
    sequences = {}
    for u in range(1, n_users + 1):
        n = int(rng.integers(4, 41))
        sequences[str(u)] = [items[j] for j in rng.choice(n_items, size=n, replace=False)]
    exps = {"train": [], "val": [], "test": []}
    if with_exp:
        for u, seq in sequences.items():
            exps["train"].append(ExplanationRecord(u, seq[0], f"great product number {seq[0]}", item_raw=f"B00{seq[0]}X"))
            exps["val"].append(ExplanationRecord(u, seq[-2], "works well"))
    return Dataset(name="mem", sequences=sequences, items=items, explanations=exps,
                   item_raw={i: f"B00{i}X" for i in items})


# ------------------------------------------------------------------------------------------ templates
def test_template_counts_and_bare_last():
    assert len(T.SEQ_TEMPLATES) == 8 and len(T.TOPN_TEMPLATES) == 5 and len(T.EXP_TEMPLATES) == 9
    for task, templates in T.TEMPLATES.items():
        assert templates[-1] == "user_{} item_{}"
        assert len(set(templates)) == len(templates), task
        for t in templates:
            assert t.count("{}") == 2 and t.index("user_{}") < t.index("item_{}")


def test_template_exact_strings():
    assert T.render(T.SEQ_TEMPLATES[0], "7", ["5", "9", "33"]) == (
        "Given the following purchase history of user_7: item_5 item_9 item_33, "
        "predict next possible item to be purchased by the user."
    )
    assert T.render(T.SEQ_TEMPLATES[1], "7", ["5"]) == (
        "I find the purchase history list of user_7: item_5. I wonder what is the next item to recommend "
        "to the user. Can you help me decide?"
    )
    assert T.render(T.TOPN_TEMPLATES[3], "12", ["1", "2"]) == (
        "We want to make recommendation for user_12. Select the best item from these candidates: item_1 item_2"
    )
    assert T.render(T.EXP_TEMPLATES[3], "3", "B004756YJA") == "Generate user_3's purchase explanation about item_B004756YJA"
    assert T.render(T.EXP_TEMPLATES[1], "3", "44") == "Can you help generate an explanation of user_3 for item_44?"
    assert T.render(T.BARE_TEMPLATE, "22363", ["1", "12101"]) == "user_22363 item_1 item_12101"


def test_pick_templates_uniform_and_bare():
    rng = np.random.default_rng(0)
    picks = T.pick_templates("seq", 16000, rng)
    counts = np.bincount(picks, minlength=8)
    assert counts.min() > 1800 and counts.max() < 2200
    assert (T.pick_templates("topn", 5, None) == 4).all()
    assert T.render_batch("exp", ["1"], ["2"], None) == ["user_1 item_2"]


def test_explanation_item_token_modes():
    assert T.explanation_item_token("44", "B00X", "numeric") == "44"
    assert T.explanation_item_token("44", "B00X", "raw") == "B00X"
    assert T.explanation_item_token("44", None, "raw") == "44"
    with pytest.raises(ValueError):
        T.explanation_item_token("44", None, "asin")


# ------------------------------------------------------------------------------------------ sequential
def test_seq_windows_follow_the_protocol_on_many_draws():
    ds = make_dataset()
    cfg = DataConfig(max_history=20)
    sampler = SeqTrainSampler(ds, cfg, seed=1)
    lengths = sampler.index.lengths
    for _ in range(20):
        w = sampler.draw_windows(257)
        n = lengths[w.user_rows]
        assert (w.start >= 0).all() and (w.start <= n - 4).all()
        assert (w.end >= w.start + 1).all() and (w.end <= n - 3).all()  # never the valid/test item
        assert (w.history_len >= 1).all() and (w.history_len <= 20).all()
        assert (w.history_len == np.minimum(w.end - w.start, 20)).all()
        for r in range(0, 257, 16):  # the window is the contiguous segment ending at the target
            seq = [ds.item_index[i] for i in ds.sequences[ds.users[w.user_rows[r]]]]
            e, k = int(w.end[r]), int(w.history_len[r])
            assert w.history[r, :k].tolist() == seq[e - k:e]
            assert (w.history[r, k:] == -1).all()
            assert w.target[r] == seq[e]
    # long segments do occur and are cut to the last 20 items
    assert (w.end - w.start > 20).any()


def test_seq_draw_text_targets_are_training_items():
    ds = make_dataset()
    sampler = SeqTrainSampler(ds, DataConfig(), seed=2)
    batch = sampler.draw(64)
    for u, src, tgt in zip(batch.users, batch.sources, batch.targets):
        assert f"user_{u}" in src and "item_" in src
        assert tgt in ds.train_items(u) and tgt.isdigit()


def test_seq_sampler_max_history_respected():
    ds = make_dataset()
    w = SeqTrainSampler(ds, DataConfig(max_history=5), seed=0).draw_windows(500)
    assert w.history_len.max() == 5 and w.history.shape[1] == 5


# ------------------------------------------------------------------------------------------ top-n
def test_topn_candidates_on_many_draws():
    ds = make_dataset()
    sampler = TopNTrainSampler(ds, DataConfig(n_negatives=99), seed=3)
    for _ in range(10):
        d = sampler.draw_rows(128)
        assert d.candidates.shape == (128, 100)
        for r in range(128):
            user = ds.users[d.user_rows[r]]
            cands = d.candidates[r]
            positives = {ds.item_index[i] for i in ds.sequences[user]}
            assert len(set(cands.tolist())) == 100
            assert int(d.positive[r]) in cands
            assert ds.items[d.positive[r]] in ds.train_items(user)
            assert not (set(cands.tolist()) - {int(d.positive[r])}) & positives
    # the positive's position is shuffled, not fixed
    positions = [int(np.flatnonzero(c == p)[0]) for c, p in zip(d.candidates, d.positive)]
    assert len(set(positions)) > 20


def test_topn_text_lists_100_candidates():
    ds = make_dataset()
    batch = TopNTrainSampler(ds, DataConfig(), seed=4).draw(8)
    for src, tgt in zip(batch.sources, batch.targets):
        assert src.count("item_") == 100
        assert f"item_{tgt}" in src.replace(",", " ").split()


# ------------------------------------------------------------------------------------------ explanation
def test_exp_sampler_item_token_and_cycle():
    ds = make_dataset()
    raw = ExpTrainSampler(ds, DataConfig(explanation_item_token="raw"), seed=0).draw(5)
    assert all("item_B00" in s for s in raw.sources)
    sampler = ExpTrainSampler(ds, DataConfig(), seed=0)
    n = len(sampler)
    first = sampler.draw(n)
    assert sorted(first.users, key=int) == sorted(ds.users, key=int)  # one full pass, every record once
    assert first.users != [r.user for r in ds.explanations["train"]]  # first pass is shuffled (fix of 10.10)
    second = sampler.draw(n)
    assert sorted(second.users, key=int) == sorted(ds.users, key=int) and second.users != first.users


# ------------------------------------------------------------------------------------------ schedule
def test_schedule_order_and_skipping():
    s = TaskSchedule(["topn", "seq", "exp"])
    assert [s.task_at(i) for i in range(7)] == ["exp", "seq", "topn", "exp", "seq", "topn", "exp"]
    s = TaskSchedule(["topn", "seq"])
    assert [s.task_at(i) for i in range(4)] == ["seq", "topn", "seq", "topn"]
    with pytest.raises(ValueError):
        TaskSchedule([])


def test_schedule_task_weights_interleave_and_validate():
    s = TaskSchedule(["exp", "seq", "topn"], {"exp": 1, "seq": 3, "topn": 1})
    assert [s.task_at(i) for i in range(10)] == ["exp", "seq", "topn", "seq", "seq"] * 2
    assert TaskSchedule(["exp", "seq", "topn"], {"exp": 0}).order == ("seq", "topn")  # weight 0 drops a task
    assert TaskSchedule(["seq"], {"exp": 5, "seq": 2}).order == ("seq", "seq")  # weights of absent tasks ignored
    from peapod.errors import ConfigError

    for bad in ({"seq": -1}, {"rating": 1}, {"seq": 1.5}):
        with pytest.raises(ConfigError, match="task_weights"):
            TaskSchedule(["seq", "topn"], bad)
    with pytest.raises(ValueError):
        TaskSchedule(["seq"], {"seq": 0})


def test_build_samplers_skips_missing_explanations():
    ds = make_dataset(with_exp=False)
    samplers = build_train_samplers(ds, DataConfig(), seed=1)
    assert set(samplers) == {"seq", "topn"}
    multi = MultiTaskSampler(samplers, batch_size=4)
    assert [multi.next_batch(i).task for i in range(4)] == ["seq", "topn", "seq", "topn"]


def test_steps_per_epoch_reference_formula():
    assert steps_per_epoch(106_200, 22_363, 64) == 106_200 // 64 + 2 * (22_363 // 64)
    assert steps_per_epoch(0, 10, 64) == 1
    assert steps_per_epoch(500, 300, 32, override=7) == 7


def test_processes_draw_different_batches():
    ds = make_dataset()
    a = build_train_samplers(ds, DataConfig(), seed=1, process_index=0)["seq"].draw(16)
    b = build_train_samplers(ds, DataConfig(), seed=1, process_index=1)["seq"].draw(16)
    c = build_train_samplers(ds, DataConfig(), seed=1, process_index=0)["seq"].draw(16)
    assert a.sources != b.sources and a.sources == c.sources


@pytest.mark.parametrize("bucket", [1, 4])
def test_multitask_state_roundtrip_reproduces_batches(bucket):
    ds = make_dataset()
    multi = MultiTaskSampler(build_train_samplers(ds, DataConfig(), seed=5), batch_size=8, bucket_batches=bucket)
    for step in range(7):
        multi.next_batch(step)
    state = json.loads(json.dumps(multi.state_dict()))  # plain data
    expected = [multi.next_batch(step).to_dict() for step in range(7, 20)]
    fresh = MultiTaskSampler(build_train_samplers(ds, DataConfig(), seed=5), batch_size=8, bucket_batches=bucket)
    fresh.load_state_dict(state)
    assert [fresh.next_batch(step).to_dict() for step in range(7, 20)] == expected


def test_bucketing_sorts_lengths_within_batches():
    ds = make_dataset()
    multi = MultiTaskSampler(build_train_samplers(ds, DataConfig(), seed=5), batch_size=8, bucket_batches=8)
    spreads = []
    for step in range(1, 3 * 8, 3):  # sequential batches
        lens = [len(s) for s in multi.next_batch(step).sources]
        spreads.append(max(lens) - min(lens))
    plain = MultiTaskSampler(build_train_samplers(ds, DataConfig(), seed=5), batch_size=8)
    plain_spreads = []
    for step in range(1, 3 * 8, 3):
        lens = [len(s) for s in plain.next_batch(step).sources]
        plain_spreads.append(max(lens) - min(lens))
    assert np.mean(spreads) < np.mean(plain_spreads)


# ------------------------------------------------------------------------------------------ validation
def test_validation_samples_bare_and_deterministic():
    ds = make_dataset()
    cfg = DataConfig(n_negatives=99, valid_negatives_seed=7)
    val = build_validation(ds, cfg)
    assert set(val) == {"exp", "seq", "topn"}
    seq, topn, exp = val["seq"], val["topn"], val["exp"]
    assert len(seq) == ds.n_users and len(topn) == ds.n_users and len(exp) == ds.n_users
    u = seq.users[0]
    hist, target = ds.history(u, "valid", 20)
    assert seq.sources[0] == "user_" + u + " item_" + " item_".join(hist) and seq.targets[0] == target
    assert all(s.startswith("user_") and s.count("item_") == 100 for s in topn.sources)
    assert topn.targets == [ds.valid_target(u) for u in topn.users]
    assert exp.sources[0] == f"user_{exp.users[0]} item_{ds.explanations['val'][0].item}"
    again = build_validation(ds, cfg)
    assert again["topn"].sources == topn.sources
    capped = build_validation(ds, cfg, max_users=10)
    assert len(capped["seq"]) == 10 and len(capped["topn"]) == 10 and len(capped["exp"]) == 10
