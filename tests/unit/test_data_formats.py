"""Readers and loader on tiny files in the exact real formats, every error path, and the splits."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from peapod.data import Dataset, ExplanationRecord, load_dataset
from peapod.data.formats import (
    load_plain_pickle,
    read_datamaps,
    read_exp_splits_pkl,
    read_explanation_json,
    read_negatives,
    read_sequences,
)
from peapod.errors import ConfigError, DataFormatError

SEQ = "1 1 2 3 4 5\n2 6 7 3 8\n3 9 2 10 11\n4 12 1 6 5 3\n"
NEG = "1 9 10 11\n2 1 2 12\n3 3 4 5\n4 7 8 9\n"
N_ITEMS = 12


def raw_user(u: int) -> str:
    return f"AUSER{u}"


def raw_item(i: int) -> str:
    return f"B00ITEM{i:03d}"


def full_datamaps() -> dict:
    users, items = range(1, 5), range(1, N_ITEMS + 1)
    return {
        "user2id": {raw_user(u): str(u) for u in users},
        "item2id": {raw_item(i): str(i) for i in items},
        "id2user": {str(u): raw_user(u) for u in users},
        "id2item": {str(i): raw_item(i) for i in items},
        "attribute2id": {"Makeup": 1},
        "id2attribute": {"1": "Makeup"},
        "attributeid2num": {"1": 3},
    }


# user 1: valid 4, test 5; user 2: valid 3, test 8; user 3: valid 10, test 11; user 4: valid 5, test 3
EXP = {
    "train": [
        {"user": 1, "item": 1, "explanation": "great colour", "feature": "colour"},
        {"user": 1, "item": 5, "explanation": "the test item", "feature": "test"},  # held out
        {"user": 2, "item": 3, "explanation": "the valid item", "feature": "valid"},  # held out
        {"user": 4, "item": 3, "explanation": "another test item", "feature": "test"},  # held out
        {"user": 4, "item": 12, "explanation": "lovely smell", "feature": "smell"},
    ],
    "val": [{"user": 2, "item": 7, "explanation": "nice box", "feature": "box"}],
    "test": [{"user": 3, "item": 11, "explanation": "soft brush", "feature": "brush"}],
}


def review(u: int, i: int, text: str, feature: str = "f") -> dict:
    return {
        "reviewerID": raw_user(u), "asin": raw_item(i), "reviewerName": "x", "helpful": [0, 1],
        "reviewText": "long text", "overall": 5.0, "summary": "s", "unixReviewTime": 1300000000,
        "reviewTime": "03 13, 2011", "explanation": text, "feature": feature,
    }


def write_tiny(root: Path, *, maps: dict | None | str = "full", exp: str | None = "json",
               seq: str = SEQ, neg: str | None = NEG) -> Path:
    """A 4-user, 12-item dataset in the P5 layout (3 negatives per user)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sequential_data.txt").write_text(seq)
    if neg is not None:
        (root / "negative_samples.txt").write_text(neg)
    if maps == "full":
        maps = full_datamaps()
    elif maps == "reduced":
        full = full_datamaps()
        maps = {"id2user": full["id2user"], "id2item": full["id2item"]}
    if maps is not None:
        (root / "datamaps.json").write_text(json.dumps(maps))
    if exp == "json":
        (root / "explanation.json").write_text(json.dumps(EXP))
    elif exp == "pkl":
        splits = {s: [review(r["user"], r["item"], r["explanation"], r["feature"]) for r in recs]
                  for s, recs in EXP.items()}
        (root / "exp_splits.pkl").write_bytes(pickle.dumps(splits))
    return root


def expect_error(fn, *match: str) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        fn()
    for m in match:
        assert m in str(info.value), f"{m!r} not in {str(info.value)!r}"
    return info.value


# ------------------------------------------------------------------------------------ happy paths
def test_load_full_datamaps_and_explanation_json(tmp_path):
    ds = load_dataset(write_tiny(tmp_path / "tiny"), drop_explanation_leaks=False)
    assert isinstance(ds, Dataset) and ds.name == "tiny"
    assert ds.users == ["1", "2", "3", "4"]
    assert ds.items == [str(i) for i in range(1, 13)]
    assert ds.sequences["2"] == ["6", "7", "3", "8"]
    assert ds.negatives["2"] == ["1", "2", "12"]
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (4, 12, 18)
    assert ds.user_raw["3"] == "AUSER3" and ds.item_raw["12"] == "B00ITEM012"
    assert [len(ds.explanations[s]) for s in ("train", "val", "test")] == [5, 1, 1]
    first = ds.explanations["train"][0]
    assert first == ExplanationRecord("1", "1", "great colour", "colour", "B00ITEM001")
    assert ds.notes["explanation_train_heldout_found"] == 3
    assert ds.notes["explanation_train_heldout_dropped"] == 0


def test_reduced_datamaps_are_inverted(tmp_path):
    maps = read_datamaps(write_tiny(tmp_path, maps="reduced") / "datamaps.json")
    assert maps.reduced
    assert maps.user2id["AUSER2"] == "2" and maps.item2id["B00ITEM007"] == "7"
    assert maps.extra == {}
    full = read_datamaps(write_tiny(tmp_path / "f") / "datamaps.json")
    assert not full.reduced and full.user2id == maps.user2id and full.item2id == maps.item2id
    assert set(full.extra) == {"attribute2id", "id2attribute", "attributeid2num"}


def test_exp_splits_pkl_maps_raw_ids_and_keeps_the_asin(tmp_path):
    ds = load_dataset(write_tiny(tmp_path, exp="pkl"), drop_explanation_leaks=False)
    recs = ds.explanations["train"]
    assert [(r.user, r.item) for r in recs] == [(str(r["user"]), str(r["item"])) for r in EXP["train"]]
    assert recs[0].item_raw == "B00ITEM001" and recs[0].feature == "colour"
    assert ds.explanations["test"][0] == ExplanationRecord("3", "11", "soft brush", "brush", "B00ITEM011")


def test_pkl_takes_precedence_over_json(tmp_path):
    root = write_tiny(tmp_path, exp="json")
    splits = {"train": [review(1, 2, "from the pickle")], "val": [], "test": []}
    (root / "exp_splits.pkl").write_bytes(pickle.dumps(splits))
    ds = load_dataset(root)
    assert [r.explanation for r in ds.explanations["train"]] == ["from the pickle"]


def test_datamaps_are_optional_when_files_are_self_sufficient(tmp_path):
    ds = load_dataset(write_tiny(tmp_path, maps=None))
    assert ds.items == [str(i) for i in range(1, 13)]  # every id of sequences + negatives, numeric order
    assert ds.user_raw is None and ds.item_raw is None
    assert all(r.item_raw is None for r in ds.explanations["val"])


def test_items_come_from_id2item_even_if_unbought(tmp_path):
    maps = full_datamaps()
    maps["id2item"]["13"] = "B00UNBOUGHT"
    maps["item2id"]["B00UNBOUGHT"] = "13"
    ds = load_dataset(write_tiny(tmp_path, maps=maps))
    assert ds.items[-1] == "13" and ds.n_items == 13


def test_negatives_optional_and_tolerant_whitespace(tmp_path):
    root = write_tiny(tmp_path, neg=None, seq=SEQ.replace("1 1 2", "1\t1  2") + "\n\n")
    with pytest.raises(DataFormatError, match="negative_samples.txt: file not found"):
        load_dataset(root)
    ds = load_dataset(root, require_negatives=False)
    assert ds.negatives is None and ds.sequences["1"] == ["1", "2", "3", "4", "5"]


def test_leaks_dropped_by_default(tmp_path):
    ds = load_dataset(write_tiny(tmp_path))
    assert [(r.user, r.item) for r in ds.explanations["train"]] == [("1", "1"), ("4", "12")]
    assert ds.notes["explanation_train_heldout_dropped"] == 3


# ------------------------------------------------------------------------------------ splits
def test_sequential_splits_and_history_windows():
    seq = [str(i) for i in range(1, 31)]
    ds = Dataset("s", {"7": seq, "8": ["1", "2", "3"]}, [str(i) for i in range(1, 31)])
    assert ds.train_items("7") == seq[:-2] and ds.valid_target("7") == "29" and ds.test_target("7") == "30"
    hist, target = ds.history("7", "valid")
    assert target == "29" and hist == seq[8:28] and len(hist) == 20  # items[:-1][-21:] minus its target
    hist, target = ds.history("7", "test")
    assert target == "30" and hist == seq[9:29] and hist[-1] == "29"  # test history includes the valid item
    assert ds.history("7", "test", max_history=3) == (["27", "28", "29"], "30")
    assert ds.history("8", "valid") == (["1"], "2") and ds.history("8", "test") == (["1", "2"], "3")
    assert ds.train_sequences() == {"7": seq[:-2], "8": ["1"]}


# ------------------------------------------------------------------------------------ errors: files and lines
def test_missing_files(tmp_path):
    expect_error(lambda: load_dataset(tmp_path / "nope"), "nope", "dataset folder not found")
    root = write_tiny(tmp_path / "d")
    (root / "sequential_data.txt").unlink()
    expect_error(lambda: load_dataset(root), "sequential_data.txt", "file not found")
    expect_error(lambda: read_datamaps(tmp_path / "x.json"), "x.json: file not found")
    expect_error(lambda: load_plain_pickle(tmp_path / "x.pkl"), "x.pkl: file not found")


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("1 1 2 3\n2 4 x 6\n", 2, "token 3 'x' is not a decimal id"),
        ("1 1 2 3\n\n2 4 5 6\n", 2, "empty line"),
        ("1 1 2 3\n2 4 5 6\n1 7 8 9\n", 3, "duplicate user 1 (first on line 1)"),
        ("1 1 2 3\n2 4 05 6\n", 2, "token 3 '05' has leading zeros"),
        ("1 1 2 3\n2 4 -5 6\n", 2, "'-5' is not a decimal id"),
        ("1 1 2 3\n2 4 5\n", 2, "user 2 has 2 item(s); at least 3 are needed"),
        ("", None, "file is empty"),
    ],
)
def test_bad_sequence_lines(tmp_path, text, line, problem):
    path = tmp_path / "sequential_data.txt"
    path.write_text(text)
    err = expect_error(lambda: read_sequences(path), problem)
    assert err.line == line and err.path == path
    if line is not None:
        assert str(err).startswith(f"{path}:{line}: ")


def test_unknown_ids_in_sequences(tmp_path):
    root = write_tiny(tmp_path / "a", seq=SEQ.replace("3 9 2 10 11", "3 9 2 10 99"))
    err = expect_error(
        lambda: load_dataset(root), "sequential_data.txt:3:", "user 3: item 99 is not in datamaps.json id2item"
    )
    assert err.line == 3
    root = write_tiny(tmp_path / "b", seq=SEQ + "5 1 2 3\n", neg=NEG + "5 4 6 7\n")
    expect_error(lambda: load_dataset(root), "sequential_data.txt:5:", "user 5 is not in datamaps.json id2user")


@pytest.mark.parametrize(
    "neg, problem",
    [
        ("1 9 10 11\n2 1 2 12\n3 3 4 5\n", "1 user(s) of sequential_data.txt have no negatives, e.g. user 4"),
        (NEG + "5 1 2 3\n", ":5: user 5 is not in sequential_data.txt"),
        ("1 9 10 11\n2 1 2\n3 3 4 5\n4 7 8 9\n", ":2: user 2 has 2 negatives, expected 3"),
        ("1 9 10 11\n2 1 2 12\n3 3 4 77\n4 7 8 9\n", ":3: user 3: negative 77 is not in datamaps.json id2item"),
        ("1 9 10 11\n2 1 2 12\n3 3 4 5\n4 7 8 1\n", ":4: user 4: negative 1 is in the user's own sequence"),
        ("1 9 10 11\n2 1 2 12\n2 3 4 5\n4 7 8 9\n", ":3: duplicate user 2"),
    ],
)
def test_mismatched_negatives(tmp_path, neg, problem):
    root = write_tiny(tmp_path, neg=neg)
    expect_error(lambda: load_dataset(root), "negative_samples.txt", problem)


def test_negative_count_checked_against_n(tmp_path):
    path = write_tiny(tmp_path) / "negative_samples.txt"
    expect_error(lambda: read_negatives(path, n=99), ":1: user 1 has 3 negatives, expected 99")
    expect_error(lambda: load_dataset(tmp_path, n_negatives=99), "expected 99")
    assert len(read_negatives(path, n=3)) == 4


# ------------------------------------------------------------------------------------ errors: JSON and pickle
def test_datamaps_errors(tmp_path):
    path = tmp_path / "datamaps.json"
    path.write_text('{"id2user": {"1": "A"},\n "id2item": {"1": "B",}}')
    expect_error(lambda: read_datamaps(path), f"{path}:2: invalid JSON")
    path.write_text(json.dumps({"id2user": {"1": "A"}, "items": {}}))
    expect_error(lambda: read_datamaps(path), "wrong JSON keys: need 'id2item' (or 'item2id')")
    path.write_text(json.dumps([1, 2]))
    expect_error(lambda: read_datamaps(path), "expected a JSON object, got list")
    maps = full_datamaps()
    maps["user2id"]["AUSER2"] = "3"
    path.write_text(json.dumps(maps))
    expect_error(lambda: read_datamaps(path), "user2id and id2user disagree")
    path.write_text(json.dumps({"id2user": {"1": "A", "2": "A"}, "id2item": {"1": "B"}}))
    expect_error(lambda: read_datamaps(path), "id2user: 'A' is given to both '1' and '2'")
    path.write_text(json.dumps({"id2user": {"u1": "A"}, "id2item": {"1": "B"}}))
    expect_error(lambda: read_datamaps(path), "id2user: 'u1' is not a decimal id")


def test_explanation_json_errors(tmp_path):
    path = tmp_path / "explanation.json"
    users, items = {"1", "2"}, {"1", "2", "3"}

    def check(obj, *match):
        path.write_text(json.dumps(obj))
        expect_error(lambda: read_explanation_json(path, users, items), str(path), *match)

    ok = {"user": 1, "item": 2, "explanation": "fine", "feature": "f"}
    check({"train": [ok], "val": []}, "wrong keys", "missing ['test']")
    check({"train": [], "val": [], "test": [], "extra": []}, "unexpected ['extra']")
    check({"train": [ok, {**ok, "user": 9}], "val": [], "test": []}, "train[1]: unknown user 9")
    check({"train": [], "val": [{**ok, "item": 4}], "test": []}, "val[0]: unknown item 4")
    check({"train": [], "val": [], "test": [{"user": 1, "item": 2}]}, "test[0]: missing key 'explanation'")
    check({"train": [{**ok, "user": "x1"}], "val": [], "test": []}, "'user' must be an integer id")
    check({"train": {"a": 1}, "val": [], "test": []}, "'train' must be a list")
    path.write_text(json.dumps({"train": [{**ok, "user": "2"}], "val": [], "test": []}))
    assert read_explanation_json(path, users, items)["train"][0].user == "2"  # numeric strings accepted


def test_exp_splits_pkl_errors(tmp_path):
    path = tmp_path / "exp_splits.pkl"
    maps = full_datamaps()

    def check(obj, *match):
        path.write_bytes(pickle.dumps(obj))
        expect_error(lambda: read_exp_splits_pkl(path, maps["user2id"], maps["item2id"]), str(path), *match)

    check({"train": [review(1, 1, "x")], "val": []}, "wrong keys", "missing ['test']")
    bad_user = {**review(1, 1, "x"), "reviewerID": "NOBODY"}
    check({"train": [], "val": [bad_user], "test": []}, "val[0]: reviewerID 'NOBODY' is not in datamaps.json user2id")
    bad_item = {**review(1, 1, "x"), "asin": "B0NOTHERE"}
    check({"train": [], "val": [], "test": [bad_item]}, "test[0]: asin 'B0NOTHERE' is not in datamaps.json item2id")
    no_exp = {k: v for k, v in review(1, 1, "x").items() if k != "explanation"}
    check({"train": [no_exp], "val": [], "test": []}, "train[0]: missing key 'explanation'")
    path.write_bytes(b"not a pickle at all")
    expect_error(lambda: load_plain_pickle(path), "cannot read pickle")


def test_pkl_needs_datamaps(tmp_path):
    root = write_tiny(tmp_path, maps=None, exp="pkl")
    expect_error(lambda: load_dataset(root), "exp_splits.pkl", "needs datamaps.json")


class _Evil:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_loader_never_executes_code(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "exp_splits.pkl"
    path.write_bytes(pickle.dumps({"train": [_Evil(str(target))], "val": [], "test": []}))
    expect_error(lambda: load_plain_pickle(path), "refusing to load", "mkdir")
    assert not target.exists()
    path.write_bytes(pickle.dumps({"train": [{"a": 1.5, "b": [1, "x"]}], "val": [], "test": []}, protocol=0))
    assert load_plain_pickle(path)["train"][0] == {"a": 1.5, "b": [1, "x"]}


def test_unknown_scheme_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown item-id scheme 'sorted'"):
        load_dataset(write_tiny(tmp_path), item_id_scheme="sorted")
