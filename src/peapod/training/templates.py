"""The prompt templates of the reference (P5 / POD / PeaPOD), word for word.

Each template has two slots: the user id, then either one item id (explanation) or an item list
joined by :data:`ITEM_SEP` (sequential history, top-n candidates). Training picks a template
uniformly at random per sample; validation and test always use the bare template
``user_{} item_{}`` (reference-protocol.md, section 3). Targets carry no ``item_`` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Separator of an item list inside a prompt: ``[5, 9, 33]`` renders ``item_5 item_9 item_33``.
ITEM_SEP = " item_"

#: The template used at validation and test for all three tasks.
BARE_TEMPLATE = "user_{} item_{}"

SEQ_TEMPLATES: tuple[str, ...] = (
    "Given the following purchase history of user_{}: item_{}, predict next possible item to be purchased by the user.",
    "I find the purchase history list of user_{}: item_{}. I wonder what is the next item to recommend to the user. Can you help me decide?",
    "Here is the purchase history list of user_{}: item_{}. Try to recommend next item to the user.",
    "Given the following purchase history of user_{}: item_{}, predict next possible item for the user.",
    "Based on the purchase history of user_{}: item_{}, can you decide the next item likely to be purchased by the user?",
    "Here is the purchase history of user_{}: item_{}. What to recommend next for the user?",
    "According to the purchase history of user_{}: item_{}, can you recommend the next possible item to the user?",
    BARE_TEMPLATE,
)

TOPN_TEMPLATES: tuple[str, ...] = (
    "Which item of the following to recommend for user_{}? item_{}",
    "Choose the best item from the candidates to recommend for user_{}? item_{}",
    "Pick the most suitable item from the following list and recommend to user_{}: item_{}",
    "We want to make recommendation for user_{}. Select the best item from these candidates: item_{}",
    BARE_TEMPLATE,
)

EXP_TEMPLATES: tuple[str, ...] = (
    "Generate an explanation for user_{} about this product: item_{}",
    "Can you help generate an explanation of user_{} for item_{}?",
    "Help user_{} generate an explanation about this product: item_{}",
    "Generate user_{}'s purchase explanation about item_{}",
    "Help user_{} generate an explanation for item_{}",
    "Can you help generate an explanation for user_{} about the product: item_{}",
    "Write an explanation for user_{} about item_{}",
    "Generate an explanation for user_{} about item_{}",
    BARE_TEMPLATE,
)

#: Templates per task name (task names and ids as :data:`peapod.config.TASKS`).
TEMPLATES: dict[str, tuple[str, ...]] = {"exp": EXP_TEMPLATES, "seq": SEQ_TEMPLATES, "topn": TOPN_TEMPLATES}


def join_items(items: Sequence[str]) -> str:
    """The item-list slot: ``["5", "9"]`` -> ``"5 item_9"`` (the template supplies the first ``item_``)."""
    return ITEM_SEP.join(items)


def render(template: str, user: str, slot: str | Sequence[str]) -> str:
    """Fill one template with a user id and an item id or an item list."""
    if not isinstance(slot, str):
        slot = join_items(slot)
    return template.format(user, slot)


def parse_bare(source: str) -> tuple[str, list[str]]:
    """Inverse of the bare template: ``"user_7 item_5 item_9"`` -> ``("7", ["5", "9"])``."""
    words = source.split(" ")
    if len(words) < 2 or not words[0].startswith("user_") or not all(w.startswith("item_") for w in words[1:]):
        raise ValueError(f"not a bare-template prompt: {source[:80]!r}")
    return words[0][5:], [w[5:] for w in words[1:]]


def pick_templates(task: str, n: int, rng: np.random.Generator | None) -> np.ndarray:
    """Indices of ``n`` templates of ``task``: uniform with ``rng``, the bare template when ``rng`` is None."""
    templates = TEMPLATES[task]
    if rng is None:
        return np.full(n, len(templates) - 1, dtype=np.int64)
    return rng.integers(0, len(templates), size=n)


def render_batch(
    task: str,
    users: Sequence[str],
    slots: Sequence[str | Sequence[str]],
    rng: np.random.Generator | None,
) -> list[str]:
    """Sources for a batch of one task; a random template per sample (``rng``) or the bare one (None)."""
    templates = TEMPLATES[task]
    picks = pick_templates(task, len(users), rng)
    return [render(templates[t], u, s) for t, u, s in zip(picks.tolist(), users, slots)]


def explanation_item_token(item: str, item_raw: str | None, mode: str) -> str:
    """The item spelled in an explanation prompt: the numeric id, or the raw ASIN (reference).

    ``mode`` is :attr:`peapod.config.DataConfig.explanation_item_token`; with ``"raw"`` and no raw id
    known for the record, the numeric id is used.
    """
    if mode == "raw":
        return item_raw if item_raw else item
    if mode == "numeric":
        return item
    raise ValueError(f"explanation_item_token must be 'numeric' or 'raw', got {mode!r}")
