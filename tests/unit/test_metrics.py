"""Metrics against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from peapod.evaluation.metrics import (
    array_ranking_metrics,
    array_target_ranks,
    bleu,
    deduplicate,
    hit_rate,
    hit_rate_from_ranks,
    lcs_length,
    ndcg,
    ndcg_from_ranks,
    ranking_metrics,
    reference_bleu,
    reference_hit_rate,
    reference_ndcg,
    reference_rouge,
    rouge,
    target_ranks,
    text_metrics,
)

L3 = 1 / math.log2(3)  # discount of list position 2 (0-based 1) = 0.63093
L4 = 1 / math.log2(4)  # discount of list position 3 (0-based 2) = 0.5

# Four users. Clean (deduplicated) lists and ranks of the target:
#   u0 [3, 1, 2]    target 1 -> rank 2
#   u1 [5, 4, 4]    target 4 -> dedup [5, 4], rank 2  (reference: hits at positions 1 and 2)
#   u2 [9, 8, 7]    target 1 -> absent
#   u3 [2, 2, 6]    target 2 -> dedup [2, 6], rank 1  (reference: hits at positions 0 and 1)
RANKED = [["3", "1", "2"], ["5", "4", "4"], ["9", "8", "7"], ["2", "2", "6"]]
TARGETS = ["1", "4", "1", "2"]


def test_deduplicate_keeps_first_occurrence():
    assert deduplicate(["4", "2", "4", "1", "2"]) == ["4", "2", "1"]
    assert deduplicate([]) == []


def test_clean_ranks_hit_rate_and_ndcg_by_hand():
    assert target_ranks(RANKED, TARGETS).tolist() == [2, 2, 0, 1]
    # HR@1: only u3 -> 1/4; HR@2: u0, u1, u3 -> 3/4; HR@3 the same (u2 never hits).
    assert hit_rate(RANKED, TARGETS, 1) == pytest.approx(0.25)
    assert hit_rate(RANKED, TARGETS, 2) == pytest.approx(0.75)
    assert hit_rate(RANKED, TARGETS, 3) == pytest.approx(0.75)
    # NDCG@1: u3 gains 1/log2(2) = 1 -> 1/4. NDCG@2: (1/log2 3 + 1/log2 3 + 0 + 1) / 4 = 0.565465.
    assert ndcg(RANKED, TARGETS, 1) == pytest.approx(0.25)
    assert ndcg(RANKED, TARGETS, 2) == pytest.approx((2 * L3 + 1) / 4)
    assert ndcg(RANKED, TARGETS, 2) == pytest.approx(0.5654648767857288)


def test_clean_hit_rate_never_exceeds_one_with_duplicates():
    ranked = [["7", "7", "7"]]
    assert hit_rate(ranked, ["7"], 3) == 1.0
    assert ndcg(ranked, ["7"], 3) == 1.0
    assert reference_hit_rate(ranked, ["7"], 3) == 3.0  # reference counts every copy


def test_reference_ranking_by_hand_duplicates_count():
    # HR@1: only u3's first slot hits -> 1/4.
    assert reference_hit_rate(RANKED, TARGETS, 1) == pytest.approx(0.25)
    # HR@2: u0 1 + u1 1 (position 1) + u2 0 + u3 2 (positions 0, 1) = 4 -> 4/4 = 1.0
    assert reference_hit_rate(RANKED, TARGETS, 2) == pytest.approx(1.0)
    # HR@3: 1 + 2 + 0 + 2 = 5 -> 1.25 (> 1: duplicates count)
    assert reference_hit_rate(RANKED, TARGETS, 3) == pytest.approx(1.25)
    # NDCG@3 per user (dcg / sum of the first `count` discounts):
    #   u0: hit at i=1:       (1/log2 3) / 1                          = 0.630930
    #   u1: hits at i=1, 2:   (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)  = 1.130930 / 1.630930 = 0.693426
    #   u2: 0
    #   u3: hits at i=0, 1:   (1 + 1/log2 3) / (1 + 1/log2 3)         = 1
    expected = (L3 + (L3 + L4) / (1 + L3) + 0 + 1) / 4
    assert expected == pytest.approx(0.5810890, abs=1e-6)
    assert reference_ndcg(RANKED, TARGETS, 3) == pytest.approx(expected)
    # With one hit the reference NDCG is 1/log2(rank + 1), like the clean one.
    assert reference_ndcg([["a", "b", "c", "d"]], ["d"], 4) == pytest.approx(1 / math.log2(5))


def test_ranking_metrics_dict_and_protocols():
    clean = ranking_metrics(RANKED, TARGETS, ks=(1, 2, 3))
    assert set(clean) == {"hr@1", "hr@2", "hr@3", "ndcg@1", "ndcg@2", "ndcg@3"}
    assert clean["hr@3"] == pytest.approx(0.75)
    ref = ranking_metrics(RANKED, TARGETS, ks=(1, 2, 3), protocol="reference")
    assert ref["hr@3"] == pytest.approx(1.25)
    # On deduplicated lists the two protocols agree.
    deduped = [deduplicate(r) for r in RANKED]
    assert ranking_metrics(deduped, TARGETS, protocol="reference") == pytest.approx(ranking_metrics(deduped, TARGETS))
    with pytest.raises(ValueError, match="protocol"):
        ranking_metrics(RANKED, TARGETS, protocol="paper")
    default = ranking_metrics(RANKED, TARGETS)
    assert {"hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"} <= set(default)


def test_empty_outputs_and_bad_inputs():
    # u0 produced nothing, u1 hit at rank 1: HR@1 = 1/2, NDCG@1 = 1/2.
    assert hit_rate([[], ["1"]], ["1", "1"], 1) == 0.5
    assert ndcg([[], ["1"]], ["1", "1"], 1) == 0.5
    assert reference_hit_rate([[], []], ["1", "2"], 10) == 0.0
    assert reference_ndcg([[], []], ["1", "2"], 10) == 0.0
    with pytest.raises(ValueError, match="targets"):
        hit_rate([["1"]], ["1", "2"], 1)
    with pytest.raises(ValueError, match="no users"):
        ndcg([], [], 5)
    with pytest.raises(ValueError, match="k must be"):
        hit_rate([["1"]], ["1"], 0)


def test_perfect_ranking():
    ranked = [["1", "2"], ["3", "4"]]
    assert ranking_metrics(ranked, ["1", "3"], ks=(1, 2)) == {"hr@1": 1.0, "hr@2": 1.0, "ndcg@1": 1.0, "ndcg@2": 1.0}


def test_metrics_from_ranks():
    ranks = np.array([1, 3, 0, 11])
    # HR@10: ranks 1 and 3 -> 2/4; NDCG@10: (1 + 1/log2 4) / 4 = 0.375
    assert hit_rate_from_ranks(ranks, 10) == 0.5
    assert ndcg_from_ranks(ranks, 10) == pytest.approx((1 + 0.5) / 4)


def test_array_variant_matches_hand_values_and_list_version():
    ranked = np.array([[3, 1, 2], [5, 4, 4], [9, 8, 7], [2, 2, 6], [5, 5, 4], [-1, -1, -1]])
    targets = np.array([1, 4, 1, 2, 4, 1])
    # [5, 5, 4] dedups to [5, 4]: the repeat of 5 takes no rank, so 4 is at rank 2.
    assert array_target_ranks(ranked, targets).tolist() == [2, 2, 0, 1, 2, 0]
    rng = np.random.default_rng(0)
    ranked = rng.integers(0, 6, size=(300, 8))
    ranked[rng.random(ranked.shape) < 0.1] = -1
    targets = rng.integers(0, 6, size=300)
    as_lists = [[str(x) for x in row if x != -1] for row in ranked]
    as_targets = [str(t) for t in targets]
    np.testing.assert_array_equal(array_target_ranks(ranked, targets), target_ranks(as_lists, as_targets))
    assert array_ranking_metrics(ranked, targets) == pytest.approx(ranking_metrics(as_lists, as_targets))


# ---------------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------------

# pair 1: hyp "the cat sat on the mat" vs ref "the cat is on the mat"
#   1-grams: clipped matches the x2, cat, on, mat = 5 of 6
#   2-grams: "the cat", "on the", "the mat" = 3 of 5
#   3-grams: "on the mat" = 1 of 4
#   4-grams: 0 of 3
# pair 2: hyp "a b c d" vs ref "a b c d e f": matches 4/4, 3/3, 2/2, 1/1
# corpus: p = (9/10, 6/8, 3/6, 1/4) = (0.9, 0.75, 0.5, 0.25); c = 10, r = 12 -> BP = exp(1 - 12/10)
HYPS = ["the cat sat on the mat", "a b c d"]
REFS = ["the cat is on the mat", "a b c d e f"]
BLEU4 = 100 * math.exp(-0.2) * (0.9 * 0.75 * 0.5 * 0.25) ** 0.25  # = 44.1259
BLEU1 = 100 * math.exp(-0.2) * 0.9  # = 73.6858


def test_bleu_by_hand():
    assert BLEU4 == pytest.approx(44.1259, abs=1e-3)
    assert bleu(HYPS, REFS) == pytest.approx(BLEU4, abs=1e-9)
    assert reference_bleu(HYPS, REFS) == pytest.approx(BLEU4, abs=1e-9)
    assert bleu(HYPS, REFS, max_order=1) == pytest.approx(BLEU1, abs=1e-9)
    assert reference_bleu(HYPS, REFS, max_order=1) == pytest.approx(BLEU1, abs=1e-9)
    # pair 1 alone has no matching 4-gram -> unsmoothed BLEU-4 is 0; BLEU-1 = 5/6 (c = r = 6, BP = 1)
    assert bleu(HYPS[:1], REFS[:1]) == 0.0
    assert reference_bleu(HYPS[:1], REFS[:1]) == 0.0
    assert reference_bleu(HYPS[:1], REFS[:1], 1) == pytest.approx(100 * 5 / 6)


def test_bleu_empty_hypotheses_and_perfect_match():
    # an empty hypothesis adds 0 to c and 2 to r: c = 10, r = 14 -> BLEU-1 = 100 * exp(1 - 1.4) * 0.9
    hyps, refs = HYPS + [""], REFS + ["x y"]
    assert reference_bleu(hyps, refs, 1) == pytest.approx(100 * math.exp(-0.4) * 0.9)
    assert bleu(hyps, refs, 1) == pytest.approx(100 * math.exp(-0.4) * 0.9)
    assert bleu(["", ""], ["a b", "c"]) == 0.0
    assert reference_bleu(["", ""], ["a b", "c"]) == 0.0
    assert reference_bleu([""], [""]) == 0.0
    assert bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    assert reference_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    # longer hypothesis: BP = 1, p1 = 2/3 -> BLEU-1 = 66.67
    assert reference_bleu(["a b z"], ["a b"], 1) == pytest.approx(100 * 2 / 3)
    with pytest.raises(ValueError):
        bleu(["a"], [])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", [1, 2, 4])
def test_sacrebleu_agrees_with_reference_formula(seed, order):
    rng = random.Random(seed)
    words = "a b c d e f".split()

    def sentence():
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))

    hyps = [sentence() for _ in range(25)]
    refs = [sentence() or "a" for _ in range(25)]
    assert bleu(hyps, refs, order) == pytest.approx(reference_bleu(hyps, refs, order), abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------------

# hyp "the cat the cat sat" (5 tokens) vs ref "the cat sat on the mat" (6 tokens)
# Reference (sets):
#   ROUGE-1: hyp {the, cat, sat}, ref {the, cat, sat, on, mat}: P = 3/3, R = 3/5, F = 2*0.6/1.6 = 0.75
#   ROUGE-2: hyp {the cat, cat the, cat sat}, ref {the cat, cat sat, sat on, on the, the mat}:
#            P = 2/3, R = 2/5, F = 2*(4/15)/(16/15) = 0.5
#   ROUGE-L: LCS = 3 ("the cat sat"), R = 3/6 = 0.5, P = 3/5 = 0.6, beta = P/R = 1.2
#            F = (1 + 1.44) * 0.5 * 0.6 / (0.5 + 1.44 * 0.6) = 0.732 / 1.364 = 0.536657
#            whereas F1 = 2 * 0.3 / 1.1 = 0.545455: beta = P/R makes it differ.
# rouge-score (counts, F1):
#   ROUGE-1: overlap the 2 + cat 1 + sat 1 = 4: P = 4/5, R = 4/6, F = 2*(8/15)/(22/15) = 8/11 = 0.727273
#   ROUGE-2: hyp bigrams [the cat x2, cat the, cat sat], overlap 2: P = 2/4, R = 2/5, F = 0.4/0.9 = 0.444444
#   ROUGE-L: P = 0.6, R = 0.5, F1 = 0.545455
HYP, REF = "the cat the cat sat", "the cat sat on the mat"


def test_reference_rouge_by_hand():
    r = reference_rouge([HYP], [REF])
    assert r["rouge1"] == pytest.approx(75.0, abs=1e-5)
    assert r["rouge1_p"] == pytest.approx(100.0) and r["rouge1_r"] == pytest.approx(60.0)
    assert r["rouge2"] == pytest.approx(50.0, abs=1e-5)
    assert r["rouge2_p"] == pytest.approx(200 / 3) and r["rouge2_r"] == pytest.approx(40.0)
    assert r["rougeL"] == pytest.approx(100 * 0.732 / 1.364, abs=1e-6)
    assert r["rougeL_p"] == pytest.approx(60.0) and r["rougeL_r"] == pytest.approx(50.0)
    assert r["rougeL"] != pytest.approx(100 * 2 * 0.3 / 1.1, abs=1e-3)  # not F1


def test_rouge_score_library_by_hand():
    r = rouge([HYP], [REF])
    assert r["rouge1"] == pytest.approx(100 * 8 / 11)
    assert r["rouge2"] == pytest.approx(100 * 4 / 9)
    assert r["rougeL"] == pytest.approx(100 * 0.6 / 1.1)
    assert r["rougeL_p"] == pytest.approx(60.0) and r["rougeL_r"] == pytest.approx(50.0)


def test_rouge_averages_samples_and_handles_empty_text():
    # samples: the pair above, a perfect match (all 1), and an empty hypothesis (all 0)
    hyps, refs = [HYP, "good product", ""], [REF, "good product", "nice"]
    r = reference_rouge(hyps, refs)
    assert r["rouge1"] == pytest.approx((75.0 + 100.0 + 0.0) / 3, abs=1e-5)
    assert r["rougeL"] == pytest.approx((100 * 0.732 / 1.364 + 100.0 + 0.0) / 3, abs=1e-5)
    c = rouge(hyps, refs)
    assert c["rouge2"] == pytest.approx((100 * 4 / 9 + 100.0 + 0.0) / 3)
    # empty reference too: 0 rather than a ZeroDivisionError
    assert reference_rouge([""], [""])["rougeL"] == 0.0
    assert reference_rouge(["a"], [""])["rouge1"] == 0.0


def test_rouge_tokenisation_differs_between_library_and_reference():
    # rouge-score lower-cases and drops punctuation; the reference compares raw whitespace tokens.
    assert rouge(["The cat."], ["the cat"])["rouge2"] == pytest.approx(100.0)
    assert reference_rouge(["The cat."], ["the cat"])["rouge1"] == 0.0


def _lcs_table(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_lcs_bit_parallel_matches_dynamic_programming():
    assert lcs_length("the cat the cat sat".split(), REF.split()) == 3
    assert lcs_length([], ["a"]) == 0
    rng = random.Random(1)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 15))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == _lcs_table(a, b)


def test_text_metrics_bundle():
    clean = text_metrics(HYPS, REFS)
    assert clean["bleu4"] == pytest.approx(BLEU4) and clean["bleu1"] == pytest.approx(BLEU1)
    ref = text_metrics(HYPS, REFS, protocol="reference")
    assert ref["bleu4"] == pytest.approx(BLEU4)
    assert {"rouge1", "rouge2", "rougeL", "rougeL_p", "rougeL_r"} <= set(ref) & set(clean)
