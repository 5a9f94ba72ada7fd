"""The default dataset: a small, deterministic synthetic catalogue with real structure to learn.

How it is generated (all draws from ``numpy.random.default_rng(seed)``):

- **Items** fall into ``n_clusters`` product categories (fragrance, moisturizer, shampoo, ...). Each
  category has three aspects ("scent", "bottle", "price", ...); every item has two of them, a fixed
  quality (good or bad) per aspect, a favourite phrasing, and a popularity weight (lognormal, a mild skew).
- **Users** have a preference mix concentrated on a primary and a secondary category, a favourite
  aspect per category, a favourite sentence template and a favourite adjective.
- **Sequences** (length ``min_length + Poisson(mean_extra)``, at most ``max_length``, no repeats) follow a
  category-local Markov chain: each category's items form a random cycle; with probability
  ``p_successor`` the next item is the successor of the previous one, with probability ``p_noise`` it is a
  uniform draw, otherwise it is drawn from the user's categories by popularity. So a sequential model
  beats popularity, and a user profile (collaborative filtering) beats popularity on top-n.
- **Ids** follow P5 (:func:`peapod.data.writers.p5_id_map`): users shuffled with ``random.Random(seed)``
  and numbered 1..U, items numbered by first appearance. The original-id leak of the real P5 files
  (consecutive ids in the first users' sequences) therefore exists here too. Items nobody bought are
  dropped, as in P5.
- **Negatives**: P5's sampler (:func:`peapod.data.negatives.p5_negative_samples`, seed 2022).
- **Explanations**: for a fraction ``p_explanation`` of the interactions, one sentence about the aspect
  of the item the user cares most about (feature = that aspect), positive or negative by the item's
  quality, phrased with the user's template and adjective and the item's phrasing, e.g. "The scent is
  lovely and lasts all day". Split 80/10/10 P5-style (:func:`peapod.data.writers.p5_review_split`).

The output is byte-identical for a given set of arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .dataset import EXPLANATION_SPLITS, Dataset, ExplanationRecord
from .writers import p5_id_map, p5_review_split, write_p5_dataset

__all__ = ["CATEGORIES", "SyntheticData", "generate_synthetic", "write_synthetic"]

#: (category, {aspect: ((positive phrases), (negative phrases))}); every phrase reads after
#: "the <aspect> ..." and after "it ...".
CATEGORIES: tuple[tuple[str, dict[str, tuple[tuple[str, str], tuple[str, str]]]], ...] = (
    ("fragrance", {
        "scent": (("lasts all day", "smells fresh and clean"), ("fades within an hour", "smells like cheap alcohol")),
        "bottle": (("looks elegant on my dresser", "sprays a fine even mist"), ("leaks in my bag", "feels flimsy")),
        "price": (("is fair for the quality", "beats the department stores"), ("is too high for what you get", "keeps going up")),
    }),
    ("moisturizer", {
        "texture": (("feels smooth on the skin", "absorbs in seconds"), ("feels greasy all day", "leaves a sticky film")),
        "hydration": (("keeps my face soft until evening", "fixes my dry patches"), ("wears off by lunch", "does nothing for dry skin")),
        "jar": (("keeps the cream clean", "is easy to open"), ("cracked after a week", "is hard to open")),
    }),
    ("shampoo", {
        "lather": (("builds up quickly", "rinses out easily"), ("barely foams", "leaves a residue")),
        "shine": (("makes my hair glossy", "lasts until the next wash"), ("looks dull by noon", "turns my hair flat")),
        "smell": (("reminds me of a spa", "stays in my hair all day"), ("is far too sweet", "smells like chemicals")),
    }),
    ("foundation", {
        "coverage": (("hides every blemish", "builds without looking cakey"), ("is too sheer", "settles into fine lines")),
        "shade": (("matches my skin perfectly", "blends into my neck"), ("runs too orange", "oxidizes after an hour")),
        "finish": (("looks natural and dewy", "stays matte all day"), ("looks chalky", "gets shiny by noon")),
    }),
    ("nail polish", {
        "color": (("is rich in one coat", "looks just like the bottle"), ("goes on streaky", "looks nothing like the picture")),
        "brush": (("spreads the polish evenly", "makes application easy"), ("is splayed and messy", "floods the cuticles")),
        "wear": (("holds up for a week", "resists chips"), ("chips in a day", "peels off quickly")),
    }),
    ("makeup brushes", {
        "handle": (("feels sturdy in my hand", "is nicely weighted"), ("snapped after a month", "feels cheap")),
        "density": (("picks up just enough product", "blends foundation seamlessly"), ("sheds everywhere", "streaks my makeup")),
        "case": (("keeps everything tidy", "travels well"), ("fell apart quickly", "smells of glue")),
    }),
    ("lipstick", {
        "pigment": (("shows up in one swipe", "stays true all day"), ("needs many layers", "looks patchy")),
        "moisture": (("keeps my lips soft", "never feels drying"), ("dries out my lips", "feels tacky")),
        "staying power": (("survives coffee and lunch", "lasts through dinner"), ("is gone after one sip", "transfers onto everything")),
    }),
    ("mascara", {
        "wand": (("separates every lash", "reaches the tiny corner lashes"), ("clumps my lashes together", "is too big for my eyes")),
        "formula": (("never smudges", "builds dramatic volume"), ("flakes by noon", "smudges under my eyes")),
        "removal": (("comes off easily with warm water", "needs no scrubbing"), ("takes forever", "stings my eyes")),
    }),
    ("soap", {
        "bar": (("lasts for weeks", "never gets mushy"), ("melts away fast", "crumbles in the shower")),
        "fragrance": (("is subtle and clean", "lingers on the skin"), ("is overpowering", "disappears right away")),
        "cleansing": (("leaves my skin squeaky clean", "rinses off easily"), ("leaves my skin tight", "dries me out")),
    }),
    ("sunscreen", {
        "protection": (("prevents any burn at the beach", "holds up in the water"), ("let me burn in an hour", "washes off in the pool")),
        "feel": (("is light and never greasy", "disappears into the skin"), ("is heavy and oily", "leaves a white cast")),
        "spray": (("covers evenly", "is easy to apply"), ("sputters and clogs", "gets everywhere")),
    }),
)

_POS_ADJ = ("great", "lovely", "amazing", "really nice", "perfect", "fantastic")
_NEG_ADJ = ("disappointing", "terrible", "not great", "poor")
#: Template families; a user's favourite index picks the same family for praise and complaint.
_POS_TEMPLATES = (
    "The {aspect} is {adj} and {pred}",
    "{Adj} {aspect} that {pred}",
    "I love how the {aspect} {pred}",
    "The {aspect} {pred}, {adj} buy",
)
_NEG_TEMPLATES = (
    "The {aspect} is {adj} and {pred}",
    "{Adj} {aspect}, it {pred}",
    "Not happy with the {aspect}, it {pred}",
    "The {aspect} {pred}, {adj} overall",
)


@dataclass
class SyntheticData:
    """A generated dataset and the latent structure behind it (for tests and diagnostics)."""

    dataset: Dataset
    item_cluster: dict[str, int]  # item id -> category index
    user_clusters: dict[str, tuple[int, int]]  # user id -> (primary, secondary) category
    cluster_names: list[str] = field(default_factory=list)
    params: dict[str, float | int] = field(default_factory=dict)


def _check(n_users: int, n_items: int, n_clusters: int, min_length: int, max_length: int, n_negatives: int) -> None:
    if n_users < 1:
        raise ConfigError(f"synthetic data: n_users must be >= 1, got {n_users}")
    if not 2 <= n_clusters <= len(CATEGORIES):
        raise ConfigError(f"synthetic data: n_clusters must be in 2..{len(CATEGORIES)}, got {n_clusters}")
    if n_items < 2 * n_clusters:
        raise ConfigError(f"synthetic data: n_items must be >= 2 * n_clusters = {2 * n_clusters}, got {n_items}")
    if not 3 <= min_length <= max_length:
        raise ConfigError(f"synthetic data: need 3 <= min_length <= max_length, got {min_length}, {max_length}")
    if n_items < max_length + n_negatives:
        raise ConfigError(
            f"synthetic data: n_items ({n_items}) must be >= max_length + n_negatives "
            f"({max_length} + {n_negatives}) so that every user can get {n_negatives} negatives"
        )


def _cluster_tables(cluster: np.ndarray, weight: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per category: its items (padded with -1) and their cumulative popularity (padded with 2)."""
    size = np.bincount(cluster, minlength=n_clusters)
    members = np.full((n_clusters, size.max()), -1, dtype=np.int64)
    cdf = np.full((n_clusters, size.max()), 2.0)
    order = np.argsort(cluster, kind="stable")
    starts = np.concatenate([[0], np.cumsum(size)[:-1]])
    col = np.arange(len(cluster)) - np.repeat(starts, size)
    members[cluster[order], col] = order
    w = np.where(members >= 0, weight[np.maximum(members, 0)], 0.0)
    c = np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)
    c[np.arange(n_clusters), size - 1] = 1.0
    cdf[members >= 0] = c[members >= 0]
    return members, cdf


def _successors(cluster: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each category's items in a random cycle: successor[item] = the next item of that cycle."""
    order = np.lexsort((rng.random(len(cluster)), cluster))
    block = cluster[order]
    is_last = np.append(block[1:] != block[:-1], True)
    first_of_block = np.maximum.accumulate(np.where(np.insert(block[1:] != block[:-1], 0, True), np.arange(len(order)), 0))
    nxt = np.where(is_last, first_of_block, np.arange(len(order)) + 1)
    succ = np.empty_like(order)
    succ[order] = order[nxt]
    return succ


def _walk(
    rng: np.random.Generator,
    lengths: np.ndarray,
    pref: np.ndarray,
    members: np.ndarray,
    cdf: np.ndarray,
    succ: np.ndarray,
    n_items: int,
    p_successor: float,
    p_noise: float,
) -> np.ndarray:
    """Vectorised over users, one step at a time: (U, max_length) latent items, -1 past each length."""
    n_users, max_len = len(lengths), int(lengths.max())
    pref_cdf = np.cumsum(pref, axis=1)
    pref_cdf[:, -1] = 1.0
    seq = np.full((n_users, max_len), -1, dtype=np.int64)

    def from_pref(rows: np.ndarray) -> np.ndarray:
        c = (pref_cdf[rows] < rng.random(len(rows))[:, None]).sum(axis=1)
        k = (cdf[c] < rng.random(len(rows))[:, None]).sum(axis=1)
        return members[c, k]

    for t in range(max_len):
        rows = np.flatnonzero(lengths > t)
        if t == 0:
            cand = from_pref(rows)
        else:
            u = rng.random(len(rows))
            cand = np.where(u < p_successor, succ[seq[rows, t - 1]], -1)
            noise = u >= 1.0 - p_noise
            cand[noise] = rng.integers(0, n_items, int(noise.sum()))
            todo = cand < 0
            cand[todo] = from_pref(rows[todo])
        for attempt in range(64):  # no repeats inside a sequence: redraw the collisions
            dup = (seq[rows, :t] == cand[:, None]).any(axis=1) if t else np.zeros(len(rows), bool)
            if not dup.any():
                break
            cand[dup] = from_pref(rows[dup]) if attempt < 8 else rng.integers(0, n_items, int(dup.sum()))
        else:  # pragma: no cover - needs n_items close to max_length
            for r in np.flatnonzero(dup):
                cand[r] = np.setdiff1d(np.arange(n_items), seq[rows[r], :t])[0]
        seq[rows, t] = cand
    return seq


def _explanations(
    rng: np.random.Generator,
    user_lat: np.ndarray,
    item_lat: np.ndarray,
    cluster: np.ndarray,
    n_users: int,
    n_items: int,
    n_clusters: int,
) -> tuple[list[str], list[str]]:
    """One sentence and its aspect for each (user, item) interaction, vectorised draws."""
    n = len(user_lat)
    # latent text profile of items and users
    dropped = rng.integers(0, 3, n_items)  # each item has two of its category's three aspects
    slots = np.stack([(dropped + 1) % 3, (dropped + 2) % 3], axis=1)
    good = rng.random((n_items, 3)) < 0.75
    phrasing = rng.integers(0, 2, (n_items, 3))
    taste = rng.random((n_users, n_clusters, 3))
    fav_template = rng.integers(0, len(_POS_TEMPLATES), n_users)
    fav_pos, fav_neg = rng.integers(0, len(_POS_ADJ), n_users), rng.integers(0, len(_NEG_ADJ), n_users)
    # per record
    c = cluster[item_lat]
    s = slots[item_lat]
    scores = taste[user_lat[:, None], c[:, None], s]
    pick = np.where(rng.random(n) < 0.8, scores.argmax(axis=1), rng.integers(0, 2, n))
    slot = s[np.arange(n), pick]
    positive = good[item_lat, slot] ^ (rng.random(n) < 0.1)
    pred = np.where(rng.random(n) < 0.85, phrasing[item_lat, slot], 1 - phrasing[item_lat, slot])
    template = np.where(rng.random(n) < 0.7, fav_template[user_lat], rng.integers(0, len(_POS_TEMPLATES), n))
    pos_adj = np.where(rng.random(n) < 0.6, fav_pos[user_lat], rng.integers(0, len(_POS_ADJ), n))
    neg_adj = np.where(rng.random(n) < 0.6, fav_neg[user_lat], rng.integers(0, len(_NEG_ADJ), n))

    aspect_names = [list(CATEGORIES[k][1]) for k in range(n_clusters)]
    texts, features = [], []
    for ci, sl, pos, pr, tp, pa, na in zip(
        c.tolist(), slot.tolist(), positive.tolist(), pred.tolist(), template.tolist(), pos_adj.tolist(), neg_adj.tolist()
    ):
        aspect = aspect_names[ci][sl]
        phrases = CATEGORIES[ci][1][aspect][0 if pos else 1]
        adj = _POS_ADJ[pa] if pos else _NEG_ADJ[na]
        tmpl = (_POS_TEMPLATES if pos else _NEG_TEMPLATES)[tp]
        texts.append(tmpl.format(aspect=aspect, adj=adj, Adj=adj[:1].upper() + adj[1:], pred=phrases[pr]))
        features.append(aspect)
    return texts, features


def generate_synthetic(
    n_users: int = 300,
    n_items: int = 200,
    seed: int = 0,
    *,
    n_clusters: int = 8,
    min_length: int = 5,
    max_length: int = 20,
    mean_extra: float = 4.0,
    p_successor: float = 0.5,
    p_noise: float = 0.1,
    p_explanation: float = 0.9,
    n_negatives: int = 99,
    negatives_seed: int = 2022,
) -> SyntheticData:
    """Generate the synthetic dataset in memory (see the module docstring); deterministic in the arguments."""
    _check(n_users, n_items, n_clusters, min_length, max_length, n_negatives)
    if not (0 <= p_successor and 0 <= p_noise and p_successor + p_noise <= 1 and 0 <= p_explanation <= 1):
        raise ConfigError("synthetic data: probabilities must lie in [0, 1] and p_successor + p_noise <= 1")
    rng = np.random.default_rng(seed)
    cluster = rng.permutation(np.arange(n_items) % n_clusters)
    weight = rng.lognormal(0.0, 0.75, n_items)
    members, cdf = _cluster_tables(cluster, weight, n_clusters)
    succ = _successors(cluster, rng)
    primary = rng.integers(0, n_clusters, n_users)
    secondary = (primary + rng.integers(1, n_clusters, n_users)) % n_clusters
    share = rng.uniform(0.55, 0.75, n_users)
    pref = 0.15 * rng.dirichlet(np.full(n_clusters, 0.3), n_users)
    pref[np.arange(n_users), primary] += share
    pref[np.arange(n_users), secondary] += 0.85 - share
    lengths = np.minimum(min_length + rng.poisson(mean_extra, n_users), max_length)
    seq = _walk(rng, lengths, pref, members, cdf, succ, n_items, p_successor, p_noise)

    raw_user = [f"SU{u:06d}" for u in range(n_users)]
    raw_item = [f"SI{j:06d}" for j in range(n_items)]
    user_items = {raw_user[u]: [raw_item[j] for j in seq[u, : lengths[u]].tolist()] for u in range(n_users)}
    sequences, id2user, id2item = p5_id_map(user_items, seed=seed)
    items = list(id2item)
    longest = max(len(s) for s in sequences.values())
    if len(items) < longest + n_negatives:
        raise ConfigError(
            f"synthetic data: only {len(items)} of the {n_items} items were bought, too few for "
            f"{n_negatives} negatives next to a sequence of {longest}; raise n_users or lower n_negatives"
        )

    from .negatives import p5_negative_samples  # lazy: sibling module

    negatives = p5_negative_samples(sequences, n=n_negatives, seed=negatives_seed)

    # explanations over every interaction, in user-id then chronological order
    user_lat_of = {uid: int(raw[2:]) for uid, raw in id2user.items()}
    item_lat_of = {iid: int(raw[2:]) for iid, raw in id2item.items()}
    rec_user = [u for u, s in sequences.items() for _ in s]
    rec_item = [i for s in sequences.values() for i in s]
    user_lat = np.array([user_lat_of[u] for u in rec_user], dtype=np.int64)
    item_lat = np.array([item_lat_of[i] for i in rec_item], dtype=np.int64)
    texts, features = _explanations(rng, user_lat, item_lat, cluster, n_users, n_items, n_clusters)
    split = p5_review_split(user_lat, item_lat, seed=int(rng.integers(2**31)))
    has_text = rng.random(len(rec_user)) < p_explanation  # P5 keeps only reviews with a sentence
    explanations: dict[str, list[ExplanationRecord]] = {s: [] for s in EXPLANATION_SPLITS}
    for k in np.flatnonzero(has_text).tolist():
        explanations[EXPLANATION_SPLITS[split[k]]].append(
            ExplanationRecord(rec_user[k], rec_item[k], texts[k], features[k], id2item[rec_item[k]])
        )

    dataset = Dataset(
        name="synthetic",
        sequences=sequences,
        items=items,
        negatives=negatives,
        explanations=explanations,
        user_raw=dict(id2user),
        item_raw=dict(id2item),
    )
    params = dict(
        n_users=n_users, n_items=n_items, seed=seed, n_clusters=n_clusters, min_length=min_length,
        max_length=max_length, mean_extra=mean_extra, p_successor=p_successor, p_noise=p_noise,
        p_explanation=p_explanation, n_negatives=n_negatives, negatives_seed=negatives_seed,
    )
    return SyntheticData(
        dataset=dataset,
        item_cluster={iid: int(cluster[item_lat_of[iid]]) for iid in items},
        user_clusters={uid: (int(primary[user_lat_of[uid]]), int(secondary[user_lat_of[uid]])) for uid in sequences},
        cluster_names=[CATEGORIES[k][0] for k in range(n_clusters)],
        params=params,
    )


def write_synthetic(out_dir: str | Path, n_users: int = 300, n_items: int = 200, seed: int = 0, **kwargs) -> Path:
    """Generate the synthetic dataset (:func:`generate_synthetic`) and write it in the P5 layout."""
    data = generate_synthetic(n_users, n_items, seed, **kwargs)
    ds = data.dataset
    return write_p5_dataset(out_dir, ds.sequences, ds.items, ds.negatives, ds.explanations, ds.user_raw, ds.item_raw)
