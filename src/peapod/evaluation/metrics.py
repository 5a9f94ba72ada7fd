"""Evaluation metrics as pure functions over plain Python / NumPy data (no model, no I/O).

Two families live side by side:

* **clean** metrics (the default of this project): ranked lists are deduplicated (first occurrence
  kept) before scoring, so a user's hit rate is 0 or 1; BLEU comes from sacrebleu and ROUGE from
  rouge-score, both well-kept libraries.
* **reference** metrics (``reference_*``): the formulas of the public PeaPOD/POD code, kept for
  comparison with the paper's numbers (reference-protocol.md section 8): duplicates count (HR can
  exceed 1), tf/nmt BLEU, tf/nmt ROUGE (n-gram *sets*, ROUGE-L with beta = P/R).

Ranking inputs are one ranked list of item-id strings per user and one target item per user
(leave-one-out). Text inputs are whitespace-tokenised strings, one reference per hypothesis.
"""

from __future__ import annotations

import collections
import math
from typing import Hashable, Iterable, Mapping, Sequence, TypeVar

import numpy as np

T = TypeVar("T", bound=Hashable)

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)

# ---------------------------------------------------------------------------------------------------
# Ranking: shared helpers
# ---------------------------------------------------------------------------------------------------


def deduplicate(items: Iterable[T]) -> list[T]:
    """The items with repeats removed, keeping each one's first occurrence (order preserved)."""
    return list(dict.fromkeys(items))


def _check_ranking_inputs(ranked: Sequence[Sequence], targets: Sequence, k: int | None = None) -> None:
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists but {len(targets)} targets")
    if len(ranked) == 0:
        raise ValueError("no users to score: ranked and targets are empty")
    if k is not None and k < 1:
        raise ValueError(f"cut-off k must be >= 1, got {k}")


def _hit_matrix(ranked: Sequence[Sequence[str]], targets: Sequence[str], depth: int) -> np.ndarray:
    """Boolean (N, depth): position j of user n's list equals the user's target (short lists pad False)."""
    hits = np.zeros((len(ranked), depth), dtype=bool)
    rows = [(n, j) for n, (lst, t) in enumerate(zip(ranked, targets)) for j, x in enumerate(lst[:depth]) if x == t]
    if rows:
        r, c = np.asarray(rows).T
        hits[r, c] = True
    return hits


def _discounts(depth: int) -> np.ndarray:
    """1 / log2(i + 2) for list positions i = 0 .. depth-1."""
    return 1.0 / np.log2(np.arange(depth) + 2.0)


# ---------------------------------------------------------------------------------------------------
# Ranking: clean protocol (deduplicated, single target)
# ---------------------------------------------------------------------------------------------------


def target_ranks(ranked: Sequence[Sequence[str]], targets: Sequence[str]) -> np.ndarray:
    """1-based rank of each user's target in their *deduplicated* list; 0 where it is absent."""
    _check_ranking_inputs(ranked, targets)
    ranks = np.zeros(len(ranked), dtype=np.int64)
    for n, (lst, t) in enumerate(zip(ranked, targets)):
        unique = deduplicate(lst)
        if t in unique:
            ranks[n] = unique.index(t) + 1
    return ranks


def hit_rate_from_ranks(ranks: np.ndarray, k: int) -> float:
    """HR@k from 1-based target ranks (0 = not ranked): the share of users with 1 <= rank <= k."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no users to score")
    if k < 1:
        raise ValueError(f"cut-off k must be >= 1, got {k}")
    return float(np.mean((ranks >= 1) & (ranks <= k)))


def ndcg_from_ranks(ranks: np.ndarray, k: int) -> float:
    """NDCG@k for one relevant item per user: mean of 1/log2(rank + 1) over users with 1 <= rank <= k."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no users to score")
    if k < 1:
        raise ValueError(f"cut-off k must be >= 1, got {k}")
    hit = (ranks >= 1) & (ranks <= k)
    gains = np.zeros(ranks.shape, dtype=np.float64)
    gains[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return float(gains.mean())


def hit_rate(ranked: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Clean HR@k: share of users whose target is among the first k of their deduplicated list (<= 1)."""
    _check_ranking_inputs(ranked, targets, k)
    return hit_rate_from_ranks(target_ranks(ranked, targets), k)


def ndcg(ranked: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Clean NDCG@k with one target: 1/log2(rank + 1) when the deduplicated rank is <= k, else 0; mean."""
    _check_ranking_inputs(ranked, targets, k)
    return ndcg_from_ranks(target_ranks(ranked, targets), k)


def array_target_ranks(ranked: np.ndarray, targets: np.ndarray, pad_value: int = -1) -> np.ndarray:
    """Vectorised :func:`target_ranks` over integer item ids.

    ``ranked`` is (N, K) int (one row per user, best first; ``pad_value`` marks empty slots),
    ``targets`` is (N,). Rows are deduplicated on the fly (a repeat does not take a rank), so the
    result equals :func:`target_ranks` on the same lists. Returns (N,) 1-based ranks, 0 = absent.
    """
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2 or targets.shape != (ranked.shape[0],):
        raise ValueError(f"expected ranked (N, K) and targets (N,), got {ranked.shape} and {targets.shape}")
    if ranked.shape[0] == 0:
        raise ValueError("no users to score")
    n, depth = ranked.shape
    if depth == 0:
        return np.zeros(n, dtype=np.int64)
    # First occurrence of each value in its row: stable-sort each row, an entry equal to its sorted
    # predecessor is a repeat (the stable sort keeps the earliest position first).
    order = np.argsort(ranked, axis=1, kind="stable")
    sorted_vals = np.take_along_axis(ranked, order, axis=1)
    repeat_sorted = np.zeros_like(sorted_vals, dtype=bool)
    repeat_sorted[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    repeat = np.zeros_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    counted = (~repeat) & (ranked != pad_value)
    hits = counted & (ranked == targets[:, None])
    position = np.cumsum(counted, axis=1)  # 1-based rank of each counted slot
    first_hit = hits.argmax(axis=1)
    found = hits.any(axis=1)
    return np.where(found, position[np.arange(n), first_hit], 0).astype(np.int64)


def array_ranking_metrics(
    ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int] = DEFAULT_KS, pad_value: int = -1
) -> dict[str, float]:
    """Clean HR@k and NDCG@k for each k over an (N, K) int array of ranked item ids (vectorised)."""
    ranks = array_target_ranks(ranked, targets, pad_value=pad_value)
    return _metrics_from_ranks(ranks, ks)


def _metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate_from_ranks(ranks, k)
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_from_ranks(ranks, k)
    return out


def ranking_metrics(
    ranked: Sequence[Sequence[str]],
    targets: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    protocol: str = "clean",
) -> dict[str, float]:
    """``{"hr@k": ..., "ndcg@k": ...}`` for every k in ``ks`` (fractions in [0, 1] when clean).

    ``protocol="clean"`` deduplicates each list first; ``"reference"`` uses
    :func:`reference_hit_rate` / :func:`reference_ndcg` (duplicates count).
    """
    _check_ranking_inputs(ranked, targets)
    if protocol == "clean":
        return _metrics_from_ranks(target_ranks(ranked, targets), ks)
    if protocol == "reference":
        out = {f"hr@{k}": reference_hit_rate(ranked, targets, k) for k in ks}
        out.update({f"ndcg@{k}": reference_ndcg(ranked, targets, k) for k in ks})
        return out
    raise ValueError(f"unknown protocol {protocol!r}: expected 'clean' or 'reference'")


# ---------------------------------------------------------------------------------------------------
# Ranking: reference-compatible (public code, utils.py evaluate_hr / evaluate_ndcg)
# ---------------------------------------------------------------------------------------------------


def reference_hit_rate(ranked: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Reference HR@k: mean over users of the number of positions among the first k equal to the target.

    Lists are *not* deduplicated, so a user whose target appears twice scores 2 (HR can exceed 1).
    """
    _check_ranking_inputs(ranked, targets, k)
    return float(_hit_matrix(ranked, targets, k).sum(axis=1).mean())


def reference_ndcg(ranked: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Reference NDCG@k: per user, sum of 1/log2(i+2) over hit positions i < k, divided by
    sum_{j < c} 1/log2(j+2) where c is the number of hits (0 when c = 0); mean over all users.

    With a single hit at 1-based rank r this is 1/log2(r + 1), as the clean NDCG.
    """
    _check_ranking_inputs(ranked, targets, k)
    hits = _hit_matrix(ranked, targets, k)
    disc = _discounts(k)
    dcg = (hits * disc).sum(axis=1)
    count = hits.sum(axis=1)
    ideal = np.concatenate([[1.0], np.cumsum(disc)])[count]  # placeholder 1.0 where count == 0 (dcg is 0)
    return float(np.mean(dcg / ideal))


# ---------------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------------


def _check_text_inputs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if len(hypotheses) == 0:
        raise ValueError("no hypotheses to score")


def bleu(hypotheses: Sequence[str], references: Sequence[str], max_order: int = 4) -> float:
    """Corpus BLEU x100 with sacrebleu: whitespace tokens (``tokenize='none'``), no smoothing,
    one reference per hypothesis, n-grams up to ``max_order`` (4 = BLEU-4, 1 = BLEU-1).

    Equals :func:`reference_bleu` (the tf/nmt formula). Empty hypotheses are allowed (score 0 if all are).
    """
    from sacrebleu.metrics import BLEU

    _check_text_inputs(hypotheses, references)
    metric = BLEU(tokenize="none", smooth_method="none", max_ngram_order=max_order, effective_order=False)
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def _ngram_counts(tokens: Sequence[str], max_order: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for order in range(1, max_order + 1):
        counts.update(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))
    return counts


def reference_bleu(hypotheses: Sequence[str], references: Sequence[str], max_order: int = 4) -> float:
    """Corpus BLEU x100 by the tensorflow/nmt formula used by the reference (bleu.py, unsmoothed).

    Geometric mean of the clipped n-gram precisions p_1..p_N (0 if any is 0 or has no n-grams),
    times the brevity penalty exp(1 - r/c) when the total hypothesis length c is below the total
    reference length r. Tokens are ``str.split()``. Deviation: an all-empty corpus returns 0 instead of
    the reference's ZeroDivisionError.
    """
    _check_text_inputs(hypotheses, references)
    matches = [0] * max_order
    possible = [0] * max_order
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.split(), ref.split()
        hyp_len += len(h)
        ref_len += len(r)
        overlap = _ngram_counts(h, max_order) & _ngram_counts(r, max_order)
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            possible[order - 1] += max(len(h) - order + 1, 0)
    precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    if min(precisions) <= 0:
        return 0.0
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    ratio = hyp_len / ref_len if ref_len > 0 else math.inf
    bp = 1.0 if ratio > 1.0 else math.exp(1.0 - 1.0 / ratio)
    return 100.0 * geo_mean * bp


# ---------------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------------

_ROUGE_NAMES = ("rouge1", "rouge2", "rougeL")


def _rouge_dict(f: Mapping[str, float], p: Mapping[str, float], r: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in _ROUGE_NAMES:
        out[name] = f[name]
        out[f"{name}_p"] = p[name]
        out[f"{name}_r"] = r[name]
    return out


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L x100 averaged over samples, with rouge-score (no stemming).

    Keys: ``rouge1``, ``rouge2``, ``rougeL`` (F1) and ``<name>_p`` / ``<name>_r`` (precision, recall).
    Note: rouge-score's default tokenizer lower-cases and keeps only ``[a-z0-9]+`` runs (punctuation is
    dropped), and counts n-grams with multiplicity; ROUGE-L is the standard F1. Empty text scores 0.
    """
    from rouge_score import rouge_scorer

    _check_text_inputs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(_ROUGE_NAMES), use_stemmer=False)
    f = np.zeros((len(hypotheses), 3))
    p = np.zeros_like(f)
    r = np.zeros_like(f)
    for i, (hyp, ref) in enumerate(zip(hypotheses, references)):
        scores = scorer.score(ref, hyp)  # (target, prediction)
        for j, name in enumerate(_ROUGE_NAMES):
            p[i, j], r[i, j], f[i, j] = scores[name].precision, scores[name].recall, scores[name].fmeasure
    mean = lambda a: {name: 100.0 * float(a[:, j].mean()) for j, name in enumerate(_ROUGE_NAMES)}  # noqa: E731
    return _rouge_dict(mean(f), mean(p), mean(r))


def _ngram_set(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel algorithm (Hyyrö 2004): O(len(a)) big-integer operations instead of an
    O(len(a) * len(b)) Python table.
    """
    if not a or not b:
        return 0
    masks: dict[Hashable, int] = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def _reference_rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> tuple[float, float, float]:
    """tf/nmt ROUGE-N over sets of unique n-grams: (f, p, r), F = 2PR / (P + R + 1e-8)."""
    h, r = _ngram_set(hyp, n), _ngram_set(ref, n)
    overlap = len(h & r)
    p = overlap / len(h) if h else 0.0
    rec = overlap / len(r) if r else 0.0
    return 2.0 * p * rec / (p + rec + 1e-8), p, rec


def _reference_rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> tuple[float, float, float]:
    """tf/nmt sentence-level ROUGE-L: R = LCS/|ref|, P = LCS/|hyp|, beta = P/R,
    F = (1 + beta^2) R P / (R + beta^2 P) (with the reference's 1e-12 guards). Empty text -> 0."""
    if not hyp or not ref:
        return 0.0, 0.0, 0.0
    lcs = lcs_length(hyp, ref)
    r = lcs / len(ref)
    p = lcs / len(hyp)
    beta = p / (r + 1e-12)
    f = (1 + beta**2) * r * p / (r + beta**2 * p + 1e-12)
    return f, p, r


def reference_rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L x100 by the tensorflow/nmt formulas of the reference (rouge.py), averaged over samples.

    Same keys as :func:`rouge`. ROUGE-1/2 use *sets* of unique n-grams; ROUGE-L uses beta = P/R, which
    equals P when P = R and differs from F1 otherwise. Tokens are ``str.split()``, case and punctuation
    kept. Deviation: a pair with an empty hypothesis or reference scores 0. (The reference splits the
    string ``""`` into one empty token, so it also gives 0 unless both sides are empty, where it gives 1;
    on raw empty token lists its ROUGE-L divides by zero.)
    """
    _check_text_inputs(hypotheses, references)
    rows = np.zeros((len(hypotheses), 3, 3))  # sample, metric, (f, p, r)
    for i, (hyp, ref) in enumerate(zip(hypotheses, references)):
        h, r = hyp.split(), ref.split()
        rows[i, 0] = _reference_rouge_n(h, r, 1)
        rows[i, 1] = _reference_rouge_n(h, r, 2)
        rows[i, 2] = _reference_rouge_l(h, r)
    mean = 100.0 * rows.mean(axis=0)
    f = {name: float(mean[j, 0]) for j, name in enumerate(_ROUGE_NAMES)}
    p = {name: float(mean[j, 1]) for j, name in enumerate(_ROUGE_NAMES)}
    r = {name: float(mean[j, 2]) for j, name in enumerate(_ROUGE_NAMES)}
    return _rouge_dict(f, p, r)


def text_metrics(hypotheses: Sequence[str], references: Sequence[str], protocol: str = "clean") -> dict[str, float]:
    """BLEU-4, BLEU-1 and ROUGE-1/2/L (F, P, R) x100 in one dict, by library (clean) or reference formulas."""
    if protocol == "clean":
        out = {"bleu4": bleu(hypotheses, references, 4), "bleu1": bleu(hypotheses, references, 1)}
        out.update(rouge(hypotheses, references))
    elif protocol == "reference":
        out = {"bleu4": reference_bleu(hypotheses, references, 4), "bleu1": reference_bleu(hypotheses, references, 1)}
        out.update(reference_rouge(hypotheses, references))
    else:
        raise ValueError(f"unknown protocol {protocol!r}: expected 'clean' or 'reference'")
    return out
