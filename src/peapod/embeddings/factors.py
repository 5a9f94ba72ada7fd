"""The :class:`Factors` container: user and item vectors with their ids, saved as one safetensors file.

A factors file holds two tensors, ``user_factors`` (U, D) and ``item_factors`` (I, D), float32, and
optionally ``item_bias`` (I,) for methods that score ``u . v + b`` (BPR). Its metadata (JSON strings)
holds the user and item ids in row order, the method, its settings, what it was fit on and the
library versions that produced it, so a file says where it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import DataFormatError, UnknownIdError
from ..io import atomic_path

#: Written into every file; bumped when the layout changes.
FORMAT = "peapod.factors/1"


@dataclass
class Factors:
    """User and item factors of a collaborative-filtering model, with their id strings.

    Rows of ``user_factors`` follow ``users`` and rows of ``item_factors`` follow ``items``.
    Scores are ``user_factors @ item_factors.T (+ item_bias)``: see :meth:`scores`.
    """

    users: list[str]
    items: list[str]
    user_factors: np.ndarray  # (U, D) float32
    item_factors: np.ndarray  # (I, D) float32
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    fit_on: str = "train"  # which interactions the model saw ("train" = items[:-2] per user)
    item_bias: np.ndarray | None = None  # (I,) float32, for methods with an item bias (BPR)

    def __post_init__(self) -> None:
        self.users = [str(u) for u in self.users]
        self.items = [str(i) for i in self.items]
        self.user_factors = np.ascontiguousarray(self.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        if self.user_factors.ndim != 2 or self.item_factors.ndim != 2:
            raise ValueError("user_factors and item_factors must be 2-d arrays")
        if self.user_factors.shape[0] != len(self.users):
            raise ValueError(f"{len(self.users)} users but {self.user_factors.shape[0]} user rows")
        if self.item_factors.shape[0] != len(self.items):
            raise ValueError(f"{len(self.items)} items but {self.item_factors.shape[0]} item rows")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError(
                f"user dim {self.user_factors.shape[1]} != item dim {self.item_factors.shape[1]}"
            )
        if len(set(self.users)) != len(self.users) or len(set(self.items)) != len(self.items):
            raise ValueError("user and item ids must be unique")
        if self.item_bias is not None:
            self.item_bias = np.ascontiguousarray(self.item_bias, dtype=np.float32).reshape(-1)
            if self.item_bias.shape[0] != len(self.items):
                raise ValueError(f"item_bias has {self.item_bias.shape[0]} entries, expected {len(self.items)}")

    # ------------------------------------------------------------------ lookups
    @property
    def dim(self) -> int:
        return int(self.user_factors.shape[1])

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.users)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {it: i for i, it in enumerate(self.items)}

    def user_rows(self, user_ids: Iterable[str]) -> np.ndarray:
        """Row indices (int64) of ``user_ids``; raises UnknownIdError naming the unknown ones."""
        return _rows(self.user_index, user_ids, "user")

    def item_rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """Row indices (int64) of ``item_ids``; raises UnknownIdError naming the unknown ones."""
        return _rows(self.item_index, item_ids, "item")

    def user_vectors(self, user_ids: Iterable[str]) -> np.ndarray:
        """The (n, D) factors of ``user_ids``."""
        return self.user_factors[self.user_rows(user_ids)]

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """Scores of every item for each row of ``user_vectors`` (n, D) -> (n, I)."""
        out = np.asarray(user_vectors, dtype=np.float32) @ self.item_factors.T
        if self.item_bias is not None:
            out += self.item_bias
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the factors to one safetensors file, atomically."""
        from safetensors.numpy import save_file

        path = Path(path)
        tensors = {"user_factors": self.user_factors, "item_factors": self.item_factors}
        if self.item_bias is not None:
            tensors["item_bias"] = self.item_bias
        metadata = {
            "format": FORMAT,
            "users": json.dumps(self.users),
            "items": json.dumps(self.items),
            "method": self.method,
            "settings": json.dumps(self.settings, sort_keys=True, default=str),
            "fit_on": self.fit_on,
            "producer": json.dumps(_producer(self.method)),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Factors":
        """Read a file written by :meth:`save`; DataFormatError if it is missing or not such a file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataFormatError(path, "factors file not found")
        try:
            with safe_open(str(path), framework="numpy") as f:
                metadata = f.metadata() or {}
                names = set(f.keys())
                if metadata.get("format") != FORMAT or not {"user_factors", "item_factors"} <= names:
                    raise DataFormatError(
                        path, f"not a peapod factors file (expected format {FORMAT!r} with user/item factors)"
                    )
                tensors = {name: f.get_tensor(name) for name in names}
            return cls(
                users=json.loads(metadata["users"]),
                items=json.loads(metadata["items"]),
                user_factors=tensors["user_factors"],
                item_factors=tensors["item_factors"],
                method=metadata["method"],
                settings=json.loads(metadata.get("settings", "{}")),
                fit_on=metadata.get("fit_on", "unknown"),
                item_bias=tensors.get("item_bias"),
            )
        except DataFormatError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise DataFormatError(path, f"cannot read factors file: {exc}") from None


def _rows(index: dict[str, int], ids: Iterable[str], kind: str) -> np.ndarray:
    ids = [str(i) for i in ids]
    rows = [index.get(i, -1) for i in ids]
    missing = [i for i, r in zip(ids, rows) if r < 0]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UnknownIdError(
            f"unknown {kind} id(s) {shown}{more}: not among the {len(index)} {kind}s of these factors"
        )
    return np.asarray(rows, dtype=np.int64)


def _producer(method: str) -> dict[str, str]:
    """Library versions that produced the factors of ``method``."""
    from .. import __version__

    out = {"peapod": __version__, "numpy": np.__version__}
    lib = {"pmf": "cornac", "bivae": "cornac", "bpr": "cornac", "als": "implicit"}.get(method)
    if lib is not None:
        try:
            from importlib.metadata import version

            out[lib] = version(lib)
        except Exception:  # pragma: no cover - metadata missing in odd installs
            pass
    return out
