"""Write a dataset in the P5 / POD file layout, and the P5 conventions that produce one.

Files written into one folder, each atomically (:mod:`peapod.io`):

- ``sequential_data.txt``: ``uid iid_1 ... iid_N`` per user, in the given user order;
- ``negative_samples.txt``: ``uid n_1 ... n_99`` per user, same order (when negatives are given);
- ``datamaps.json``: P5's maps ``user2id``, ``item2id``, ``id2user``, ``id2item`` (raw ids default to
  the numeric ids);
- ``explanation.json``: POD's explanation splits ``{"train"|"val"|"test": [{"user": int, "item": int,
  "explanation": str, "feature": str}]}`` (when explanations are given).

The helpers :func:`p5_id_map` (user shuffle, items numbered by first appearance) and
:func:`p5_review_split` (review-level 80/10/10 split with one review per user and per item forced into
train) are the P5 conventions shared by the importers and the synthetic generator.
"""

from __future__ import annotations

import json
import random
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError
from ..io import atomic_write_text
from .dataset import EXPLANATION_SPLITS, ExplanationRecord
from .formats import DATAMAPS_FILE, EXPLANATION_FILE, NEGATIVES_FILE, SEQUENCES_FILE

__all__ = ["write_p5_dataset", "p5_id_map", "p5_review_split"]


# ---------------------------------------------------------------------------------------- P5 conventions
def p5_id_map(
    user_items: Mapping[Hashable, Sequence[Hashable]], seed: int = 2022
) -> tuple[dict[str, list[str]], dict[str, Hashable], dict[str, Hashable]]:
    """Number users and items as P5's ``id_map`` does.

    The users (in ``user_items`` order) are shuffled with ``random.Random(seed)`` (the same permutation
    as ``random.seed(seed); random.shuffle(users)``) and numbered 1..U; items are numbered 1..I in order
    of first appearance while walking the shuffled users' chronological lists.

    Returns ``(sequences, id2user, id2item)``: ``{uid: [iids]}`` in uid order, and the raw keys of every id.
    """
    users = list(user_items)
    random.Random(seed).shuffle(users)
    item2id: dict[Hashable, str] = {}
    id2user: dict[str, Hashable] = {}
    sequences: dict[str, list[str]] = {}
    for k, raw_user in enumerate(users, 1):
        uid = str(k)
        id2user[uid] = raw_user
        row = []
        for raw_item in user_items[raw_user]:
            iid = item2id.get(raw_item)
            if iid is None:
                iid = item2id[raw_item] = str(len(item2id) + 1)
            row.append(iid)
        sequences[uid] = row
    id2item = {iid: raw for raw, iid in item2id.items()}
    return sequences, id2user, id2item


def p5_review_split(
    users: np.ndarray,
    items: np.ndarray,
    seed: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> np.ndarray:
    """P5's review-level random split: 0 = train, 1 = val, 2 = test for each review (user, item).

    One random review of every user and one of every item are forced into train; train is then topped
    up at random to ``fractions[0]`` of all reviews, and the rest is cut at random into val and test in
    the ratio ``fractions[1] : fractions[2]``. Vectorised; seeded with ``numpy.random.default_rng(seed)``.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    n = len(users)
    if len(items) != n:
        raise ValueError(f"users and items differ in length ({n} vs {len(items)})")
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    split = np.full(n, -1, dtype=np.int8)
    if n == 0:
        return split
    perm = np.random.default_rng(seed).permutation(n)
    forced = np.zeros(n, dtype=bool)
    for key in (users, items):  # first review of each key in the random order = a random review of it
        _, first = np.unique(key[perm], return_index=True)
        forced[perm[first]] = True
    rest = perm[~forced[perm]]  # the other reviews, still in random order
    n_train = max(int(round(fractions[0] * n)), int(forced.sum()))
    n_top_up = n_train - int(forced.sum())
    split[forced] = 0
    split[rest[:n_top_up]] = 0
    rest = rest[n_top_up:]
    held = fractions[1] + fractions[2]
    n_val = int(round(len(rest) * fractions[1] / held)) if held > 0 else 0
    split[rest[:n_val]] = 1
    split[rest[n_val:]] = 2
    return split


# ---------------------------------------------------------------------------------------- writer
def _lines(rows: Mapping[str, Sequence[str]], order: Sequence[str]) -> str:
    return "".join(f"{u} {' '.join(rows[u])}\n" for u in order)


def _raw_map(path: Path, what: str, ids: Sequence[str], raw: Mapping[str, str] | None) -> dict[str, str]:
    """id -> raw id for every id (default: the id itself); raw ids must be distinct strings."""
    if raw is None:
        return {i: i for i in ids}
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for i in ids:
        if i not in raw:
            raise DataFormatError(path, f"no raw id for {what} {i}")
        r = raw[i]
        if not isinstance(r, str) or not r:
            raise DataFormatError(path, f"raw id of {what} {i} must be a non-empty string, got {r!r}")
        if r in seen:
            raise DataFormatError(path, f"raw id {r!r} is given to {what}s {seen[r]} and {i}")
        seen[r] = i
        out[i] = r
    return out


def _record(path: Path, split: str, k: int, rec: Any, users: Mapping, items: Mapping) -> dict[str, Any]:
    if isinstance(rec, ExplanationRecord):
        user, item, text, feature = rec.user, rec.item, rec.explanation, rec.feature
    elif isinstance(rec, Mapping):
        user, item, text, feature = rec.get("user"), rec.get("item"), rec.get("explanation"), rec.get("feature")
    else:
        raise DataFormatError(path, f"{split}[{k}]: expected an ExplanationRecord or a dict, got {type(rec).__name__}")
    user, item = str(user), str(item)
    if user not in users:
        raise DataFormatError(path, f"{split}[{k}]: unknown user {user}")
    if item not in items:
        raise DataFormatError(path, f"{split}[{k}]: unknown item {item}")
    if not isinstance(text, str) or not text.strip():
        raise DataFormatError(path, f"{split}[{k}]: explanation must be a non-empty string, got {text!r}")
    out: dict[str, Any] = {"user": int(user), "item": int(item), "explanation": text}
    if feature is not None:
        out["feature"] = str(feature)
    return out


def write_p5_dataset(
    out_dir: str | Path,
    sequences: Mapping[str, Sequence[str]],
    items: Sequence[str],
    negatives: Mapping[str, Sequence[str]] | None,
    explanations: Mapping[str, Sequence[ExplanationRecord | Mapping[str, Any]]] | None = None,
    user_raw: Mapping[str, str] | None = None,
    item_raw: Mapping[str, str] | None = None,
) -> Path:
    """Write a P5-layout dataset into ``out_dir`` (created if needed) and return the folder.

    ``sequences`` maps user id -> chronological item ids (decimal strings, written in the given user
    order); ``items`` lists every item id (id order); ``negatives`` maps every user to its fixed test
    negatives; ``explanations`` maps "train"/"val"/"test" to
    :class:`ExplanationRecord` objects or POD-style dicts. A ``None`` for either writes no file, and
    removes one left in ``out_dir`` by an earlier write, so a folder never mixes two datasets. ``user_raw`` /
    ``item_raw`` give the raw ids of ``datamaps.json``. Inconsistent input raises
    :class:`~peapod.errors.DataFormatError` naming the file it would have broken; nothing is written then.
    """
    out = Path(out_dir)
    seq_path, neg_path = out / SEQUENCES_FILE, out / NEGATIVES_FILE
    maps_path, exp_path = out / DATAMAPS_FILE, out / EXPLANATION_FILE
    id_check = _is_decimal_id
    item_set: dict[str, int] = {}
    for k, i in enumerate(items):
        if not isinstance(i, str) or not id_check(i):
            raise DataFormatError(seq_path, f"item {k + 1} of the item list, {i!r}, is not a decimal id string")
        if i in item_set:
            raise DataFormatError(seq_path, f"item {i} is listed twice")
        item_set[i] = k
    item_keys = frozenset(item_set)
    if not sequences:
        raise DataFormatError(seq_path, "no users to write")
    order = list(sequences)
    for line, u in enumerate(order, 1):
        if not isinstance(u, str) or not id_check(u):
            raise DataFormatError(seq_path, f"user {u!r} is not a decimal id string", line)
        seq = sequences[u]
        if not seq:
            raise DataFormatError(seq_path, f"user {u} has no items", line)
        if not item_keys.issuperset(seq):
            bad = next(i for i in seq if i not in item_set)
            raise DataFormatError(seq_path, f"user {u}: item {bad!r} is not in the item list", line)
    if negatives is not None:
        for line, u in enumerate(order, 1):
            if u not in negatives:
                raise DataFormatError(neg_path, f"user {u} has no negatives", line)
            row, own = negatives[u], set(sequences[u])
            if not item_keys.issuperset(row) or not own.isdisjoint(row):
                bad = next(i for i in row if i not in item_set or i in own)
                raise DataFormatError(neg_path, f"user {u}: negative {bad!r} is unknown or in the user's sequence", line)
        if len(negatives) != len(order):
            extra = next(u for u in negatives if u not in sequences)
            raise DataFormatError(neg_path, f"negatives for user {extra}, who has no sequence")
    users_raw = _raw_map(maps_path, "user", order, user_raw)
    items_raw = _raw_map(maps_path, "item", items, item_raw)
    exp_obj = None
    if explanations is not None:
        unknown = sorted(set(explanations) - set(EXPLANATION_SPLITS))
        if unknown:
            raise DataFormatError(exp_path, f"unknown explanation split(s) {unknown}; expected {list(EXPLANATION_SPLITS)}")
        user_set = dict.fromkeys(order)
        exp_obj = {
            split: [_record(exp_path, split, k, r, user_set, item_set) for k, r in enumerate(explanations.get(split, ()))]
            for split in EXPLANATION_SPLITS
        }

    atomic_write_text(seq_path, _lines(sequences, order))
    if negatives is not None:
        atomic_write_text(neg_path, _lines(negatives, order))
    elif neg_path.exists():
        neg_path.unlink()
    maps = {
        "user2id": {users_raw[u]: u for u in order},
        "item2id": {items_raw[i]: i for i in items},
        "id2user": {u: users_raw[u] for u in order},
        "id2item": {i: items_raw[i] for i in items},
    }
    atomic_write_text(maps_path, json.dumps(maps) + "\n")
    if exp_obj is not None:
        atomic_write_text(exp_path, json.dumps(exp_obj) + "\n")
    elif exp_path.exists():
        exp_path.unlink()
    return out


def _is_decimal_id(s: str) -> bool:
    return s.isascii() and s.isdigit() and (s == "0" or s[0] != "0")

