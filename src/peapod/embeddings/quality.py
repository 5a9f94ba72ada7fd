"""How good is an embedding by itself? Rank each user's held-out item with the factors' scores.

Two protocols, each reported for the embedding and for popularity (training-interaction counts) so a
useless embedding is easy to tell from a good one:

- ``full``: every item is a candidate except the user's known items (``train_sequences[u]``); the
  target stays a candidate even if the user saw it before.
- ``sampled``: the target against the user's given negatives (e.g. the 99 fixed test negatives).

Ranks are 1-based and ties count against the target (pessimistic: an item scoring exactly the
target's score ranks above it), so constant scores never look good.
HR@k = 1 if rank <= k; NDCG@k = 1 / log2(rank + 1) if rank <= k, else 0; both averaged over users.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import UnknownIdError
from .factors import Factors


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """HR@k and NDCG@k averaged over users, from 1-based ranks of the target."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        gain = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
        out[f"NDCG@{k}"] = float(gain.mean()) if len(ranks) else 0.0
    return out


def full_ranks(
    score_rows: Callable[[np.ndarray], np.ndarray],
    user_rows: np.ndarray,
    target_cols: np.ndarray,
    known: sp.csr_matrix,
    chunk_size: int = 1024,
) -> np.ndarray:
    """1-based rank of each target among all items minus the user's known items, chunk by chunk.

    ``score_rows(rows)`` returns the (n, I) float32 scores of users ``rows``; ``known`` is a (U, I)
    CSR matrix of the items to leave out per user row. Memory is O(chunk_size * I).
    """
    ranks = np.empty(len(user_rows), dtype=np.int64)
    for start in range(0, len(user_rows), chunk_size):
        rows = user_rows[start : start + chunk_size]
        targets = target_cols[start : start + chunk_size]
        scores = np.array(score_rows(rows), dtype=np.float32)  # a fresh, writable copy
        local = np.arange(len(rows))
        target_score = scores[local, targets].copy()
        sub = known[rows].tocoo()
        scores[sub.row, sub.col] = -np.inf  # known items are not candidates
        scores[local, targets] = -np.inf  # the target does not compete with itself
        above = (scores >= target_score[:, None]).sum(axis=1)  # ties count against the target
        ranks[start : start + chunk_size] = 1 + above
    return ranks


def sampled_ranks(
    score_pairs: Callable[[np.ndarray, np.ndarray], np.ndarray],
    user_rows: np.ndarray,
    target_cols: np.ndarray,
    negative_cols: np.ndarray,
    chunk_size: int = 256,
) -> np.ndarray:
    """1-based rank of each target among its negatives (-1 entries of ``negative_cols`` are padding).

    ``score_pairs(rows, cols)`` returns the (n, m) scores of users ``rows`` for item columns ``cols``.
    """
    ranks = np.empty(len(user_rows), dtype=np.int64)
    for start in range(0, len(user_rows), chunk_size):
        rows = user_rows[start : start + chunk_size]
        targets = target_cols[start : start + chunk_size]
        negs = negative_cols[start : start + chunk_size]
        valid = (negs >= 0) & (negs != targets[:, None])
        t = score_pairs(rows, targets[:, None])[:, 0]
        s = score_pairs(rows, np.where(negs >= 0, negs, 0))
        ranks[start : start + chunk_size] = 1 + ((s >= t[:, None]) & valid).sum(axis=1)
    return ranks


def embedding_quality(
    factors: Factors,
    train_sequences: dict[str, list[str]],
    targets: dict[str, str],
    candidates: dict[str, list[str]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict:
    """HR@k / NDCG@k of ``factors`` (and of popularity) for predicting ``targets[user]``.

    ``train_sequences``: each user's known items, excluded from the full ranking and counted for
    popularity. ``candidates``: optional negatives per user for the sampled protocol. Scores are
    ``user_factors @ item_factors.T (+ item_bias)``, computed ``chunk_size`` users at a time.
    """
    users = list(targets)
    if not users:
        raise ValueError("no targets to evaluate")
    user_rows = factors.user_rows(users)
    target_cols = factors.item_rows(targets[u] for u in users)
    n_items = len(factors.items)

    # Known items per evaluated user (rows in `users` order) and popularity counts.
    known_lists = [train_sequences.get(u, []) for u in users]
    known_cols = factors.item_rows(it for seq in known_lists for it in seq)
    lengths = np.fromiter((len(s) for s in known_lists), dtype=np.int64, count=len(users))
    known = sp.csr_matrix(
        (np.ones(len(known_cols), dtype=np.int8), known_cols, np.concatenate([[0], np.cumsum(lengths)])),
        shape=(len(users), n_items),
    )
    all_known = [it for seq in train_sequences.values() for it in seq]
    popularity = np.bincount(factors.item_rows(all_known), minlength=n_items).astype(np.float32)

    local = np.arange(len(users))
    uf = factors.user_factors
    bias = factors.item_bias

    def emb_rows(rows: np.ndarray) -> np.ndarray:
        return factors.scores(uf[user_rows[rows]])

    def pop_rows(rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(popularity, (len(rows), n_items))

    result: dict = {
        "n_users": len(users),
        "n_items": n_items,
        "ties": "pessimistic",
        "embedding": {"full": rank_metrics(full_ranks(emb_rows, local, target_cols, known, chunk_size), ks)},
        "popularity": {"full": rank_metrics(full_ranks(pop_rows, local, target_cols, known, chunk_size), ks)},
    }

    if candidates is not None:
        neg_lists = [candidates.get(u) for u in users]
        missing = [u for u, n in zip(users, neg_lists) if n is None]
        if missing:
            raise UnknownIdError(f"no candidates for user(s) {', '.join(map(repr, missing[:5]))}")
        width = max(len(n) for n in neg_lists)
        negs = np.full((len(users), width), -1, dtype=np.int64)
        flat = factors.item_rows(it for n in neg_lists for it in n)
        counts = np.fromiter((len(n) for n in neg_lists), dtype=np.int64, count=len(users))
        row_of = np.repeat(local, counts)
        col_of = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
        negs[row_of, col_of] = flat

        def emb_pairs(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            u = uf[user_rows[rows]]  # (n, D); the (n, m, D) gather stays small: chunks of 256 users
            out = np.einsum("nd,nmd->nm", u, factors.item_factors[cols])
            return out + bias[cols] if bias is not None else out

        def pop_pairs(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return popularity[cols]

        result["embedding"]["sampled"] = rank_metrics(sampled_ranks(emb_pairs, local, target_cols, negs), ks)
        result["popularity"]["sampled"] = rank_metrics(sampled_ranks(pop_pairs, local, target_cols, negs), ks)
        result["n_negatives"] = int(np.median(counts))
    return result


def format_quality(report: dict) -> str:
    """A small text table of :func:`embedding_quality`'s result."""
    lines = []
    for protocol in ("full", "sampled"):
        if protocol not in report["embedding"]:
            continue
        metrics = list(report["embedding"][protocol])
        title = f"{protocol} ranking, {report['n_users']} users"
        lines.append(f"{title:<34}" + "".join(f"{m:>9}" for m in metrics))
        for name in ("embedding", "popularity"):
            values = report[name][protocol]
            lines.append(f"  {name:<32}" + "".join(f"{values[m]:9.4f}" for m in metrics))
    return "\n".join(lines)
