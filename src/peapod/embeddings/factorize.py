"""Fit user and item factors on training interactions with cornac (PMF, BiVAE, BPR) or implicit (ALS).

Input is plain data: ``train_sequences`` (user id -> training item ids, i.e. ``items[:-2]`` per user,
see ``Dataset.train_sequences()``) and the full item list. Every interaction counts as the implicit
rating 1.0; repeated (user, item) pairs count once. Items that occur only as validation or test
targets (no training interaction) get zero vectors, and so do users with no training item; their
numbers are recorded in ``settings``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..config import EmbeddingConfig
from ..errors import ConfigError, UnknownIdError
from .factors import Factors

METHODS = ("pmf", "bivae", "bpr", "als")

#: ALS confidence of an observed interaction (unobserved cells have confidence 1, as in implicit).
ALS_ALPHA = 10.0
#: Ridge penalty of :func:`fold_in` for methods without a closed-form user step (PMF, BiVAE, BPR).
FOLD_IN_REG = 0.1


def _interactions(train_sequences: dict[str, list[str]], items: list[str]):
    """Deduplicated (user row, item row) arrays, in the order of ``train_sequences`` / ``items``."""
    users = [str(u) for u in train_sequences]
    item_index = {str(it): i for i, it in enumerate(items)}
    if len(item_index) != len(items):
        raise ValueError("item ids must be unique")
    lengths = np.fromiter((len(s) for s in train_sequences.values()), dtype=np.int64, count=len(users))
    flat = [it for seq in train_sequences.values() for it in seq]
    cols = np.fromiter((item_index.get(str(it), -1) for it in flat), dtype=np.int64, count=len(flat))
    if (cols < 0).any():
        bad = sorted({str(flat[j]) for j in np.flatnonzero(cols < 0)[:5]})
        raise UnknownIdError(f"training sequences use item id(s) not in the item list: {', '.join(bad)}")
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    pairs = np.unique(rows * len(items) + cols)
    return users, pairs // len(items), pairs % len(items)


def fit_factors(
    train_sequences: dict[str, list[str]],
    items: list[str],
    config: EmbeddingConfig,
    verbose: bool = False,
) -> Factors:
    """Fit ``config.method`` (pmf | bivae | bpr | als) on the training interactions and return its factors.

    ``config.dim``, ``max_iter``, ``learning_rate``, ``lamda`` (the regularisation of every method)
    and ``seed`` are used. Pass ``dataset.train_sequences()``: the result is marked ``fit_on="train"``.
    """
    if config.method not in METHODS:
        raise ConfigError(f"unknown embedding method {config.method!r}; choose one of {', '.join(METHODS)}")
    if config.dim < 1 or config.max_iter < 1:
        raise ConfigError(f"embedding dim and max_iter must be >= 1, got {config.dim} and {config.max_iter}")
    users, rows, cols = _interactions(train_sequences, items)
    if len(rows) == 0:
        raise ConfigError("no training interactions to fit embeddings on")
    # Compact the matrix to the users/items that have training data; the rest get zero vectors.
    used_users, u_inv = np.unique(rows, return_inverse=True)
    used_items, i_inv = np.unique(cols, return_inverse=True)

    start, cpu_start = time.perf_counter(), time.process_time()
    fit = {"pmf": _fit_pmf, "bivae": _fit_bivae, "bpr": _fit_bpr, "als": _fit_als}[config.method]
    u_vec, i_vec, i_bias, extra = fit(u_inv, i_inv, len(used_users), len(used_items), config, verbose)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    user_factors = np.zeros((len(users), config.dim), dtype=np.float32)
    item_factors = np.zeros((len(items), config.dim), dtype=np.float32)
    user_factors[used_users] = u_vec
    item_factors[used_items] = i_vec
    item_bias = None
    if i_bias is not None:
        item_bias = np.zeros(len(items), dtype=np.float32)
        item_bias[used_items] = i_bias
    settings: dict[str, Any] = {
        "dim": config.dim,
        "max_iter": config.max_iter,
        "learning_rate": config.learning_rate,
        "lamda": config.lamda,
        "seed": config.seed,
        **extra,
        "n_users": len(users),
        "n_items": len(items),
        "n_train_interactions": int(len(rows)),
        "users_without_training_data": int(len(users) - len(used_users)),
        "items_without_training_data": int(len(items) - len(used_items)),
        "fit_seconds": round(seconds, 3),
        "fit_cpu_seconds": round(cpu_seconds, 3),  # all threads of this process
    }
    if verbose:
        print(f"fitted {config.method} (dim {config.dim}) in {seconds:.1f} s", flush=True)
    return Factors(
        users=users,
        items=[str(i) for i in items],
        user_factors=user_factors,
        item_factors=item_factors,
        method=config.method,
        settings=settings,
        fit_on="train",
        item_bias=item_bias,
    )


# ---------------------------------------------------------------------- back ends
def _cornac_dataset(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, seed: int):
    """A cornac train set whose internal index k is our compact row k (uid_map / iid_map say so)."""
    from collections import OrderedDict

    from cornac.data import Dataset as CornacDataset

    uir = (u.astype(np.int64), i.astype(np.int64), np.ones(len(u), dtype=np.float64))
    uid_map = OrderedDict((k, k) for k in range(n_users))
    iid_map = OrderedDict((k, k) for k in range(n_items))
    return CornacDataset(n_users, n_items, uid_map, iid_map, uir, seed=seed)


def _back_to_rows(matrix: np.ndarray, id_map: dict, n: int) -> np.ndarray:
    """Reorder cornac's internal rows into our compact row order via its uid_map / iid_map."""
    ours = np.fromiter(id_map.keys(), dtype=np.int64, count=len(id_map))
    inner = np.fromiter(id_map.values(), dtype=np.int64, count=len(id_map))
    out = np.zeros((n, matrix.shape[1]), dtype=np.float32)
    out[ours] = np.asarray(matrix, dtype=np.float32)[inner]
    return out


def _fit_pmf(u, i, n_users, n_items, config: EmbeddingConfig, verbose: bool):
    from cornac.models import PMF

    train = _cornac_dataset(u, i, n_users, n_items, config.seed)
    model = PMF(
        k=config.dim,
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        lambda_reg=config.lamda,  # cornac 3.0.1 spells it lambda_reg
        gamma=0.9,
        variant="non_linear",
        seed=config.seed,
        verbose=verbose,
    ).fit(train)
    return (
        _back_to_rows(model.U, train.uid_map, n_users),
        _back_to_rows(model.V, train.iid_map, n_items),
        None,
        {"gamma": 0.9, "variant": "non_linear", "rating": 1.0},
    )


def _fit_bivae(u, i, n_users, n_items, config: EmbeddingConfig, verbose: bool):
    import torch
    from cornac.models import BiVAECF

    train = _cornac_dataset(u, i, n_users, n_items, config.seed)
    torch.manual_seed(config.seed)
    model = BiVAECF(
        k=config.dim,
        encoder_structure=[20],
        likelihood="pois",
        n_epochs=config.max_iter,
        batch_size=100,
        learning_rate=config.learning_rate,
        seed=config.seed,
        use_gpu=torch.cuda.is_available(),
        verbose=verbose,
    ).fit(train)
    return (
        _back_to_rows(model.bivae.mu_theta.detach().cpu().numpy(), train.uid_map, n_users),
        _back_to_rows(model.bivae.mu_beta.detach().cpu().numpy(), train.iid_map, n_items),
        None,
        {"encoder_structure": [20], "likelihood": "pois", "batch_size": 100, "rating": 1.0},
    )


def _fit_bpr(u, i, n_users, n_items, config: EmbeddingConfig, verbose: bool):
    from cornac.models import BPR

    train = _cornac_dataset(u, i, n_users, n_items, config.seed)
    model = BPR(
        k=config.dim,
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        lambda_reg=config.lamda,
        use_bias=True,
        seed=config.seed,  # a seed makes cornac train single-threaded, hence reproducible
        verbose=verbose,
    ).fit(train)
    bias = _back_to_rows(np.asarray(model.i_biases).reshape(-1, 1), train.iid_map, n_items)[:, 0]
    return (
        _back_to_rows(model.u_factors, train.uid_map, n_users),
        _back_to_rows(model.i_factors, train.iid_map, n_items),
        bias,
        {"use_bias": True},
    )


def _fit_als(u, i, n_users, n_items, config: EmbeddingConfig, verbose: bool):
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    user_items = sp.csr_matrix(
        (np.full(len(u), ALS_ALPHA, dtype=np.float32), (u, i)), shape=(n_users, n_items)
    )
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS threads only slow it
        model = AlternatingLeastSquares(
            factors=config.dim,
            regularization=config.lamda,
            iterations=config.max_iter,
            random_state=config.seed,
        )
        model.fit(user_items, show_progress=verbose)
    return (
        np.asarray(model.user_factors, dtype=np.float32),
        np.asarray(model.item_factors, dtype=np.float32),
        None,
        {"alpha": ALS_ALPHA, "regularization": config.lamda, "library": "implicit (CPU)"},
    )


# ---------------------------------------------------------------------- cold start
def fold_in(factors: Factors, item_history: list[str], reg: float | None = None) -> np.ndarray:
    """A new user's vector (D,) from the items they interacted with, in the factors' scoring geometry.

    Regularised least squares over the item factors with target 1.0 per history item (scores are
    dot products, plus the item bias when the factors have one). For ALS it is implicit's own user
    step: ``(YtY + (alpha-1) Yh'Yh + reg I) x = alpha Yh'1`` with the fitted alpha and regularisation.
    Other methods use ``(Yh'Yh + reg I) x = Yh'(1 - b_h)`` with ``reg`` (default FOLD_IN_REG).
    Unknown items raise UnknownIdError; an empty history gives the zero vector.
    """
    rows = np.unique(factors.item_rows(item_history))
    dim = factors.dim
    if len(rows) == 0:
        return np.zeros(dim, dtype=np.float32)
    y_all = factors.item_factors.astype(np.float64)
    y = y_all[rows]
    if factors.method == "als":
        alpha = float(factors.settings.get("alpha", ALS_ALPHA))
        lam = float(factors.settings.get("regularization", factors.settings.get("lamda", 0.01)))
        lam = lam if reg is None else reg
        a = y_all.T @ y_all + (alpha - 1.0) * (y.T @ y) + lam * np.eye(dim)
        b = alpha * y.sum(axis=0)
    else:
        lam = FOLD_IN_REG if reg is None else reg
        target = np.ones(len(rows))
        if factors.item_bias is not None:
            target = target - factors.item_bias[rows].astype(np.float64)
        a = y.T @ y + lam * np.eye(dim)
        b = y.T @ target
    if lam < 0:
        raise ConfigError(f"fold_in regularisation must be >= 0, got {lam}")
    try:
        return np.linalg.solve(a, b).astype(np.float32)
    except np.linalg.LinAlgError:  # reg 0 with fewer history items than dimensions: minimum-norm solution
        return np.linalg.lstsq(a, b, rcond=None)[0].astype(np.float32)
