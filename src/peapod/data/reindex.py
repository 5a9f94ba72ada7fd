"""Item-id schemes, and a measure of the consecutive-id leak they are meant to remove.

P5 numbered items in order of first appearance while walking users, so a user's new items get
consecutive ids and the test item is often "the largest id seen so far + 1", which T5's digit pieces can
exploit (engineering-notes.md, pitfall 1). Schemes:

- ``original``: the file's ids (leak order);
- ``random``: items renumbered ``1..N`` by a seeded random permutation;
- ``first-train``: numbered by first appearance while walking users' *training* parts (``items[:-2]``)
  in file order; items never seen in training get the following ids in a seeded random order.

A re-indexing is always computed from the original ids and applied to sequences, negatives,
explanations, ``items`` and ``item_raw`` alike; ``Dataset.item_original`` keeps the way back.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError
from .dataset import EXPLANATION_SPLITS, Dataset, ExplanationRecord

ITEM_ID_SCHEMES = ("original", "random", "first-train")


def _to_original(dataset: Dataset) -> Dataset:
    """The dataset with its original item ids restored (itself when already original)."""
    if dataset.item_id_scheme == "original":
        return dataset
    if dataset.item_original is None:
        raise ConfigError(f"dataset {dataset.name!r} is in scheme {dataset.item_id_scheme!r} without a map back")
    return _apply(dataset, dataset.item_original, "original", None)


def item_id_mapping(dataset: Dataset, scheme: str, seed: int = 2022) -> dict[str, str]:
    """Original item id -> new item id under ``scheme`` (a bijection onto ``"1".."N"``, or identity)."""
    return _mapping(_to_original(dataset), scheme, seed)


def _mapping(base: Dataset, scheme: str, seed: int) -> dict[str, str]:
    if scheme not in ITEM_ID_SCHEMES:
        raise ConfigError(f"unknown item-id scheme {scheme!r}; choose one of {list(ITEM_ID_SCHEMES)}")
    items = base.items
    if scheme == "original":
        return {i: i for i in items}
    rng = np.random.default_rng(seed)
    if scheme == "random":
        perm = rng.permutation(len(items)) + 1
        return dict(zip(items, map(str, perm.tolist())))
    # first-train: order of first appearance in the training parts, then the rest in a seeded order
    order = dict.fromkeys(i for seq in base.sequences.values() for i in seq[:-2])
    unseen = [i for i in items if i not in order]
    order.update(dict.fromkeys(unseen[k] for k in rng.permutation(len(unseen)).tolist()))
    return {item: str(k) for k, item in enumerate(order, 1)}


def _apply(dataset: Dataset, mapping: dict[str, str], scheme: str, seed: int | None) -> Dataset:
    m = mapping.__getitem__
    exps = {
        split: [ExplanationRecord(r.user, m(r.item), r.explanation, r.feature, r.item_raw)
                for r in dataset.explanations.get(split, [])]
        for split in EXPLANATION_SPLITS
    }
    original = dataset.item_original or {i: i for i in dataset.items}
    item_original = None if scheme == "original" else {m(i): original[i] for i in dataset.items}
    return dataclasses.replace(
        dataset,
        sequences={u: list(map(m, s)) for u, s in dataset.sequences.items()},
        items=sorted(map(m, dataset.items), key=int),
        negatives=None if dataset.negatives is None else {u: list(map(m, s)) for u, s in dataset.negatives.items()},
        explanations=exps,
        item_raw=None if dataset.item_raw is None else {m(i): r for i, r in dataset.item_raw.items()},
        item_id_scheme=scheme,
        scheme_seed=seed,
        item_original=item_original,
        notes=dict(dataset.notes),
    )


def reindex_items(dataset: Dataset, scheme: str, seed: int = 2022) -> Dataset:
    """A copy of ``dataset`` with items renumbered under ``scheme`` (see the module docstring).

    Scheme and seed are recorded in ``item_id_scheme`` / ``scheme_seed`` (seed None for "original").
    """
    base = _to_original(dataset)
    mapping = _mapping(base, scheme, seed)
    if scheme == "original":
        return base
    return _apply(base, mapping, scheme, seed)


def successor_leak_rate(dataset: Dataset, split: str = "test") -> float:
    """Share of users whose ``split`` target id equals the largest id before it in their sequence + 1.

    High under P5's original ids (the leak); near zero after a leak-free re-indexing.
    ``split`` is "test" (target ``items[-1]``) or "valid" (target ``items[-2]``).
    """
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    if dataset.n_users == 0:
        return 0.0
    seqs = dataset.sequences.values()
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=dataset.n_users)
    flat = np.fromiter((int(i) for s in seqs for i in s), dtype=np.int64, count=int(lengths.sum()))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    back = 1 if split == "test" else 2
    targets = flat[ends - back]
    masked = flat.copy()
    for k in range(1, back + 1):  # hide the target and everything after it
        masked[ends - k] = -1
    prefix_max = np.maximum.reduceat(masked, starts)
    return float(np.mean(targets == prefix_max + 1))
