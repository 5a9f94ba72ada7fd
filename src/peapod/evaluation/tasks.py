"""The three evaluation tasks on a trained PeaPOD: examples, batched decoding, per-user prediction records.

Examples (inputs and targets) are built the same way for the model and for the baselines, so both
are scored on identical users, histories and candidate lists:

- sequential: ``Dataset.history(user, split, max_history)`` (test history includes the validation
  item, as the reference), prompt ``user_{u} item_{h1} item_{h2} ...`` (the bare template);
- top-n: test = the test target + the dataset's 99 fixed negatives, valid = the validation target +
  99 negatives redrawn with the evaluation seed; each user's 100 candidates are shuffled by one
  seeded permutation table over *all* users (so a user's order does not depend on ``max_users`` or
  on how users are sharded);
- explanation: the ``test`` (or ``val``) records, prompt ``user_{u} item_{i}`` (numeric id or raw
  ASIN as the run was trained), references cut to ``train.exp_target_len`` tokens then decoded.

Decoding (``clean`` protocol): beams restricted to valid item ids by an item trie through
``generate(prefix_allowed_tokens_fn=...)`` (sequential: all items; top-n: each user's own 100
candidates), strict parse, deduplicated, never filled. With ``exclude_history`` the sequential
search is widened to ``top_k + max_history`` beams and returned sequences, the history items are
removed, and the list is cut to ``top_k`` (over-generate then filter). ``reference`` protocol:
unconstrained beams, ``int(text.split()[0])`` parse, a seeded random item for a failed parse, no
dedup, early stopping and at most 49 new tokens, as the public code (its explanation search of 3
independent groups of 7 beams with no diversity penalty equals one 7-beam search, which is what
runs here). Top-n exact ranking scores every candidate's token sequence by its log-likelihood
(one encoder pass per user, batched decoder passes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..config import TASKS, PeapodConfig
from ..data.dataset import Dataset, ExplanationRecord
from ..errors import PeapodError
from ..training.collate import user_rows as to_user_rows
from ..training.templates import BARE_TEMPLATE, explanation_item_token, render
from .decoding import (
    ItemTrie,
    beams_to_ranking,
    make_prefix_allowed_tokens_fn,
    pad_sequences,
    rank_candidates,
    score_candidates,
    split_generated,
)
from .metrics import deduplicate

#: Splits of the sequential / top-n tasks and the explanation split each maps to.
EXP_SPLIT = {"test": "test", "valid": "val"}
#: The reference's MaxLengthCriteria(50) counts the decoder start token: at most 49 new tokens.
REFERENCE_MAX_NEW_TOKENS = 49
#: The reference's explanation search: 3 groups of beams with diversity penalty 0 (identical groups).
REFERENCE_EXP_BEAM_GROUPS = 3


# ---------------------------------------------------------------------------------------------- examples
@dataclass
class SeqExample:
    index: int  # position in the full evaluated list (stable across shards)
    user: str
    history: list[str]
    target: str


@dataclass
class TopNExample:
    index: int
    user: str
    candidates: list[str]  # shuffled
    target: str


@dataclass
class ExpExample:
    index: int
    user: str
    item: str
    item_token: str  # what the prompt spells (numeric id or raw ASIN)
    explanation: str


def select_users(dataset: Dataset, max_users: int | None, seed: int) -> list[str]:
    """All users, or a seeded sample of ``max_users`` of them kept in file order."""
    users = dataset.users
    if max_users is None or max_users >= len(users):
        return users
    if max_users < 1:
        raise PeapodError(f"--max-users must be >= 1, got {max_users}")
    rng = np.random.default_rng([seed, 17])
    keep = np.sort(rng.choice(len(users), size=max_users, replace=False))
    return [users[i] for i in keep.tolist()]


def sequential_examples(dataset: Dataset, users: Sequence[str], split: str, max_history: int) -> list[SeqExample]:
    """(history, target) per user as ``Dataset.history``."""
    out = []
    for i, u in enumerate(users):
        history, target = dataset.history(u, split, max_history)
        out.append(SeqExample(i, u, list(history), target))
    return out


def candidate_permutations(n_users: int, n_candidates: int, seed: int) -> np.ndarray:
    """(n_users, n_candidates) seeded permutations, one row per dataset user (file order)."""
    rng = np.random.default_rng([seed, 23])
    return np.argsort(rng.random((n_users, n_candidates)), axis=1, kind="stable")


def topn_examples(dataset: Dataset, users: Sequence[str], split: str, seed: int,
                  n_negatives: int = 99) -> list[TopNExample]:
    """Target + negatives per user, shuffled by :func:`candidate_permutations` (seeded, recorded)."""
    from ..data.negatives import test_candidates, validation_candidates

    if split == "test":
        cands = test_candidates(dataset)
    elif split == "valid":
        cands = validation_candidates(dataset, seed=seed, n=n_negatives)
    else:
        raise PeapodError(f"split must be 'test' or 'valid', got {split!r}")
    sizes = {len(c) for c in cands.values()}
    if len(sizes) != 1:
        raise PeapodError(f"top-n candidate lists differ in length: {sorted(sizes)}")
    perms = candidate_permutations(dataset.n_users, sizes.pop(), seed)
    index = dataset.user_index
    out = []
    for i, u in enumerate(users):
        c = cands[u]
        perm = perms[index[u]]
        out.append(TopNExample(i, u, [c[j] for j in perm.tolist()], c[0]))
    return out


def explanation_examples(dataset: Dataset, split: str, item_token: str, max_examples: int | None,
                         seed: int) -> list[ExpExample]:
    """The explanation records of ``split`` (``test``/``valid``); a seeded sample of ``max_examples``."""
    records: list[ExplanationRecord] = dataset.explanations.get(EXP_SPLIT[split], [])
    idx = np.arange(len(records))
    if max_examples is not None and max_examples < len(records):
        rng = np.random.default_rng([seed, 29])
        idx = np.sort(rng.choice(len(records), size=max_examples, replace=False))
    out = []
    for j, k in enumerate(idx.tolist()):
        r = records[k]
        out.append(ExpExample(j, r.user, r.item, explanation_item_token(r.item, r.item_raw, item_token), r.explanation))
    return out


# ---------------------------------------------------------------------------------------------- sharding
def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``n`` items for ``rank`` of ``world_size``: every item exactly once.

    Shard sizes differ by at most one; nothing is padded or repeated (unlike DistributedSampler).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return rank * n // world_size, (rank + 1) * n // world_size


def shard(items: Sequence[Any], world_size: int, rank: int) -> list[Any]:
    """This rank's contiguous slice of ``items`` (see :func:`shard_bounds`)."""
    start, stop = shard_bounds(len(items), world_size, rank)
    return list(items[start:stop])


# ---------------------------------------------------------------------------------------------- model
@dataclass
class ModelContext:
    """A trained model ready to decode: model, tokenizer, user rows, device, item encodings."""

    model: Any  # peapod.model.PeaPOD (eval mode)
    tokenizer: Any  # peapod.model.PromptTokenizer
    user_index: dict[str, int]
    config: PeapodConfig
    device: torch.device
    items: list[str]
    _item_tokens: dict[str, list[int]] | None = field(default=None, repr=False)
    _trie: ItemTrie | None = field(default=None, repr=False)

    @property
    def item_tokens(self) -> dict[str, list[int]]:
        """Token ids (EOS appended) of every item's target text, encoded once in a batch."""
        if self._item_tokens is None:
            self._item_tokens = dict(zip(self.items, self.tokenizer.encode_ids(self.items, add_eos=True)))
        return self._item_tokens

    @property
    def trie(self) -> ItemTrie:
        """The item trie over all items (built lazily, once)."""
        if self._trie is None:
            tokens = self.item_tokens
            self._trie = ItemTrie.from_sequences([tokens[i] for i in self.items], items=self.items,
                                                 eos_token_id=self.tokenizer.eos_token_id,
                                                 pad_token_id=self.tokenizer.pad_token_id)
        return self._trie

    def encode(self, task: str, users: Sequence[str], sources: Sequence[str]):
        """Run the encoder once on a batch: (encoder outputs, extended attention mask)."""
        enc = self.tokenizer.encode_sources(list(sources))
        batch = {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask", "whole_word_ids")}
        batch["task_ids"] = torch.full((len(users),), TASKS.index(task), dtype=torch.long, device=self.device)
        batch["user_rows"] = to_user_rows(self.user_index, list(users)).to(self.device)
        with torch.no_grad():
            return self.model.encode(**batch)

    def generate(self, encoded, **kwargs) -> torch.Tensor:
        """Beam search on precomputed encoder outputs (the encoder is not run again).

        ``generate`` expands ``encoder_outputs`` for the beams *in place*, so it gets a shallow copy and
        the caller's encoding stays usable (e.g. by the exact ranker).
        """
        from transformers.modeling_outputs import BaseModelOutput

        hidden, mask = encoded[0].last_hidden_state, encoded[1]
        encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        with torch.no_grad():
            out = self.model.backbone.generate(encoder_outputs=encoder_outputs, attention_mask=mask, **kwargs)
        return out.sequences if hasattr(out, "sequences") else out


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", disable=not enabled, leave=False)


def _fill_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """The reference protocol's random fill-in generator of one example (seeded, shard-independent)."""
    return np.random.default_rng([seed, TASKS.index(task), index])


def _decode_beams(ctx: ModelContext, sequences: torch.Tensor, n_return: int) -> list[list[str]]:
    groups = split_generated(sequences.cpu(), n_return, eos_token_id=ctx.tokenizer.eos_token_id)
    return [[ctx.tokenizer.decode(toks) for toks in beams] for beams in groups], groups


@dataclass
class DecodeOptions:
    """How the tasks decode (from the command line and ``config.eval``)."""

    protocol: str = "clean"
    num_beams: int = 20
    top_k: int = 10
    batch_size: int = 32
    exclude_history: bool = False
    max_history: int = 20
    seed: int = 2022
    exp_num_beams: int = 21
    exp_min_length: int = 10
    exp_max_new_tokens: int = 49
    exp_target_len: int = 20
    score_chunk_size: int = 50
    progress: bool = True

    def seq_beams(self) -> tuple[int, int]:
        """(num_beams, num_return_sequences) of the sequential search."""
        if self.exclude_history:
            n_return = self.top_k + self.max_history
            return max(self.num_beams, n_return), n_return
        return self.num_beams, min(self.top_k, self.num_beams)

    def exp_beams(self) -> int:
        if self.protocol == "reference":
            return max(1, self.exp_num_beams // REFERENCE_EXP_BEAM_GROUPS)
        return self.exp_num_beams


def _order_by_length(lengths: Sequence[int]) -> np.ndarray:
    """Indices sorting examples by prompt length (less padding per batch); results are put back."""
    return np.argsort(np.asarray(lengths), kind="stable")


def run_sequential(ctx: ModelContext, examples: Sequence[SeqExample], opts: DecodeOptions) -> list[dict[str, Any]]:
    """Next-item generation for each example; one prediction record per user."""
    num_beams, n_return = opts.seq_beams()
    clean = opts.protocol == "clean"
    kwargs: dict[str, Any] = dict(num_beams=num_beams, num_return_sequences=n_return, do_sample=False)
    if clean:
        depth = max(len(t) for t in ctx.item_tokens.values())
        kwargs.update(max_new_tokens=depth,
                      prefix_allowed_tokens_fn=make_prefix_allowed_tokens_fn(ctx.trie, num_beams))
    else:
        kwargs.update(max_new_tokens=REFERENCE_MAX_NEW_TOKENS, early_stopping=True)
    valid = set(ctx.items)
    order = _order_by_length([len(e.history) for e in examples])
    records: list[dict[str, Any] | None] = [None] * len(examples)
    bar = _progress(len(examples), "seq", opts.progress)
    for s, t in _batches(len(examples), opts.batch_size):
        positions = order[s:t].tolist()
        batch = [examples[i] for i in positions]
        users = [e.user for e in batch]
        sources = [render(BARE_TEMPLATE, e.user, e.history) for e in batch]
        seqs = ctx.generate(ctx.encode("seq", users, sources), **kwargs)
        decoded, groups = _decode_beams(ctx, seqs, n_return)
        for pos, e, texts, toks in zip(positions, batch, decoded, groups):
            if clean:  # belt and braces: only complete trie sequences count
                texts = [x for x, tk in zip(texts, toks) if ctx.trie.contains(tk)]
                ranked = beams_to_ranking([texts], valid, "clean")[0]
                if opts.exclude_history:
                    hist = set(e.history)
                    ranked = [x for x in ranked if x not in hist]
                ranked = ranked[: opts.top_k]
            else:
                ranked = beams_to_ranking([texts], None, "reference", len(ctx.items),
                                          _fill_rng(opts.seed, "seq", e.index))[0]
            records[pos] = {
                "user": e.user, "task": "seq", "history": e.history, "target": e.target,
                "ranked": ranked, "generated": texts,
            }
        bar.update(len(batch))
    bar.close()
    return records  # type: ignore[return-value]


def _topn_beam(ctx: ModelContext, batch: Sequence[TopNExample], encoded, opts: DecodeOptions) -> list[dict[str, Any]]:
    """Beam ranker: clean = beams inside each user's own candidate trie; reference = unconstrained."""
    n_return = min(opts.top_k, opts.num_beams)
    kwargs: dict[str, Any] = dict(num_beams=opts.num_beams, num_return_sequences=n_return, do_sample=False)
    clean = opts.protocol == "clean"
    tokens = ctx.item_tokens
    if clean:
        tries = [ItemTrie.from_sequences([tokens[c] for c in e.candidates], items=e.candidates,
                                         eos_token_id=ctx.tokenizer.eos_token_id,
                                         pad_token_id=ctx.tokenizer.pad_token_id) for e in batch]
        kwargs.update(max_new_tokens=max(len(tokens[c]) for e in batch for c in e.candidates),
                      prefix_allowed_tokens_fn=make_prefix_allowed_tokens_fn(tries, opts.num_beams))
    else:
        kwargs.update(max_new_tokens=REFERENCE_MAX_NEW_TOKENS, early_stopping=True)
    decoded, groups = _decode_beams(ctx, ctx.generate(encoded, **kwargs), n_return)
    records = []
    for j, (e, texts, toks) in enumerate(zip(batch, decoded, groups)):
        if clean:
            texts = [x for x, tk in zip(texts, toks) if tries[j].contains(tk)]
            ranked = beams_to_ranking([texts], set(e.candidates), "clean")[0][: opts.top_k]
        else:
            ranked = beams_to_ranking([texts], None, "reference", len(ctx.items),
                                      _fill_rng(opts.seed, "topn", e.index))[0]
        records.append({"user": e.user, "task": "topn", "ranker": "beam", "candidates": e.candidates,
                        "target": e.target, "ranked": ranked, "generated": texts})
    return records


def _topn_exact(ctx: ModelContext, batch: Sequence[TopNExample], encoded, opts: DecodeOptions) -> list[dict[str, Any]]:
    """Exact ranker: every candidate's log-likelihood on the shared encoding, batched decoder passes."""
    tokens = ctx.item_tokens
    cand_ids = pad_sequences([tokens[c] for e in batch for c in e.candidates])
    cand_ids = cand_ids.view(len(batch), -1, cand_ids.shape[-1])
    scores = score_candidates(ctx.model.backbone, encoded[0], encoded[1], cand_ids, chunk_size=opts.score_chunk_size)
    records = []
    for e, ranked in zip(batch, rank_candidates(scores, [e.candidates for e in batch])):
        ranked = deduplicate(ranked)  # P5's negatives can repeat an item (a few users per dataset)
        records.append({"user": e.user, "task": "topn", "ranker": "exact", "candidates": e.candidates,
                        "target": e.target, "ranked": ranked[: opts.top_k],
                        "target_rank": ranked.index(e.target) + 1 if e.target in ranked else None})
    return records


def run_topn(ctx: ModelContext, examples: Sequence[TopNExample], opts: DecodeOptions,
             rankers: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Rank each user's candidates with the beam ranker and/or the exact ranker (one encoder pass for both).

    Returns the records grouped by ranker (one per user and ranker) and the seconds spent in the
    encoder and in each ranker.
    """
    rank_fns = {"beam": _topn_beam, "exact": _topn_exact}
    timing = {"encode": 0.0, **{r: 0.0 for r in rankers}}
    records: dict[str, list[dict[str, Any]]] = {r: [] for r in rankers}
    bar = _progress(len(examples), "topn", opts.progress)
    for s, t in _batches(len(examples), opts.batch_size):
        batch = examples[s:t]
        t0 = time.perf_counter()
        encoded = ctx.encode("topn", [e.user for e in batch],
                             [render(BARE_TEMPLATE, e.user, e.candidates) for e in batch])
        timing["encode"] += time.perf_counter() - t0
        for ranker in rankers:
            t0 = time.perf_counter()
            records[ranker] += rank_fns[ranker](ctx, batch, encoded, opts)
            timing[ranker] += time.perf_counter() - t0
        bar.update(len(batch))
    bar.close()
    return [r for ranker in rankers for r in records[ranker]], timing


def explanation_references(tokenizer: Any, texts: Sequence[str], target_len: int) -> list[str]:
    """References as the reference builds them: target ids cut to ``target_len`` tokens, then decoded."""
    labels = tokenizer.encode_targets(list(texts), max_length=target_len)
    return tokenizer.batch_decode(labels.clamp(min=0))


def run_explanation(ctx: ModelContext, examples: Sequence[ExpExample], opts: DecodeOptions) -> list[dict[str, Any]]:
    """Generate one explanation per (user, item) record; references processed as the reference."""
    kwargs: dict[str, Any] = dict(num_beams=opts.exp_beams(), num_return_sequences=1, do_sample=False,
                                  min_length=opts.exp_min_length, max_new_tokens=opts.exp_max_new_tokens)
    if opts.protocol == "reference":
        kwargs["early_stopping"] = True
    records = []
    bar = _progress(len(examples), "exp", opts.progress)
    for s, t in _batches(len(examples), opts.batch_size):
        batch = examples[s:t]
        users = [e.user for e in batch]
        sources = [render(BARE_TEMPLATE, e.user, e.item_token) for e in batch]
        seqs = ctx.generate(ctx.encode("exp", users, sources), **kwargs)
        hyps = [beams[0] if beams else "" for beams in _decode_beams(ctx, seqs, 1)[0]]
        refs = explanation_references(ctx.tokenizer, [e.explanation for e in batch], opts.exp_target_len)
        for e, hyp, ref in zip(batch, hyps, refs):
            records.append({"user": e.user, "item": e.item, "task": "exp", "prompt_item": e.item_token,
                            "target": ref, "generated": hyp})
        bar.update(len(batch))
    bar.close()
    return records


# ---------------------------------------------------------------------------------------------- metrics
def ranking_scores(records: Sequence[dict[str, Any]], protocol: str,
                   ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """HR@k / NDCG@k of ranking records (clean: deduplicated; reference: duplicates count)."""
    from .metrics import ranking_metrics

    return ranking_metrics([r["ranked"] for r in records], [r["target"] for r in records], ks, protocol)


def text_scores(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """BLEU-4/1 (sacrebleu) and ROUGE-1/2/L F1 (rouge-score), plus the reference formulas under ``reference``."""
    from .metrics import text_metrics

    hyps = [r["generated"] for r in records]
    refs = [r["target"] for r in records]
    out: dict[str, Any] = text_metrics(hyps, refs, "clean")
    out["reference"] = text_metrics(hyps, refs, "reference")
    return out

