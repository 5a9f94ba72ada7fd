"""Decoding for recommendation: item-id tries, trie-constrained beams, beams to rankings, and exact
candidate scoring with a T5 decoder.

Everything here works on a plain ``transformers`` ``T5ForConditionalGeneration`` plus precomputed
``encoder_outputs`` and an encoder attention mask, so it serves both the PeaPOD model (whose
encoder input carries soft prompts) and any T5.

Token conventions (T5): decoder start = pad = 0, EOS = 1. An item's target text is its bare id
(``"1234"``), tokenized with the EOS appended; a trie holds those token sequences.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import torch

from .metrics import deduplicate

EncodeFn = Callable[[list[str]], list[list[int]]]

# ---------------------------------------------------------------------------------------------------
# Item tries
# ---------------------------------------------------------------------------------------------------


class ItemTrie:
    """Prefix tree over item token-id sequences, each ending with EOS.

    Nodes are nested dicts ``{token_id: child}``; the child after an EOS token is a leaf. Lookups walk
    at most the sequence depth, and each node's list of allowed next tokens is cached.
    """

    def __init__(self, eos_token_id: int = 1, pad_token_id: int | None = 0):
        self.eos_token_id = int(eos_token_id)
        self.pad_token_id = None if pad_token_id is None else int(pad_token_id)
        self.root: dict[int, dict] = {}
        self._items: dict[tuple[int, ...], str | None] = {}
        self._allowed_cache: dict[int, list[int]] = {}

    # construction ------------------------------------------------------------------------------
    @classmethod
    def from_sequences(
        cls,
        sequences: Iterable[Sequence[int]],
        items: Sequence[str] | None = None,
        eos_token_id: int = 1,
        pad_token_id: int | None = 0,
    ) -> "ItemTrie":
        """A trie over token-id sequences (an EOS is appended to any sequence lacking one).

        ``items``, when given, names each sequence (same order) for :meth:`item_of`.
        """
        trie = cls(eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        sequences = list(sequences)
        if items is not None and len(items) != len(sequences):
            raise ValueError(f"{len(sequences)} sequences but {len(items)} item names")
        for i, seq in enumerate(sequences):
            trie.add(seq, None if items is None else items[i])
        return trie

    @classmethod
    def from_items(
        cls, items: Sequence[str], encode_fn: EncodeFn, eos_token_id: int = 1, pad_token_id: int | None = 0
    ) -> "ItemTrie":
        """A trie over item id strings encoded by ``encode_fn`` (e.g. ``lambda xs: tok(xs).input_ids``,
        which appends EOS): one call for all items, so a fast tokenizer encodes them in a batch."""
        items = [str(x) for x in items]
        return cls.from_sequences(encode_fn(items), items=items, eos_token_id=eos_token_id, pad_token_id=pad_token_id)

    def add(self, sequence: Sequence[int], item: str | None = None) -> None:
        """Insert one token sequence (EOS appended if missing; tokens after the first EOS are ignored)."""
        seq = [int(t) for t in sequence]
        if self.eos_token_id in seq:
            seq = seq[: seq.index(self.eos_token_id) + 1]
        else:
            seq.append(self.eos_token_id)
        if len(seq) < 2:
            raise ValueError("an item sequence needs at least one token before EOS")
        if self.pad_token_id is not None and self.pad_token_id in seq:
            raise ValueError(f"item sequence {seq} contains the pad token {self.pad_token_id}")
        node = self.root
        for tok in seq:
            node = node.setdefault(tok, {})
        key = tuple(seq)
        if item is not None or key not in self._items:
            self._items[key] = item
        self._allowed_cache.clear()

    # queries -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def _node(self, tokens: Sequence[int]) -> dict | None:
        node = self.root
        for tok in tokens:
            node = node.get(int(tok))
            if node is None:
                return None
        return node

    def next_tokens(self, tokens: Sequence[int]) -> list[int]:
        """Tokens that may follow ``tokens`` (no decoder start token); [] if the prefix is not in the trie
        or is complete."""
        node = self._node(tokens)
        if node is None:
            return []
        key = id(node)
        cached = self._allowed_cache.get(key)
        if cached is None:
            cached = self._allowed_cache[key] = list(node)
        return cached

    def allowed(self, prefix: Sequence[int] | torch.Tensor) -> list[int]:
        """Tokens allowed after a *decoder* prefix, whose first token (the decoder start token) is dropped.

        A prefix that already holds EOS (a finished beam) allows only EOS/pad, so it stays finished; a
        prefix outside the trie allows only EOS. Never empty.
        """
        tokens = prefix.tolist() if isinstance(prefix, torch.Tensor) else list(prefix)
        tokens = tokens[1:]
        eos = self.eos_token_id
        if eos in tokens:
            return [eos] if self.pad_token_id is None or self.pad_token_id == eos else [eos, self.pad_token_id]
        return self.next_tokens(tokens) or [eos]

    def contains(self, sequence: Sequence[int]) -> bool:
        """Whether ``sequence`` (no start token, ending with EOS) is a complete item sequence."""
        return tuple(int(t) for t in sequence) in self._items

    def item_of(self, sequence: Sequence[int]) -> str | None:
        """The item name of a complete sequence (as given at construction), or None if not an item."""
        return self._items.get(tuple(int(t) for t in sequence))


def make_prefix_allowed_tokens_fn(
    tries: ItemTrie | Sequence[ItemTrie], num_beams: int = 1
) -> Callable[[int, torch.Tensor], list[int]]:
    """A ``prefix_allowed_tokens_fn`` for ``generate`` that keeps every beam inside an item trie.

    ``tries`` is one shared trie (sequential recommendation over all items) or one trie per input
    example (top-n: each user's candidates). transformers calls the function with ``batch_id`` = the
    input example's index (it already divides beam rows by ``num_beams``); ``num_beams`` is taken for
    signature symmetry and checked. Finished beams only extend with EOS/pad; never returns [].
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if isinstance(tries, ItemTrie):
        shared = tries

        def allowed_shared(batch_id: int, prefix: torch.Tensor) -> list[int]:
            return shared.allowed(prefix)

        return allowed_shared
    per_example = list(tries)
    if not per_example:
        raise ValueError("no tries given")

    def allowed_per_example(batch_id: int, prefix: torch.Tensor) -> list[int]:
        if not 0 <= batch_id < len(per_example):
            raise IndexError(f"batch_id {batch_id} but only {len(per_example)} per-example tries were given")
        return per_example[batch_id].allowed(prefix)

    return allowed_per_example


# ---------------------------------------------------------------------------------------------------
# Generated sequences -> token lists / item lists
# ---------------------------------------------------------------------------------------------------

#: A beam whose unnormalised log-probability is at or below this is one of transformers' stand-ins
#: (it adds -1e9 to beams that may not be chosen), returned only when there are fewer real hypotheses
#: than ``num_return_sequences`` (e.g. a trie with fewer items than that).
PLACEHOLDER_SCORE = -1.0e8


def split_generated(
    sequences: torch.Tensor,
    num_return_sequences: int,
    sequences_scores: torch.Tensor | None = None,
    length_penalty: float = 1.0,
    eos_token_id: int = 1,
    strip_first: bool = True,
) -> list[list[list[int]]]:
    """Group ``generate`` output rows per input example and cut each at its first EOS.

    Returns ``[example][beam] -> token ids`` (start token dropped when ``strip_first``, EOS kept).
    Finished beams are padded with EOS by transformers, hence the cut. With ``sequences_scores`` (and
    the ``length_penalty`` the generation used), stand-in rows (see :data:`PLACEHOLDER_SCORE`) are dropped.
    """
    rows = sequences.tolist()
    if num_return_sequences < 1 or len(rows) % num_return_sequences:
        raise ValueError(f"{len(rows)} rows is not a multiple of num_return_sequences={num_return_sequences}")
    cut = []
    for row in rows:
        toks = row[1:] if strip_first else row
        if eos_token_id in toks:
            toks = toks[: toks.index(eos_token_id) + 1]
        cut.append(toks)
    keep = [True] * len(rows)
    if sequences_scores is not None:
        lengths = torch.tensor([max(len(t), 1) for t in cut], dtype=torch.float64)
        raw = sequences_scores.detach().cpu().double() * lengths**length_penalty
        keep = (raw > PLACEHOLDER_SCORE).tolist()
    return [
        [toks for toks, ok in zip(cut[s : s + num_return_sequences], keep[s : s + num_return_sequences]) if ok]
        for s in range(0, len(rows), num_return_sequences)
    ]


_CLEAN_ID = re.compile(r"0|[1-9][0-9]*")


def parse_item_clean(text: str) -> str | None:
    """Strict parse of a decoded item id: ASCII digits only, no sign or leading zero, surrounding
    whitespace ignored. Returns the canonical id string or None."""
    text = text.strip()
    return text if _CLEAN_ID.fullmatch(text) else None


def parse_item_reference(text: str) -> str | None:
    """The reference's parse, ``int(text.split(" ")[0])``, as a canonical string; None when it fails."""
    try:
        return str(int(text.split(" ")[0]))
    except ValueError:
        return None


def beams_to_ranking(
    decoded: Sequence[Sequence[str]],
    valid_items: set[str] | None = None,
    protocol: Literal["clean", "reference"] = "clean",
    n_items: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[list[str]]:
    """Turn each example's decoded beams (best first) into a ranked list of item-id strings.

    * ``clean``: strict parse (:func:`parse_item_clean`), drop outputs that fail or are not in
      ``valid_items`` (when given), deduplicate keeping the first occurrence; lists may come out short,
      they are never filled.
    * ``reference``: ``int(text.split(" ")[0])`` per beam; a failure is replaced by
      ``rng.integers(1, n_items + 1)`` (pass a *seeded* generator); no validity check, no dedup.
    """
    if protocol == "clean":
        ranking = []
        for beams in decoded:
            parsed = (parse_item_clean(t) for t in beams)
            ranking.append(deduplicate(x for x in parsed if x is not None and (valid_items is None or x in valid_items)))
        return ranking
    if protocol == "reference":
        if n_items is None or n_items < 1 or rng is None:
            raise ValueError("the reference protocol needs n_items >= 1 and a seeded rng for its random fill-in")
        ranking = []
        for beams in decoded:
            row = []
            for text in beams:
                item = parse_item_reference(text)
                row.append(item if item is not None else str(int(rng.integers(1, n_items + 1))))
            ranking.append(row)
        return ranking
    raise ValueError(f"unknown protocol {protocol!r}: expected 'clean' or 'reference'")


# ---------------------------------------------------------------------------------------------------
# Exact candidate scoring
# ---------------------------------------------------------------------------------------------------


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int = -100) -> torch.Tensor:
    """Right-pad token-id lists into a (N, T) LongTensor (vectorised, no per-row Python copy loop)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    width = int(lengths.max()) if len(lengths) else 0
    out = np.full((len(sequences), width), pad_value, dtype=np.int64)
    if width:
        filled = np.arange(width)[None, :] < lengths[:, None]
        out[filled] = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(out)


def pad_candidates(candidates: Sequence[Sequence[Sequence[int]]], pad_value: int = -100) -> torch.Tensor:
    """Per-example candidate token lists -> (B, C, T) LongTensor for :func:`score_candidates`.

    C is the largest candidate count; missing candidates are all-padding rows (they score -inf).
    """
    width = max((len(c) for c in candidates), default=0)
    if width == 0:
        return torch.full((len(candidates), 0, 0), pad_value, dtype=torch.long)
    flat = [seq for cands in candidates for seq in list(cands) + [[]] * (width - len(cands))]
    return pad_sequences(flat, pad_value=pad_value).view(len(candidates), width, -1)


def _hidden_states(encoder_outputs) -> torch.Tensor:
    if isinstance(encoder_outputs, torch.Tensor):
        return encoder_outputs
    hidden = getattr(encoder_outputs, "last_hidden_state", None)
    return hidden if hidden is not None else encoder_outputs[0]


def _block_causal_mask(blocks: int, width: int, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive (batch, 1, blocks*width, blocks*width) mask: causal inside each block of ``width``, closed across."""
    pos = torch.arange(blocks * width, device=device)
    allowed = (pos[:, None] // width == pos[None, :] // width) & (pos[None, :] <= pos[:, None])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None].expand(batch, 1, *allowed.shape)


@torch.no_grad()
def score_candidates(
    backbone,
    encoder_outputs,
    attention_mask: torch.Tensor | None,
    candidate_ids: torch.Tensor,
    candidate_mask: torch.Tensor | None = None,
    chunk_size: int = 32,
    length_penalty: float = 0.0,
) -> torch.Tensor:
    """Log-likelihood of each candidate's token sequence (EOS included) given its source: (B, C) float32.

    ``candidate_ids`` is (B, C, T) target token ids, right-padded with -100 or the pad token (or give
    ``candidate_mask``, (B, C, T) bool, True on real tokens). The encoder runs zero times here: per chunk
    of ``chunk_size`` candidates, one teacher-forced decoder pass over (B, c*T) tokens scores c candidates
    of every source, with a block-diagonal causal mask, against the B source states as they are (no
    per-candidate copy of the encoder states; memory ~ B*c*T*V for the logits + B*(c*T)^2 for the mask).

    Score = sum of token log-probabilities / length ** ``length_penalty``. The default 0 gives the plain
    sum, the quantity beam search accumulates and prunes on; 1.0 gives the per-token mean, which is how
    ``generate`` ranks *finished* beams with its default ``length_penalty=1.0`` (HF sequences_scores).
    Candidates with no tokens score -inf. ``attention_mask`` None means the decoder sees every encoder
    position (the reference's unmasked cross-attention).
    """
    hidden = _hidden_states(encoder_outputs)
    if candidate_ids.dim() != 3:
        raise ValueError(f"candidate_ids must be (B, C, T), got shape {tuple(candidate_ids.shape)}")
    batch, n_cand, _ = candidate_ids.shape
    if hidden.shape[0] != batch:
        raise ValueError(f"{hidden.shape[0]} encoded sources but {batch} candidate rows")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    config = backbone.config
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    start_id = config.decoder_start_token_id if config.decoder_start_token_id is not None else pad_id
    device = hidden.device
    candidate_ids = candidate_ids.to(device)
    if candidate_mask is None:
        candidate_mask = (candidate_ids != -100) & (candidate_ids != pad_id)
    candidate_mask = candidate_mask.to(device=device, dtype=torch.bool)
    tokens = torch.where(candidate_mask, candidate_ids, torch.full_like(candidate_ids, pad_id))

    scores = torch.empty(batch, n_cand, dtype=torch.float32, device=device)
    enc_mask = None if attention_mask is None else attention_mask.to(device)
    for c0 in range(0, n_cand, chunk_size):
        c1 = min(c0 + chunk_size, n_cand)
        c = c1 - c0
        mask = candidate_mask[:, c0:c1]
        lengths = mask.sum(-1)  # (B, c)
        width = max(int(lengths.max()), 1)
        tgt = tokens[:, c0:c1, :width]  # (B, c, W)
        tmask = mask[:, :, :width]
        dec_in = torch.full_like(tgt, pad_id)
        dec_in[..., 0] = start_id
        dec_in[..., 1:] = tgt[..., :-1]
        # The c candidates of a source are laid end to end in ONE decoder row of c*W tokens, with a
        # block-diagonal causal self-attention mask: each candidate sees only its own earlier tokens, and
        # T5's relative position bias inside a block equals that of a separate sequence. The decoder thus
        # cross-attends to the B encoder states as they are: no copy and no re-projection per candidate.
        logits = backbone(
            encoder_outputs=(hidden,), attention_mask=enc_mask, decoder_input_ids=dec_in.reshape(batch, c * width),
            decoder_attention_mask=_block_causal_mask(c, width, batch, hidden.dtype, device), use_cache=False,
        ).logits.float().view(batch, c, width, -1)
        token_lp = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        del logits
        total = (token_lp * tmask).sum(-1)  # (B, c)
        lengths_f = lengths.to(torch.float32)
        if length_penalty:
            total = total / lengths_f.clamp(min=1.0) ** length_penalty
        scores[:, c0:c1] = torch.where(lengths > 0, total, torch.full_like(total, float("-inf")))
    return scores


def rank_candidates(scores: torch.Tensor, candidates: Sequence[Sequence[str]], k: int | None = None) -> list[list[str]]:
    """Each row's candidates sorted by descending score (ties keep candidate order), cut to ``k``.

    Candidates scoring -inf (empty padding slots) are left out.
    """
    if scores.dim() != 2 or scores.shape[0] != len(candidates):
        raise ValueError(f"scores {tuple(scores.shape)} do not match {len(candidates)} candidate lists")
    order = torch.argsort(scores.detach().float().cpu(), dim=1, descending=True, stable=True)
    finite = torch.isfinite(scores.detach().float().cpu())
    out = []
    for row, (idx, ok) in enumerate(zip(order.tolist(), finite.tolist())):
        ranked = [candidates[row][j] for j in idx if j < len(candidates[row]) and ok[j]]
        out.append(ranked if k is None else ranked[:k])
    return out
