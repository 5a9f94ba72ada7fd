"""Load a P5-layout dataset folder into a :class:`~peapod.data.dataset.Dataset`.

A folder holds ``sequential_data.txt`` (required), ``negative_samples.txt`` (required unless
``require_negatives=False``), ``datamaps.json`` (optional, see below) and at most one explanation file
(``exp_splits.pkl`` takes precedence over ``explanation.json`` when both exist).

``datamaps.json`` is optional when the sequences (and negatives) are self-sufficient: without it the item
set is every id found in ``sequential_data.txt`` and ``negative_samples.txt``, in numeric order, and no
raw ids are known. ``exp_splits.pkl`` needs it (its raw reviewerIDs / ASINs are mapped through
``user2id`` / ``item2id``). With it, the items are the keys of ``id2item`` in numeric order (items that
no user bought are still candidates) and every user and item of the files must be in the maps.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataFormatError
from .dataset import EXPLANATION_SPLITS, Dataset
from .formats import (
    DATAMAPS_FILE,
    EXP_SPLITS_FILE,
    EXPLANATION_FILE,
    NEGATIVES_FILE,
    SEQUENCES_FILE,
    read_datamaps,
    read_exp_splits_pkl,
    read_explanation_json,
    read_negatives,
    read_sequences,
)
from .leakage import NOTE_HELDOUT_DROPPED, count_heldout_explanations, drop_heldout_explanations
from .reindex import ITEM_ID_SCHEMES, reindex_items

NOTE_HELDOUT_FOUND = "explanation_train_heldout_found"


def load_dataset(
    path: str | Path,
    item_id_scheme: str = "original",
    scheme_seed: int = 2022,
    drop_explanation_leaks: bool = True,
    require_negatives: bool = True,
    name: str | None = None,
    n_negatives: int | None = None,
) -> Dataset:
    """Read, check and index the dataset in folder ``path``.

    - ``item_id_scheme``: "original", "random" or "first-train" (see :mod:`peapod.data.reindex`).
    - ``drop_explanation_leaks``: drop explanation-train records on the user's own validation/test item
      (count in ``notes``); the number found is always recorded.
    - ``n_negatives``: negatives per line of ``negative_samples.txt`` (P5: 99); None: every line as
      long as line 1 (synthetic datasets may use fewer).

    Raises :class:`~peapod.errors.DataFormatError` naming the file, line and problem on bad input.
    """
    if item_id_scheme not in ITEM_ID_SCHEMES:
        raise ConfigError(f"unknown item-id scheme {item_id_scheme!r}; choose one of {list(ITEM_ID_SCHEMES)}")
    root = Path(path)
    if not root.is_dir():
        raise DataFormatError(root, "dataset folder not found")
    seq_path, neg_path = root / SEQUENCES_FILE, root / NEGATIVES_FILE
    maps_path, pkl_path, json_path = root / DATAMAPS_FILE, root / EXP_SPLITS_FILE, root / EXPLANATION_FILE

    maps = read_datamaps(maps_path) if maps_path.is_file() else None
    if maps is not None:
        items = sorted(maps.id2item, key=int)
        sequences = read_sequences(seq_path, items=items, items_source=f"{DATAMAPS_FILE} id2item")
        for lineno, user in enumerate(sequences, 1):
            if user not in maps.id2user:
                raise DataFormatError(seq_path, f"user {user} is not in {DATAMAPS_FILE} id2user", lineno)
    else:
        items = None
        sequences = read_sequences(seq_path)

    negatives = None
    if neg_path.is_file():
        negatives = read_negatives(
            neg_path, sequences=sequences, items=items, n=n_negatives, items_source=f"{DATAMAPS_FILE} id2item"
        )
    elif require_negatives:
        raise DataFormatError(
            neg_path,
            "file not found (the fixed top-n test negatives); create it with `peapod data negatives` "
            "or load with require_negatives=False",
        )

    if items is None:
        found = {i for s in sequences.values() for i in s}
        if negatives is not None:
            found.update(i for row in negatives.values() for i in row)
        items = sorted(found, key=int)

    if pkl_path.is_file():
        if maps is None:
            raise DataFormatError(pkl_path, f"needs {DATAMAPS_FILE} (user2id / item2id) beside it to map raw ids")
        explanations = read_exp_splits_pkl(pkl_path, maps.user2id, maps.item2id, users=sequences)
    elif json_path.is_file():
        explanations = read_explanation_json(
            json_path, users=sequences, items=set(items), item_raw=maps.id2item if maps else None
        )
    else:
        explanations = {s: [] for s in EXPLANATION_SPLITS}

    dataset = Dataset(
        name=name or root.resolve().name,
        sequences=sequences,
        items=items,
        negatives=negatives,
        explanations=explanations,
        user_raw=maps.id2user if maps else None,
        item_raw=maps.id2item if maps else None,
        item_id_scheme="original",
        scheme_seed=None,
        root=root,
    )
    dataset.notes[NOTE_HELDOUT_FOUND] = count_heldout_explanations(dataset, "train")
    if drop_explanation_leaks:
        dataset, _ = drop_heldout_explanations(dataset)
    else:
        dataset.notes[NOTE_HELDOUT_DROPPED] = 0
    if item_id_scheme != "original":
        dataset = reindex_items(dataset, item_id_scheme, scheme_seed)
    return dataset
