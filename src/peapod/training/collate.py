"""Turn a :class:`~peapod.training.samplers.TextBatch` into model tensors.

Sources are tokenized by the :class:`~peapod.model.PromptTokenizer` (padded to the longest in the
batch, with whole-word ids), targets become labels padded with -100 (pads do not count in the loss;
the reference counts them, reference-protocol.md 10.7) and cut to ``exp_target_len`` tokens for
explanations (reference: 20). ``user_rows`` index the user-embedding matrix the model holds, whose
row order is the run's user order (``dataset.users``); an unknown user raises UnknownIdError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..config import TASKS
from ..errors import UnknownIdError
from .samplers import TextBatch


def user_rows(user_index: Mapping[str, int], users: Sequence[str]) -> torch.Tensor:
    """Rows of ``users`` in the model's user matrix; UnknownIdError names the unknown ones."""
    rows = np.fromiter((user_index.get(u, -1) for u in users), dtype=np.int64, count=len(users))
    if (rows < 0).any():
        missing = [users[i] for i in np.flatnonzero(rows < 0)[:5].tolist()]
        raise UnknownIdError(
            f"unknown user id(s) {', '.join(map(repr, missing))}: not among the {len(user_index)} users of the model"
        )
    return torch.from_numpy(rows)


def _as_long(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.long()
    return torch.as_tensor(np.asarray(value), dtype=torch.long)


class Collator:
    """Callable: ``TextBatch -> dict(input_ids, attention_mask, whole_word_ids, task_ids, user_rows, labels)``.

    ``id_target_len`` cuts sequential / top-n targets (item ids are a few tokens; None keeps them whole).
    """

    def __init__(
        self,
        tokenizer: Any,
        user_index: Mapping[str, int],
        exp_target_len: int = 20,
        id_target_len: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.user_index = user_index
        self.exp_target_len = exp_target_len
        self.id_target_len = id_target_len

    def encode_sources(self, sources: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer.encode_sources(list(sources))
        return {k: _as_long(enc[k]) for k in ("input_ids", "attention_mask", "whole_word_ids")}

    def encode_targets(self, task: str, targets: Sequence[str]) -> torch.Tensor:
        max_length = self.exp_target_len if task == "exp" else self.id_target_len
        labels = self.tokenizer.encode_targets(list(targets), max_length)
        if isinstance(labels, Mapping):
            labels = labels["labels"]
        return _as_long(labels)

    def __call__(self, batch: TextBatch, with_labels: bool = True) -> dict[str, torch.Tensor]:
        out = self.encode_sources(batch.sources)
        out["task_ids"] = torch.full((len(batch),), TASKS.index(batch.task), dtype=torch.long)
        out["user_rows"] = user_rows(self.user_index, batch.users)
        if with_labels:
            out["labels"] = self.encode_targets(batch.task, batch.targets)
        return out


def split_batches(batch: TextBatch, batch_size: int, bucket_by_length: bool = False) -> list[TextBatch]:
    """Cut a (validation) batch into batches of ``batch_size``; sorted by source length when bucketing.

    Sorting cuts padding; with per-sample losses the result does not depend on the order.
    """
    n = len(batch)
    if bucket_by_length:
        order = np.argsort(np.fromiter((len(s) for s in batch.sources), dtype=np.int64, count=n), kind="stable")
    else:
        order = np.arange(n)
    return [batch.take(order[i:i + batch_size]) for i in range(0, n, batch_size)]
