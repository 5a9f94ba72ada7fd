"""``peapod evaluate``: run the tasks on a trained run or a baseline, gather, score once, write results.

Multi-process (``accelerate launch``): every process builds the same full example list, takes its
contiguous shard (:func:`peapod.evaluation.tasks.shard_bounds`: each example exactly once, no
padding or repeats, unlike a DistributedSampler), decodes it, and the per-example records are
gathered to every rank with ``accelerate.utils.gather_object`` in rank order, which restores the
original order. The main process alone computes the metrics (once, over all users) and writes the
files. Baselines are cheap and run in the main process only.

Launch: on GPUs ``accelerate launch --num_processes N -m peapod evaluate ...``; on CPU
``torchrun --nproc_per_node N -m peapod evaluate ...`` (``accelerate launch --cpu`` starts several CPU
processes only through mpirun). Without a GPU the state is created with ``cpu=True`` so that a
torchrun launch becomes accelerate's MULTI_CPU (gloo) setup.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import TASKS, PeapodConfig
from ..data.dataset import Dataset
from ..errors import ConfigError
from . import tasks as T
from .metrics import deduplicate
from .results import PROTOCOLS, RANKERS, SPLITS, library_versions, run_label, utc_now, write_results

#: Users scored per chunk by a baseline (bounds the (users x items) score matrix).
BASELINE_CHUNK = 1024


@dataclass
class EvalOptions:
    """What to evaluate and how; ``None`` fields fall back to the run's ``config.eval``."""

    tasks: tuple[str, ...] = ("seq", "topn", "exp")
    split: str = "test"
    max_users: int | None = None
    protocol: str | None = None
    rankers: tuple[str, ...] = RANKERS
    batch_size: int | None = None
    num_beams: int | None = None
    top_k: int | None = None
    seed: int | None = None
    exclude_history: bool | None = None
    progress: bool = True
    command: Any = None  # what was run (argv and parsed arguments), recorded as is

    def check(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ConfigError(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
        if self.split not in SPLITS:
            raise ConfigError(f"unknown split {self.split!r}; choose test or valid")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; choose clean or reference")
        bad = [r for r in self.rankers if r not in RANKERS]
        if bad or not self.rankers:
            raise ConfigError(f"unknown ranker(s) {bad}; choose from {', '.join(RANKERS)}")
        for name in ("max_users", "batch_size", "num_beams", "top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")

    def decode_options(self, config: PeapodConfig) -> T.DecodeOptions:
        ev = config.eval
        return T.DecodeOptions(
            protocol=self.protocol or ev.protocol,
            num_beams=self.num_beams or ev.num_beams,
            top_k=self.top_k or ev.top_k,
            batch_size=self.batch_size or ev.batch_size,
            exclude_history=ev.exclude_history if self.exclude_history is None else self.exclude_history,
            max_history=config.data.max_history,
            seed=ev.seed if self.seed is None else self.seed,
            exp_num_beams=ev.exp_num_beams,
            exp_min_length=ev.exp_min_length,
            exp_max_new_tokens=ev.exp_max_new_tokens,
            exp_target_len=config.train.exp_target_len,
            progress=self.progress,
        )


# ---------------------------------------------------------------------------------------------- helpers
def _dataset_record(dataset: Dataset, path: str | Path, run_fingerprint: str | None = None) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "path": str(Path(path).resolve()),
        "fingerprint": dataset.fingerprint,
        "item_id_scheme": dataset.item_id_scheme,
        "scheme_seed": dataset.scheme_seed,
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "n_interactions": dataset.n_interactions,
        "notes": dict(dataset.notes),
        "fingerprint_matches_checkpoint": None if run_fingerprint is None else run_fingerprint == dataset.fingerprint,
    }


def _evaluation_record(opts: EvalOptions, dec: T.DecodeOptions, world_size: int, device: str,
                       rankers: Sequence[str]) -> dict[str, Any]:
    num_beams, n_return = dec.seq_beams()
    return {
        "split": opts.split,
        "protocol": dec.protocol,
        "tasks": list(opts.tasks),
        "rankers": list(rankers),
        "seeds": {
            "eval": dec.seed,
            "user_sample": [dec.seed, 17],
            "candidate_shuffle": [dec.seed, 23],
            "explanation_sample": [dec.seed, 29],
            "valid_negatives": dec.seed if opts.split == "valid" else None,
            "reference_fill_in": "[seed, task id, example index]" if dec.protocol == "reference" else None,
        },
        "max_users": opts.max_users,
        "num_beams": dec.num_beams,
        "seq_beams": {"num_beams": num_beams, "num_return_sequences": n_return},
        "top_k": dec.top_k,
        "exclude_history": dec.exclude_history,
        "max_history": dec.max_history,
        "batch_size": dec.batch_size,
        "world_size": world_size,
        "device": device,
        "exp": {"num_beams": dec.exp_beams(), "min_length": dec.exp_min_length,
                "max_new_tokens": dec.exp_max_new_tokens, "target_len": dec.exp_target_len},
        "constrained_decoding": dec.protocol == "clean",
        "deduplicated": dec.protocol == "clean",
    }


def _state():
    """accelerate's process state (device, rank, world size); CPU multi-process (gloo) when no GPU."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _gather(records: list[Any], world_size: int) -> list[Any]:
    if world_size == 1:
        return records
    from accelerate.utils import gather_object

    return gather_object(records)


def _repeated(examples: Sequence[T.TopNExample]) -> int:
    """Users whose candidate list repeats an item (P5's negative sampler can draw one twice)."""
    return sum(len(set(e.candidates)) < len(e.candidates) for e in examples)


def _skip(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


# ---------------------------------------------------------------------------------------------- model
def _history_share(recs: list[dict[str, Any]]) -> float:
    """Share of the recommended items that are already in the prompt history (copying diagnostic)."""
    total = inside = 0
    for r in recs:  # duplicates in "ranked" (reference protocol) count each time
        history = set(r.get("history", ()))
        total += len(r["ranked"])
        inside += sum(item in history for item in r["ranked"])
    return inside / total if total else 0.0


def evaluate_checkpoint(checkpoint: str | Path, dataset_dir: str | Path, out: str | Path,
                        options: EvalOptions | None = None) -> dict[str, Any] | None:
    """Evaluate a trained run folder on ``dataset_dir``; write results (main process) and return them.

    Returns None on the other processes of a multi-process launch.
    """
    from ..training.run import load_run

    opts = options or EvalOptions()
    opts.check()
    state = _state()
    world, rank = state.num_processes, state.process_index
    run = load_run(checkpoint, device=str(state.device))
    dataset = run.load_dataset(dataset_dir)
    dec = opts.decode_options(run.config)
    ctx = T.ModelContext(model=run.model, tokenizer=run.tokenizer, user_index=run.user_index, config=run.config,
                         device=state.device, items=list(dataset.items))
    dec.progress = opts.progress and state.is_main_process
    users = T.select_users(dataset, opts.max_users, dec.seed)
    metrics: dict[str, Any] = {}
    task_info: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []

    if "seq" in opts.tasks:
        examples = T.sequential_examples(dataset, users, opts.split, dec.max_history)
        t0 = time.perf_counter()
        recs = T.run_sequential(ctx, T.shard(examples, world, rank), dec)
        elapsed = _gather([time.perf_counter() - t0], world)
        recs = _gather(recs, world)
        metrics["seq"] = T.ranking_scores(recs, dec.protocol)
        task_info["seq"] = {"status": "ok", "n_users": len(recs), "time_s": max(elapsed),
                            "history_share_top_k": _history_share(recs)}
        predictions += recs

    if "topn" in opts.tasks:
        if opts.split == "test" and dataset.negatives is None:
            task_info["topn"] = _skip("the dataset has no negative_samples.txt (no fixed test candidates)")
        else:
            examples = T.topn_examples(dataset, users, opts.split, dec.seed, run.config.data.n_negatives)
            t0 = time.perf_counter()
            recs, timing = T.run_topn(ctx, T.shard(examples, world, rank), dec, opts.rankers)
            elapsed = _gather([time.perf_counter() - t0], world)
            timings = _gather([timing], world)
            recs = _gather(recs, world)  # rank order: [r0 beam, r0 exact, r1 beam, ...]; regroup by ranker
            recs = [x for r in opts.rankers for x in recs if x["ranker"] == r]
            metrics["topn"] = {r: T.ranking_scores([x for x in recs if x["ranker"] == r], dec.protocol)
                               for r in opts.rankers}
            task_info["topn"] = {
                "status": "ok", "n_users": len(examples), "n_candidates": len(examples[0].candidates),
                "users_with_repeated_candidates": _repeated(examples), "time_s": max(elapsed),
                "ranker_time_s": {k: max(t[k] for t in timings) for k in timings[0]},
                "ranker_time_note": "max over processes; 'encode' is shared by both rankers",
            }
            predictions += recs

    if "exp" in opts.tasks:
        examples = T.explanation_examples(dataset, opts.split, run.config.data.explanation_item_token,
                                          opts.max_users, dec.seed)
        if not examples:
            task_info["exp"] = _skip(f"the dataset has no explanation records for split "
                                     f"{T.EXP_SPLIT[opts.split]!r}")
        else:
            t0 = time.perf_counter()
            recs = T.run_explanation(ctx, T.shard(examples, world, rank), dec)
            elapsed = _gather([time.perf_counter() - t0], world)
            recs = _gather(recs, world)
            metrics["exp"] = T.text_scores(recs)
            task_info["exp"] = {"status": "ok", "n_examples": len(recs), "time_s": max(elapsed)}
            predictions += recs

    result = None
    if state.is_main_process:
        cfg = run.config
        result = {
            "label": None,
            "date": utc_now(),
            "command": opts.command,
            "model": {
                "type": "peapod", "name": "peapod", "variant": cfg.model.user_prompt,
                "task_prompt": cfg.model.task_prompt, "backbone": cfg.model.backbone,
                "checkpoint": str(Path(checkpoint).resolve()), "config": cfg.to_dict(),
                "trained_on": {k: run.dataset.get(k) for k in ("source", "name", "fingerprint", "item_id_scheme")},
            },
            "dataset": _dataset_record(dataset, dataset_dir, run.dataset.get("fingerprint")),
            "evaluation": _evaluation_record(opts, dec, world, str(state.device),
                                             opts.rankers if "topn" in opts.tasks else []),
            "metrics": metrics,
            "tasks": task_info,
            "environment": library_versions(),
        }
        result["label"] = run_label(result)
        write_results(out, result, predictions)
    state.wait_for_everyone()
    return result


# ---------------------------------------------------------------------------------------------- baselines
def _chunked_scores(baseline: Any, users: Sequence[str], histories: Sequence[Sequence[str]]):
    for s in range(0, len(users), BASELINE_CHUNK):
        yield s, baseline.score(users[s:s + BASELINE_CHUNK], histories[s:s + BASELINE_CHUNK])


def baseline_sequential(baseline: Any, dataset: Dataset, examples: Sequence[T.SeqExample], split: str,
                        top_k: int, exclude_history: bool) -> list[dict[str, Any]]:
    """Full ranking over all items (the prompt-history items removed when ``exclude_history``); top ``top_k``.

    A baseline with its own history length (SASRec's ``max_len``) reads ``Dataset.history`` at that length.
    """
    from ..baselines import history_mask, top_k_items

    users = [e.user for e in examples]
    max_len = baseline.settings.get("max_len")
    inputs = [e.history for e in examples] if max_len is None else \
        [dataset.history(u, split, int(max_len))[0] for u in users]
    names = np.asarray(dataset.items, dtype=object)
    records = []
    for s, scores in _chunked_scores(baseline, users, inputs):
        chunk = examples[s:s + len(scores)]
        mask = history_mask(dataset, [e.history for e in chunk]) if exclude_history else None
        top = names[top_k_items(scores, top_k, mask)]
        for e, ranked in zip(chunk, top.tolist()):
            records.append({"user": e.user, "task": "seq", "history": e.history, "target": e.target, "ranked": ranked})
    return records


def baseline_topn(baseline: Any, dataset: Dataset, examples: Sequence[T.TopNExample], top_k: int,
                  histories: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """The same shuffled 100 candidates as the model, ranked by the baseline's scores."""
    from ..baselines import rank_candidates

    index = dataset.item_index
    names = np.asarray(dataset.items, dtype=object)
    users = [e.user for e in examples]
    records = []
    for s, scores in _chunked_scores(baseline, users, histories):
        chunk = examples[s:s + len(scores)]
        cand = np.array([[index[c] for c in e.candidates] for e in chunk], dtype=np.int64)
        ranked = names[rank_candidates(scores, cand)].tolist()
        for e, r in zip(chunk, ranked):
            r = deduplicate(r)  # P5's negatives can repeat an item (a few users per dataset)
            records.append({"user": e.user, "task": "topn", "ranker": "score", "candidates": e.candidates,
                            "target": e.target, "ranked": r[:top_k], "target_rank": r.index(e.target) + 1})
    return records


def evaluate_baseline(name: str, dataset_dir: str | Path, out: str | Path, options: EvalOptions | None = None,
                      config: PeapodConfig | None = None, item_id_scheme: str | None = None,
                      sasrec: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Fit baseline ``name`` on the training interactions and evaluate it like a checkpoint."""
    from ..baselines import BASELINES, fit_baseline
    from ..data.loader import load_dataset

    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    opts = options or EvalOptions()
    opts.check()
    state = _state()
    if not state.is_main_process:  # baselines are cheap: one process does all
        state.wait_for_everyone()
        return None
    config = config or PeapodConfig()
    scheme = item_id_scheme or config.data.item_id_scheme
    dataset = load_dataset(dataset_dir, item_id_scheme=scheme, scheme_seed=config.data.scheme_seed,
                           drop_explanation_leaks=config.data.drop_explanation_leaks, require_negatives=False)
    dec = opts.decode_options(config)
    # A baseline ranks scores: under the reference protocol only the metric formulas change.
    t_fit = time.perf_counter()
    baseline = fit_baseline(name, dataset, embedding=config.embedding, seed=dec.seed, sasrec=sasrec,
                            verbose=False)
    fit_s = time.perf_counter() - t_fit
    users = T.select_users(dataset, opts.max_users, dec.seed)
    metrics: dict[str, Any] = {}
    task_info: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    seq_examples = T.sequential_examples(dataset, users, opts.split, dec.max_history)

    if "seq" in opts.tasks:
        t0 = time.perf_counter()
        recs = baseline_sequential(baseline, dataset, seq_examples, opts.split, dec.top_k, dec.exclude_history)
        metrics["seq"] = T.ranking_scores(recs, dec.protocol)
        ranking = "full ranking over all items" + (" minus the history" if dec.exclude_history else "")
        task_info["seq"] = {"status": "ok", "n_users": len(recs), "time_s": time.perf_counter() - t0,
                            "ranking": ranking, "history_share_top_k": _history_share(recs)}
        predictions += recs
    if "topn" in opts.tasks:
        if opts.split == "test" and dataset.negatives is None:
            task_info["topn"] = _skip("the dataset has no negative_samples.txt (no fixed test candidates)")
        else:
            t0 = time.perf_counter()
            examples = T.topn_examples(dataset, users, opts.split, dec.seed, config.data.n_negatives)
            max_len = int(baseline.settings.get("max_len", dec.max_history))
            hist = [dataset.history(u, opts.split, max_len)[0] for u in users]
            recs = baseline_topn(baseline, dataset, examples, dec.top_k, hist)
            metrics["topn"] = {"score": T.ranking_scores(recs, dec.protocol)}
            task_info["topn"] = {"status": "ok", "n_users": len(recs), "n_candidates": len(examples[0].candidates),
                                 "users_with_repeated_candidates": _repeated(examples),
                                 "time_s": time.perf_counter() - t0}
            predictions += recs
    if "exp" in opts.tasks:
        task_info["exp"] = _skip(f"baseline {name!r} does not generate text")

    embedding = asdict(config.embedding) if name not in ("popularity", "sasrec") else None
    result = {
        "label": None,
        "date": utc_now(),
        "command": opts.command,
        "model": {"type": "baseline", "name": name, "variant": baseline.name, "task_prompt": None,
                  "checkpoint": None, "config": {"settings": _jsonable(baseline.settings), "embedding": embedding},
                  "fit_time_s": fit_s},
        "dataset": _dataset_record(dataset, dataset_dir),
        "evaluation": _evaluation_record(opts, dec, 1, str(baseline.settings.get("device", "cpu")),
                                         ["score"] if "topn" in opts.tasks else []),
        "metrics": metrics,
        "tasks": task_info,
        "environment": library_versions(),
    }
    result["label"] = run_label(result)
    write_results(out, result, predictions)
    state.wait_for_everyone()
    return result


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)

