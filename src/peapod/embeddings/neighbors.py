"""The k most similar users of every user (cosine), built chunk by chunk: never the U x U matrix.

The reference implementation keeps the full U x U cosine matrix (Sports: 5.1 GB) inside its model
and looks neighbours up per sample. Here the top-k indices (U x k int64) and their similarities
(U x k float32) are computed once, ``chunk_size`` query users at a time: memory is
O(U*k + chunk_size*U) and the result is the same for every chunk size.

Selection, deterministic and independent of chunk size and device:

1. per chunk, a float32 matmul of the normalised vectors gives candidate similarities; the user's
   own entry is set to -inf (no user is its own neighbour) and ``torch.topk`` keeps ``k + margin``
   candidates;
2. the candidates' cosines are recomputed in float64 and rounded to ``TIE_DECIMALS`` decimals, so
   mathematically equal similarities (duplicate or scaled-duplicate users) are exactly equal, and
   rows are ordered by (similarity descending, user index ascending): **ties go to the lower index**
   (a sort by index, then a stable sort by value);
3. a row whose k-th value is not clearly above every value left out (within ``FLOAT32_TOLERANCE``)
   is recomputed in full in float64 and stable-sorted, so a tie at the boundary is never cut
   arbitrarily;
4. a zero vector (a user without data) is normalised to zero, so its similarities are 0, not NaN
   (such a user's neighbours are the lowest-indexed users).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError, PeapodError
from ..io import atomic_path

FORMAT = "peapod.neighbors/1"


@dataclass
class NeighborIndex:
    """Top-k neighbours per user row: ``indices[u]`` (int64 rows) and ``similarities[u]`` (float32)."""

    indices: np.ndarray  # (U, k) int64, most similar first
    similarities: np.ndarray  # (U, k) float32, cosine, non-increasing along each row
    users: list[str] | None = None  # user ids of the rows, when known

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def n_users(self) -> int:
        return int(self.indices.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.indices.nbytes + self.similarities.nbytes)

    def save(self, path: str | Path) -> Path:
        """Write to one safetensors file, atomically."""
        from safetensors.numpy import save_file

        path = Path(path)
        metadata = {"format": FORMAT, "k": str(self.k)}
        if self.users is not None:
            metadata["users"] = json.dumps(list(self.users))
        tensors = {
            "indices": np.ascontiguousarray(self.indices, dtype=np.int64),
            "similarities": np.ascontiguousarray(self.similarities, dtype=np.float32),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NeighborIndex":
        """Read a file written by :meth:`save`; DataFormatError if it is missing or not such a file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataFormatError(path, "neighbour index file not found")
        try:
            with safe_open(str(path), framework="numpy") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != FORMAT or set(f.keys()) != {"indices", "similarities"}:
                    raise DataFormatError(path, f"not a peapod neighbour index (expected format {FORMAT!r})")
                indices, sims = f.get_tensor("indices"), f.get_tensor("similarities")
        except DataFormatError:
            raise
        except Exception as exc:
            raise DataFormatError(path, f"cannot read neighbour index: {exc}") from None
        users = json.loads(metadata["users"]) if "users" in metadata else None
        return cls(indices=indices, similarities=sims, users=users)


#: Similarities equal to this many decimals count as ties (broken by the lower user index).
TIE_DECIMALS = 9
#: Least bound on the float32 error of a cosine of unit vectors (raised to dim * 2**-23 for wide
#: vectors); a wider bound only costs more exact recomputation, never a different result.
FLOAT32_TOLERANCE = 1e-4


def _order(
    values: torch.Tensor, idx: torch.Tensor, k: int, idx_sorted: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of each row by (value rounded to TIE_DECIMALS, descending; index ascending).

    ``values`` (n, m) float64 with column ids ``idx`` (n, m). Wide rows are narrowed with
    ``topk``; only a row whose k-th key is tied with a key outside the top-k needs a full stable sort.
    """
    if not idx_sorted:  # columns by ascending index: a stable sort keeps that order among ties
        idx, order = torch.sort(idx, dim=1)
        values = torch.gather(values, 1, order)
    key = torch.round(values * 10**TIE_DECIMALS)
    pos = torch.topk(key, k, dim=1, sorted=False).indices
    kth = torch.gather(key, 1, pos).min(dim=1, keepdim=True).values
    ambiguous = (key >= kth).sum(dim=1) > k
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero(as_tuple=True)[0]
        pos[rows] = torch.sort(key[rows], dim=1, descending=True, stable=True).indices[:, :k]
    pos = torch.sort(pos, dim=1).values  # selected columns by ascending index, then a stable sort by key
    order = torch.sort(torch.gather(key, 1, pos), dim=1, descending=True, stable=True).indices
    pos = torch.gather(pos, 1, order)
    return torch.gather(idx, 1, pos), torch.gather(values, 1, pos)


def _exact_cosines(xn64: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """float64 cosine of user ``rows[i]`` with users ``cols[i, j]`` (unit rows ``xn64``), 512 rows at a time."""
    out = torch.empty(cols.shape, dtype=torch.float64, device=xn64.device)
    for s in range(0, len(rows), 512):
        c = cols[s : s + 512]
        v = xn64.index_select(0, c.reshape(-1)).view(*c.shape, -1)  # (b, m, D)
        out[s : s + 512] = torch.bmm(v, xn64.index_select(0, rows[s : s + 512]).unsqueeze(2)).squeeze(2)
    return out


def build_neighbor_index(
    user_factors: np.ndarray | torch.Tensor,
    k: int,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
    users: list[str] | None = None,
) -> NeighborIndex:
    """Top-``k`` most cosine-similar users of every user, self excluded, ``chunk_size`` users at a time.

    Memory is O(U*k + chunk_size*U), plus a float64 copy of the unit vectors (U*D). Similarities
    equal to ``TIE_DECIMALS`` decimals are ties, won by the lower user index, so the result does not
    depend on ``chunk_size`` or ``device``. ``device`` defaults to CUDA when available, else CPU.
    ``users`` (ids of the rows) are kept in the index.
    """
    x = torch.as_tensor(np.asarray(user_factors) if not torch.is_tensor(user_factors) else user_factors)
    if x.ndim != 2:
        raise PeapodError(f"user factors must be a (users, dim) matrix, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise PeapodError(f"cannot take {k} neighbours among {n} users (need 1 <= k <= {n - 1})")
    if chunk_size < 1:
        raise PeapodError(f"chunk_size must be >= 1, got {chunk_size}")
    if users is not None and len(users) != n:
        raise PeapodError(f"{len(users)} user ids for {n} factor rows")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    x = x.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise PeapodError("user factors contain NaN or infinite values")
    norm64 = x.double().norm(dim=1)
    inv_norm = torch.where(norm64 > 0, 1.0 / norm64.clamp_min(1e-300), torch.zeros_like(norm64))
    xn64 = x.double() * inv_norm[:, None]  # unit rows; zero vectors stay zero: similarity 0, never NaN
    xn = xn64.float()
    n_candidates = min(n - 1, k + max(8, k // 4))  # a margin for float32 error; checked below
    tolerance = max(FLOAT32_TOLERANCE, x.shape[1] * 2.0**-23)

    indices = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: the float32 error bound must hold
    try:
        with torch.no_grad():
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                rows = torch.arange(start, stop, device=device)
                sims = xn[start:stop] @ xn.T  # (chunk, U): the only chunk x U buffer
                sims[rows - start, rows] = float("-inf")  # no user is its own neighbour
                cand_vals, cand_idx = torch.topk(sims, n_candidates, dim=1, sorted=False)
                least = cand_vals.min(dim=1).values.double()
                del sims
                exact = _exact_cosines(xn64, rows, cand_idx)
                idx, vals = _order(exact, cand_idx, k)
                if n_candidates < n - 1:  # some users were left out: is the k-th clearly above them?
                    unsure = vals[:, -1] <= least + tolerance
                    if bool(unsure.any()):
                        for bad in unsure.nonzero(as_tuple=True)[0].split(256):
                            full = xn64[rows[bad]] @ xn64.T  # (<=256, U) float64
                            full[torch.arange(len(bad), device=device), rows[bad]] = float("-inf")
                            all_idx = torch.arange(n, device=device).expand(len(bad), n)
                            idx[bad], vals[bad] = _order(full, all_idx, k, idx_sorted=True)
                indices[start:stop] = idx.cpu().numpy()
                similarities[start:stop] = vals.float().cpu().numpy()
    finally:
        torch.set_float32_matmul_precision(precision)
    return NeighborIndex(indices=indices, similarities=similarities, users=list(users) if users else None)
