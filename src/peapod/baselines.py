"""Classic baselines under the evaluation protocol of PeaPOD: same splits, same candidates, same metrics.

Every baseline is fit on the training interactions only (``items[:-2]`` per user, as the user
embeddings) and scores every item for a user given that user's history at the evaluated split:

- ``popularity``: the number of training interactions of each item (the same list for everyone).
- ``mf`` / ``pmf``, ``bpr``, ``als``, ``bivae``: the user and item factors of
  :func:`peapod.embeddings.fit_factors` (``mf`` is the paper's MF, i.e. the PMF that also produces
  the user embeddings); score = ``user . item`` (+ the item bias of BPR). The user vector comes
  from training interactions only, so the validation item in a test history is not used.
- ``sasrec``: cornac 3.0.1's ``SASRec`` (Kang & McAuley, 2018). It takes our split exactly: the
  cornac train set is built from each user's ``items[:-2]`` as one session in chronological order
  (timestamp = position), with the item map pre-seeded with every dataset item in dataset order,
  so cornac's item index equals :attr:`Dataset.item_index` (items never seen in training keep
  their initial embedding). At evaluation the history is ``Dataset.history(user, split, max_len)``
  (test: it includes the validation item, like PeaPOD's prompt) and all users are scored in
  batches through ``SASRecModel.predict`` (cornac's own ``score`` runs one user at a time).

Ranking (see :func:`top_k_items`): sequential = full ranking over all items; the history is kept
by default (the generative model ranks the whole item space too) and removed with
``exclude_history=True``. Ties are broken toward the lower item row, deterministically. Top-n =
the same 100 candidates as the model, in the same seeded shuffled order; ties keep that order.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from .config import EmbeddingConfig
from .data.dataset import Dataset
from .errors import ConfigError

#: Baseline names accepted by ``peapod evaluate --baseline`` (``mf`` is an alias of ``pmf``).
BASELINES = ("popularity", "mf", "pmf", "bpr", "als", "bivae", "sasrec")
FACTOR_METHODS = {"mf": "pmf", "pmf": "pmf", "bpr": "bpr", "als": "als", "bivae": "bivae"}

#: SASRec settings (Kang & McAuley use 2 blocks, 50 dims, max length 50 and dropout 0.5 on Amazon).
SASREC_DEFAULTS: dict[str, Any] = {
    "embedding_dim": 64,
    "num_blocks": 2,
    "num_heads": 1,
    "max_len": 50,
    "dropout": 0.5,
    "loss": "ce",
    "n_sample": 2048,
    "sample_alpha": 0.5,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "n_epochs": 30,
    "l2_reg": 0.0,
}


class Baseline(Protocol):
    """What the evaluation needs from a baseline."""

    name: str
    settings: dict[str, Any]

    def score(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(len(users), n_items) float32 scores in dataset item order."""


@dataclass
class PopularityBaseline:
    """Items scored by their number of training interactions."""

    counts: np.ndarray  # (I,) float32
    name: str = "popularity"
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, dataset: Dataset) -> "PopularityBaseline":
        index = dataset.item_index
        train = dataset.train_sequences()
        rows = np.fromiter((index[i] for s in train.values() for i in s), dtype=np.int64)
        counts = np.bincount(rows, minlength=dataset.n_items).astype(np.float32)
        return cls(counts=counts, settings={"fit_on": "train", "n_train_interactions": int(rows.size)})

    def score(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), self.counts.size)).copy()


@dataclass
class FactorBaseline:
    """Dot-product scores of collaborative-filtering factors (``peapod.embeddings.Factors``)."""

    factors: Any  # peapod.embeddings.Factors
    item_rows: np.ndarray  # dataset item row -> factors item row
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, dataset: Dataset, name: str, config: EmbeddingConfig) -> "FactorBaseline":
        from .embeddings.factorize import fit_factors

        method = FACTOR_METHODS[name]
        cfg = EmbeddingConfig(**{**config.__dict__, "method": method})
        factors = fit_factors(dataset.train_sequences(), dataset.items, cfg)
        return cls.from_factors(dataset, factors, name=name)

    @classmethod
    def from_factors(cls, dataset: Dataset, factors: Any, name: str | None = None) -> "FactorBaseline":
        if factors.fit_on != "train":
            raise ConfigError(f"factors were fit on {factors.fit_on!r}, not on training interactions only")
        rows = factors.item_rows(dataset.items)
        settings = {"method": factors.method, "fit_on": factors.fit_on, **factors.settings}
        return cls(factors=factors, item_rows=rows, name=name or factors.method, settings=settings)

    def score(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        scores = self.factors.scores(self.factors.user_vectors(users))
        return np.ascontiguousarray(scores[:, self.item_rows], dtype=np.float32)


@dataclass
class SASRecBaseline:
    """cornac's SASRec fit on the training parts of the sequences (see the module docstring)."""

    model: Any  # cornac.models.SASRec
    item_index: dict[str, int]
    n_items: int
    name: str = "sasrec"
    settings: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 256

    @classmethod
    def fit(cls, dataset: Dataset, seed: int = 2022, device: str | None = None,
            verbose: bool = False, **overrides: Any) -> "SASRecBaseline":
        import torch
        from cornac.data import SequentialDataset
        from cornac.models import SASRec

        unknown = set(overrides) - set(SASREC_DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown SASRec setting(s): {', '.join(sorted(unknown))}")
        settings = {**SASREC_DEFAULTS, **overrides}
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        iid_map = OrderedDict((item, row) for row, item in enumerate(dataset.items))
        data = [(u, u, item, t) for u, seq in dataset.train_sequences().items() for t, item in enumerate(seq)]
        train_set = SequentialDataset.build(data, fmt="USIT", global_iid_map=iid_map, seed=seed)
        if len(train_set.iid_map) != dataset.n_items:  # pragma: no cover - guards the item-map contract
            raise RuntimeError("cornac's item map does not cover exactly the dataset items")
        model = SASRec(seed=seed, device=device, verbose=verbose, model_selection="last", **settings)
        start = time.perf_counter()
        model.fit(train_set)
        settings.update({"fit_on": "train", "seed": seed, "device": device, "library": "cornac.models.SASRec",
                         "fit_seconds": round(time.perf_counter() - start, 3)})
        return cls(model=model, item_index=dataset.item_index, n_items=dataset.n_items, settings=settings)

    def score(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        import torch

        max_len = int(self.settings["max_len"])
        pad = self.model.pad_idx
        seqs = np.full((len(histories), max_len), pad, dtype=np.int64)
        for r, hist in enumerate(histories):  # left-padded, as cornac's score(); a cheap row fill
            rows = [self.item_index[i] for i in hist][-max_len:]
            if rows:
                seqs[r, max_len - len(rows):] = rows
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        net = self.model.model
        net.eval()
        with torch.no_grad():
            for start in range(0, len(histories), self.batch_size):
                chunk = torch.as_tensor(seqs[start:start + self.batch_size], device=self.model.device)
                out[start:start + len(chunk)] = np.asarray(net.predict(None, chunk)).reshape(len(chunk), -1)
        empty = np.array([len(h) == 0 for h in histories])
        out[empty] = 1.0  # cornac scores an empty history with ones
        return out


def fit_baseline(name: str, dataset: Dataset, embedding: EmbeddingConfig | None = None, seed: int = 2022,
                 sasrec: dict[str, Any] | None = None, verbose: bool = False) -> Baseline:
    """Fit the baseline ``name`` (one of :data:`BASELINES`) on ``dataset``'s training interactions."""
    if name == "popularity":
        return PopularityBaseline.fit(dataset)
    if name in FACTOR_METHODS:
        return FactorBaseline.fit(dataset, name, embedding or EmbeddingConfig())
    if name == "sasrec":
        settings = dict(sasrec or {})
        # `--sasrec seed=N` seeds the model alone; `seed` (the evaluation seed) is the default
        return SASRecBaseline.fit(dataset, seed=int(settings.pop("seed", seed)), verbose=verbose, **settings)
    raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


# ---------------------------------------------------------------------------------------- ranking
def top_k_items(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Rows of the ``k`` best items per row of ``scores`` (n, I), best first.

    Exact and deterministic: among equal scores the lower item row wins. No full sort: the k-th
    value of each row comes from a partition, and only the entries at or above it are sorted.
    ``exclude`` is a boolean (n, I) mask of items that may not be returned; NaN scores rank last.
    """
    scores = np.asarray(scores)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    n, n_items = scores.shape
    k = min(k, n_items)
    if k == 0 or n == 0:
        return np.zeros((n, 0), dtype=np.int64)
    kth = np.partition(scores, n_items - k, axis=1)[:, n_items - k]  # k-th largest value per row
    rows, cols = np.nonzero(scores >= kth[:, None])  # >= k entries per row (ties at the k-th included)
    order = np.lexsort((cols, -scores[rows, cols], rows))  # by row, then score desc, then item row asc
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)
    return cols[position < k].reshape(n, k).astype(np.int64)


def rank_candidates(scores: np.ndarray, candidate_rows: np.ndarray) -> np.ndarray:
    """Candidate rows (n, C) reordered best first by ``scores`` (n, I); ties keep the given order."""
    cand_scores = np.take_along_axis(np.asarray(scores, dtype=np.float64), candidate_rows, axis=1)
    order = np.argsort(-cand_scores, axis=1, kind="stable")
    return np.take_along_axis(candidate_rows, order, axis=1)


def history_mask(dataset: Dataset, histories: Sequence[Sequence[str]]) -> np.ndarray:
    """Boolean (n, I) mask of each row's history items."""
    index = dataset.item_index
    mask = np.zeros((len(histories), dataset.n_items), dtype=bool)
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    cols = np.fromiter((index[i] for h in histories for i in h), dtype=np.int64, count=int(lengths.sum()))
    mask[np.repeat(np.arange(len(histories)), lengths), cols] = True
    return mask
