"""The evaluation runner: examples, constrained decoding, exact ranking, protocols, results.json provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from peapod.cli import main
from peapod.config import load_config
from peapod.data import load_dataset
from peapod.data.synthetic import write_synthetic
from peapod.evaluation import tasks as T
from peapod.evaluation.results import REQUIRED_FIELDS, load_results, read_predictions, sidecar_paths
from peapod.evaluation.runner import EvalOptions, evaluate_checkpoint
from peapod.io import atomic_write_json

torch.set_num_threads(1)

OVERRIDES = [
    "model.tokenizer_vocab_size=300", "embedding.dim=16", "eval.num_beams=6", "eval.top_k=5",
    "eval.exp_num_beams=2", "eval.exp_max_new_tokens=6", "eval.exp_min_length=2", "eval.batch_size=16",
]


def build_run(data_dir: Path, run_dir: Path, seed: int = 0, overrides: list[str] | None = None) -> Path:
    """A run folder as `peapod train` writes it, with a randomly initialised tiny PeaPOD (no training)."""
    from peapod.model import PeaPOD, PromptTokenizer, build_backbone
    from peapod.training.run import dataset_info, write_dataset_info
    from peapod.training.trainer import tokenizer_corpus

    torch.manual_seed(seed)
    cfg = load_config("tiny", None, OVERRIDES + (overrides or []))
    ds = load_dataset(data_dir, require_negatives=False)
    tok = PromptTokenizer.train(tokenizer_corpus(ds, cfg), cfg.model.tokenizer_vocab_size)
    backbone = build_backbone("tiny", tok.vocab_size, False, 0.0)
    model = PeaPOD(cfg.model, backbone, torch.randn(ds.n_users, cfg.embedding.dim), None, user_ids=ds.users)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    write_dataset_info(run_dir, dataset_info(ds, data_dir, cfg))
    tok.save(run_dir / "tokenizer")
    model.save(run_dir / "model")
    return run_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    data = write_synthetic(root / "data", n_users=120, n_items=150, seed=3)
    run = build_run(data, root / "run")
    return data, run


@pytest.fixture(scope="module")
def ctx(tiny):
    from peapod.training.run import load_run

    data, run_dir = tiny
    run = load_run(run_dir)
    ds = run.load_dataset(data)
    c = T.ModelContext(model=run.model, tokenizer=run.tokenizer, user_index=run.user_index, config=run.config,
                       device=torch.device("cpu"), items=list(ds.items))
    return c, ds


def _opts(**kw) -> T.DecodeOptions:
    base = dict(num_beams=6, top_k=5, batch_size=16, exp_num_beams=2, exp_min_length=2, exp_max_new_tokens=6,
                progress=False)
    base.update(kw)
    return T.DecodeOptions(**base)


# ------------------------------------------------------------------------------ hand-built metrics
def test_ranking_scores_hand_built_case():
    recs = [
        {"ranked": ["3", "7", "9"], "target": "3"},  # rank 1: hit@1, ndcg 1
        {"ranked": ["1", "2", "3", "4", "5", "6"], "target": "6"},  # rank 6: hit@10 only, ndcg@10 = 1/log2(7)
        {"ranked": ["8"], "target": "2"},  # miss
        {"ranked": ["5", "5", "4"], "target": "4"},  # clean: dedup -> rank 2; reference: position 3
    ]
    clean = T.ranking_scores(recs, "clean")
    assert clean["hr@1"] == pytest.approx(1 / 4)
    assert clean["hr@5"] == pytest.approx(2 / 4)
    assert clean["hr@10"] == pytest.approx(3 / 4)
    assert clean["ndcg@5"] == pytest.approx((1 + 1 / np.log2(3)) / 4)
    assert clean["ndcg@10"] == pytest.approx((1 + 1 / np.log2(7) + 1 / np.log2(3)) / 4)
    ref = T.ranking_scores(recs, "reference")
    assert ref["ndcg@5"] == pytest.approx((1 + 1 / np.log2(4)) / 4)  # the repeat keeps its position


# ------------------------------------------------------------------------------ stub model: protocol quirks
class StubContext(T.ModelContext):
    """A ModelContext whose beams are fixed texts, to pin down the protocols' parse/fill/dedup rules."""

    def __init__(self, base: T.ModelContext, beams: list[str]):
        super().__init__(model=base.model, tokenizer=base.tokenizer, user_index=base.user_index,
                         config=base.config, device=base.device, items=base.items)
        self._base = base
        self.beams = beams
        self.calls: list[dict] = []

    def encode(self, task, users, sources):
        return len(users)

    def generate(self, encoded, **kwargs):
        self.calls.append(kwargs)
        n_ret = kwargs["num_return_sequences"]
        texts = (self.beams + ["zz"] * n_ret)[:n_ret]
        rows = [[0] + self.tokenizer.encode_ids([b])[0] for b in texts]
        from peapod.evaluation.decoding import pad_sequences

        return pad_sequences(rows * encoded, pad_value=1)


def test_reference_protocol_quirks_and_clean_protocol_guards(ctx):
    c, ds = ctx
    target = ds.test_target(ds.users[0])
    stub = StubContext(c, [target, f"{target} x", "zz", "0x"])  # duplicate id, unparsable, junk
    examples = T.sequential_examples(ds, ds.users[:3], "test", 20)
    ref = T.run_sequential(stub, examples, _opts(protocol="reference", seed=5))
    assert ref[0]["ranked"][:2] == [target, target]  # no dedup: both spellings count
    assert T.ranking_scores(ref[:1], "reference")["hr@5"] == pytest.approx(2.0)  # HR above 1
    assert "prefix_allowed_tokens_fn" not in stub.calls[0] and stub.calls[0]["max_new_tokens"] == 49
    fills = [r["ranked"][2:] for r in ref]
    assert all(x.isdigit() and 1 <= int(x) <= ds.n_items for f in fills for x in f)  # random fill-in
    again = T.run_sequential(stub, examples, _opts(protocol="reference", seed=5))
    assert [r["ranked"] for r in again] == [r["ranked"] for r in ref]  # seeded: reproducible
    other = T.run_sequential(stub, examples, _opts(protocol="reference", seed=6))
    assert [r["ranked"][2:] for r in other] != fills  # the fill-in follows the seed
    clean = T.run_sequential(stub, examples, _opts(protocol="clean"))
    assert clean[0]["ranked"] == [target]  # strict parse, in the trie, deduplicated, never filled
    assert T.ranking_scores(clean[:1], "clean")["hr@5"] == 1.0
    assert "prefix_allowed_tokens_fn" in stub.calls[-1]


# ------------------------------------------------------------------------------ tiny model decoding
def test_constrained_sequential_decoding_yields_valid_distinct_items(ctx):
    c, ds = ctx
    examples = T.sequential_examples(ds, ds.users[:20], "test", 20)
    recs = T.run_sequential(c, examples, _opts())
    items = set(ds.items)
    assert [r["user"] for r in recs] == ds.users[:20]  # order restored after length sorting
    for r in recs:
        assert 1 <= len(r["ranked"]) <= 5
        assert set(r["ranked"]) <= items
        assert len(set(r["ranked"])) == len(r["ranked"])
    excl = T.run_sequential(c, examples, _opts(exclude_history=True, max_history=20))
    for r in excl:
        assert not set(r["ranked"]) & set(r["history"])
        assert len(r["ranked"]) == 5  # over-generation leaves enough after filtering


def test_topn_beam_stays_in_candidates_and_exact_matches_brute_force(ctx):
    c, ds = ctx
    examples = T.topn_examples(ds, ds.users[:6], "test", seed=2022)
    recs, timing = T.run_topn(c, examples, _opts(score_chunk_size=37), ["beam", "exact"])
    assert set(timing) == {"encode", "beam", "exact"}
    for r in recs:
        assert set(r["ranked"]) <= set(r["candidates"]) and r["ranked"]
        assert len(r["ranked"]) == len(set(r["ranked"]))
    exact = [r for r in recs if r["ranker"] == "exact"]
    # brute force: one teacher-forced forward per candidate, log-likelihood = -mean loss * length
    e = examples[0]
    enc = c.tokenizer.encode_sources([T.render(T.BARE_TEMPLATE, e.user, e.candidates)])
    cands = list(dict.fromkeys(e.candidates))[:25]
    labels = c.tokenizer.encode_targets(cands)
    n = len(cands)
    with torch.no_grad():
        out = c.model(input_ids=enc["input_ids"].repeat(n, 1), attention_mask=enc["attention_mask"].repeat(n, 1),
                      whole_word_ids=enc["whole_word_ids"].repeat(n, 1),
                      task_ids=torch.full((n,), 2), user_rows=torch.full((n,), c.user_index[e.user]), labels=labels)
        lp = torch.log_softmax(out.logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        brute = (lp * (labels != -100)).sum(-1)
    encoded = c.encode("topn", [e.user], [T.render(T.BARE_TEMPLATE, e.user, e.candidates)])
    scores = T.score_candidates(c.model.backbone, *encoded, T.pad_sequences([c.item_tokens[x] for x in cands])[None])
    assert torch.allclose(scores[0], brute, atol=1e-4)
    order = [cands[i] for i in torch.argsort(brute, descending=True, stable=True).tolist()]
    ranked_subset = [x for x in exact[0]["ranked"] if x in cands]
    assert ranked_subset == order[: len(ranked_subset)]


def test_topn_candidates_seeded_and_independent_of_user_selection(ctx):
    _, ds = ctx
    a = T.topn_examples(ds, ds.users[:10], "test", seed=1)
    b = T.topn_examples(ds, ds.users[5:10], "test", seed=1)
    assert [e.candidates for e in a[5:]] == [e.candidates for e in b]
    assert all(sorted(e.candidates) == sorted([ds.test_target(e.user), *ds.negatives[e.user]]) for e in a)
    c = T.topn_examples(ds, ds.users[:10], "test", seed=2)
    assert [e.candidates for e in c] != [e.candidates for e in a]
    v1 = T.topn_examples(ds, ds.users[:4], "valid", seed=1)
    assert all(e.target == ds.valid_target(e.user) and e.target in e.candidates for e in v1)
    assert T.select_users(ds, 7, 3) == T.select_users(ds, 7, 3) and len(T.select_users(ds, 7, 3)) == 7


def test_explanation_references_are_cut_then_decoded(ctx):
    c, _ = ctx
    text = "one two three four five six seven eight nine ten eleven twelve"
    (ref,) = T.explanation_references(c.tokenizer, [text], 4)
    ids = c.tokenizer.encode_ids([text])[0]
    assert ref == c.tokenizer.decode(ids[:4]) and len(ref.split()) < len(text.split())


# ------------------------------------------------------------------------------ end to end
def test_evaluate_checkpoint_writes_results_with_provenance(tiny, tmp_path, capsys):
    data, run = tiny
    out = tmp_path / "res.json"
    code = main(["evaluate", "--checkpoint", str(run), "--dataset", str(data), "--out", str(out),
                 "--max-users", "12", "--no-progress", "--batch-size", "8"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "HR@5 | NDCG@5 | HR@10 | NDCG@10" in printed and "BLEU-4 | ROUGE-1 | ROUGE-2 | ROUGE-L" in printed
    res = load_results(out)
    for section, keys in REQUIRED_FIELDS.items():
        where = res if not section else res[section]
        assert set(keys) <= set(where)
        assert all(where[k] is not None for k in keys if k != "max_users"), section
    assert res["model"]["checkpoint"] == str(run.resolve()) and res["model"]["config"]["model"]["backbone"] == "tiny"
    assert res["dataset"]["fingerprint_matches_checkpoint"] is True
    assert res["evaluation"]["protocol"] == "clean" and res["evaluation"]["num_beams"] == 6
    assert res["tasks"]["seq"]["n_users"] == 12 and res["tasks"]["topn"]["n_users"] == 12
    assert set(res["tasks"]["topn"]["ranker_time_s"]) == {"encode", "beam", "exact"}
    assert set(res["metrics"]["topn"]) == {"beam", "exact"}
    assert {"bleu4", "bleu1", "rouge1", "rouge2", "rougeL"} <= set(res["metrics"]["exp"])
    assert {"rouge1", "rougeL"} <= set(res["metrics"]["exp"]["reference"])
    assert res["environment"]["torch"] == torch.__version__
    assert res["environment"]["peapod"] and res["date"].endswith("+00:00")
    assert res["dataset"]["path"] == str(data.resolve()) and res["dataset"]["item_id_scheme"] == "original"
    preds_path, md_path = sidecar_paths(out)
    preds = read_predictions(preds_path)
    assert len([p for p in preds if p["task"] == "seq"]) == 12
    seq_preds = [p for p in preds if p["task"] == "seq"]
    copied = sum(i in p["history"] for p in seq_preds for i in p["ranked"]) / sum(len(p["ranked"]) for p in seq_preds)
    assert res["tasks"]["seq"]["history_share_top_k"] == pytest.approx(copied)  # the copying diagnostic
    assert len([p for p in preds if p["task"] == "topn"]) == 24
    assert len([p for p in preds if p["task"] == "exp"]) == res["tasks"]["exp"]["n_examples"] <= 12
    assert md_path.read_text().startswith("## peapod[components] / clean / original")


def test_reference_protocol_is_labelled_and_exp_skipped_without_data(tmp_path):
    data = write_synthetic(tmp_path / "data", n_users=110, n_items=150, seed=4)
    exp = json.loads((data / "explanation.json").read_text())
    exp["test"] = []
    (data / "explanation.json").write_text(json.dumps(exp))
    run = build_run(data, tmp_path / "run")
    out = tmp_path / "ref.json"
    res = evaluate_checkpoint(run, data, out, EvalOptions(tasks=("seq", "exp"), max_users=4, protocol="reference",
                                                          progress=False))
    assert res["evaluation"]["protocol"] == "reference" and "reference" in res["label"]
    assert res["evaluation"]["constrained_decoding"] is False
    assert res["tasks"]["exp"]["status"] == "skipped" and "no explanation records" in res["tasks"]["exp"]["reason"]
    assert "exp" not in res["metrics"] and "seq" in res["metrics"]


def test_bad_requests_give_clear_errors(tiny, tmp_path, capsys):
    data, run = tiny
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--dataset", str(data),
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(run), "--dataset", str(data), "--out", "x.json", "--tasks", "seq,bogus"])
    assert main(["evaluate", "--checkpoint", str(run), "--dataset", str(data), "--out", str(tmp_path / "r.json"),
                 "--set", "embedding.dim=8"]) == 2
