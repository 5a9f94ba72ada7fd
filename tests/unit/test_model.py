"""Backbone presets and the PeaPOD wrapper: masks, padding invariance, loss, training, save/load, generate."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from peapod.config import ModelConfig
from peapod.errors import ConfigError, PeapodError, UnknownIdError
from peapod.model import PeaPOD, PromptTokenizer, build_backbone, sequence_loss
from peapod.model.backbone import preset_config
from peapod.model.tokenization import EOS_ID

torch.set_num_threads(1)

U, D = 10, 16
USER_IDS = [f"u{i}" for i in range(U)]


@pytest.fixture(scope="module")
def tok() -> PromptTokenizer:
    texts = [f"user_{u} item_{i} item_{i + 7} explain the color" for u in range(30) for i in range(0, 300, 11)]
    return PromptTokenizer.train(texts + ["12 345 6789 great smell"] * 5, vocab_size=300, max_whole_words=32)


@pytest.fixture(scope="module")
def user_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(U, D, generator=gen)
    normed = F.normalize(embeddings, dim=1)
    sims = (normed @ normed.t()).fill_diagonal_(-math.inf)
    return embeddings, sims.topk(3, dim=1).indices


def make_model(tok, user_data, user_prompt="components", task_prompt=True, train_users=False, seed=0) -> PeaPOD:
    torch.manual_seed(seed)
    config = ModelConfig(
        backbone="tiny",
        user_prompt=user_prompt,
        task_prompt=task_prompt,
        n_components=4,
        n_heads=4,
        train_user_embeddings=train_users,
        max_whole_words=32,
        dropout=0.0,
    )
    backbone = build_backbone("tiny", tok.vocab_size, pretrained=False, dropout=0.0)
    embeddings, index = user_data
    return PeaPOD(config, backbone, embeddings, index, user_ids=USER_IDS).eval()


def batch_for(tok, model, sources, targets, tasks, users):
    batch = tok.encode_sources(sources)
    batch["task_ids"] = torch.tensor(tasks)
    batch["user_rows"] = model.user_rows(users)
    return batch, tok.encode_targets(targets)


# ---------------------------------------------------------------------------------------- backbone
def test_presets_shapes():
    with torch.device("meta"):
        paper = build_backbone("t5-small", 32100)
    assert paper.config.vocab_size == 32128
    assert sum(p.numel() for p in paper.parameters()) == 60_506_624  # 60.5 M, the paper's figure
    small, tiny = preset_config("small", 2000), preset_config("tiny", 1000)
    assert (small.d_model, small.num_layers, small.num_decoder_layers, small.num_heads, small.d_ff) == (256, 4, 4, 4, 1024)
    assert (tiny.d_model, tiny.num_layers, tiny.num_decoder_layers, tiny.num_heads, tiny.d_ff) == (64, 2, 2, 2, 256)
    assert tiny.vocab_size == 1000
    assert (tiny.decoder_start_token_id, tiny.pad_token_id, tiny.eos_token_id) == (0, 0, 1)


def test_pretrained_from_local_folder(tmp_path):
    torch.manual_seed(0)
    source = build_backbone("tiny", 50)
    source.save_pretrained(tmp_path / "ckpt")
    loaded = build_backbone(str(tmp_path / "ckpt"), 50, pretrained=True, dropout=0.0)
    assert loaded.config.dropout_rate == 0.0
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    grown = build_backbone(str(tmp_path / "ckpt"), 60, pretrained=True)
    assert grown.get_input_embeddings().num_embeddings == 60
    assert torch.equal(grown.get_input_embeddings().weight[:50], source.get_input_embeddings().weight)
    fresh = build_backbone(str(tmp_path / "ckpt"), 50, pretrained=False)  # the folder's shape, random init
    assert fresh.config.d_model == 64
    assert not torch.equal(fresh.shared.weight, source.shared.weight)


def test_backbone_errors():
    with pytest.raises(ConfigError, match="not a preset"):
        build_backbone("no-such-backbone-folder", 100)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        build_backbone("tiny", 100, pretrained=True)


# ---------------------------------------------------------------------------------------- prefix and masks
@pytest.mark.parametrize(
    "user_prompt, task_prompt, expected",
    [("components", True, 6), ("neighbors", True, 6), ("none", True, 3), ("components", False, 3), ("none", False, 0)],
)
def test_prefix_length_per_variant(tok, user_data, user_prompt, task_prompt, expected):
    model = make_model(tok, user_data, user_prompt, task_prompt)
    assert model.prefix_length == expected
    assert (model.task_prompt is not None) == task_prompt
    assert (model.user_prompt is not None) == (user_prompt != "none")
    batch, labels = batch_for(tok, model, ["user_1 item_5", "user_2 item_7 item_9"], ["5", "7"], [1, 2], ["u1", "u2"])
    encoded, mask = model.encode(**batch)
    text_len = batch["input_ids"].shape[1]
    assert encoded.last_hidden_state.shape == (2, expected + text_len, model.d_model)
    assert mask.shape == (2, expected + text_len)
    assert out_loss_finite(model(**batch, labels=labels))


def out_loss_finite(out) -> bool:
    return out.loss is not None and math.isfinite(out.loss.item())


def test_masks_reach_encoder_and_cross_attention(tok, user_data, monkeypatch):
    model = make_model(tok, user_data)
    batch, labels = batch_for(tok, model, ["user_1 item_5", "user_2 item_7 item_9 item_11"], ["5", "7"], [1, 2], ["u1", "u2"])
    seen = {}
    encoder = model.backbone.get_encoder()
    encoder_forward, backbone_forward = encoder.forward, model.backbone.forward

    def spy_encoder(*args, **kwargs):
        seen["encoder"] = kwargs["attention_mask"].clone()
        return encoder_forward(*args, **kwargs)

    def spy_backbone(*args, **kwargs):
        seen["decoder"] = kwargs["attention_mask"].clone()
        return backbone_forward(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", spy_encoder)
    monkeypatch.setattr(model.backbone, "forward", spy_backbone)
    model(**batch, labels=labels)
    prefix = model.prefix_length
    expected = torch.cat([torch.ones(2, prefix, dtype=torch.long), batch["attention_mask"]], dim=1)
    assert torch.equal(seen["encoder"], expected)
    assert torch.equal(seen["decoder"], expected)  # the cross-attention mask (fix of reference bug 10.6)
    assert batch["attention_mask"][0].eq(0).any()  # the first sample really is padded


@pytest.mark.parametrize("user_prompt", ["components", "neighbors", "none"])
def test_padding_does_not_change_logits(tok, user_data, user_prompt):
    model = make_model(tok, user_data, user_prompt)
    short, long = "user_3 item_5", "user_4 item_7 item_9 item_11 item_13 item_15 explain the color"
    alone, labels = batch_for(tok, model, [short], ["5 9"], [1], ["u3"])
    padded, labels2 = batch_for(tok, model, [short, long], ["5 9", "7"], [1, 2], ["u3", "u4"])
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1] + 3
    n = labels.shape[1]
    with torch.no_grad():
        a = model(**alone, labels=labels).logits[0]
        b = model(**padded, labels=labels2).logits[0, :n]
        assert torch.allclose(a, b, atol=1e-5)
        # The reference's behaviour (decoder cross-attention unmasked) does depend on padding:
        encoded, _ = model.encode(**padded)
        decoder_inputs = model.backbone.prepare_decoder_input_ids_from_labels(labels2)
        unmasked = model.backbone(encoder_outputs=encoded, decoder_input_ids=decoder_inputs).logits[0, :n]
        assert not torch.allclose(a, unmasked, atol=1e-4)


# ---------------------------------------------------------------------------------------- loss
def test_loss_is_eq4_and_ignores_padding(tok, user_data):
    model = make_model(tok, user_data)
    batch, labels = batch_for(tok, model, ["user_1 item_5", "user_2 item_7"], ["5", "the color explain great"], [1, 0], ["u1", "u2"])
    counts = (labels != -100).sum(1)
    assert counts[0] < counts[1]
    with torch.no_grad():
        out = model(**batch, labels=labels)
        token_nll = F.cross_entropy(out.logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        per_sample = token_nll.sum(1) / counts
        assert out.loss.item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
        assert out.loss.item() != pytest.approx((token_nll.sum() / counts.sum()).item(), rel=1e-3)
        wider = torch.cat([labels, torch.full((2, 3), -100)], dim=1)
        assert model(**batch, labels=wider).loss.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert sequence_loss(out.logits, labels, "none").shape == (2,)
    empty = torch.full_like(labels, -100)
    empty[0] = labels[0]
    assert sequence_loss(out.logits, empty).item() == pytest.approx(per_sample[0].item(), rel=1e-5)


def test_tiny_model_learns(tok, user_data):
    model = make_model(tok, user_data, seed=1).train()
    batch, labels = batch_for(
        tok, model,
        ["user_1 item_5 item_12", "user_2 item_7", "explain user_3 item_9", "user_4 item_11 item_22 item_33"],
        ["12", "345", "the color is great", "6789"],
        [1, 2, 0, 1],
        ["u1", "u2", "u3", "u4"],
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_user_embeddings_frozen_or_trained(tok, user_data):
    frozen = make_model(tok, user_data)
    names = [n for n, _ in frozen.named_parameters()]
    assert not any("users" in n for n in names)
    assert "user_prompt.users.embeddings" in frozen.state_dict()
    trained = make_model(tok, user_data, train_users=True)
    assert "user_prompt.users.table.weight" in dict(trained.named_parameters())
    assert trained.num_parameters(trainable_only=True) == frozen.num_parameters() + U * D


def test_whole_word_init(tok, user_data):
    model = make_model(tok, user_data)
    table = model.whole_word_embeddings.weight.detach()
    assert table.shape == (32, model.d_model)
    assert table[0].eq(0).all()  # non-id tokens start exactly as the backbone sees them
    token_rms = model.backbone.shared.weight.detach().pow(2).mean().sqrt()
    assert table[1:].std().item() == pytest.approx(0.5 * token_rms.item(), rel=0.1)


def test_user_rows_and_errors(tok, user_data):
    model = make_model(tok, user_data)
    assert model.user_rows(["u3", "u0"]).tolist() == [3, 0]
    with pytest.raises(UnknownIdError, match="'nobody'"):
        model.user_rows(["u1", "nobody"])
    backbone = build_backbone("tiny", tok.vocab_size)
    with pytest.raises(ConfigError, match="needs user embeddings"):
        PeaPOD(ModelConfig(user_prompt="components"), backbone)
    with pytest.raises(ConfigError, match="neighbour index"):
        PeaPOD(ModelConfig(user_prompt="neighbors"), backbone, user_data[0])
    with pytest.raises(PeapodError, match="task_ids"):
        batch = tok.encode_sources(["user_1 item_2"])
        model.encode(**batch, user_rows=torch.tensor([1]))


# ---------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize(
    "user_prompt, task_prompt, train_users",
    [("components", True, False), ("neighbors", True, True), ("none", False, False)],
)
def test_save_load_round_trip(tok, user_data, tmp_path, user_prompt, task_prompt, train_users):
    model = make_model(tok, user_data, user_prompt, task_prompt, train_users, seed=3)
    with torch.no_grad():  # move every prompt away from its init so a skipped tensor would show
        for param in model.parameters():
            param.add_(0.01)
    batch, labels = batch_for(tok, model, ["user_1 item_5", "user_2 item_7 item_9"], ["5", "7"], [1, 2], ["u1", "u2"])
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model"]["user_prompt"] == user_prompt and saved["n_users"] == (0 if user_prompt == "none" else U)
    again = PeaPOD.load(tmp_path / "m")
    assert again.user_ids == USER_IDS and again.prefix_length == model.prefix_length
    with torch.no_grad():
        assert torch.equal(model(**batch, labels=labels).logits, again(**batch, labels=labels).logits)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert again.backbone.lm_head.weight is again.backbone.shared.weight


def test_load_errors(tmp_path):
    with pytest.raises(PeapodError, match="not found"):
        PeaPOD.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PeapodError, match="format"):
        PeaPOD.load(tmp_path)


# ---------------------------------------------------------------------------------------- generate
def test_generate_constrained_to_allowed_sequences(tok, user_data):
    model = make_model(tok, user_data, seed=4)
    allowed_texts = ["12", "345", "6789"]
    trie: dict = {}
    for seq in tok.encode_ids(allowed_texts):
        node = trie
        for token in seq:
            node = node.setdefault(token, {})

    def allowed(batch_id: int, prefix: torch.Tensor) -> list[int]:
        node = trie
        for token in prefix.tolist()[1:]:  # skip the decoder start token
            if token not in node:
                return [EOS_ID]
            node = node[token]
        return list(node) or [EOS_ID]

    batch, _ = batch_for(tok, model, ["user_1 item_5", "user_2 item_7 item_9"], ["5", "7"], [1, 2], ["u1", "u2"])
    out = model.generate(
        **batch, num_beams=4, num_return_sequences=3, max_new_tokens=8, prefix_allowed_tokens_fn=allowed
    )
    assert out.shape[0] == 6 and out[:, 0].eq(0).all()
    decoded = tok.batch_decode(out)
    assert set(decoded) <= set(allowed_texts)
    for i in range(2):
        assert len(set(decoded[3 * i : 3 * i + 3])) == 3


def test_generate_passes_length_arguments(tok, user_data):
    model = make_model(tok, user_data, user_prompt="neighbors", seed=5)
    batch, _ = batch_for(tok, model, ["user_1 item_5", "user_2 item_7 item_9"], ["5", "7"], [1, 2], ["u1", "u2"])
    out = model.generate(**batch, num_beams=2, min_new_tokens=5, max_new_tokens=5)
    assert out.shape == (2, 6)
    assert not out[:, 1:].eq(EOS_ID).any()


@pytest.mark.parametrize("user_prompt", ["components", "neighbors"])
def test_explicit_user_prompts_replace_rows(tok, user_data, user_prompt):
    """Cold start: prompts computed from explicit embeddings give the same encoding as the table rows."""
    model = make_model(tok, user_data, user_prompt, seed=6)
    batch, _ = batch_for(tok, model, ["user_1 item_5", "user_2 item_7 item_9"], ["5", "7"], [1, 2], ["u1", "u2"])
    embeddings, index = user_data
    rows = batch.pop("user_rows")
    module = model.user_prompt
    if user_prompt == "components":
        prompts = module.prompts_for_queries(embeddings[rows])
    else:
        prompts = module.prompts_from_embeddings(embeddings[rows], embeddings[index[rows]])[0]
    with torch.no_grad():
        by_rows, mask = model.encode(**batch, user_rows=rows)
        explicit, mask2 = model.encode(**batch, user_prompts=prompts)
    assert torch.allclose(by_rows.last_hidden_state, explicit.last_hidden_state, atol=1e-6)
    assert torch.equal(mask, mask2)
    with pytest.raises(PeapodError, match="user_prompts must be"):
        model.encode(**batch, user_prompts=prompts[:, :1])
    out = model.generate(**batch, user_rows=rows, num_beams=2, max_new_tokens=3, return_dict_in_generate=True,
                         output_scores=True)
    assert out.sequences.shape[0] == 2 and out.sequences_scores.shape == (2,)
