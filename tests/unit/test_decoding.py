"""Item tries, trie-constrained beam search on a tiny random T5, beams -> rankings, exact candidate scoring."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from peapod.evaluation.decoding import (
    ItemTrie,
    beams_to_ranking,
    make_prefix_allowed_tokens_fn,
    pad_candidates,
    pad_sequences,
    parse_item_clean,
    parse_item_reference,
    rank_candidates,
    score_candidates,
    split_generated,
)

torch.set_num_threads(1)
EOS, PAD, START = 1, 0, 0
VOCAB = 60


def tiny_t5(seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=VOCAB, d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_ff=64, d_kv=16,
        decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS, dropout_rate=0.0,
    )
    return T5ForConditionalGeneration(config).eval()


def encode(model, batch: int, seed: int, src_len: int = 9):
    """Random sources, a padded mask, and their encoder states (one encoder pass)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(2, VOCAB, (batch, src_len), generator=g)
    mask = torch.ones_like(src)
    mask[0, src_len - 3 :] = 0  # some padding, so a masked cross-attention matters
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=src, attention_mask=mask).last_hidden_state
    return hidden, mask


def random_items(rng: random.Random, n: int, max_len: int = 3) -> list[list[int]]:
    """n distinct token sequences (ids 2..VOCAB-1, 1..max_len tokens) each ending with EOS."""
    seen: set[tuple[int, ...]] = set()
    while len(seen) < n:
        seen.add(tuple(rng.randrange(2, VOCAB) for _ in range(rng.randint(1, max_len))) + (EOS,))
    return [list(s) for s in sorted(seen)]


# ---------------------------------------------------------------------------------------------------
# Trie
# ---------------------------------------------------------------------------------------------------


def test_trie_structure_and_queries():
    # items: "12" -> [12, 1], "123" -> [12, 3, 1], "45" -> [4, 5, 1]; a duplicate is stored once
    trie = ItemTrie.from_sequences([[12, 1], [12, 3, 1], [4, 5, 1], [4, 5, 1]], items=["12", "123", "45", "45"])
    assert len(trie) == 3
    assert sorted(trie.allowed([START])) == [4, 12]  # the decoder start token is dropped
    assert sorted(trie.allowed(torch.tensor([START, 12]))) == [EOS, 3]
    assert trie.allowed([START, 4]) == [5]
    assert trie.allowed([START, 4, 5]) == [EOS]
    assert sorted(trie.allowed([START, 4, 5, EOS])) == [PAD, EOS]  # finished beam stays finished
    assert sorted(trie.allowed([START, 4, 5, EOS, EOS])) == [PAD, EOS]
    assert trie.allowed([START, 7]) == [EOS]  # outside the trie: safe fallback, never empty
    assert trie.next_tokens([7]) == []
    assert trie.contains([12, 3, 1]) and trie.contains([12, 1]) and not trie.contains([12, 3])
    assert not trie.contains([4, 1])
    assert trie.item_of([12, 3, 1]) == "123" and trie.item_of([9, 1]) is None


def test_trie_input_rules():
    trie = ItemTrie.from_sequences([[7, 8]])  # EOS appended
    assert trie.contains([7, 8, EOS])
    trie.add([9, EOS, EOS, EOS])  # cut after the first EOS
    assert trie.contains([9, EOS]) and len(trie) == 2
    assert trie.allowed([START]) in ([7, 9], [9, 7])  # the cache is refreshed after add
    with pytest.raises(ValueError, match="at least one token"):
        trie.add([EOS])
    with pytest.raises(ValueError, match="pad token"):
        trie.add([3, PAD, EOS])
    with pytest.raises(ValueError, match="item names"):
        ItemTrie.from_sequences([[3, 1]], items=["3", "4"])


def test_trie_from_items_uses_encode_fn():
    # a toy tokenizer: one token per digit (digit d -> d + 2), EOS appended
    def encode_fn(texts):
        return [[int(ch) + 2 for ch in t] + [EOS] for t in texts]

    trie = ItemTrie.from_items(["1", "12", "21"], encode_fn)
    assert trie.item_of([3, 4, EOS]) == "12"
    assert sorted(trie.allowed([START])) == [3, 4]
    assert sorted(trie.allowed([START, 3])) == [EOS, 4]


def test_trie_builds_20k_items_fast():
    rng = random.Random(0)
    seqs = [[rng.randrange(2, 32000) for _ in range(rng.randint(1, 4))] + [EOS] for _ in range(20_000)]
    t0 = time.process_time()  # CPU time: robust to other processes sharing the machine
    trie = ItemTrie.from_sequences(seqs)
    assert time.process_time() - t0 < 1.0
    for s in seqs[:500]:
        assert trie.contains(s)
        for depth in range(len(s)):
            assert s[depth] in trie.allowed([START] + s[:depth])


@pytest.mark.integration
def test_trie_over_the_official_t5_vocabulary(t5_spiece):
    from transformers import T5TokenizerFast

    tok = T5TokenizerFast.from_pretrained(t5_spiece.parent)
    items = ["1", "12", "123", "1234", "12101", "9"]
    trie = ItemTrie.from_items(items, lambda xs: tok(xs).input_ids)
    for item, ids in zip(items, tok(items).input_ids):
        assert ids[-1] == tok.eos_token_id == EOS
        assert trie.item_of(ids) == item
        assert tok.decode(ids, skip_special_tokens=True) == item


def test_prefix_fn_shared_and_per_example():
    a = ItemTrie.from_sequences([[5, 1]])
    b = ItemTrie.from_sequences([[6, 7, 1]])
    shared = make_prefix_allowed_tokens_fn(a, num_beams=4)
    assert shared(0, torch.tensor([START])) == [5] and shared(3, torch.tensor([START])) == [5]
    per = make_prefix_allowed_tokens_fn([a, b], num_beams=4)
    assert per(0, torch.tensor([START])) == [5]
    assert per(1, torch.tensor([START, 6])) == [7]
    with pytest.raises(IndexError, match="batch_id 2"):
        per(2, torch.tensor([START]))
    with pytest.raises(ValueError):
        make_prefix_allowed_tokens_fn([], num_beams=4)


# ---------------------------------------------------------------------------------------------------
# Constrained generation with a tiny random T5
# ---------------------------------------------------------------------------------------------------


def generate(model, hidden, mask, tries, num_beams, num_return, **kwargs):
    # generate() expands the encoder_outputs object it is given in place: hand it a fresh one.
    return model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
        attention_mask=mask,
        prefix_allowed_tokens_fn=make_prefix_allowed_tokens_fn(tries, num_beams),
        num_beams=num_beams,
        num_return_sequences=num_return,
        max_new_tokens=6,
        return_dict_in_generate=True,
        output_scores=True,
        **kwargs,
    )


@pytest.mark.parametrize("model_seed", [0, 1])
def test_constrained_beams_never_leave_the_trie(model_seed):
    model = tiny_t5(model_seed)
    rng = random.Random(model_seed)
    pool = random_items(rng, 80)
    saw_eos_padding = False
    for run in range(4):
        batch = 3
        hidden, mask = encode(model, batch, seed=100 * model_seed + run)
        num_beams = rng.choice([4, 6, 8])
        num_return = rng.randint(1, num_beams)
        per_example = run % 2 == 0
        if per_example:  # each example restricted to its own candidates (top-n)
            tries = [ItemTrie.from_sequences(rng.sample(pool, 20)) for _ in range(batch)]
        else:  # one shared trie (sequential recommendation over all items)
            tries = ItemTrie.from_sequences(pool)
        out = generate(model, hidden, mask, tries, num_beams, num_return)
        seqs = out.sequences
        assert seqs.shape[0] == batch * num_return
        assert (seqs[:, 0] == START).all()
        for row in seqs.tolist():
            body = row[1:]
            first = body.index(EOS)  # every returned beam is finished
            assert all(t == EOS for t in body[first + 1 :])  # padded with EOS (not pad) after finishing
            saw_eos_padding |= first + 1 < len(body)
        beams = split_generated(seqs, num_return, out.sequences_scores)
        for b, example_beams in enumerate(beams):
            trie = tries[b] if per_example else tries
            assert len(example_beams) == num_return
            for toks in example_beams:
                assert toks[-1] == EOS
                assert trie.contains(toks), (run, b, toks)
    assert saw_eos_padding


def test_split_generated_cuts_and_drops_stand_ins():
    seqs = torch.tensor([[0, 5, 6, 1, 1], [0, 8, 1, 1, 1], [0, 9, 9, 9, 1], [0, 4, 1, 0, 0]])
    assert split_generated(seqs, 2) == [[[5, 6, 1], [8, 1]], [[9, 9, 9, 1], [4, 1]]]
    # length_penalty 1: unnormalised scores are -2*3, -1e9 (stand-in), -1*4, -0.5*2
    scores = torch.tensor([-2.0, -1e9 / 2, -1.0, -0.5])
    assert split_generated(seqs, 2, scores) == [[[5, 6, 1]], [[9, 9, 9, 1], [4, 1]]]
    with pytest.raises(ValueError, match="multiple"):
        split_generated(seqs, 3)


def test_small_trie_returns_only_real_items():
    # 3 items but 5 sequences asked for: transformers fills up with -1e9 stand-ins, which are dropped
    model = tiny_t5(3)
    hidden, mask = encode(model, 2, seed=3)
    trie = ItemTrie.from_sequences([[5, 6, 1], [5, 7, 1], [8, 1]])
    out = generate(model, hidden, mask, trie, num_beams=5, num_return=5)
    for example_beams in split_generated(out.sequences, 5, out.sequences_scores):
        assert 1 <= len(example_beams) <= 3
        assert len({tuple(t) for t in example_beams}) == len(example_beams)
        assert all(trie.contains(t) for t in example_beams)


# ---------------------------------------------------------------------------------------------------
# Beams -> ranking
# ---------------------------------------------------------------------------------------------------


def test_parsers():
    assert parse_item_clean("12") == "12" and parse_item_clean(" 7 ") == "7"
    for bad in ["012", "1 2", "12a", "", "-3", "+3", "1_2", "\u0663"]:
        assert parse_item_clean(bad) is None, bad
    assert parse_item_reference("12 34") == "12" and parse_item_reference("012") == "12"
    assert parse_item_reference(" 12") is None and parse_item_reference("abc") is None


def test_beams_to_ranking_clean():
    decoded = [["12", " 7 ", "012", "abc", "12", "3 4", "99", ""], ["x"], []]
    assert beams_to_ranking(decoded, None, "clean") == [["12", "7", "99"], [], []]
    # invalid ids dropped, duplicates removed, never filled up
    assert beams_to_ranking(decoded, {"12", "7", "3"}, "clean") == [["12", "7"], [], []]


def test_beams_to_ranking_reference_uses_the_seeded_rng():
    decoded = [["12", "012", "abc", "12 34", "", "7x"]]
    got = beams_to_ranking(decoded, {"5"}, "reference", n_items=50, rng=np.random.default_rng(7))
    fill = np.random.default_rng(7).integers(1, 51, size=3)  # the three failures, in order
    assert got == [["12", "12", str(fill[0]), "12", str(fill[1]), str(fill[2])]]
    again = beams_to_ranking(decoded, None, "reference", n_items=50, rng=np.random.default_rng(7))
    assert again == got  # same seed, same fill-in; no dedup, no validity filter
    with pytest.raises(ValueError, match="seeded rng"):
        beams_to_ranking(decoded, None, "reference", n_items=50)
    with pytest.raises(ValueError, match="protocol"):
        beams_to_ranking(decoded, None, "paper")


# ---------------------------------------------------------------------------------------------------
# Exact candidate scoring
# ---------------------------------------------------------------------------------------------------


def brute_force_scores(model, hidden, mask, candidates):
    """One teacher-forced forward with labels per (source, candidate): -mean loss * length."""
    out = torch.zeros(len(candidates), len(candidates[0]))
    with torch.no_grad():
        for b, cands in enumerate(candidates):
            for c, toks in enumerate(cands):
                labels = torch.tensor([toks])
                loss = model(
                    encoder_outputs=(hidden[b : b + 1],),
                    attention_mask=None if mask is None else mask[b : b + 1],
                    labels=labels,
                ).loss
                out[b, c] = -loss * len(toks)
    return out


def test_score_candidates_same_under_eager_attention():
    """Candidates share one decoder row under a custom additive mask: both attention kernels agree."""
    model = tiny_t5(6)
    hidden, mask = encode(model, 2, seed=6)
    rng = random.Random(6)
    ids = pad_candidates([random_items(rng, 5) for _ in range(2)])
    sdpa = score_candidates(model, hidden, mask, ids, chunk_size=2)
    model.config._attn_implementation = "eager"
    for module in model.modules():
        if hasattr(module, "config"):
            module.config._attn_implementation = "eager"
    torch.testing.assert_close(score_candidates(model, hidden, mask, ids, chunk_size=2), sdpa, atol=1e-5, rtol=1e-5)


def test_pad_sequences_and_candidates():
    assert pad_sequences([[1, 2, 3], [4], []]).tolist() == [[1, 2, 3], [4, -100, -100], [-100, -100, -100]]
    assert pad_sequences([[5], [6, 7]], pad_value=0).tolist() == [[5, 0], [6, 7]]
    assert pad_candidates([[[5, 1], [6, 7, 1]], [[8, 1]]]).tolist() == [
        [[5, 1, -100], [6, 7, 1]],
        [[8, 1, -100], [-100, -100, -100]],
    ]


@pytest.mark.parametrize("use_mask", [True, False])
def test_score_candidates_matches_brute_force(use_mask):
    model = tiny_t5(5)
    batch, n_cand = 3, 7
    hidden, mask = encode(model, batch, seed=5)
    mask = mask if use_mask else None
    rng = random.Random(5)
    candidates = [random_items(rng, n_cand) for _ in range(batch)]
    rng.shuffle(candidates[0])
    expected = brute_force_scores(model, hidden, mask, candidates)
    ids = pad_candidates(candidates)  # (B, C, T) padded with -100
    for chunk in (1, 3, 100):
        got = score_candidates(model, hidden, mask, ids, chunk_size=chunk)
        assert got.shape == (batch, n_cand)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # padded with the pad token plus an explicit length mask: same scores
    lengths = torch.tensor([[len(t) for t in c] for c in candidates])
    pad_ids = ids.clamp(min=PAD)  # -100 -> pad token
    length_mask = torch.arange(ids.shape[2])[None, None, :] < lengths[:, :, None]
    torch.testing.assert_close(score_candidates(model, hidden, mask, pad_ids, length_mask), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(score_candidates(model, hidden, mask, pad_ids), expected, atol=1e-4, rtol=1e-4)
    # length-normalised variant: sum / length
    normed = score_candidates(model, hidden, mask, ids, length_penalty=1.0)
    torch.testing.assert_close(normed, expected / lengths, atol=1e-4, rtol=1e-4)


def test_score_candidates_empty_slots_and_shape_errors():
    model = tiny_t5(6)
    hidden, mask = encode(model, 2, seed=6)
    ids = torch.tensor([[[5, 1], [-100, -100]], [[7, 1], [8, 1]]])
    scores = score_candidates(model, BaseModelOutput(last_hidden_state=hidden), mask, ids)
    assert torch.isinf(scores[0, 1]) and torch.isfinite(scores[1]).all()
    assert rank_candidates(scores, [["a", "pad"], ["b", "c"]])[0] == ["a"]
    with pytest.raises(ValueError, match="encoded sources"):
        score_candidates(model, hidden[:1], mask[:1], ids)
    with pytest.raises(ValueError, match=r"\(B, C, T\)"):
        score_candidates(model, hidden, mask, ids[0])


def test_rank_candidates_orders_by_score_with_stable_ties():
    scores = torch.tensor([[0.1, 0.5, 0.1, -1.0], [2.0, 1.0, 3.0, float("-inf")]])
    assert rank_candidates(scores, [["a", "b", "c", "d"], ["e", "f", "g", "h"]]) == [["b", "a", "c", "d"], ["g", "e", "f"]]
    assert rank_candidates(scores, [["a", "b", "c", "d"], ["e", "f", "g", "h"]], k=2) == [["b", "a"], ["g", "e"]]


@pytest.mark.parametrize("model_seed", [7, 8, 9])
def test_exact_ranking_agrees_with_wide_beam_and_beats_narrow_beam(model_seed):
    model = tiny_t5(model_seed)
    batch, n_cand = 3, 10
    hidden, mask = encode(model, batch, seed=model_seed)
    rng = random.Random(model_seed)
    candidates = [random_items(rng, n_cand) for _ in range(batch)]
    tries = [ItemTrie.from_sequences(c) for c in candidates]
    ids = pad_candidates(candidates)
    exact = score_candidates(model, hidden, mask, ids)  # summed log-likelihoods
    best = exact.argmax(dim=1)
    # num_beams >= number of items: every trie prefix survives, so the search is exhaustive
    wide = generate(model, hidden, mask, tries, num_beams=n_cand, num_return=n_cand, length_penalty=0.0,
                    early_stopping="never")
    wide_beams = split_generated(wide.sequences, n_cand, wide.sequences_scores, length_penalty=0.0)
    for b in range(batch):
        assert wide_beams[b][0] == candidates[b][int(best[b])]
        # the beam scores are the same sums, and the full beam order is the exact order
        order = [candidates[b][j] for j in torch.argsort(exact[b], descending=True, stable=True).tolist()]
        assert wide_beams[b] == order
    torch.testing.assert_close(wide.sequences_scores.view(batch, n_cand), exact.sort(dim=1, descending=True).values,
                               atol=1e-4, rtol=1e-4)
    # a narrow beam can only find something at most as likely as the exact best
    narrow = generate(model, hidden, mask, tries, num_beams=2, num_return=1, length_penalty=0.0)
    for b, beams in enumerate(split_generated(narrow.sequences, 1)):
        j = candidates[b].index(beams[0])
        assert exact[b, j] <= exact[b].max() + 1e-6


def test_exact_scores_reproduce_generate_sequence_scores():
    # generate's default length_penalty=1.0 ranks finished beams by sum / length: score_candidates(length_penalty=1)
    model = tiny_t5(10)
    hidden, mask = encode(model, 2, seed=10)
    rng = random.Random(10)
    tries = [ItemTrie.from_sequences(random_items(rng, 15)) for _ in range(2)]
    out = generate(model, hidden, mask, tries, num_beams=6, num_return=4)
    beams = split_generated(out.sequences, 4, out.sequences_scores)
    ids = pad_candidates(beams)
    got = score_candidates(model, hidden, mask, ids, length_penalty=1.0)
    torch.testing.assert_close(got, out.sequences_scores.view(2, 4), atol=1e-4, rtol=1e-4)
