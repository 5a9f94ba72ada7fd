"""Guards against held-out items leaking into training inputs (engineering-notes.md, pitfall 2).

P5's explanation split is review-level random, so explanation-*train* holds reviews (u, i) where i is
u's sequential validation or test item: a prompt ``user_u item_<test item>`` would be trained on. The
guard drops them and records the count in ``dataset.notes``. (User embeddings are kept honest elsewhere:
they are fit on :meth:`Dataset.train_sequences` only.)
"""

from __future__ import annotations

import dataclasses

from .dataset import Dataset

NOTE_HELDOUT_DROPPED = "explanation_train_heldout_dropped"


def heldout_pairs(dataset: Dataset) -> set[tuple[str, str]]:
    """Every (user, item) pair of a sequential validation or test target."""
    pairs = {(u, s[-1]) for u, s in dataset.sequences.items()}
    pairs.update((u, s[-2]) for u, s in dataset.sequences.items())
    return pairs


def count_heldout_explanations(dataset: Dataset, split: str = "train") -> int:
    """Number of ``split`` explanation records on the user's own validation or test item."""
    pairs = heldout_pairs(dataset)
    return sum((r.user, r.item) in pairs for r in dataset.explanations.get(split, []))


def drop_heldout_explanations(dataset: Dataset) -> tuple[Dataset, int]:
    """(copy without explanation-train records on a held-out (user, item) pair, number dropped).

    The count is added to ``notes["explanation_train_heldout_dropped"]``.
    """
    pairs = heldout_pairs(dataset)
    train = dataset.explanations.get("train", [])
    kept = [r for r in train if (r.user, r.item) not in pairs]
    dropped = len(train) - len(kept)
    notes = dict(dataset.notes)
    notes[NOTE_HELDOUT_DROPPED] = notes.get(NOTE_HELDOUT_DROPPED, 0) + dropped
    return dataclasses.replace(dataset, explanations={**dataset.explanations, "train": kept}, notes=notes), dropped
