"""Bring-your-own-data import: formats, k-core, P5 numbering, negatives, explanations, errors, CLI."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random

import numpy as np
import pytest

from peapod.cli import main
from peapod.data import load_dataset, p5_negative_samples
from peapod.data.importers import AspectExtractor, detect_format, import_interactions, k_core_filter
from peapod.errors import ConfigError, DataFormatError

ASPECTS = ("battery", "screen", "sound", "case")
ADJECTIVES = ("great", "awful", "excellent", "terrible", "fine", "good")  # opinion words: never aspects
FILES = ("sequential_data.txt", "negative_samples.txt", "datamaps.json", "explanation.json")


def _toy_rows(n_users=10, n_items=12, per_user=6, seed=0):
    """Deterministic reviews: each user rates ``per_user`` distinct items; input order shuffled."""
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        for k, i in enumerate(rng.sample(range(n_items), per_user)):
            aspect = ASPECTS[(u + i) % len(ASPECTS)]
            rows.append(
                {
                    "user": f"U{u}",
                    "item": f"I{i:02d}",
                    "timestamp": 1_400_000_000 + 1000 * k + rng.randrange(500),
                    "rating": 1 + (u * i) % 5,
                    "text": f"Arrived on time. The {aspect} is {rng.choice(ADJECTIVES)} for the money! Thanks",
                }
            )
    rng.shuffle(rows)
    return rows


def _write_csv(path, rows, fields=("user", "item", "timestamp", "rating", "text"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(fields)
        for r in rows:
            w.writerow([r[f] for f in fields])
    return path


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _amazon(r):
    return {
        "reviewerID": r["user"],
        "asin": r["item"],
        "reviewerName": "x",
        "helpful": [0, 0],
        "reviewText": r["text"],
        "overall": float(r["rating"]),
        "summary": "Five Stars",
        "unixReviewTime": r["timestamp"],
        "reviewTime": "01 1, 2014",
    }


def _write_amazon_gz(path, rows, literal_every=4):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for k, r in enumerate(rows):
            obj = _amazon(r)
            fh.write((repr(obj) if k % literal_every == 0 else json.dumps(obj)) + "\n")
    return path


def _digests(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES if (folder / f).exists()}


# ---------------------------------------------------------------------------------------- k-core
def test_k_core_cascade_on_a_hand_made_example():
    # u0: i0 i1 i2 | u1: i0 i1 | u2: i2 i3. With k = 2: i3 (1) goes, then u2 (1 left), then i2 (1 left).
    users = np.array([0, 0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 0, 1, 2, 3])
    keep, rounds = k_core_filter(users, items, 2, 2)
    assert keep.tolist() == [True, True, False, True, True, False, False]
    assert rounds == 3
    keep, rounds = k_core_filter(users, items, 1, 1)
    assert keep.all() and rounds == 0
    keep, _ = k_core_filter(users, items, 3, 1)  # only u0 has 3
    assert keep.tolist() == [True, True, True, False, False, False, False]
    keep, _ = k_core_filter(users, items, 4, 4)
    assert not keep.any()


def test_k_core_through_the_importer(tmp_path):
    # a, b, c, e each bought three of x, y, z, v; d bought x, y, w (w only once):
    # k = 3 removes w in round 1, then d (2 left) in round 2
    pairs = [("a", "x"), ("a", "y"), ("a", "z"), ("b", "x"), ("b", "y"), ("b", "v"), ("c", "x"), ("c", "z"),
             ("c", "v"), ("d", "x"), ("d", "y"), ("d", "w"), ("e", "y"), ("e", "z"), ("e", "v")]
    path = tmp_path / "in.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for t, (u, i) in enumerate(pairs)))
    rep = import_interactions(path, tmp_path / "out", k_core=3, min_length=3, n_negatives=1)
    assert (rep.n_users, rep.n_items, rep.n_interactions) == (4, 4, 12)
    assert (rep.n_users_removed, rep.n_items_removed, rep.n_interactions_removed) == (1, 1, 3)
    assert rep.filter_rounds == 2 and (rep.user_min, rep.item_min) == (3, 3)
    ds = load_dataset(tmp_path / "out", n_negatives=1)
    assert set(ds.user_raw.values()) == {"a", "b", "c", "e"} and set(ds.item_raw.values()) == {"x", "y", "z", "v"}
    with pytest.raises(DataFormatError, match="too few to draw 2 negatives"):
        import_interactions(path, tmp_path / "out2", k_core=3, min_length=3, n_negatives=2)
    rep = import_interactions(path, tmp_path / "out3", k_core=0, min_length=3, n_negatives=1)
    assert (rep.n_users, rep.n_items, rep.n_interactions_removed) == (5, 5, 0)
    with pytest.raises(DataFormatError, match="nothing left after filtering"):  # every user has 3 < 4
        import_interactions(path, tmp_path / "out4", k_core=0, min_length=4, n_negatives=1)


# ---------------------------------------------------------------------------------------- pipeline
def test_csv_order_ties_and_p5_ids(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "user,item,timestamp\n"
        "a,x,3\na,y,1\na,z,2\n"
        "b,y,5\nb,x,5\nb,w,4\n"  # b: tie at 5, input order keeps y before x
        "c,v,9\nc,w,7\nc,u,8\n"
    )
    import_interactions(path, tmp_path / "out", k_core=0, min_length=3, n_negatives=1, seed=11)
    ds = load_dataset(tmp_path / "out", n_negatives=1)
    chrono = {"a": ["y", "z", "x"], "b": ["w", "y", "x"], "c": ["w", "u", "v"]}
    users = ["a", "b", "c"]
    random.Random(11).shuffle(users)
    assert [ds.user_raw[u] for u in ds.users] == users  # P5: shuffled, numbered 1..U
    first_seen = list(dict.fromkeys(i for u in users for i in chrono[u]))
    assert [ds.item_raw[i] for i in ds.items] == first_seen  # items numbered by first appearance
    for uid, seq in ds.sequences.items():
        assert [ds.item_raw[i] for i in seq] == chrono[ds.user_raw[uid]]
    assert ds.negatives == p5_negative_samples(ds.sequences, n=1, seed=2022)
    assert ds.explanations == {"train": [], "val": [], "test": []}
    assert not (tmp_path / "out" / "explanation.json").exists()  # no text column


def test_csv_jsonl_and_amazon_give_the_same_dataset(tmp_path):
    rows = _toy_rows()
    a = import_interactions(_write_csv(tmp_path / "r.csv", rows), tmp_path / "a", k_core=2, n_negatives=4)
    b = import_interactions(_write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "b", k_core=2, n_negatives=4)
    c = import_interactions(_write_amazon_gz(tmp_path / "r.json.gz", rows), tmp_path / "c", k_core=2, n_negatives=4)
    assert (a.format, b.format, c.format) == ("csv", "jsonl", "amazon")
    da, db, dc = _digests(tmp_path / "a"), _digests(tmp_path / "b"), _digests(tmp_path / "c")
    assert da == db
    for f in ("sequential_data.txt", "negative_samples.txt", "datamaps.json"):
        assert da[f] == dc[f]
    assert a.n_interactions == 60 and a.n_users == 10 and a.n_with_text == 60


def test_amazon_explanations(tmp_path):
    rows = _toy_rows()
    src = _write_amazon_gz(tmp_path / "reviews_Toy_5.json.gz", rows)
    rep = import_interactions(src, tmp_path / "out", n_negatives=4, k_core=2, min_aspect_count=3)
    assert set(ASPECTS) <= set(rep.aspects)
    assert set(rep.aspects[:4]) == set(ASPECTS)  # "arrived", "money" are in every review: no aspects
    assert sum(rep.explanations.values()) == 60
    assert rep.explanations["train"] == 48 and rep.explanations["val"] + rep.explanations["test"] == 12
    ds = load_dataset(tmp_path / "out", n_negatives=4, drop_explanation_leaks=False)
    by_pair = {(r["user"], r["item"]): r for r in rows}
    for split, records in ds.explanations.items():
        for rec in records:
            raw = by_pair[ds.user_raw[rec.user], rec.item_raw]
            # the first sentence has no aspect; the second does
            assert rec.explanation == raw["text"].split(". ")[1].split(" Thanks")[0]
            assert rec.feature in ASPECTS and rec.feature in rec.explanation
    # every user and every item has a review in explanation-train (P5's forced coverage)
    train = ds.explanations["train"]
    assert {r.user for r in train} == set(ds.users) and {r.item for r in train} == set(ds.items)
    assert "explanations: 60 of 60 reviews with text" in rep.summary()


def test_given_aspects_and_no_explanations(tmp_path):
    rows = _toy_rows()
    src = _write_jsonl(tmp_path / "r.jsonl", rows)
    rep = import_interactions(src, tmp_path / "a", k_core=2, n_negatives=4, aspects=["Screen", "sound"])
    assert rep.aspects == ["screen", "sound"]
    ds = load_dataset(tmp_path / "a", n_negatives=4, drop_explanation_leaks=False)
    feats = {r.feature for recs in ds.explanations.values() for r in recs}
    assert feats == {"screen", "sound"}
    rep = import_interactions(src, tmp_path / "b", k_core=2, n_negatives=4, explanations=False)
    assert rep.explanations == {} and not (tmp_path / "b" / "explanation.json").exists()


def test_custom_columns_tsv_iso_dates_and_min_rating(tmp_path):
    rows = _toy_rows()
    for r in rows:
        r["when"] = f"2014-01-{1 + (r['timestamp'] - 1_400_000_000) // 1000:02d}T00:00:{r['timestamp'] % 60:02d}Z"
        r["who"], r["what"], r["stars"] = r["user"], r["item"], r["rating"]
    path = _write_csv(tmp_path / "r.tsv", rows, fields=("who", "what", "when", "stars"), delimiter="\t")
    rep = import_interactions(
        path, tmp_path / "out", k_core=0, min_length=3, n_negatives=4,
        user_col="who", item_col="what", time_col="when", rating_col="stars", min_rating=3,
    )
    assert rep.n_rating_dropped == sum(r["rating"] < 3 for r in rows) > 0
    assert rep.n_rows == 60
    ds = load_dataset(tmp_path / "out", n_negatives=4)
    times = {(r["user"], r["item"]): r["when"] for r in rows}
    for uid, seq in ds.sequences.items():
        stamps = [times[ds.user_raw[uid], ds.item_raw[i]] for i in seq]
        assert stamps == sorted(stamps)


def test_deterministic_and_seeded(tmp_path):
    src = _write_csv(tmp_path / "r.csv", _toy_rows())
    import_interactions(src, tmp_path / "a", k_core=2, n_negatives=4)
    import_interactions(src, tmp_path / "b", k_core=2, n_negatives=4)
    import_interactions(src, tmp_path / "c", k_core=2, n_negatives=4, seed=7)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a")["datamaps.json"] != _digests(tmp_path / "c")["datamaps.json"]


def test_detect_format(tmp_path):
    rows = _toy_rows()[:2]
    assert detect_format(_write_csv(tmp_path / "a.csv", rows)) == "csv"
    assert detect_format(_write_jsonl(tmp_path / "a.jsonl", rows)) == "jsonl"
    assert detect_format(_write_amazon_gz(tmp_path / "a.json.gz", rows)) == "amazon"
    with pytest.raises(DataFormatError, match="pass --format"):
        detect_format(tmp_path / "a.parquet")


# ---------------------------------------------------------------------------------------- errors
GOOD = '{"user": "a", "item": "x", "timestamp": 1}\n'


@pytest.mark.parametrize(
    "name, content, kwargs, line, needle",
    [
        ("e.csv", "", {}, None, "file is empty"),
        ("e.csv", "user,item,timestamp\n\n", {}, None, "no interactions found"),
        ("e.jsonl", "\n\n", {}, None, "file is empty"),
        ("h.jsonl", "\n\n", {"fmt": "jsonl"}, None, "no interactions found"),
        ("m.csv", "user,item,time\na,x,1\n", {}, 1, "no column 'timestamp'"),
        ("f.csv", "user,item,timestamp\na,x,1\nb,y\n", {}, 3, "expected 3 fields"),
        ("t.csv", "user,item,timestamp\na,x,1\nb,y,yesterday\n", {}, 3, "bad timestamp 'yesterday'"),
        ("u.csv", "user,item,timestamp\na,x,1\n ,y,2\n", {}, 3, "empty user"),
        ("r.csv", "user,item,timestamp,rating\na,x,1,good\n", {}, 2, "bad rating"),
        ("j.jsonl", GOOD + '{"user": "a", "item": "y", "timestamp": 2\n', {}, 2, "invalid JSON"),
        ("j.jsonl", GOOD + "{'user': 'a', 'item': 'y', 'timestamp': 2}\n", {"fmt": "jsonl"}, 2, "invalid JSON"),
        ("k.jsonl", GOOD + GOOD + '{"user": "a", "timestamp": 3}\n', {}, 3, "missing key 'item'"),
        ("l.jsonl", "[1, 2]\n", {}, 1, "expected an object"),
        ("n.jsonl", '{"user": null, "item": "x", "timestamp": 1}\n', {}, 1, "user must be"),
        ("b.jsonl", '{"user": "a", "item": "x", "timestamp": true}\n', {}, 1, "bad timestamp"),
        ("s.jsonl", GOOD, {"min_rating": 3}, 1, "no rating"),
        ("a.json", '{"reviewerID": "a", "asin": "x", "unixReviewTime": 1}\n{"reviewerID": oops}\n', {}, 2,
         "neither valid JSON nor a Python dict literal"),
        ("a.json", '{"reviewerID": "a", "asin": "x"}\n', {}, 1, "missing key 'unixReviewTime'"),
        ("a.json", '{"reviewerID": "a", "asin": "x", "unixReviewTime": "soon"}\n', {}, 1, "bad timestamp"),
        ("k.jsonl", GOOD * 3, {"k_core": 5}, None, "nothing left after filtering"),
        ("x.txt", GOOD, {}, None, "cannot tell the format"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, name, content, kwargs, line, needle):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    args = dict(k_core=0, min_length=3, n_negatives=1)
    args.update(kwargs)
    with pytest.raises(DataFormatError, match=needle) as info:
        import_interactions(path, tmp_path / "out", **args)
    assert info.value.path == path and info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}:" if line else f"{path}:")
    assert not (tmp_path / "out").exists()


def test_binary_missing_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"user,item,timestamp\na,x,1\n\xff\xfe,y,2\n")
    with pytest.raises(DataFormatError, match="not UTF-8") as info:
        import_interactions(bad, tmp_path / "out", k_core=0, min_length=3)
    assert info.value.line is not None
    with pytest.raises(DataFormatError, match="file not found"):
        import_interactions(tmp_path / "none.csv", tmp_path / "out")
    gz = tmp_path / "cut.json.gz"
    gz.write_bytes(gzip.compress(b'{"reviewerID": "a", "asin": "x", "unixReviewTime": 1}\n' * 500)[:60])
    with pytest.raises(DataFormatError, match="cannot decompress"):
        import_interactions(gz, tmp_path / "out", fmt="amazon", k_core=0, min_length=3)


def test_bad_parameters(tmp_path):
    src = _write_csv(tmp_path / "r.csv", _toy_rows())
    with pytest.raises(ConfigError, match="min_length"):
        import_interactions(src, tmp_path / "o", min_length=2)
    with pytest.raises(ConfigError, match="unknown input format"):
        import_interactions(src, tmp_path / "o", fmt="parquet")
    with pytest.raises(ConfigError, match="k_core"):
        import_interactions(src, tmp_path / "o", k_core=-1)


# ---------------------------------------------------------------------------------------- extractor
def test_aspect_extractor():
    texts = [
        "Shipping was quick. The battery life is great and the screen is sharp.",
        "I love it. Battery life lasts two days!",
        "Great value.\nThe screen scratches easily though.",
        "The battery life could be better, the screen is fine.",
    ]
    ex = AspectExtractor(min_count=2, max_df=1.0).fit(texts, texts)
    assert ex.aspects[:4] == ["battery", "battery life", "life", "screen"]  # 3 reviews each; ties by name
    assert "battery life" in ex.aspects and "great" not in ex.aspects and "quick" not in ex.aspects
    assert ex.extract(texts[1]) == ("Battery life lasts two days!", "battery life")  # 'I love it.' is too short
    assert ex.extract(texts[2]) == ("The screen scratches easily though.", "screen")
    assert ex.extract("Nothing to see here at all.") is None
    assert "battery" not in AspectExtractor(min_count=2).fit(texts, texts).aspects  # in 3 of 4 reviews > max_df
    given = AspectExtractor(aspects=["Sound", "noise cancelling"])
    assert given.extract("Fine phone. The noise cancelling is superb. Sound ok.") == (
        "The noise cancelling is superb.", "noise cancelling")
    with pytest.raises(ConfigError):
        AspectExtractor(aspects=["three word aspect"])


# ---------------------------------------------------------------------------------------- CLI
def test_cli_from_interactions(tmp_path, capsys):
    src = _write_amazon_gz(tmp_path / "reviews.json.gz", _toy_rows())
    code = main(["data", "from-interactions", str(src), "--out", str(tmp_path / "out"),
                 "--k-core", "2", "--negatives", "4", "--seed", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "read 60 interactions (10 users, 12 items)" in out and "[amazon]" in out
    assert "explanations: 60 of 60 reviews with text" in out
    ds = load_dataset(tmp_path / "out", n_negatives=4)
    assert ds.n_users == 10 and ds.n_items == 12
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD + "{oops\n")
    code = main(["data", "from-interactions", str(bad), "--out", str(tmp_path / "o2"), "--k-core", "0"])
    err = capsys.readouterr().err
    assert code == 2 and f"peapod: error: {bad}:2: invalid JSON" in err


def test_cli_synth(tmp_path, capsys):
    code = main(["data", "synth", "--out", str(tmp_path / "syn"), "--users", "60", "--items", "150", "--seed", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "60 users" in out and "explanations: train" in out
    ds = load_dataset(tmp_path / "syn")
    assert ds.n_users == 60 and sum(len(v) for v in ds.explanations.values()) > 0
    code = main(["data", "synth", "--out", str(tmp_path / "x"), "--items", "50"])
    assert code == 2 and "n_items" in capsys.readouterr().err
