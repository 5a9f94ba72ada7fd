"""Dataset statistics: the paper's Table 1 figures plus what a result depends on.

The paper's Table 1 row "Sparsity (%)" is in fact the *density* in percent:
``interactions / (users * items) * 100`` (Beauty: 198,502 / (22,363 * 12,101) * 100 = 0.0734).
We report that number under the key ``density_percent`` and label it as the paper does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .dataset import EXPLANATION_SPLITS, Dataset
from .leakage import count_heldout_explanations
from .reindex import successor_leak_rate


def dataset_stats(dataset: Dataset) -> dict[str, Any]:
    """Counts, density, sequence lengths, explanation counts, item-id scheme, leak measures, fingerprint."""
    lengths = np.fromiter((len(s) for s in dataset.sequences.values()), dtype=np.int64, count=dataset.n_users)
    n_users, n_items, n_inter = dataset.n_users, dataset.n_items, int(lengths.sum())
    seen = len({i for s in dataset.sequences.values() for i in s})
    return {
        "name": dataset.name,
        "users": n_users,
        "items": n_items,
        "items_in_sequences": seen,
        "interactions": n_inter,
        "density_percent": n_inter / (n_users * n_items) * 100 if n_users and n_items else 0.0,
        "sequence_length": {
            "min": int(lengths.min()) if n_users else 0,
            "mean": float(lengths.mean()) if n_users else 0.0,
            "max": int(lengths.max()) if n_users else 0,
        },
        "negatives_per_user": (
            None if dataset.negatives is None
            else sorted({len(v) for v in dataset.negatives.values()})
        ),
        "explanations": {s: len(dataset.explanations.get(s, [])) for s in EXPLANATION_SPLITS},
        "explanation_train_on_heldout_item": count_heldout_explanations(dataset, "train"),
        "notes": dict(dataset.notes),
        "item_id_scheme": dataset.item_id_scheme,
        "scheme_seed": dataset.scheme_seed,
        "successor_leak": {
            "test": successor_leak_rate(dataset, "test"),
            "valid": successor_leak_rate(dataset, "valid"),
        },
        "fingerprint": dataset.fingerprint,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A human-readable table of :func:`dataset_stats`."""
    sl = stats["sequence_length"]
    ex = stats["explanations"]
    neg = stats["negatives_per_user"]
    rows = [
        ("dataset", stats["name"]),
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,} ({stats['items_in_sequences']:,} in sequences)"),
        ("interactions", f"{stats['interactions']:,}"),
        ("sparsity (%) [paper's label; = density]", f"{stats['density_percent']:.4f}"),
        ("sequence length min/mean/max", f"{sl['min']} / {sl['mean']:.2f} / {sl['max']}"),
        ("test negatives per user", "none" if neg is None else "/".join(map(str, neg))),
        ("explanations train/val/test", f"{ex['train']:,} / {ex['val']:,} / {ex['test']:,}"),
        ("explanation-train on held-out item", f"{stats['explanation_train_on_heldout_item']:,}"),
    ]
    rows += [(f"note: {k}", f"{v:,}") for k, v in stats["notes"].items()]
    scheme = stats["item_id_scheme"]
    if stats["scheme_seed"] is not None:
        scheme += f" (seed {stats['scheme_seed']})"
    leak = stats["successor_leak"]
    rows += [
        ("item-id scheme", scheme),
        ("id leak: test item = max history id + 1", f"{leak['test'] * 100:.2f}% of users"),
        ("id leak: valid item = max history id + 1", f"{leak['valid'] * 100:.2f}% of users"),
        ("fingerprint", stats["fingerprint"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
