"""Use a trained run from Python: ``peapod.load(run_dir)`` -> :class:`Recommender`.

    >>> import peapod
    >>> rec = peapod.load("runs/beauty")
    >>> rec.recommend("12", k=10)                      # next items for a known user
    >>> rec.recommend(history=["5", "9", "33"], k=10)  # a new (cold-start) user
    >>> rec.rank("12", ["5", "9", "33"])               # exact candidate ranking
    >>> rec.explain("12", "33")                        # a generated explanation

Every call builds the prompts the model was evaluated with (the bare template ``user_{u} item_{...}``,
reference-protocol.md section 3) and decodes as the evaluation does (``peapod.evaluation.tasks``):

- ``recommend``: the sequential task on the user's last ``data.max_history`` items, beam search
  (``eval.num_beams`` beams, at least ``k``) constrained to the item-id trie, so every result is a real
  item and no item appears twice. ``exclude_history`` prunes the user's items from the trie itself
  (exact: no over-generation). Score = the beam score (sum of token log-probabilities over the
  sequence length, as ``generate`` ranks finished beams).
- ``rank``: the top-n task; the candidates are listed in the prompt in a fixed order (a seeded
  permutation of the item ids, so the answer does not depend on the order they were passed in) and
  each is scored by the exact log-likelihood of its id (``evaluation.decoding.score_candidates``).
- ``explain``: the explanation task, beam search with the run's ``eval.exp_num_beams``,
  ``exp_min_length`` and ``exp_max_new_tokens``.

Cold-start users (not in the training data) are given by their item history. Their user embedding
is folded into the trained factor model (:func:`peapod.embeddings.fold_in` over the run's item
factors); the personalized prompt is then computed from that vector with the trained prompt
module's own parameters (components: the CODA weights of the vector; neighbours: its top-k most
cosine-similar training users, chunked, then the trained attention). ``PeaPOD.encode`` only takes
user *rows*, so this module computes the user prompt itself and runs the encoder on
``[task prompt ; user prompt ; text]`` exactly as ``PeaPOD.encode`` does. The prompt's user token for a
cold-start user is :attr:`Recommender.cold_start_user`: one more than the largest numeric user id of
the run (P5 numbers users 1..U), an id the model never saw in training.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from .errors import PeapodError, UnknownIdError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data.dataset import Dataset
    from .embeddings.factors import Factors
    from .evaluation.decoding import ItemTrie
    from .training.run import Run

__all__ = [
    "MAX_CANDIDATES",
    "MAX_HISTORY",
    "MAX_K",
    "Explanation",
    "Query",
    "RankResult",
    "Recommendation",
    "Recommender",
    "RequestError",
    "load",
]

#: Largest ``k`` a recommendation may ask for (beam search runs at least ``k`` beams).
MAX_K = 100
#: Most candidates one ranking request may list (the top-n task was trained on 100).
MAX_CANDIDATES = 100
#: Most history items a cold-start request may give (the prompt uses the last ``data.max_history``).
MAX_HISTORY = 1000
#: Users whose cosine with a cold-start vector is computed at once (neighbours design).
NEIGHBOR_CHUNK = 4096

#: Who a request is for: a known user id, or the item history of a new user.
Query = Union[str, Sequence[str]]

_NUMERIC = re.compile(r"[0-9]+")


class RequestError(PeapodError, ValueError):
    """A request the loaded run cannot answer as asked (``k`` out of range, an empty history, ...)."""


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Recommendation:
    """One recommended (or ranked) item."""

    item: str  # item id of the run
    score: float  # log-probability (see the method that produced it)
    rank: int  # 1 = best


@dataclass(frozen=True)
class RankResult:
    """Candidates ordered by their exact log-likelihood for one user."""

    user: str | None  # None for a cold-start history
    items: list[Recommendation]  # every candidate, best first

    @property
    def order(self) -> list[str]:
        """The candidate ids, best first."""
        return [r.item for r in self.items]

    @property
    def scores(self) -> dict[str, float]:
        """Candidate id -> log-likelihood."""
        return {r.item: r.score for r in self.items}


@dataclass(frozen=True)
class Explanation:
    """A generated explanation of ``item`` for ``user``, with the beam settings that produced it."""

    user: str | None  # None for a cold-start history
    item: str
    text: str
    score: float | None  # beam score of the sentence (mean token log-probability)
    num_beams: int
    min_length: int
    max_new_tokens: int


# ---------------------------------------------------------------------------------------------- helpers
@dataclass
class _Resolved:
    """A query turned into prompt inputs: the user token, the history, and the user row or vector."""

    user: str | None  # the known user id, or None for a cold-start user
    token: str  # what the prompt spells after ``user_``
    history: list[str]  # the full history (exclusion set of recommend)
    row: int | None  # row of the model's user table (known users)
    vector: np.ndarray | None = None  # folded-in embedding (cold-start users)


class _ExcludingTrie:
    """A view of an :class:`ItemTrie` without some items: a branch whose items are all banned is cut.

    ``counts`` maps ``id(node)`` of the full trie to the number of items below it; a request's banned
    items are walked once to count, per node, how many of them lie below. ``allowed`` then drops
    every child whose items are all banned, so beams never enter a dead branch.
    """

    def __init__(self, trie: "ItemTrie", counts: dict[int, int], banned: Sequence[Sequence[int]]):
        self.trie = trie
        self.counts = counts
        self.removed: dict[int, int] = {}
        for seq in banned:
            node = trie.root
            for tok in seq:
                node = node.get(int(tok))
                if node is None:
                    break
                self.removed[id(node)] = self.removed.get(id(node), 0) + 1

    def allowed(self, prefix: Any) -> list[int]:
        tokens = prefix.tolist() if hasattr(prefix, "tolist") else list(prefix)
        tokens = tokens[1:]  # drop the decoder start token
        eos = self.trie.eos_token_id
        if eos in tokens:
            pad = self.trie.pad_token_id
            return [eos] if pad is None or pad == eos else [eos, pad]
        node: dict | None = self.trie.root
        for tok in tokens:
            node = node.get(int(tok)) if node is not None else None
        if not node:
            return [eos]
        keep = [t for t, child in node.items() if self.removed.get(id(child), 0) < self.counts[id(child)]]
        return keep or [eos]


def _count_items(node: dict, counts: dict[int, int]) -> int:
    """Fill ``counts[id(n)]`` with the number of complete items below each node ``n`` (iterative DFS)."""
    stack: list[tuple[dict, bool]] = [(node, False)]
    while stack:
        current, done = stack.pop()
        if done:
            counts[id(current)] = sum(counts[id(c)] for c in current.values()) if current else 1
            continue
        stack.append((current, True))
        stack.extend((child, False) for child in current.values())
    return counts[id(node)]


def _finite(x: float) -> float:
    """A JSON-safe score: -inf/NaN (impossible under the model) become the lowest float."""
    return float(x) if math.isfinite(x) else -1.0e30


# ---------------------------------------------------------------------------------------------- loader
def load(checkpoint_dir: str | Path, device: str | None = None, data: str | Path | None = None) -> "Recommender":
    """Load a run folder written by ``peapod train`` for inference.

    ``device``: a torch device string (default: ``cuda`` when available, else ``cpu``).
    ``data``: the dataset folder the run was trained on, when it moved since training (default: the
    path recorded in the run's ``dataset.json``); its fingerprint must match the run's.
    """
    import torch

    from .training.run import load_run

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise PeapodError(f"invalid device {device!r}: {exc}") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise PeapodError(f"device {device!r} asked for, but CUDA is not available here (use device='cpu')")
    path = Path(checkpoint_dir)
    run = load_run(path, device=str(torch_device))
    try:
        dataset = run.load_dataset(data)
    except PeapodError as exc:
        hint = "" if data is not None else " (pass data=/ --data with the dataset folder if it moved)"
        raise PeapodError(f"{exc}{hint}") from None
    return Recommender(run, dataset, torch_device)


# ---------------------------------------------------------------------------------------------- recommender
class Recommender:
    """A trained PeaPOD run ready to recommend, rank and explain (see the module docstring).

    Build it with :func:`load`. Methods are safe to call from one thread at a time (the service
    runs every model call in a single worker thread).
    """

    def __init__(self, run: "Run", dataset: "Dataset", device: "torch.device"):
        import torch

        from .embeddings.factors import Factors
        from .training.run import EMBEDDINGS_FILE

        self.run = run
        self.config = run.config
        self.model = run.model.eval()
        self.tokenizer = run.tokenizer
        self.dataset = dataset
        self.device = device
        if dataset.users != run.users or list(dataset.items) != run.items:
            raise PeapodError(f"{run.path}: the dataset's user/item order differs from the run's")
        self.user_index: dict[str, int] = run.user_index
        self.item_index: dict[str, int] = run.item_index
        self.factors: Factors | None = None
        if (run.path / EMBEDDINGS_FILE).is_file():
            self.factors = Factors.load(run.path / EMBEDDINGS_FILE)
            if self.factors.users != run.users:
                raise PeapodError(f"{run.path / EMBEDDINGS_FILE}: user rows are not in the run's user order")
        numeric = [int(u) for u in run.users if _NUMERIC.fullmatch(u)]
        #: The user id spelled in the prompt of a cold-start user (never a training user).
        self.cold_start_user: str = str(max(numeric) + 1) if numeric else "0"
        while self.cold_start_user in self.user_index:  # non-numeric ids could still hold "0"
            self.cold_start_user = str(int(self.cold_start_user) + 1)
        # Item id -> target token ids (EOS appended), the item trie, and the prompt order of candidates.
        self._item_tokens = dict(zip(run.items, self.tokenizer.encode_ids(run.items, add_eos=True)))
        self._max_depth = max(len(t) for t in self._item_tokens.values())
        self._trie: ItemTrie | None = None
        self._trie_counts: dict[int, int] | None = None
        self._prompt_key = np.random.default_rng([self.config.eval.seed, 31]).permutation(len(run.items))
        self._torch = torch

    # ------------------------------------------------------------------ info
    @property
    def n_users(self) -> int:
        return len(self.user_index)

    @property
    def n_items(self) -> int:
        return len(self.item_index)

    @property
    def user_prompt(self) -> str:
        """The user-prompt design of the run: ``components``, ``neighbors`` or ``none``."""
        return self.config.model.user_prompt

    def info(self) -> dict[str, Any]:
        """What is loaded: run folder, dataset, sizes, design, device."""
        return {
            "run": str(self.run.path),
            "dataset": self.run.dataset.get("name"),
            "fingerprint": self.run.dataset.get("fingerprint"),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "backbone": self.config.model.backbone,
            "user_prompt": self.user_prompt,
            "embedding_method": self.factors.method if self.factors is not None else None,
            "device": str(self.device),
            "max_k": MAX_K,
            "max_candidates": MAX_CANDIDATES,
        }

    def item_raw(self, item: str) -> str | None:
        """The raw id (e.g. the Amazon ASIN) of ``item`` when the dataset has one."""
        return (self.dataset.item_raw or {}).get(item)

    def __repr__(self) -> str:
        return (f"Recommender(run={str(self.run.path)!r}, users={self.n_users}, items={self.n_items}, "
                f"user_prompt={self.user_prompt!r}, device={str(self.device)!r})")

    # ------------------------------------------------------------------ validation
    def _check_items(self, items: Sequence[str], what: str) -> None:
        unknown = [i for i in items if i not in self.item_index]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise UnknownIdError(f"unknown item id(s) in {what}: {shown}; the run knows {self.n_items} items")

    def _query_history(self, query: Query) -> list[str]:
        if isinstance(query, str):
            if query not in self.user_index:
                raise UnknownIdError(
                    f"unknown user id {query!r}: not among the {self.n_users} users of {self.run.path}; "
                    "for a new user, give their item history instead (history=[...], --history)"
                )
            return list(self.dataset.sequences[query])
        history = [str(i) for i in query]
        if not history:
            raise RequestError("a cold-start history needs at least one item id")
        if len(history) > MAX_HISTORY:
            raise RequestError(f"a history may hold at most {MAX_HISTORY} items, got {len(history)}")
        self._check_items(history, "history")
        return history

    def check(
        self, query: Query, items: Sequence[str] = (), k: int | None = None, exclude_history: bool = False
    ) -> None:
        """Raise :class:`UnknownIdError` / :class:`RequestError` if a request cannot be answered.

        ``query``: a user id or a history; ``items``: item ids the request names (candidates, the item
        to explain); ``k``: the number of recommendations asked for.
        """
        history = self._query_history(query)
        if items:
            self._check_items(list(items), "the request")
        if k is not None:
            self._check_k(k, history if exclude_history else ())

    def _check_k(self, k: int, banned: Sequence[str]) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise RequestError(f"k must be an integer, got {k!r}")
        available = self.n_items - len(set(banned))
        limit = min(MAX_K, available)
        if not 1 <= k <= limit:
            why = f" ({available} items remain after excluding the history)" if banned else ""
            raise RequestError(f"k must be between 1 and {limit}{why}, got {k}")

    def _resolve(self, queries: Sequence[Query]) -> list[_Resolved]:
        out = []
        for query in queries:
            history = self._query_history(query)
            if isinstance(query, str):
                out.append(_Resolved(query, query, history, self.user_index[query]))
            else:
                out.append(_Resolved(None, self.cold_start_user, history, None, self.fold_in(history)))
        return out

    # ------------------------------------------------------------------ cold start
    def fold_in(self, history: Sequence[str]) -> np.ndarray | None:
        """The user embedding of a new user with this item history (None for a run without embeddings).

        Folded into the run's factor model by :func:`peapod.embeddings.fold_in` over its item factors.
        """
        from .embeddings.factorize import fold_in

        history = [str(i) for i in history]
        if not history:
            raise RequestError("a cold-start history needs at least one item id")
        self._check_items(history, "history")
        if self.factors is None:
            if self.model.user_prompt is None:
                return None  # nothing to fold into, and the prompt needs no user vector
            raise PeapodError(f"{self.run.path}: no embeddings file, so new users cannot be folded in")
        return fold_in(self.factors, history)

    def user_embedding(self, user: str | None = None, *, history: Sequence[str] | None = None) -> np.ndarray:
        """The user vector a prompt is built from: the stored factors of a known ``user``, or the
        fold-in of a new user's ``history`` (:meth:`fold_in`)."""
        if (user is None) == (history is None):
            raise RequestError("give exactly one of user or history")
        if self.factors is None:
            raise PeapodError(f"{self.run.path}: this run has no user embeddings (model.user_prompt=none)")
        if user is not None:
            self._query_history(user)
            return self.factors.user_factors[self.user_index[user]].copy()
        vector = self.fold_in(history or [])
        assert vector is not None
        return vector

    def neighbors(self, vector: np.ndarray, k: int | None = None) -> np.ndarray:
        """Rows of the ``k`` training users most cosine-similar to ``vector`` (most similar first).

        Computed against the stored user factors ``NEIGHBOR_CHUNK`` users at a time (never all at once);
        ties go to the lower row, as :func:`peapod.embeddings.build_neighbor_index`.
        """
        if self.factors is None:
            raise PeapodError(f"{self.run.path}: no embeddings file to find neighbours in")
        table = self.factors.user_factors
        if k is None:
            prompt = self.model.user_prompt
            k = int(prompt.n_neighbors) if hasattr(prompt, "n_neighbors") else self.config.embedding.n_neighbors
        k = min(k, len(table))
        q = np.asarray(vector, dtype=np.float64)
        qn = q / n if (n := np.linalg.norm(q)) > 0 else q
        best_rows = np.zeros(0, dtype=np.int64)
        best_sims = np.zeros(0, dtype=np.float64)
        for start in range(0, len(table), NEIGHBOR_CHUNK):
            chunk = table[start:start + NEIGHBOR_CHUNK].astype(np.float64)
            norms = np.linalg.norm(chunk, axis=1)
            sims = (chunk @ qn) / np.where(norms > 0, norms, 1.0)
            rows = np.concatenate([best_rows, np.arange(start, start + len(chunk))])
            vals = np.concatenate([best_sims, np.round(sims, 9)])
            order = np.lexsort((rows, -vals))[:k]  # similarity descending, then lower row
            best_rows, best_sims = rows[order], vals[order]
        return best_rows

    def _user_prompts(self, resolved: Sequence[_Resolved]) -> "torch.Tensor | None":
        """(B, L, d) user prompts: the trained module for known users, its parameters for folded-in ones."""
        torch = self._torch
        module = self.model.user_prompt
        if module is None:
            return None
        known = [i for i, r in enumerate(resolved) if r.row is not None]
        cold = [i for i, r in enumerate(resolved) if r.row is None]
        out = None
        if known:
            rows = torch.tensor([resolved[i].row for i in known], dtype=torch.long, device=self.device)
            known_prompts = module(rows)
            out = known_prompts.new_zeros((len(resolved), *known_prompts.shape[1:]))
            out[known] = known_prompts
        if cold:
            vectors = np.stack([resolved[i].vector for i in cold]).astype(np.float32)
            cold_prompts = self._prompts_from_vectors(torch.from_numpy(vectors).to(self.device))
            if out is None:
                out = cold_prompts.new_zeros((len(resolved), *cold_prompts.shape[1:]))
            out[cold] = cold_prompts.to(out.dtype)
        return out

    def _prompts_from_vectors(self, vectors: "torch.Tensor") -> "torch.Tensor":
        """User prompts (B, L, d) of explicit embedding vectors (B, D), with the trained prompt module."""
        from .model.prompts import ComponentUserPrompt, NeighborUserPrompt

        torch = self._torch
        module = self.model.user_prompt
        if isinstance(module, ComponentUserPrompt):
            return module.prompts_for_queries(vectors)
        if isinstance(module, NeighborUserPrompt):
            rows = np.stack([self.neighbors(v) for v in vectors.detach().cpu().numpy()])
            neighbor_vectors = module.users(torch.from_numpy(rows).to(self.device))  # (B, k, D)
            return module.prompts_from_embeddings(vectors, neighbor_vectors)[0]
        raise PeapodError(f"cold-start prompts are not implemented for {type(module).__name__}")

    # ------------------------------------------------------------------ model plumbing
    def _encode(self, task: str, resolved: Sequence[_Resolved], sources: Sequence[str]):
        """Encoder outputs and the extended mask for ``[task prompt ; user prompt ; text]`` (PeaPOD.encode)."""
        from .config import TASKS

        torch = self._torch
        enc = {k: v.to(self.device) for k, v in self.tokenizer.encode_sources(list(sources)).items()}
        task_ids = torch.full((len(sources),), TASKS.index(task), dtype=torch.long, device=self.device)
        return self.model.encode(enc["input_ids"], enc["attention_mask"], enc["whole_word_ids"],
                                 task_ids=task_ids, user_prompts=self._user_prompts(resolved))

    def _generate(self, encoded, **kwargs):
        encoder_outputs, mask = encoded
        return self.model.backbone.generate(
            encoder_outputs=encoder_outputs, attention_mask=mask, do_sample=False,
            return_dict_in_generate=True, output_scores=True, **kwargs,
        )

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        size = max(1, int(self.config.eval.batch_size))
        return [(s, min(s + size, n)) for s in range(0, n, size)]

    @property
    def trie(self) -> "ItemTrie":
        """The trie of every item's token sequence (built once)."""
        if self._trie is None:
            from .evaluation.decoding import ItemTrie

            self._trie = ItemTrie.from_sequences(
                [self._item_tokens[i] for i in self.run.items], items=self.run.items,
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
            )
            self._trie_counts = {}
            _count_items(self._trie.root, self._trie_counts)
        return self._trie

    def _history_window(self, history: Sequence[str]) -> list[str]:
        return list(history[-self.config.data.max_history:]) if self.config.data.max_history > 0 else []

    # ------------------------------------------------------------------ recommend
    def recommend(
        self,
        user: str | None = None,
        k: int = 10,
        exclude_history: bool = False,
        *,
        history: Sequence[str] | None = None,
    ) -> list[Recommendation]:
        """The top-``k`` next items for a known ``user``, or for a new user given by ``history``.

        Items come from beam search constrained to the item trie (distinct, all valid), best first.
        ``exclude_history`` never returns an item the user already has. Raises UnknownIdError for
        an unknown user or item and RequestError for ``k`` out of range.
        """
        if (user is None) == (history is None):
            raise RequestError("give exactly one of user or history")
        query: Query = user if user is not None else list(history or [])
        return self.recommend_batch([query], k=k, exclude_history=exclude_history)[0]

    def recommend_history(self, items: Sequence[str], k: int = 10, exclude_history: bool = False) -> list[Recommendation]:
        """Same as ``recommend(history=items, ...)``: the next items for a cold-start user."""
        return self.recommend(None, k=k, exclude_history=exclude_history, history=items)

    def recommend_batch(
        self, users: Sequence[Query], k: int = 10, exclude_history: bool = False
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for many users at once; each entry is a user id or a cold-start history."""
        from .evaluation.decoding import PLACEHOLDER_SCORE, make_prefix_allowed_tokens_fn, split_generated
        from .training.templates import BARE_TEMPLATE, render

        resolved = self._resolve(users)
        for r in resolved:
            self._check_k(k, r.history if exclude_history else ())
        trie = self.trie
        num_beams = max(int(self.config.eval.num_beams), k, 2)  # >= 2: greedy search returns no scores
        results: list[list[Recommendation]] = []
        with self._torch.inference_mode():
            for s, t in self._chunks(len(resolved)):
                batch = resolved[s:t]
                sources = [render(BARE_TEMPLATE, r.token, self._history_window(r.history)) for r in batch]
                if exclude_history:
                    assert self._trie_counts is not None
                    tries = [_ExcludingTrie(trie, self._trie_counts,
                                            [self._item_tokens[i] for i in set(r.history)]) for r in batch]
                    allowed = make_prefix_allowed_tokens_fn(tries, num_beams)
                else:
                    allowed = make_prefix_allowed_tokens_fn(trie, num_beams)
                out = self._generate(
                    self._encode("seq", batch, sources), num_beams=num_beams, num_return_sequences=num_beams,
                    max_new_tokens=self._max_depth, prefix_allowed_tokens_fn=allowed, length_penalty=1.0,
                )
                groups = split_generated(out.sequences.cpu(), num_beams, eos_token_id=self.tokenizer.eos_token_id)
                scores = out.sequences_scores.detach().double().cpu().view(len(batch), num_beams).tolist()
                for r, beams, row_scores in zip(batch, groups, scores):
                    banned = set(r.history) if exclude_history else set()
                    recs: list[Recommendation] = []
                    for seq, score in zip(beams, row_scores):
                        if score * max(len(seq), 1) <= PLACEHOLDER_SCORE:
                            continue  # a stand-in row: fewer real hypotheses than beams
                        item = trie.item_of(seq)
                        if item is None or item in banned or any(x.item == item for x in recs):
                            continue
                        recs.append(Recommendation(item, _finite(score), len(recs) + 1))
                        if len(recs) == k:
                            break
                    results.append(recs)
        return results

    # ------------------------------------------------------------------ rank
    def prompt_order(self, candidates: Sequence[str]) -> list[str]:
        """The order in which ``candidates`` are listed in the top-n prompt (fixed, seeded, input-order free)."""
        rows = np.fromiter((self.item_index[c] for c in candidates), dtype=np.int64, count=len(candidates))
        return [candidates[i] for i in np.argsort(self._prompt_key[rows], kind="stable").tolist()]

    def rank(self, user: str | None, candidates: Sequence[str], *, history: Sequence[str] | None = None) -> RankResult:
        """Order ``candidates`` by the exact log-likelihood of each id for ``user`` (or a new user's ``history``).

        The top-n prompt lists the candidates (see :meth:`prompt_order`); every candidate is scored,
        so the result holds all of them, best first.
        """
        if (user is None) == (history is None):
            raise RequestError("give exactly one of user or history")
        query: Query = user if user is not None else list(history or [])
        return self.rank_batch([query], [candidates])[0]

    def rank_batch(self, users: Sequence[Query], candidates: Sequence[Sequence[str]]) -> list[RankResult]:
        """:meth:`rank` for many (user, candidates) pairs at once."""
        from .evaluation.decoding import pad_sequences, score_candidates
        from .training.templates import BARE_TEMPLATE, render

        if len(users) != len(candidates):
            raise RequestError(f"{len(users)} users but {len(candidates)} candidate lists")
        cand_lists = [[str(c) for c in cands] for cands in candidates]
        for cands in cand_lists:
            if not cands:
                raise RequestError("rank needs at least one candidate")
            if len(cands) > MAX_CANDIDATES:
                raise RequestError(f"at most {MAX_CANDIDATES} candidates may be ranked at once, got {len(cands)}")
            if len(set(cands)) != len(cands):
                raise RequestError("candidates must be distinct")
            self._check_items(cands, "candidates")
        resolved = self._resolve(users)
        results: list[RankResult] = []
        with self._torch.inference_mode():
            for s, t in self._chunks(len(resolved)):
                batch = resolved[s:t]
                ordered = [self.prompt_order(c) for c in cand_lists[s:t]]
                sources = [render(BARE_TEMPLATE, r.token, c) for r, c in zip(batch, ordered)]
                width = max(len(c) for c in ordered)
                # Requests with fewer candidates are padded with empty rows (scored -inf, dropped below).
                seqs = [self._item_tokens[c] for cands in ordered for c in cands] + [[]]
                rows, offset = [], 0
                for cands in ordered:
                    rows.extend(range(offset, offset + len(cands)))
                    rows.extend([len(seqs) - 1] * (width - len(cands)))
                    offset += len(cands)
                padded = pad_sequences(seqs)[rows].view(len(batch), width, -1)
                encoder_outputs, mask = self._encode("topn", batch, sources)
                scores = score_candidates(self.model.backbone, encoder_outputs, mask, padded).cpu()
                for r, cands, row in zip(batch, ordered, scores):
                    vals = row[: len(cands)].tolist()
                    order = sorted(range(len(cands)), key=lambda j: -vals[j])  # stable: ties keep prompt order
                    items = [Recommendation(cands[j], _finite(vals[j]), n + 1) for n, j in enumerate(order)]
                    results.append(RankResult(r.user, items))
        return results

    # ------------------------------------------------------------------ explain
    def explain(self, user: str | None, item: str, *, history: Sequence[str] | None = None) -> Explanation:
        """A generated sentence explaining ``item`` to ``user`` (or to a new user given by ``history``).

        Beam search with the run's ``eval.exp_num_beams``, ``exp_min_length`` and ``exp_max_new_tokens``.
        """
        if (user is None) == (history is None):
            raise RequestError("give exactly one of user or history")
        query: Query = user if user is not None else list(history or [])
        return self.explain_batch([query], [item])[0]

    def explain_batch(self, users: Sequence[Query], items: Sequence[str]) -> list[Explanation]:
        """:meth:`explain` for many (user, item) pairs at once."""
        from .evaluation.decoding import split_generated
        from .training.templates import BARE_TEMPLATE, explanation_item_token, render

        if len(users) != len(items):
            raise RequestError(f"{len(users)} users but {len(items)} items")
        items = [str(i) for i in items]
        self._check_items(items, "the request")
        resolved = self._resolve(users)
        ev = self.config.eval
        num_beams, min_length, max_new = int(ev.exp_num_beams), int(ev.exp_min_length), int(ev.exp_max_new_tokens)
        mode = self.config.data.explanation_item_token
        results: list[Explanation] = []
        with self._torch.inference_mode():
            for s, t in self._chunks(len(resolved)):
                batch, batch_items = resolved[s:t], items[s:t]
                sources = [
                    render(BARE_TEMPLATE, r.token, explanation_item_token(i, self.item_raw(i), mode))
                    for r, i in zip(batch, batch_items)
                ]
                out = self._generate(
                    self._encode("exp", batch, sources), num_beams=num_beams, num_return_sequences=1,
                    min_length=min_length, max_new_tokens=max_new,
                )
                groups = split_generated(out.sequences.cpu(), 1, eos_token_id=self.tokenizer.eos_token_id)
                scores = (out.sequences_scores.detach().float().cpu().tolist()
                          if getattr(out, "sequences_scores", None) is not None else [None] * len(batch))
                for r, i, beams, sc in zip(batch, batch_items, groups, scores):
                    text = self.tokenizer.decode(beams[0]) if beams else ""
                    results.append(Explanation(r.user, i, text, None if sc is None else _finite(sc),
                                               num_beams, min_length, max_new))
        return results
