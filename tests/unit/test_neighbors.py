"""The chunked top-k neighbour index: self excluded, equal to brute force, ties by lower index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peapod.embeddings.neighbors import TIE_DECIMALS, NeighborIndex, build_neighbor_index
from peapod.errors import DataFormatError, PeapodError

torch.set_num_threads(1)


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full U x U cosine in float64, self -inf, order by (rounded similarity desc, index asc)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    xn = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sims = xn @ xn.T
    np.fill_diagonal(sims, -np.inf)
    order = np.stack([np.lexsort((np.arange(len(r)), -np.round(r, TIE_DECIMALS)))[:k] for r in sims])
    return order, np.take_along_axis(sims, order, axis=1)


def _data(seed: int, n: int, d: int, integer: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if integer:  # small integer vectors: many mathematically equal cosines between different vectors
        x = np.round(x * 1.5).astype(np.float32)
    x[5] = x[3]  # an exact duplicate
    x[7] = 4 * x[3]  # a scaled duplicate: same cosines
    x[9] = 0.0  # users without data
    x[11] = 0.0
    return x


@pytest.mark.parametrize("seed,n,d,k,integer", [(0, 50, 8, 5, False), (1, 120, 3, 12, True), (2, 80, 4, 79, True)])
def test_equals_brute_force_for_every_chunk_size(seed, n, d, k, integer):
    x = _data(seed, n, d, integer)
    ref_idx, ref_sim = brute_force(x, k)
    for chunk in (1, 7, 32, 1000):
        index = build_neighbor_index(x, k, chunk_size=chunk, device="cpu")
        assert index.indices.dtype == np.int64 and index.similarities.dtype == np.float32
        assert index.indices.shape == (n, k) and index.similarities.shape == (n, k)
        np.testing.assert_array_equal(index.indices, ref_idx)
        np.testing.assert_allclose(index.similarities, ref_sim, atol=1e-6)


def test_self_excluded_and_rows_sorted():
    x = _data(3, 64, 16)
    index = build_neighbor_index(torch.from_numpy(x), 10, chunk_size=9, device="cpu")
    assert not (index.indices == np.arange(64)[:, None]).any()
    assert (np.diff(index.similarities, axis=1) <= 0).all()
    # the duplicate and the scaled duplicate are each other's nearest neighbours (cosine 1)
    assert set(index.indices[3, :2]) == {5, 7} and index.indices[5, 0] == 3
    assert index.similarities[3, 0] == pytest.approx(1.0)


def test_ties_go_to_the_lower_index():
    # five identical users and one other: every neighbour list is the lowest-indexed others first
    x = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]], dtype=np.float32)
    index = build_neighbor_index(x, 3, chunk_size=2, device="cpu")
    assert index.indices[:5].tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 1, 2]]
    assert index.indices[5].tolist() == [0, 1, 2]  # all at cosine 0


def test_zero_vectors_give_no_nan():
    x = np.zeros((6, 4), dtype=np.float32)
    x[2] = [1, 2, 3, 4]
    index = build_neighbor_index(x, 2, device="cpu")
    assert np.isfinite(index.similarities).all()
    assert index.indices[0].tolist() == [1, 2] and index.indices[2].tolist() == [0, 1]
    assert not index.similarities.any()


def test_bad_arguments():
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(PeapodError, match="neighbours among 4 users"):
        build_neighbor_index(x, 4)
    with pytest.raises(PeapodError, match="neighbours"):
        build_neighbor_index(x, 0)
    with pytest.raises(PeapodError, match="NaN"):
        build_neighbor_index(np.full((4, 3), np.nan), 2)
    with pytest.raises(PeapodError, match="matrix"):
        build_neighbor_index(np.ones(4), 2)


def test_save_load_round_trip(tmp_path):
    x = _data(4, 30, 5)
    index = build_neighbor_index(x, 4, users=[f"u{i}" for i in range(30)], device="cpu")
    path = index.save(tmp_path / "n.safetensors")
    back = NeighborIndex.load(path)
    np.testing.assert_array_equal(back.indices, index.indices)
    np.testing.assert_array_equal(back.similarities, index.similarities)
    assert back.users == index.users and back.k == 4 and back.n_users == 30
    assert back.nbytes == 30 * 4 * (8 + 4)
    with pytest.raises(DataFormatError, match="not found"):
        NeighborIndex.load(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(DataFormatError, match="junk.safetensors"):
        NeighborIndex.load(tmp_path / "junk.safetensors")


def test_collapsed_embedding_uses_exact_path():
    # every user almost the same direction (as PMF fit on all-1 ratings gives): float32 cannot order them
    rng = np.random.default_rng(5)
    x = (np.ones((90, 16)) + 1e-4 * rng.normal(size=(90, 16))).astype(np.float32)
    x[10] = x[20]
    ref_idx, _ = brute_force(x, 6)
    for chunk in (5, 90):
        np.testing.assert_array_equal(build_neighbor_index(x, 6, chunk_size=chunk, device="cpu").indices, ref_idx)
