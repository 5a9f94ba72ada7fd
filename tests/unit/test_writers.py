"""The P5-layout writer and the P5 conventions (id map, review-level split)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from peapod.data import ExplanationRecord, load_dataset
from peapod.data.writers import p5_id_map, p5_review_split, write_p5_dataset
from peapod.errors import DataFormatError

SEQS = {"1": ["1", "2", "3"], "2": ["4", "2", "5", "1"], "3": ["5", "3", "4"]}
ITEMS = ["1", "2", "3", "4", "5", "6", "7"]
NEGS = {"1": ["4", "6"], "2": ["3", "7"], "3": ["1", "6"]}
EXPS = {
    "train": [ExplanationRecord("1", "2", "The scent lasts all day", "scent"), {"user": "2", "item": 5, "explanation": "Nice jar"}],
    "val": [ExplanationRecord("3", "3", "Great finish", "finish")],
    "test": [],
}


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_files_and_formats(tmp_path):
    out = write_p5_dataset(tmp_path / "ds", SEQS, ITEMS, NEGS, EXPS)
    assert out == tmp_path / "ds"
    assert _lines(out / "sequential_data.txt") == ["1 1 2 3", "2 4 2 5 1", "3 5 3 4"]
    assert _lines(out / "negative_samples.txt") == ["1 4 6", "2 3 7", "3 1 6"]
    maps = json.loads((out / "datamaps.json").read_text())
    assert list(maps) == ["user2id", "item2id", "id2user", "id2item"]
    assert maps["id2item"] == {i: i for i in ITEMS}  # raw ids default to the numeric ids
    assert maps["user2id"] == {u: u for u in SEQS}
    exp = json.loads((out / "explanation.json").read_text())
    assert list(exp) == ["train", "val", "test"]
    assert exp["train"][0] == {"user": 1, "item": 2, "explanation": "The scent lasts all day", "feature": "scent"}
    assert exp["train"][1] == {"user": 2, "item": 5, "explanation": "Nice jar"}  # no feature: key left out
    assert exp["test"] == []


def test_round_trip_through_the_loader(tmp_path):
    user_raw = {"1": "AX1", "2": "AX2", "3": "AX3"}
    item_raw = {i: f"B00{i}" for i in ITEMS}
    write_p5_dataset(tmp_path, SEQS, ITEMS, NEGS, EXPS, user_raw=user_raw, item_raw=item_raw)
    ds = load_dataset(tmp_path, n_negatives=2, drop_explanation_leaks=False)
    assert ds.sequences == SEQS
    assert ds.items == ITEMS  # items no user bought (6, 7) stay in the catalogue via datamaps
    assert ds.negatives == NEGS
    assert ds.user_raw == user_raw and ds.item_raw == item_raw
    assert [(r.user, r.item, r.explanation, r.feature, r.item_raw) for r in ds.explanations["train"]] == [
        ("1", "2", "The scent lasts all day", "scent", "B002"),
        ("2", "5", "Nice jar", None, "B005"),
    ]
    assert len(ds.explanations["val"]) == 1 and ds.explanations["test"] == []


def test_none_removes_stale_optional_files(tmp_path):
    write_p5_dataset(tmp_path, SEQS, ITEMS, NEGS, EXPS)
    write_p5_dataset(tmp_path, SEQS, ITEMS, None, None)
    assert not (tmp_path / "explanation.json").exists()
    assert not (tmp_path / "negative_samples.txt").exists()
    assert (tmp_path / "sequential_data.txt").exists()


@pytest.mark.parametrize(
    "kwargs, file, needle",
    [
        (dict(sequences={"1": ["1", "9"]}), "sequential_data.txt", "item '9' is not in the item list"),
        (dict(sequences={"01": ["1"]}), "sequential_data.txt", "not a decimal id"),
        (dict(sequences={}), "sequential_data.txt", "no users"),
        (dict(items=["1", "1"]), "sequential_data.txt", "listed twice"),
        (dict(negatives={"1": ["1"], "2": ["3"], "3": ["1"]}), "negative_samples.txt", "in the user's sequence"),
        (dict(negatives={"1": ["4"], "2": ["3"]}), "negative_samples.txt", "user 3 has no negatives"),
        (dict(user_raw={"1": "A", "2": "A", "3": "B"}), "datamaps.json", "raw id 'A'"),
        (dict(item_raw={"1": "x"}), "datamaps.json", "no raw id for item 2"),
        (dict(explanations={"train": [ExplanationRecord("9", "1", "x")]}), "explanation.json", "unknown user 9"),
        (dict(explanations={"train": [ExplanationRecord("1", "9", "x")]}), "explanation.json", "unknown item 9"),
        (dict(explanations={"train": [ExplanationRecord("1", "1", " ")]}), "explanation.json", "non-empty"),
        (dict(explanations={"dev": []}), "explanation.json", "unknown explanation split"),
    ],
)
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, kwargs, file, needle):
    args = dict(sequences=SEQS, items=ITEMS, negatives=NEGS, explanations=EXPS)
    args.update(kwargs)
    with pytest.raises(DataFormatError, match=needle) as info:
        write_p5_dataset(tmp_path / "out", **args)
    assert info.value.path.name == file
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_p5_id_map_matches_p5_procedure():
    user_items = {"ua": ["x", "y"], "ub": ["z", "x"], "uc": ["w"], "ud": ["y", "v", "z"], "ue": ["q"]}
    seqs, id2user, id2item = p5_id_map(user_items, seed=2022)
    # P5: random.seed(2022); random.shuffle(list(user_items)); number users 1..U in that order
    expected_users = list(user_items)
    state = random.getstate()
    random.seed(2022)
    random.shuffle(expected_users)
    random.setstate(state)
    assert [id2user[u] for u in seqs] == expected_users
    assert list(seqs) == [str(k) for k in range(1, 6)]
    # items numbered 1..I by first appearance while walking the shuffled users
    walked = [i for u in expected_users for i in user_items[u]]
    first = list(dict.fromkeys(walked))
    assert [id2item[str(k)] for k in range(1, len(first) + 1)] == first
    for uid, row in seqs.items():
        assert [id2item[i] for i in row] == user_items[id2user[uid]]
    assert p5_id_map(user_items, seed=1)[1] != id2user or p5_id_map(user_items, seed=3)[1] != id2user


def test_p5_review_split_forces_coverage_and_fractions():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 300, 5000)
    items = rng.integers(0, 800, 5000)
    split = p5_review_split(users, items, seed=7)
    assert set(np.unique(split)) == {0, 1, 2}
    assert set(users[split == 0]) == set(users)  # every user and item has a train review
    assert set(items[split == 0]) == set(items)
    n_train, n_val, n_test = (split == 0).sum(), (split == 1).sum(), (split == 2).sum()
    assert n_train == 4000 and abs(n_val - n_test) <= 1
    assert np.array_equal(split, p5_review_split(users, items, seed=7))
    assert not np.array_equal(split, p5_review_split(users, items, seed=8))


def test_p5_review_split_when_forced_reviews_exceed_train_share():
    users = np.arange(10)  # ten users, one review each: all forced into train
    split = p5_review_split(users, users, seed=0)
    assert (split == 0).all()
    assert len(p5_review_split(np.array([], int), np.array([], int), seed=0)) == 0
    with pytest.raises(ValueError):
        p5_review_split(users, users[:3], seed=0)
