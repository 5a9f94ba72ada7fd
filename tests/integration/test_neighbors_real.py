"""The neighbour index on real Sports users (35,598): shape, no self, and neighbours that share items."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from peapod.config import EmbeddingConfig
from peapod.embeddings import build_neighbor_index, fit_factors

pytestmark = pytest.mark.integration


def test_sports_neighbor_index(shared_data):
    from peapod.data import load_dataset

    torch.set_num_threads(2)
    dataset = load_dataset(shared_data / "sports")
    train = dataset.train_sequences()
    # Small, fast ALS factors fit on training interactions only (the index itself does not care).
    factors = fit_factors(train, dataset.items, EmbeddingConfig(method="als", dim=32, max_iter=3, lamda=0.1))
    assert factors.fit_on == "train" and factors.users == dataset.users

    k = 20
    index = build_neighbor_index(factors.user_factors, k, chunk_size=4096, device="cpu", users=factors.users)
    n = dataset.n_users
    assert n == 35_598
    assert index.indices.shape == (n, k) and index.similarities.shape == (n, k)
    assert index.indices.dtype == np.int64 and index.similarities.dtype == np.float32
    assert (index.indices >= 0).all() and (index.indices < n).all()
    assert not (index.indices == np.arange(n)[:, None]).any()  # no user is its own neighbour
    assert (np.diff(index.similarities, axis=1) <= 0).all() and np.isfinite(index.similarities).all()
    assert index.nbytes == n * k * 12  # vs n * n * 4 bytes (4.7 GiB) for the reference's matrix

    # Neighbours share training items far more often than random pairs do.
    rows = np.concatenate([[0], np.cumsum([len(train[u]) for u in dataset.users])])
    cols = np.array([dataset.item_index[i] for u in dataset.users for i in train[u]])
    x = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), cols, rows), shape=(n, dataset.n_items))
    users = np.random.default_rng(0).choice(n, 2000, replace=False)
    a = np.repeat(users, k)
    shared_nb = np.asarray(x[a].multiply(x[index.indices[users].ravel()]).sum(axis=1)).ravel() > 0
    shared_rand = np.asarray(x[a].multiply(x[np.random.default_rng(1).integers(0, n, len(a))]).sum(axis=1)).ravel() > 0
    assert shared_nb.mean() > 5 * shared_rand.mean()
