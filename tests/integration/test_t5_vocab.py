"""The official T5 vocabulary: size, id splitting, and our whole-word ids against the reference algorithm."""

from __future__ import annotations

import random
import time

import pytest
import torch

from peapod.model.tokenization import PromptTokenizer

pytestmark = pytest.mark.integration

# Training templates of the reference (protocol section 3) with numeric ids.
SEQ_TEMPLATES = [
    "Given the following purchase history of user_{}: item_{}, predict next possible item to be purchased by the user.",
    "I find the purchase history list of user_{}: item_{}. I wonder what is the next item to recommend to the user. Can you help me decide?",
    "Here is the purchase history list of user_{}: item_{}. Try to recommend next item to the user.",
    "Based on the purchase history of user_{}: item_{}, can you decide the next item likely to be purchased by the user?",
    "user_{} item_{}",
]
TOPN_TEMPLATES = [
    "Which item of the following to recommend for user_{}? item_{}",
    "We want to make recommendation for user_{}. Select the best item from these candidates: item_{}",
    "user_{} item_{}",
]
EXP_TEMPLATES = [
    "Generate user_{}'s purchase explanation about item_{}",
    "Can you help generate an explanation of user_{} for item_{}?",
    "user_{} item_{}",
]


def reference_whole_word_ids(pieces: list[str], length: int) -> list[int]:
    """The reference's compute_whole_word_id (protocol section 4), re-implemented as the oracle.

    A piece equal to "_" at j starts word k at j-1; the word runs through the following pure-digit pieces.
    """
    ids = [0] * len(pieces)
    word = 0
    for j, piece in enumerate(pieces):
        if piece == "_" and j > 0:
            word += 1
            ids[j - 1] = ids[j] = word
            t = j + 1
            while t < len(pieces) and pieces[t].isdigit():
                ids[t] = word
                t += 1
    return ids + [0] * (length - len(ids))


@pytest.fixture(scope="module")
def t5(t5_spiece) -> PromptTokenizer:
    return PromptTokenizer.from_spec(t5_spiece)


def _prompts(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        user = str(rng.randint(1, 22363))
        history = [str(rng.randint(1, 12101)) for _ in range(rng.randint(1, 20))]
        candidates = [str(rng.randint(1, 12101)) for _ in range(100)]
        out.append(rng.choice(SEQ_TEMPLATES).format(user, ", item_".join(history)))
        out.append(rng.choice(TOPN_TEMPLATES).format(user, " item_".join(candidates)))
        out.append(rng.choice(EXP_TEMPLATES).format(user, history[0]))
    return out


def test_official_vocabulary(t5, t5_spiece):
    assert t5.vocab_size == 32100
    assert PromptTokenizer.from_spec(t5_spiece.parent).vocab_size == 32100  # a folder with spiece.model
    assert t5.tokenize("user_12 item_345") == ["▁user", "_", "12", "▁item", "_", "3", "45"]
    assert t5.tokenize("item_12101") == ["▁item", "_", "12", "101"]
    assert t5.encode_ids(["user_12"])[0][-1] == 1


def test_numeric_ids_match_reference_algorithm(t5):
    rng = random.Random(0)
    bare = ["user_12 item_345 item_12101"] + [
        f"user_{rng.randint(1, 22363)} item_" + " item_".join(str(rng.randint(1, 12101)) for _ in range(100))
        for _ in range(10)
    ]
    batch = t5.encode_sources(bare)
    width = batch["input_ids"].shape[1]
    for row, text in enumerate(bare):
        expected = reference_whole_word_ids(t5.tokenize(text), width)
        assert batch["whole_word_ids"][row].tolist() == expected, text
    assert batch["whole_word_ids"][1:].amax(dim=1).eq(101).all()  # user + 100 candidates


def test_templated_prompts_match_reference_except_straddling_pieces(t5):
    """With punctuation after an id, T5 has pieces such as "4," that hold the id's last digit: the reference
    (pure-digit pieces only) leaves them out of the word, ours (character overlap) keeps them in."""
    texts = _prompts(random.Random(0), 20)
    batch = t5.encode_sources(texts)
    width = batch["input_ids"].shape[1]
    straddling = 0
    for row, text in enumerate(texts):
        pieces = t5.tokenize(text)
        theirs = reference_whole_word_ids(pieces, width)
        ours = batch["whole_word_ids"][row].tolist()
        for j, (a, b) in enumerate(zip(ours, theirs)):
            if a == b:
                continue
            piece = pieces[j]
            assert piece[0].isdigit() and not piece.isdigit() and b == 0 and a == ours[j - 1] > 0, (text, j)
            straddling += 1
    assert straddling > 0  # the templates with commas do produce such pieces


def test_asin_is_covered_whole_unlike_reference(t5):
    text = "Generate an explanation for user_7 about this product: item_B004756YJA"
    pieces = t5.tokenize(text)
    ours = t5.encode_sources([text])["whole_word_ids"][0].tolist()
    theirs = reference_whole_word_ids(pieces, len(ours))
    asin = [i for i, p in enumerate(pieces) if ours[i] == 2]
    assert "".join(pieces[i] for i in asin) == "▁item_B004756YJA"
    assert [pieces[i] for i in range(len(pieces)) if theirs[i] == 2] == ["▁item", "_"]  # stops at "B"
    assert ours[: asin[0] + 2] == theirs[: asin[0] + 2]  # identical up to the first non-digit piece


def test_throughput_top_n(t5, capsys):
    rng = random.Random(1)
    texts = [
        f"user_{rng.randint(1, 22363)} item_" + " item_".join(str(rng.randint(1, 12101)) for _ in range(100))
        for _ in range(512)
    ]
    t5.encode_sources(texts[:64])
    start = time.perf_counter()
    for i in range(0, len(texts), 64):
        batch = t5.encode_sources(texts[i : i + 64])
    rate = len(texts) / (time.perf_counter() - start)
    assert batch["input_ids"].dtype == torch.long
    with capsys.disabled():
        print(f"\n[t5 vocab] encode_sources, 100-candidate top-n prompts, batch 64: {rate:.0f} prompts/s")
