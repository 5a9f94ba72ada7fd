"""The trainer on a tiny model and synthetic data: loss falls, exact resume, run folder, CLI, selection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from peapod.cli import main as cli_main
from peapod.config import load_config
from peapod.errors import ConfigError, PeapodError, UnknownIdError
from peapod.training import run as R
from peapod.training.checkpoint import find_checkpoint
from peapod.training.collate import Collator, user_rows
from peapod.training.samplers import TextBatch
from peapod.training.trainer import train, update_selection

torch.set_num_threads(1)

FAST = [
    "embedding.max_iter=3",
    "model.tokenizer_vocab_size=400",
    "train.batch_size=8",
    "train.valid_max_users=12",
    "train.log_every_steps=3",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from peapod.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("syn") / "data", n_users=120, n_items=150, seed=3)


@pytest.fixture(scope="module")
def base_run(data_dir, tmp_path_factory) -> tuple[Path, object]:
    """A short run (2 epochs of 9 steps) whose embeddings and tokenizer the other tests reuse."""
    out = tmp_path_factory.mktemp("runs") / "base"
    config = load_config("tiny", None, FAST + ["train.batch_size=16", "train.steps_per_epoch=9", "train.epochs=2",
                                               "train.select_by=loss",
                                               "train.learning_rate=0.003"])
    return out, train(config, data_dir, out, progress=False)


def _reuse(base: Path) -> dict:
    return {"embeddings_path": base / R.EMBEDDINGS_FILE, "tokenizer_spec": str(base / R.TOKENIZER_DIR)}


# ------------------------------------------------------------------------------------------ training
def test_loss_falls_on_synthetic_data(base_run):
    base, result = base_run
    assert result.steps == 18 and result.epochs == 2
    by_task: dict[str, list[float]] = {}
    for _, task, loss in result.step_losses:
        by_task.setdefault(task, []).append(loss)
    # the tiny preset's schedule: task_weights {exp: 1, seq: 3, topn: 1}
    assert [t for _, t, _ in result.step_losses[:6]] == ["exp", "seq", "topn", "seq", "seq", "exp"]
    for task in ("seq", "topn"):
        first, last = np.mean(by_task[task][:2]), np.mean(by_task[task][-2:])
        assert last < 0.8 * first, (task, by_task[task])
    assert np.mean(by_task["exp"][-2:]) < np.mean(by_task["exp"][:2])
    history = [r for r in R.read_log(base) if r["event"] == "valid"]
    assert len(history) == 2 and history[1]["mean"] < history[0]["mean"]


def test_resume_reproduces_the_next_losses_exactly(data_dir, base_run, tmp_path):
    base, _ = base_run
    common = FAST + ["train.steps_per_epoch=4", "train.epochs=5", "train.save_every_steps=3"]
    full = train(load_config("tiny", None, common + ["train.max_steps=9"]), data_dir, tmp_path / "a",
                 progress=False, **_reuse(base))
    # the same run, stopped at step 6 (checkpoint at 6), then resumed to 9 across an epoch end (8)
    first = train(load_config("tiny", None, common + ["train.max_steps=6"]), data_dir, tmp_path / "b",
                  progress=False, **_reuse(base))
    assert [x for x in first.step_losses] == full.step_losses[:6]
    assert find_checkpoint(tmp_path / "b" / R.CHECKPOINTS_DIR) is not None
    resumed = train(load_config("tiny", None, common + ["train.max_steps=9"]), data_dir, tmp_path / "b",
                    progress=False, resume=True, **_reuse(base))
    assert [s for s, _, _ in resumed.step_losses] == [7, 8, 9]
    assert resumed.step_losses == full.step_losses[6:]  # bit-identical, dropout included
    assert resumed.param_checksum == full.param_checksum
    log = R.read_log(tmp_path / "b")
    assert any(r["event"] == "resume" and r["step"] == 6 for r in log)


def test_run_folder_contract_and_load_run(data_dir, base_run):
    base, result = base_run
    for name in (R.CONFIG_FILE, R.DATASET_FILE, R.EMBEDDINGS_FILE, R.NEIGHBORS_FILE, R.LOG_FILE, R.RESULT_FILE):
        assert (base / name).is_file(), name
    assert (base / R.MODEL_DIR).is_dir() and (base / R.TOKENIZER_DIR).is_dir()
    assert find_checkpoint(base / R.CHECKPOINTS_DIR) == base / R.CHECKPOINTS_DIR / "last"
    run = R.load_run(base)
    assert not run.model.training
    assert run.config.train.steps_per_epoch == 9
    ds = run.load_dataset()
    assert run.users == ds.users and run.user_index == ds.user_index and run.items == ds.items
    assert run.dataset["fingerprint"] == ds.fingerprint
    assert run.dataset["notes"]["explanation_train_heldout_dropped"] >= 0
    # the model's user matrix rows are the run's user order
    from peapod.embeddings.factors import Factors

    factors = Factors.load(base / R.EMBEDDINGS_FILE)
    assert factors.users == run.users and factors.fit_on == "train"
    assert np.array_equal(run.model.user_prompt.users.weight.detach().numpy(), factors.user_factors)
    # the best model reproduces the logged best validation loss
    assert result.best_metric == pytest.approx(
        min(r["mean"] for r in R.read_log(base) if r["event"] == "valid"))


def test_embeddings_in_another_user_order_are_realigned(data_dir, base_run, tmp_path):
    from peapod.embeddings.factors import Factors
    from peapod.training.trainer import _load_factors_for, _load_dataset

    base, _ = base_run
    factors = Factors.load(base / R.EMBEDDINGS_FILE)
    perm = np.random.default_rng(0).permutation(len(factors.users))
    shuffled = Factors([factors.users[i] for i in perm], factors.items, factors.user_factors[perm],
                       factors.item_factors, factors.method, factors.settings, factors.fit_on)
    shuffled.save(tmp_path / "f.safetensors")
    ds = _load_dataset(data_dir, load_config("tiny"))
    aligned = _load_factors_for(ds, tmp_path / "f.safetensors")
    assert aligned.users == ds.users and np.array_equal(aligned.user_factors, factors.user_factors)
    missing = Factors(shuffled.users[1:], factors.items, shuffled.user_factors[1:], factors.item_factors,
                      factors.method)
    missing.save(tmp_path / "g.safetensors")
    with pytest.raises(UnknownIdError):
        _load_factors_for(ds, tmp_path / "g.safetensors")


def test_select_by_metric_and_neighbors_design(data_dir, base_run, tmp_path):
    base, _ = base_run
    config = load_config("tiny", None, FAST + ["train.steps_per_epoch=3", "train.epochs=1", "train.select_by=metric",
                                               "model.user_prompt=neighbors"])
    result = train(config, data_dir, tmp_path / "run", progress=False, **_reuse(base))
    assert result.select_by == "metric" and 0.0 <= result.best_metric <= 1.0  # top-n valid NDCG@10
    valid = [r for r in R.read_log(tmp_path / "run") if r["event"] == "valid"]
    assert valid[-1]["metric"] == result.best_metric
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model"]["user_prompt"] == "neighbors"


def test_validation_ndcg_matches_independent_ranking(base_run):
    """The selection metric equals rank_candidates + ndcg@10 of peapod.evaluation on the same model."""
    from accelerate import Accelerator

    from peapod.evaluation.decoding import pad_sequences, rank_candidates, score_candidates
    from peapod.evaluation.metrics import ndcg
    from peapod.training.samplers import build_validation
    from peapod.training.templates import parse_bare
    from peapod.training.trainer import validation_ndcg

    base, _ = base_run
    run = R.load_run(base)
    ds = run.load_dataset()
    topn = build_validation(ds, run.config.data, max_users=40)["topn"]
    collate = Collator(run.tokenizer, run.user_index)
    value = validation_ndcg(run.model, topn, collate, Accelerator(), batch_size=16)
    t = collate(topn, with_labels=False)
    cands = [parse_bare(s)[1] for s in topn.sources]
    ids = pad_sequences(run.tokenizer.encode_ids([c for row in cands for c in row]))
    with torch.no_grad():
        enc, mask = run.model.encode(**t)
        scores = score_candidates(run.model.backbone, enc, mask, ids.view(len(cands), 100, -1))
    expected = ndcg(rank_candidates(scores, cands), topn.targets, 10)
    assert value == pytest.approx(expected, abs=1e-9)
    # a 0 == 0 match would prove little: the model must tell candidates apart
    assert float(scores.std(dim=1).min()) > 0.0


# ------------------------------------------------------------------------------------------ pieces
def test_patience_resets_on_improvement():
    state: dict = {}
    values = [5.0, 4.0, 4.5, 4.6, 3.0, 3.1, 3.2, 3.3]
    improved = [update_selection(state, v, i, higher_is_better=False) for i, v in enumerate(values)]
    assert improved == [True, True, False, False, True, False, False, False]
    assert state["best_metric"] == 3.0 and state["best_step"] == 4
    assert state["patience_counter"] == 3  # 3 since the last improvement, not 5 in total
    state = {}
    assert [update_selection(state, v, i, higher_is_better=True) for i, v in enumerate([0.1, 0.3, 0.2])] == [
        True, True, False]


def test_collator_tensors_and_unknown_user(base_run):
    from peapod.model import PromptTokenizer

    base, _ = base_run
    tok = PromptTokenizer.load(base / R.TOKENIZER_DIR)
    index = {"1": 0, "2": 1}
    collate = Collator(tok, index, exp_target_len=4)
    batch = TextBatch("exp", ["2", "1"], ["user_2 item_5", "Write an explanation for user_1 about item_7"],
                      ["a very long sentence that surely has more than four tokens", "ok"])
    t = collate(batch)
    assert t["task_ids"].tolist() == [0, 0] and t["user_rows"].tolist() == [1, 0]
    assert t["input_ids"].shape == t["attention_mask"].shape == t["whole_word_ids"].shape
    assert t["labels"].shape[1] == 4 and (t["labels"][1] == -100).any()
    seq = collate(TextBatch("seq", ["1"], ["user_1 item_3"], ["12"]))
    assert seq["task_ids"].tolist() == [1]
    with pytest.raises(UnknownIdError, match="'9'"):
        user_rows(index, ["1", "9"])


def test_refuses_to_overwrite_and_checks_resume_config(data_dir, base_run, tmp_path):
    base, _ = base_run
    with pytest.raises(PeapodError, match="already holds a run"):
        train(load_config("tiny", None, FAST), data_dir, base, progress=False)
    with pytest.raises(PeapodError, match="nothing to resume"):
        train(load_config("tiny", None, FAST), data_dir, tmp_path / "empty", resume=True, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    changed = load_config("tiny", None, FAST + ["train.steps_per_epoch=6", "model.n_components=4"])
    with pytest.raises(ConfigError, match="model.n_components"):
        train(changed, data_dir, copy, resume=True, progress=False)


def test_cli_train_and_errors(data_dir, base_run, tmp_path, capsys):
    base, _ = base_run
    out = tmp_path / "cli"
    args = ["train", "--dataset", str(data_dir), "--preset", "tiny", "--out", str(out), "--max-steps", "2",
            "--embeddings", str(base / R.EMBEDDINGS_FILE), "--tokenizer", str(base / R.TOKENIZER_DIR),
            "--user-prompt", "none", "--no-task-prompt", "--no-progress"]
    for o in FAST:
        args += ["--set", o]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "final train loss" in printed and f"run saved to {out}" in printed
    saved = json.loads((out / R.CONFIG_FILE).read_text())
    assert saved["model"]["user_prompt"] == "none" and saved["model"]["task_prompt"] is False
    assert saved["train"]["max_steps"] == 2 and saved["model"]["tokenizer"] == str(base / R.TOKENIZER_DIR)
    assert cli_main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli_main(["train", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_tensorboard_flag(tmp_path):
    from peapod.training.trainer import _Log

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="tensorboard"):
            _Log(tmp_path, enabled=True, tensorboard=True)
    else:
        log = _Log(tmp_path, enabled=True, tensorboard=True)
        log.write({"event": "train", "step": 1, "task": "seq", "loss": 1.0, "lr": 0.1})
        log.close()
        assert (tmp_path / "tensorboard").is_dir()
    log = _Log(tmp_path, enabled=True, tensorboard=False)
    log.write({"event": "train", "step": 1, "task": "seq", "loss": 1.5, "lr": 0.1})
    log.write({"event": "train", "step": 5, "task": "seq", "loss": 1.0, "lr": 0.1})
    log.truncate_after(3)
    assert [r["step"] for r in R.read_log(tmp_path)] == [1]
