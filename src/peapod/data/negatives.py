"""Negative items: P5's fixed evaluation negatives, and a vectorised seeded sampler for training.

- :func:`p5_negative_samples` reproduces P5's ``negative_samples.txt`` byte for byte (data README,
  "Provenance"). P5's procedure consumes one random stream user after user, so it is a loop over users
  by nature; every draw inside is a numpy call.
- :class:`NegativeSampler` draws, for a batch of users, ``n`` distinct items uniformly from all items
  outside the user's full positive set (as the reference: validation and test items are excluded too),
  with no per-sample Python loop: oversample, reject by a sorted-key membership test, repeat only for
  rows still short.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PeapodError
from ..io import atomic_write_text
from .dataset import Dataset

# ---------------------------------------------------------------------------------------- P5's file


def p5_negative_samples(sequences: dict[str, list[str]], n: int = 99, seed: int = 2022) -> dict[str, list[str]]:
    """Draw P5's fixed test negatives: ``{user: [n item ids]}`` for every user, in file order.

    As P5's notebook: one ``RandomState(seed)`` stream (identical to ``numpy.random.seed(seed)``);
    candidates are the item ids in order of first appearance in ``sequences`` (as ints); per user,
    ``choice(candidates, n, replace=False)`` is repeated, keeping draws outside the user's sequence,
    until ``n`` are collected (a second round may repeat an item: P5's quirk, kept).
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rs = np.random.RandomState(seed)
    first_seen = dict.fromkeys(int(i) for seq in sequences.values() for i in seq)
    candidates = np.fromiter(first_seen, dtype=np.int64, count=len(first_seen))
    if len(candidates) < n:
        raise PeapodError(f"only {len(candidates)} distinct items in the sequences; cannot draw {n} negatives")
    out: dict[str, list[str]] = {}
    for user, seq in sequences.items():
        own = {int(i) for i in seq}
        if len(candidates) - len(own) < n:
            raise PeapodError(f"user {user}: fewer than {n} items outside the user's sequence")
        drawn: list[int] = []
        while len(drawn) < n:
            sample = rs.choice(candidates, n, replace=False).tolist()
            drawn.extend(x for x in sample if x not in own)
        out[user] = [str(x) for x in drawn[:n]]
    return out


def format_negatives(negatives: dict[str, list[str]]) -> str:
    """The text of ``negative_samples.txt``: ``user n1 ... nk`` per line, in dict order."""
    return "".join(f"{user} {' '.join(row)}\n" for user, row in negatives.items())


def write_negatives(path: str | Path, negatives: dict[str, list[str]]) -> None:
    """Write ``negative_samples.txt`` atomically."""
    atomic_write_text(path, format_negatives(negatives))


# ---------------------------------------------------------------------------------------- sampler


def _first_occurrence(block: np.ndarray) -> np.ndarray:
    """Boolean mask, row by row: True where a value appears for the first time (left to right)."""
    order = np.argsort(block, axis=1, kind="stable")
    ordered = np.take_along_axis(block, order, axis=1)
    new = np.ones_like(ordered, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.empty_like(new)
    np.put_along_axis(first, order, new, axis=1)
    return first


class NegativeSampler:
    """Uniform negatives outside each user's full positive set (train, validation and test items).

    Positives are held as sorted int64 keys ``user_row * n_items + item_row``: a membership test is
    one ``searchsorted`` over the whole batch.
    """

    def __init__(self, dataset: Dataset):
        self.n_items = dataset.n_items
        self.n_users = dataset.n_users
        index = dataset.item_index
        seqs = dataset.sequences.values()
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=self.n_users)
        flat = np.fromiter((index[i] for s in seqs for i in s), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), lengths)
        self._keys = np.unique(rows * self.n_items + flat)
        self.n_positives = np.bincount(self._keys // self.n_items, minlength=self.n_users)

    def is_positive(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """Whether ``item_rows[r, j]`` is a positive of user ``user_rows[r]`` (broadcast)."""
        query = np.asarray(user_rows, dtype=np.int64)[:, None] * self.n_items + np.asarray(item_rows, dtype=np.int64)
        pos = np.searchsorted(self._keys, query)
        np.minimum(pos, len(self._keys) - 1, out=pos)
        return self._keys[pos] == query

    def sample(self, user_rows: np.ndarray, n: int, rng: np.random.Generator, max_rounds: int = 10_000) -> np.ndarray:
        """``(len(user_rows), n)`` item rows: per user ``n`` distinct non-positive items, uniformly.

        Candidates are drawn i.i.d. and kept in draw order when new and non-positive, so each row is a
        uniform random subset in random order. Deterministic given the state of ``rng``.
        """
        user_rows = np.asarray(user_rows, dtype=np.int64).ravel()
        if user_rows.size and (user_rows.min() < 0 or user_rows.max() >= self.n_users):
            raise IndexError(f"user rows must lie in [0, {self.n_users})")
        allowed = self.n_items - self.n_positives[user_rows]
        if n > 0 and user_rows.size and allowed.min() < n:
            r = int(np.argmin(allowed))
            raise PeapodError(
                f"user row {int(user_rows[r])} has only {int(allowed[r])} non-positive items; cannot draw {n} negatives"
            )
        out = np.full((user_rows.size, n), -1, dtype=np.int64)
        filled = np.zeros(user_rows.size, dtype=np.int64)
        pending = np.arange(user_rows.size) if n > 0 else np.arange(0)
        for _ in range(max_rounds):
            if pending.size == 0:
                return out
            need = n - filled[pending]
            # enough draws for the worst row in expectation (rejections and repeats), plus a margin
            share = allowed[pending] / self.n_items
            expected = need / share * (1.0 + need / np.maximum(allowed[pending], 1))
            m = int(min(np.ceil(expected.max() * 1.2) + 16, 64 * self.n_items + 16))
            cand = rng.integers(0, self.n_items, size=(pending.size, m), dtype=np.int64)
            first = _first_occurrence(np.concatenate([out[pending], cand], axis=1))[:, n:]
            valid = first & ~self.is_positive(user_rows[pending], cand)
            rank = np.cumsum(valid, axis=1)
            take = valid & (rank <= need[:, None])
            r, c = np.nonzero(take)
            out[pending[r], filled[pending][r] + rank[r, c] - 1] = cand[r, c]
            filled[pending] += take.sum(axis=1)
            pending = pending[filled[pending] < n]
        raise RuntimeError(f"negative sampling did not finish in {max_rounds} rounds")


# ---------------------------------------------------------------------------------------- candidates


def validation_candidates(
    dataset: Dataset, seed: int = 2022, n: int = 99, chunk_size: int = 8192
) -> dict[str, list[str]]:
    """``{user: [validation target, n negatives]}``; negatives from :class:`NegativeSampler` seeded
    with ``seed`` (deterministic). The target comes first: shuffle (seeded) before building prompts."""
    rng = np.random.default_rng(seed)
    sampler = NegativeSampler(dataset)
    names = np.array(dataset.items, dtype=object)
    users = dataset.users
    out: dict[str, list[str]] = {}
    for start in range(0, len(users), chunk_size):
        rows = np.arange(start, min(start + chunk_size, len(users)))
        negs = names[sampler.sample(rows, n, rng)].tolist()
        for user, row in zip(users[start:start + chunk_size], negs):
            out[user] = [dataset.valid_target(user), *row]
    return out


def test_candidates(dataset: Dataset) -> dict[str, list[str]]:
    """``{user: [test target, the fixed negatives]}``. The target comes first."""
    if dataset.negatives is None:
        raise PeapodError(f"dataset {dataset.name!r} has no negative_samples.txt: no top-n test candidates")
    return {u: [dataset.test_target(u), *dataset.negatives[u]] for u in dataset.sequences}


test_candidates.__test__ = False  # a library function, not a pytest test, wherever it is imported
