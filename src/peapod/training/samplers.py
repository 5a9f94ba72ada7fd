"""Per-task training samplers, validation samples, and the task-alternated schedule.

Everything follows reference-protocol.md, section 2:

- **sequential** training segments: ``start ~ U{0..N-4}``, ``end ~ U{start+1..N-3}``, segment
  ``items[start..end]`` cut to its last ``max_history + 1`` items; history = all but the last,
  target = the last. Users with fewer than 4 items have no segment and are left out.
- **top-n** training: the positive is uniform over ``items[:-2]``; ``n_negatives`` negatives come
  from :class:`peapod.data.NegativeSampler` (never one of the user's items, valid/test included);
  the candidates are shuffled.
- **explanation** training: the ``train`` records as loaded (after the leak guard).

Samplers are cyclic over their pool (users, or explanation records). Unlike the reference, whose
first pass runs in file order, *every* pass is a fresh seeded permutation (reference-protocol.md
10.10). A sampler's state (generator state, permutation, position) is plain data for resume.

One "epoch" is not a pass over any data set: it is a number of task-alternated batches, by default
the reference formula ``floor(N_exp / B) + 2 * floor(U / B)`` (see :func:`steps_per_epoch`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import TASKS, DataConfig, check_task_weights
from ..data.dataset import Dataset, ExplanationRecord
from .templates import ITEM_SEP, TEMPLATES, explanation_item_token, pick_templates, render_batch

#: Order of the task-alternated schedule: batch 0 is explanation, then sequential, then top-n.
TASK_ORDER: tuple[str, ...] = ("exp", "seq", "topn")


@dataclass
class TextBatch:
    """Samples of one task, as text: what a sampler yields and :func:`peapod.training.collate` eats."""

    task: str
    users: list[str]
    sources: list[str]
    targets: list[str]

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: Sequence[int] | np.ndarray) -> "TextBatch":
        """The samples at ``index``, in that order."""
        idx = [int(i) for i in index]
        return TextBatch(
            self.task,
            [self.users[i] for i in idx],
            [self.sources[i] for i in idx],
            [self.targets[i] for i in idx],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "users": self.users, "sources": self.sources, "targets": self.targets}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TextBatch":
        return cls(raw["task"], list(raw["users"]), list(raw["sources"]), list(raw["targets"]))


# ---------------------------------------------------------------------------------------------- helpers
class SequenceIndex:
    """All sequences as one flat array of item rows with per-user offsets (CSR), for vectorised windows."""

    def __init__(self, dataset: Dataset):
        self.users = dataset.users
        item_index = dataset.item_index
        self.lengths = np.fromiter((len(s) for s in dataset.sequences.values()), dtype=np.int64, count=dataset.n_users)
        self.offsets = np.zeros(dataset.n_users + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        self.flat = np.fromiter(
            (item_index[i] for s in dataset.sequences.values() for i in s),
            dtype=np.int64,
            count=int(self.offsets[-1]),
        )
        self.item_names = np.asarray(dataset.items, dtype=object)


class CyclicOrder:
    """A cyclic pass over ``range(n)``: a fresh permutation from the owner's generator at every pass."""

    def __init__(self, n: int):
        if n <= 0:
            raise ValueError("a sampler needs a non-empty pool")
        self.n = n
        self.perm: np.ndarray | None = None
        self.pos = 0
        self.passes = 0

    def take(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """The next ``k`` pool indices, reshuffling whenever a pass ends."""
        parts = []
        while k > 0:
            if self.perm is None or self.pos >= self.n:
                self.perm = rng.permutation(self.n)
                self.pos = 0
                self.passes += 1
            chunk = self.perm[self.pos:self.pos + k]
            self.pos += len(chunk)
            k -= len(chunk)
            parts.append(chunk)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "pos": self.pos,
            "passes": self.passes,
            "perm": None if self.perm is None else self.perm.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(f"sampler state is for a pool of {state['n']}, this pool has {self.n}")
        self.pos = int(state["pos"])
        self.passes = int(state["passes"])
        self.perm = None if state["perm"] is None else np.asarray(state["perm"], dtype=np.int64)


def _generator_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _set_generator_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


def task_seed(seed: int, task: str, process_index: int = 0) -> np.random.SeedSequence:
    """The seed of one task's sampler on one process (distinct streams per task and per process)."""
    return np.random.SeedSequence([int(seed), TASKS.index(task), int(process_index)])


def _negative_sampler(dataset: Dataset):
    from ..data.negatives import NegativeSampler  # imported late: peapod.data is built beside us

    return NegativeSampler(dataset)


# ---------------------------------------------------------------------------------------------- samplers
class TaskSampler:
    """Base of the cyclic training samplers of one task."""

    task: str = ""

    def __init__(self, pool_size: int, seed: np.random.SeedSequence | int):
        self.rng = np.random.default_rng(seed)
        self.order = CyclicOrder(pool_size)

    def __len__(self) -> int:
        return self.order.n

    def draw(self, n: int) -> TextBatch:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rng": _generator_state(self.rng), "order": self.order.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("task") != self.task:
            raise ValueError(f"sampler state is for task {state.get('task')!r}, not {self.task!r}")
        _set_generator_state(self.rng, state["rng"])
        self.order.load_state_dict(state["order"])


@dataclass
class SeqWindows:
    """Vectorised sequential training windows (item rows; ``history`` padded with -1)."""

    user_rows: np.ndarray  # (B,)
    start: np.ndarray  # (B,) segment start index in the user's sequence
    end: np.ndarray  # (B,) segment end index (the target's position), <= N - 3
    history: np.ndarray  # (B, max_history) item rows, -1 padded on the right
    history_len: np.ndarray  # (B,)
    target: np.ndarray  # (B,) item row


class SeqTrainSampler(TaskSampler):
    """Sequential-recommendation training segments (reference SeqSampler, vectorised)."""

    task = "seq"

    def __init__(self, dataset: Dataset, config: DataConfig, seed: np.random.SeedSequence | int,
                 index: SequenceIndex | None = None):
        self.index = index or SequenceIndex(dataset)
        self.max_history = config.max_history
        self.pool = np.flatnonzero(self.index.lengths >= 4)  # N-4 >= 0: a segment of 2 exists
        if len(self.pool) == 0:
            raise ValueError("no user has the 4 items a sequential training segment needs")
        super().__init__(len(self.pool), seed)

    def draw_windows(self, n: int) -> SeqWindows:
        """``n`` segments as arrays of item rows."""
        ix = self.index
        rows = self.pool[self.order.take(n, self.rng)]
        length = ix.lengths[rows]
        start = self.rng.integers(0, length - 3)  # U{0..N-4}
        end = self.rng.integers(start + 1, length - 2)  # U{start+1..N-3}
        first = np.maximum(start, end - self.max_history)  # keep the last max_history + 1 items
        hist_len = end - first
        cols = np.arange(self.max_history)
        pos = ix.offsets[rows, None] + first[:, None] + cols[None, :]
        valid = cols[None, :] < hist_len[:, None]
        history = np.where(valid, ix.flat[np.where(valid, pos, 0)], -1)
        target = ix.flat[ix.offsets[rows] + end]
        return SeqWindows(rows, start, end, history, hist_len, target)

    def draw(self, n: int) -> TextBatch:
        w = self.draw_windows(n)
        names = self.index.item_names
        users = [self.index.users[r] for r in w.user_rows.tolist()]
        hist_names = names[np.maximum(w.history, 0)]
        slots = [ITEM_SEP.join(row[:k]) for row, k in zip(hist_names.tolist(), w.history_len.tolist())]
        sources = render_batch("seq", users, slots, self.rng)
        return TextBatch("seq", users, sources, names[w.target].tolist())


@dataclass
class TopNDraw:
    """Vectorised top-n training samples (item rows)."""

    user_rows: np.ndarray  # (B,)
    positive: np.ndarray  # (B,) item row, from items[:-2]
    candidates: np.ndarray  # (B, n_negatives + 1) item rows, shuffled, positive included


class TopNTrainSampler(TaskSampler):
    """Top-n training samples: one training positive among fresh negatives, shuffled."""

    task = "topn"

    def __init__(self, dataset: Dataset, config: DataConfig, seed: np.random.SeedSequence | int,
                 index: SequenceIndex | None = None, negative_sampler: Any = None):
        self.index = index or SequenceIndex(dataset)
        self.n_negatives = config.n_negatives
        self.negatives = negative_sampler if negative_sampler is not None else _negative_sampler(dataset)
        self.pool = np.flatnonzero(self.index.lengths >= 3)  # items[:-2] is not empty
        if len(self.pool) == 0:
            raise ValueError("no user has the 3 items a top-n training sample needs")
        super().__init__(len(self.pool), seed)

    def draw_rows(self, n: int) -> TopNDraw:
        ix = self.index
        rows = self.pool[self.order.take(n, self.rng)]
        pick = self.rng.integers(0, ix.lengths[rows] - 2)  # uniform over items[:-2]
        positive = ix.flat[ix.offsets[rows] + pick]
        negatives = np.asarray(self.negatives.sample(rows, self.n_negatives, self.rng), dtype=np.int64)
        candidates = self.rng.permuted(np.column_stack([positive, negatives]), axis=1)
        return TopNDraw(rows, positive, candidates)

    def draw(self, n: int) -> TextBatch:
        d = self.draw_rows(n)
        names = self.index.item_names
        users = [self.index.users[r] for r in d.user_rows.tolist()]
        slots = [ITEM_SEP.join(row) for row in names[d.candidates].tolist()]
        sources = render_batch("topn", users, slots, self.rng)
        return TextBatch("topn", users, sources, names[d.positive].tolist())


def _exp_item_tokens(dataset: Dataset, records: Sequence[ExplanationRecord], mode: str) -> list[str]:
    raw_map = dataset.item_raw or {}
    return [explanation_item_token(r.item, r.item_raw or raw_map.get(r.item), mode) for r in records]


class ExpTrainSampler(TaskSampler):
    """Explanation training records (``dataset.explanations['train']``, after the leak guard)."""

    task = "exp"

    def __init__(self, dataset: Dataset, config: DataConfig, seed: np.random.SeedSequence | int):
        self.records = list(dataset.explanations.get("train", []))
        if not self.records:
            raise ValueError("the dataset has no explanation training records")
        self.users = [r.user for r in self.records]
        self.slots = _exp_item_tokens(dataset, self.records, config.explanation_item_token)
        super().__init__(len(self.records), seed)

    def draw(self, n: int) -> TextBatch:
        idx = self.order.take(n, self.rng).tolist()
        users = [self.users[i] for i in idx]
        sources = render_batch("exp", users, [self.slots[i] for i in idx], self.rng)
        return TextBatch("exp", users, sources, [self.records[i].explanation for i in idx])


def build_train_samplers(
    dataset: Dataset, config: DataConfig, seed: int, process_index: int = 0,
    negative_sampler: Any = None,
) -> dict[str, TaskSampler]:
    """The training samplers of every task that has data (explanation only when records exist)."""
    index = SequenceIndex(dataset)
    samplers: dict[str, TaskSampler] = {}
    if dataset.explanations.get("train"):
        samplers["exp"] = ExpTrainSampler(dataset, config, task_seed(seed, "exp", process_index))
    if (index.lengths >= 4).any():
        samplers["seq"] = SeqTrainSampler(dataset, config, task_seed(seed, "seq", process_index), index)
    if (index.lengths >= 3).any():
        samplers["topn"] = TopNTrainSampler(
            dataset, config, task_seed(seed, "topn", process_index), index, negative_sampler
        )
    return samplers


# ---------------------------------------------------------------------------------------------- schedule
class TaskSchedule:
    """One task per batch: explanation -> sequential -> top-n, repeating; tasks without data skipped.

    ``weights`` (task -> batches per cycle, default one each as the reference) interleave a cycle:
    {exp: 1, seq: 3, topn: 1} gives exp, seq, topn, seq, seq. The task of a step is a pure function of
    the global step, so a resumed run keeps the pattern.
    """

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, int] | None = None):
        weights = check_task_weights(dict(weights or {}))
        present = [t for t in TASK_ORDER if t in set(tasks) and weights.get(t, 1) > 0]
        rounds = max((weights.get(t, 1) for t in present), default=0)
        self.order = tuple(t for r in range(rounds) for t in present if weights.get(t, 1) > r)
        if not self.order:
            raise ValueError("no task has training data (or every task with data has weight 0)")

    def task_at(self, step: int) -> str:
        """Task of the 0-based global ``step`` (step 0 is explanation when it has data)."""
        return self.order[step % len(self.order)]


def steps_per_epoch(n_exp: int, n_users: int, batch_size: int, override: int | None = None) -> int:
    """Batches per "epoch": the reference ``floor(N_exp/B) + 2*floor(U/B)`` (at least 1), or ``override``.

    An epoch is *not* a pass over any data set, as in the reference: each task gets about a third
    of the batches whatever its size.
    """
    if override is not None:
        if override < 1:
            raise ValueError("steps_per_epoch must be at least 1")
        return int(override)
    return max(1, n_exp // batch_size + 2 * (n_users // batch_size))


class MultiTaskSampler:
    """Task-alternated batches from per-task samplers, with optional length bucketing.

    With ``bucket_batches > 1``, a task draws that many batches' worth of samples at once, sorts them
    by source length, cuts them into batches and serves those in a shuffled order: less padding, the
    same sample distribution. Pending batches are part of the state.
    """

    def __init__(self, samplers: dict[str, TaskSampler], batch_size: int, bucket_batches: int = 1,
                 task_weights: Mapping[str, int] | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.samplers = samplers
        self.schedule = TaskSchedule(list(samplers), task_weights)
        self.batch_size = batch_size
        self.bucket_batches = max(1, int(bucket_batches))
        self.queues: dict[str, deque[TextBatch]] = {t: deque() for t in samplers}

    def next_batch(self, step: int) -> TextBatch:
        """The batch of global ``step``."""
        task = self.schedule.task_at(step)
        sampler = self.samplers[task]
        if self.bucket_batches == 1:
            return sampler.draw(self.batch_size)
        queue = self.queues[task]
        if not queue:
            pool = sampler.draw(self.batch_size * self.bucket_batches)
            order = np.argsort(np.fromiter((len(s) for s in pool.sources), dtype=np.int64), kind="stable")
            chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            for c in sampler.rng.permutation(len(chunks)).tolist():
                queue.append(pool.take(chunks[c]))
        return queue.popleft()

    def state_dict(self) -> dict[str, Any]:
        return {
            "samplers": {t: s.state_dict() for t, s in self.samplers.items()},
            "queues": {t: [b.to_dict() for b in q] for t, q in self.queues.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["samplers"]) != set(self.samplers):
            raise ValueError(
                f"sampler state has tasks {sorted(state['samplers'])}, this run has {sorted(self.samplers)}"
            )
        for t, s in self.samplers.items():
            s.load_state_dict(state["samplers"][t])
        self.queues = {t: deque(TextBatch.from_dict(b) for b in state["queues"].get(t, [])) for t in self.samplers}


# ---------------------------------------------------------------------------------------------- validation
def validation_users(dataset: Dataset, max_users: int | None, seed: int) -> list[str]:
    """Users validated on: all, or a seeded sample of ``max_users`` kept in file order."""
    users = [u for u in dataset.users if len(dataset.sequences[u]) >= 3]
    if max_users is None or max_users >= len(users):
        return users
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(users), size=max_users, replace=False))
    return [users[i] for i in keep.tolist()]


def seq_validation(dataset: Dataset, users: Sequence[str], max_history: int) -> TextBatch:
    """Sequential validation: ``Dataset.history(u, "valid")`` with the bare template."""
    pairs = [dataset.history(u, "valid", max_history) for u in users]
    slots = [ITEM_SEP.join(h) for h, _ in pairs]
    sources = render_batch("seq", list(users), slots, None)
    return TextBatch("seq", list(users), sources, [t for _, t in pairs])


def topn_validation(dataset: Dataset, users: Sequence[str], n_negatives: int, seed: int) -> TextBatch:
    """Top-n validation: the valid target among ``n_negatives`` seeded negatives, shuffled, bare template.

    Candidates are :func:`peapod.data.negatives.validation_candidates` (seeded), shuffled with a
    generator seeded by ``seed``. The reference redraws them on every validation pass; fixed ones make
    validation losses of different epochs comparable.
    """
    from ..data.negatives import validation_candidates

    cands = validation_candidates(dataset, seed=seed, n=n_negatives)
    rng = np.random.default_rng(seed)
    names = np.asarray([cands[u] for u in users], dtype=object).reshape(len(users), n_negatives + 1)
    shuffled = rng.permuted(names, axis=1)
    slots = [ITEM_SEP.join(row) for row in shuffled.tolist()]
    sources = render_batch("topn", list(users), slots, None)
    return TextBatch("topn", list(users), sources, [cands[u][0] for u in users])


def exp_validation(dataset: Dataset, users: Sequence[str] | None, item_token: str) -> TextBatch:
    """Explanation validation: the ``val`` records (of ``users`` when given), bare template."""
    records = list(dataset.explanations.get("val", []))
    if users is not None:
        keep = set(users)
        records = [r for r in records if r.user in keep]
    rec_users = [r.user for r in records]
    sources = render_batch("exp", rec_users, _exp_item_tokens(dataset, records, item_token), None)
    return TextBatch("exp", rec_users, sources, [r.explanation for r in records])


def build_validation(dataset: Dataset, config: DataConfig, max_users: int | None = None) -> dict[str, TextBatch]:
    """Validation samples of every task with data, in task order (empty tasks left out)."""
    users = validation_users(dataset, max_users, config.valid_negatives_seed)
    out: dict[str, TextBatch] = {}
    exp = exp_validation(dataset, users if max_users is not None else None, config.explanation_item_token)
    if len(exp):
        out["exp"] = exp
    if users:
        seq_users = [u for u in users if len(dataset.sequences[u]) >= 3]
        out["seq"] = seq_validation(dataset, seq_users, config.max_history)
        out["topn"] = topn_validation(dataset, users, config.n_negatives, config.valid_negatives_seed)
    return out


__all__ = [
    "TASK_ORDER", "TEMPLATES", "TextBatch", "SequenceIndex", "CyclicOrder", "TaskSampler", "SeqWindows",
    "SeqTrainSampler", "TopNDraw", "TopNTrainSampler", "ExpTrainSampler", "build_train_samplers",
    "TaskSchedule", "steps_per_epoch", "MultiTaskSampler", "validation_users", "seq_validation",
    "topn_validation", "exp_validation", "build_validation", "task_seed", "pick_templates",
]
