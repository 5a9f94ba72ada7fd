"""PromptTokenizer on a small tokenizer trained here: special ids, EOS, padding, labels, whole-word ids."""

from __future__ import annotations

import random

import pytest
import torch

from peapod.errors import PeapodError
from peapod.model.tokenization import EOS_ID, ID_MENTION, PromptTokenizer

torch.set_num_threads(1)


def _prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        user = rng.randint(1, 3000)
        items = [str(rng.randint(1, 12101)) for _ in range(rng.randint(1, 30))]
        out.append(f"user_{user} item_" + " item_".join(items))
        out.append(f"Given the following purchase history of user_{user}: item_" + ", item_".join(items) + ", predict next.")
        out.append(f"Generate an explanation for user_{user} about item_{items[0]}")
        out.append("The color is great, 5 stars and a lovely smell!")
        out.append(items[-1])
    return out


@pytest.fixture(scope="module")
def tok() -> PromptTokenizer:
    return PromptTokenizer.train(_prompts(400), vocab_size=400, max_whole_words=64)


def _oracle_whole_words(tok: PromptTokenizer, text: str) -> list[int]:
    """Straightforward per-token oracle: k-th mention -> id k on overlapping tokens, EOS 0."""
    spans = [m.span() for m in ID_MENTION.finditer(text)]
    enc = tok.tokenizer.encode(text, add_special_tokens=False)
    ids = []
    for start, end in enc.offsets:
        word = 0
        for k, (ms, me) in enumerate(spans, start=1):
            if start < me and end > ms and end > start:
                word = min(k, tok.max_whole_words - 1)
                break
        ids.append(word)
    return ids + [0]


def test_special_ids_and_vocab(tok):
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert tok.tokenizer.token_to_id("<unk>") == 2
    assert 100 < tok.vocab_size <= 400
    assert len(tok) == tok.vocab_size


def test_digits_are_split_from_letters(tok):
    pieces = tok.tokenize("user_12 item_345 item_12101 item_B004756YJA")
    for piece in pieces:
        core = piece.lstrip("▁")
        assert not (any(c.isdigit() for c in core) and any(not c.isdigit() for c in core)), piece
    assert "".join(pieces).replace("▁", " ").strip() == "user_12 item_345 item_12101 item_B004756YJA"


def test_encode_sources_padding_eos_and_mask(tok):
    texts = ["user_1 item_2", "user_12 item_345 item_12101, and more words here"]
    batch = tok.encode_sources(texts)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == torch.long and ids.shape == mask.shape == batch["whole_word_ids"].shape
    for row, text in enumerate(texts):
        plain = tok.encode_ids([text])[0]
        n = len(plain)
        assert plain[-1] == EOS_ID
        assert ids[row, :n].tolist() == plain
        assert mask[row].tolist() == [1] * n + [0] * (ids.shape[1] - n)
        assert ids[row, n:].eq(0).all()
    assert ids.shape[1] == len(tok.encode_ids([texts[1]])[0])


def test_whole_word_ids_match_offset_oracle(tok):
    texts = _prompts(20, seed=3) + [
        "no ids at all",
        "superuser_5 is not a mention but user_7 is",
        "explain item_B004756YJA for user_9?",
        "héllo wörld user_42 (item_7)",
    ]
    batch = tok.encode_sources(texts)
    for row, text in enumerate(texts):
        expected = _oracle_whole_words(tok, text)
        got = batch["whole_word_ids"][row].tolist()
        assert got[: len(expected)] == expected, text
        assert all(v == 0 for v in got[len(expected):])


def test_whole_word_ids_cover_whole_mentions(tok):
    batch = tok.encode_sources(["user_12 item_345 item_12101 x", "foo item_B004756YJA"])
    ww = batch["whole_word_ids"]
    pieces = tok.tokenize("user_12 item_345 item_12101 x")
    # every piece of the three ids is labelled, the trailing word and EOS are not
    labels = ww[0, : len(pieces) + 1].tolist()
    assert labels[-1] == 0  # EOS
    assert "".join(p for p, w in zip(pieces, labels) if w == 0) == "▁x"
    decoded = {k: "".join(p for p, w in zip(pieces, labels) if w == k).replace("▁", "") for k in (1, 2, 3)}
    assert decoded == {1: "user_12", 2: "item_345", 3: "item_12101"}
    asin_pieces = tok.tokenize("foo item_B004756YJA")
    asin = "".join(p for p, w in zip(asin_pieces, ww[1].tolist()) if w == 1).replace("▁", "")
    assert asin == "item_B004756YJA"


def test_whole_word_ids_are_clipped(tok):
    small = PromptTokenizer(tok.tokenizer, max_whole_words=4)
    ww = small.encode_sources(["user_1 item_2 item_3 item_4 item_5 item_6"])["whole_word_ids"][0]
    assert ww.max().item() == 3
    assert sorted(set(ww.tolist())) == [0, 1, 2, 3]


def test_encode_targets_labels(tok):
    labels = tok.encode_targets(["12", "the color is great and lovely"], max_length=None)
    short = tok.encode_ids(["12"])[0]
    assert labels[0, : len(short)].tolist() == short
    assert labels[0, len(short):].eq(-100).all()
    assert labels[1, -1].item() == EOS_ID
    cut = tok.encode_targets(["the color is great and lovely"], max_length=3)
    assert cut.shape == (1, 3) and EOS_ID not in cut[0].tolist()  # the cut removes EOS, as the reference


def test_decode_cuts_at_first_eos(tok):
    ids = tok.encode_ids(["12101", "user_5 likes it"])
    rows = [[0] + ids[0] + [EOS_ID] * 3, [0] + ids[1] + ids[0]]  # finished beams padded with EOS / junk
    width = max(len(r) for r in rows)
    generated = torch.tensor([r + [EOS_ID] * (width - len(r)) for r in rows])
    assert tok.batch_decode(generated) == ["12101", "user_5 likes it"]
    assert tok.decode(tok.encode_targets(["12101"])[0]) == "12101"


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "tok")
    again = PromptTokenizer.load(tmp_path / "tok")
    also = PromptTokenizer.from_spec(tmp_path / "tok")
    texts = _prompts(3, seed=9)
    a, b, c = tok.encode_sources(texts), again.encode_sources(texts), also.encode_sources(texts)
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    assert again.max_whole_words == 64 and again.vocab_size == tok.vocab_size


def test_from_spec_errors(tmp_path):
    with pytest.raises(PeapodError, match="neither tokenizer.json nor spiece.model"):
        PromptTokenizer.from_spec(tmp_path)
    with pytest.raises(PeapodError, match="spiece.model"):
        PromptTokenizer.from_spec("no-such-org/no-such-tokenizer-peapod")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(PeapodError, match="bad.model"):
        PromptTokenizer.from_spec(bad)


def test_rejects_non_t5_special_ids():
    from tokenizers import Tokenizer, models

    other = Tokenizer(models.WordLevel({"[PAD]": 0, "a": 1, "<unk>": 2}, unk_token="<unk>"))
    with pytest.raises(PeapodError, match="T5 conventions"):
        PromptTokenizer(other)
