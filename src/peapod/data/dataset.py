"""The in-memory dataset: sequences, id maps, evaluation negatives, explanations, and the splits.

Ids are kept as the decimal strings of the P5 files (``"1"``, ``"2"``, ...), because they are
what the prompts spell (``user_12 item_345``). Integer indices (0-based, for factor matrices and
neighbour indices) come from :attr:`Dataset.user_index` and :attr:`Dataset.item_index`.

Splits follow the reference protocol (reference-protocol.md, section 2):

- sequential: the last item is the test target, the second-to-last the validation target, and
  ``items[:-2]`` is training;
- top-n: test = test target + the 99 fixed negatives; validation = validation target + 99
  negatives redrawn with a seeded RNG;
- explanation: the ``train`` / ``val`` / ``test`` splits as given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

EXPLANATION_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ExplanationRecord:
    """One explanation sample: a (user, item) pair and the sentence that explains it."""

    user: str  # user id string of the dataset (P5 numbering)
    item: str  # item id string in the dataset's current item-id scheme
    explanation: str
    feature: str | None = None  # the aspect the sentence is about, when known
    item_raw: str | None = None  # the raw item id (Amazon ASIN) when the source had one


@dataclass
class Dataset:
    """A P5-layout recommendation dataset held in memory."""

    name: str
    sequences: dict[str, list[str]]  # user id -> chronological item ids, in file order
    items: list[str]  # every item id, in id order (P5: "1".."N")
    negatives: dict[str, list[str]] | None = None  # user id -> 99 fixed test negatives
    explanations: dict[str, list[ExplanationRecord]] = field(
        default_factory=lambda: {s: [] for s in EXPLANATION_SPLITS}
    )
    user_raw: dict[str, str] | None = None  # user id -> raw reviewerID
    item_raw: dict[str, str] | None = None  # item id -> raw ASIN
    item_id_scheme: str = "original"  # "original" (P5 ids, leak order), "random", "first-train"
    scheme_seed: int | None = None
    item_original: dict[str, str] | None = None  # item id -> original (file) item id, after re-indexing
    root: Path | None = None
    notes: dict[str, int] = field(default_factory=dict)  # counts of guards applied (e.g. leaks dropped)

    # ------------------------------------------------------------------ ids
    @property
    def users(self) -> list[str]:
        """User ids in file order."""
        return list(self.sequences)

    @cached_property
    def user_index(self) -> dict[str, int]:
        """User id -> 0-based row (file order)."""
        return {u: i for i, u in enumerate(self.sequences)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        """Item id -> 0-based row (order of :attr:`items`)."""
        return {it: i for i, it in enumerate(self.items)}

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    # ------------------------------------------------------------------ sequential split
    def train_items(self, user: str) -> list[str]:
        """Training interactions of ``user``: every item but the last two."""
        return self.sequences[user][:-2]

    def valid_target(self, user: str) -> str:
        return self.sequences[user][-2]

    def test_target(self, user: str) -> str:
        return self.sequences[user][-1]

    def train_sequences(self) -> dict[str, list[str]]:
        """User id -> training items (``items[:-2]``): the only input user embeddings may see."""
        return {u: s[:-2] for u, s in self.sequences.items()}

    def history(self, user: str, split: str, max_history: int = 20) -> tuple[list[str], str]:
        """(history, target) of the sequential task at ``split`` ("valid" or "test").

        As the reference: validation uses ``items[:-1]`` cut to its last ``max_history + 1``
        items; test uses the full list cut the same way (its history includes the validation item).
        """
        seq = self.sequences[user]
        if split == "valid":
            window = seq[:-1][-(max_history + 1):]
        elif split == "test":
            window = seq[-(max_history + 1):]
        else:
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        return window[:-1], window[-1]

    # ------------------------------------------------------------------ identity
    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the sequences, items, negatives and scheme: what a result was computed on."""
        h = hashlib.sha256()
        h.update(self.item_id_scheme.encode())
        h.update(str(self.scheme_seed).encode())
        for u, s in self.sequences.items():
            h.update(u.encode())
            h.update(b":")
            h.update(" ".join(s).encode())
            h.update(b"\n")
        if self.negatives is not None:
            for u, n in self.negatives.items():
                h.update(u.encode())
                h.update(" ".join(n).encode())
        for split in EXPLANATION_SPLITS:
            h.update(f"{split}={len(self.explanations.get(split, []))}".encode())
        return h.hexdigest()[:16]
