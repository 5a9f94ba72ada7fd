"""User embeddings: fit factors on training interactions, judge them, and index similar users.

- :mod:`.factors`: :class:`Factors` (ids + user/item vectors) saved as one safetensors file;
- :mod:`.factorize`: :func:`fit_factors` (cornac PMF / BiVAE / BPR, implicit ALS) and :func:`fold_in`;
- :mod:`.quality`: :func:`embedding_quality`, HR@k / NDCG@k of the embedding beside popularity;
- :mod:`.neighbors`: :func:`build_neighbor_index`, the chunked top-k cosine neighbours (never U x U).
"""

from .factorize import METHODS, fit_factors, fold_in
from .factors import Factors
from .neighbors import NeighborIndex, build_neighbor_index
from .quality import embedding_quality, format_quality, rank_metrics

__all__ = [
    "METHODS",
    "Factors",
    "NeighborIndex",
    "build_neighbor_index",
    "embedding_quality",
    "fit_factors",
    "fold_in",
    "format_quality",
    "rank_metrics",
]
