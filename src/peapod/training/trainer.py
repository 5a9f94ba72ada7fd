"""Task-alternated multi-task training with accelerate: validation, selection, early stopping, resume.

What one run does (reference-protocol.md section 7, with the fixes of section 10 noted):

1. Load the dataset; write ``config.json`` and ``dataset.json`` into the run folder.
2. User embeddings: the given factors file, or factors fit with ``config.embedding`` on
   ``dataset.train_sequences()`` only (never the validation / test items); rows are put in the
   dataset's user order, saved with the top-k neighbour index. Skipped when ``model.user_prompt`` is
   "none" and no file is given.
3. Tokenizer: the given spec, or a BPE tokenizer trained on the dataset's prompts and explanation
   sentences (``model.tokenizer_vocab_size``).
4. Model: ``build_backbone`` + ``PeaPOD``; AdamW; a linear warmup then a constant rate (the reference
   has a constant rate); gradient clipping; bf16 autocast on GPU when ``mixed_precision`` is "auto".
5. Steps: one task per batch, explanation -> sequential -> top-n; one "epoch" is
   ``steps_per_epoch`` batches (the reference formula), not a pass over any data set.
6. After every epoch: teacher-forced validation losses of the three tasks (per-sample means),
   selection by their mean (reference) or, with ``select_by=metric``, by the top-n validation
   NDCG@10 of exact candidate scoring; best model saved to ``model/``, early stopping whose patience counter is
   reset by an improvement (the reference never resets it), and a resume checkpoint.

Several processes (``accelerate launch``): every process draws its own batches (its samplers are
seeded with the process index), so one optimizer step sees ``batch_size x processes`` samples;
gradients are averaged by DDP; validation samples are sharded across processes and the loss sums
are reduced. ``batch_size`` is per process.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import PeapodConfig
from ..data.dataset import Dataset
from ..errors import ConfigError, PeapodError
from ..io import atomic_write_json, atomic_write_text
from . import run as R
from .checkpoint import atomic_dir, find_checkpoint, load_checkpoint, save_checkpoint
from .collate import Collator, split_batches
from .samplers import (
    MultiTaskSampler,
    TextBatch,
    build_train_samplers,
    build_validation,
    steps_per_epoch,
)
from .templates import ITEM_SEP, TEMPLATES, explanation_item_token

#: Batches drawn at once per task when ``train.bucket_by_length`` is on.
BUCKET_BATCHES = 8
#: Process-index offset of the torch / numpy / random seeds of the training loop.
PROCESS_SEED_STRIDE = 1_000_003
#: Sections of the configuration a resumed run must share with the saved one.
FROZEN_SECTIONS = ("data", "embedding", "model")


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    out_dir: Path
    steps: int  # global optimizer steps done (this and earlier invocations)
    epochs: int  # completed epochs
    steps_per_epoch: int
    best_metric: float | None  # of the saved model: mean valid loss (select_by=loss) or top-n valid NDCG@10
    best_step: int | None
    stopped_early: bool
    select_by: str
    valid_losses: dict[str, float] = field(default_factory=dict)  # latest validation, per task
    train_losses: dict[str, float] = field(default_factory=dict)  # mean per task over the last epoch
    step_losses: list[tuple[int, str, float]] = field(default_factory=list)  # (step, task, loss), this call
    param_checksum: str = ""  # parameter_checksum of the final weights (equal on every process)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        out.pop("step_losses")
        return out


# ------------------------------------------------------------------------------------------- helpers
def _mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


def _make_accelerator(config: PeapodConfig):
    """The Accelerator; on a machine without CUDA, several launched processes form a gloo CPU group.

    (``accelerate launch --multi_gpu --num_processes N`` or ``torchrun --nproc_per_node N`` start them;
    accelerate only treats them as one distributed CPU job when told ``cpu=True``.)
    """
    import os

    from accelerate import Accelerator

    from accelerate.utils import DistributedDataParallelKwargs

    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # The buffers (user embeddings, neighbour index) are constant and identical on every process:
    # broadcasting them at every forward would move U x D floats per step for nothing.
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
    try:
        return Accelerator(mixed_precision=_mixed_precision(config.train.mixed_precision), cpu=cpu,
                           kwargs_handlers=[ddp])
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"train.mixed_precision={config.train.mixed_precision!r}: {exc}") from None


def _seed_everything(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


def tokenizer_corpus(dataset: Dataset, config: PeapodConfig, max_users: int = 20_000,
                     max_explanations: int = 100_000) -> list[str]:
    """Texts a default tokenizer is trained on: templated prompts of training data and explanation sentences.

    Only training data goes in (sequences ``items[:-2]`` and explanation ``train``), plus every item id
    once, so that every id can be spelled; seeded by ``train.seed``.
    """
    rng = np.random.default_rng([config.train.seed, 7])
    users = dataset.users
    if len(users) > max_users:
        users = [users[i] for i in np.sort(rng.choice(len(users), max_users, replace=False)).tolist()]
    h = config.data.max_history
    texts: list[str] = []
    seq_t, topn_t = TEMPLATES["seq"], TEMPLATES["topn"]
    for u, t in zip(users, rng.integers(0, len(seq_t), size=len(users)).tolist()):
        hist = dataset.train_items(u)[-h:]
        if hist:
            texts.append(seq_t[t].format(u, ITEM_SEP.join(hist)))
    items = np.asarray(dataset.items, dtype=object)
    n_topn = min(len(users), 2_000)
    k = min(100, len(items))
    for u, t in zip(users[:n_topn], rng.integers(0, len(topn_t), size=n_topn).tolist()):
        texts.append(topn_t[t].format(u, ITEM_SEP.join(items[rng.choice(len(items), k, replace=False)])))
    for start in range(0, len(items), 100):
        texts.append("item_" + ITEM_SEP.join(items[start:start + 100]))
    records = dataset.explanations.get("train", [])[:max_explanations]
    exp_t = TEMPLATES["exp"]
    raw = dataset.item_raw or {}
    mode = config.data.explanation_item_token
    for r, t in zip(records, rng.integers(0, len(exp_t), size=len(records)).tolist()):
        texts.append(exp_t[t].format(r.user, explanation_item_token(r.item, r.item_raw or raw.get(r.item), mode)))
        texts.append(r.explanation)
    return texts


class _Log:
    """The run's ``log.jsonl`` (append + flush per record) and optional TensorBoard, on the main process."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.path = run_dir / R.LOG_FILE
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "train.tensorboard is true but the 'tensorboard' package is not installed "
                    "(pip install tensorboard), or set train.tensorboard=false"
                ) from None
            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.tb is not None:
            step = record.get("step", 0)
            if record.get("event") == "train":
                self.tb.add_scalar(f"train/loss_{record['task']}", record["loss"], step)
                self.tb.add_scalar("train/lr", record["lr"], step)
            elif record.get("event") == "valid":
                for task, value in record["losses"].items():
                    self.tb.add_scalar(f"valid/loss_{task}", value, step)
                self.tb.add_scalar("valid/mean", record["mean"], step)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (left by a run that crashed after its last checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in R.read_log(self.path.parent) if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@torch.no_grad()
def validate(model: torch.nn.Module, valid: Mapping[str, TextBatch], collator: Collator, accelerator: Any,
             batch_size: int) -> dict[str, float]:
    """Teacher-forced validation loss per task: mean over samples of each sample's mean token loss.

    Samples are sharded across processes; the sums are reduced, so every process gets the same numbers.
    """
    from ..model import sequence_loss

    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    out: dict[str, float] = {}
    for task, batch in valid.items():
        shard = batch.take(range(rank, len(batch), world))
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for chunk in split_batches(shard, batch_size, bucket_by_length=True):
            tensors = {k: v.to(accelerator.device) for k, v in collator(chunk).items()}
            with accelerator.autocast():
                output = model(**tensors)
            losses = sequence_loss(output.logits, tensors["labels"], reduction="none")
            total[0] += losses.double().sum()
            total[1] += losses.numel()
        total = accelerator.reduce(total, reduction="sum")
        if total[1] > 0:
            out[task] = float(total[0] / total[1])
    model.train(was_training)
    return out


@torch.no_grad()
def validation_ndcg(model: torch.nn.Module, topn: TextBatch, collator: Collator, accelerator: Any,
                    batch_size: int, k: int = 10, chunk_size: int = 50) -> float:
    """Top-n validation NDCG@k: every candidate scored exactly (teacher-forced log-likelihood), target ranked.

    The selection metric of ``train.select_by=metric`` (peapod.evaluation.decoding.score_candidates);
    a tie with the target counts against it. Sharded across processes and reduced.
    """
    from ..evaluation.decoding import pad_sequences, score_candidates
    from .templates import parse_bare

    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    shard = topn.take(range(rank, len(topn), world))
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    tokenizer = collator.tokenizer
    for chunk in split_batches(shard, batch_size):
        tensors = {k_: v.to(accelerator.device) for k_, v in collator(chunk, with_labels=False).items()}
        candidates = [parse_bare(s)[1] for s in chunk.sources]
        ids = pad_sequences(tokenizer.encode_ids([c for row in candidates for c in row], add_eos=True))
        ids = ids.view(len(chunk), -1, ids.shape[-1])
        with accelerator.autocast():
            encoded, mask = model.encode(**tensors)
            scores = score_candidates(model.backbone, encoded, mask, ids, chunk_size=chunk_size).float()
        target_col = torch.tensor([row.index(t) for row, t in zip(candidates, chunk.targets)], device=scores.device)
        target_score = scores.gather(1, target_col[:, None])
        better = (scores > target_score).sum(dim=1) + ((scores == target_score).sum(dim=1) - 1)
        ranks = better + 1
        gains = torch.where(ranks <= k, 1.0 / torch.log2(ranks.double() + 1.0), torch.zeros_like(ranks, dtype=torch.float64))
        total[0] += gains.sum()
        total[1] += len(chunk)
    total = accelerator.reduce(total, reduction="sum")
    model.train(was_training)
    return float(total[0] / total[1]) if total[1] > 0 else 0.0


def training_step(model: torch.nn.Module, optimizer: Any, scheduler: Any, tensors: Mapping[str, torch.Tensor],
                  accelerator: Any, max_grad_norm: float | None) -> torch.Tensor:
    """One optimizer step on a collated batch (already on the device); returns the (graph-free) loss."""
    loss = model(**tensors).loss
    accelerator.backward(loss)
    if max_grad_norm is not None and max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def update_selection(state: dict[str, Any], value: float, step: int, higher_is_better: bool,
                     count_patience: bool = True) -> bool:
    """Record a validation value in ``state``; True when it improves on the best so far.

    An improvement resets the patience counter (the reference never resets it, reference-protocol.md
    10.10); a non-improvement increments it when ``count_patience``.
    """
    best = state.get("best_metric")
    improved = best is None or (value > best if higher_is_better else value < best)
    if improved:
        state["best_metric"], state["best_step"] = value, step
        state["patience_counter"] = 0
    elif count_patience:
        state["patience_counter"] = state.get("patience_counter", 0) + 1
    return improved


def parameter_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in state-dict order: equal on processes that are in sync."""
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- setup
def _check_resume_config(saved: PeapodConfig, new: PeapodConfig, run_dir: Path) -> None:
    a, b = saved.to_dict(), new.to_dict()
    diffs = [
        f"{section}.{key}: {a[section][key]!r} -> {b[section][key]!r}"
        for section in FROZEN_SECTIONS
        for key in a[section]
        if a[section][key] != b[section][key]
    ]
    if diffs:
        raise ConfigError(
            f"{run_dir / R.CONFIG_FILE}: --resume with a different data/embedding/model configuration "
            f"({'; '.join(diffs[:5])}); only train.* may change on resume"
        )


def _load_factors_for(dataset: Dataset, path: Path):
    from ..embeddings.factors import Factors

    factors = Factors.load(path)
    if factors.fit_on != "train":
        warnings.warn(
            f"{path}: user factors were fit on {factors.fit_on!r}, not on training interactions only: "
            "held-out items may leak into the user prompts (reference-protocol.md 10.3)",
            stacklevel=3,
        )
    rows = factors.user_rows(dataset.users)  # UnknownIdError names users the factors lack
    return Factors(
        users=dataset.users,
        items=factors.items,
        user_factors=factors.user_factors[rows],
        item_factors=factors.item_factors,
        method=factors.method,
        settings=factors.settings,
        fit_on=factors.fit_on,
        item_bias=factors.item_bias,
    )


def _prepare_embeddings(dataset: Dataset, config: PeapodConfig, run_dir: Path, embeddings_path: Path | None,
                        verbose: bool) -> None:
    """Main process: write the run's factors (rows in dataset user order) and neighbour index."""
    from ..embeddings import build_neighbor_index, fit_factors

    if embeddings_path is not None:
        factors = _load_factors_for(dataset, embeddings_path)
    elif config.model.user_prompt == "none":
        return
    else:
        if verbose:
            print(f"peapod: fitting {config.embedding.method} user embeddings (dim {config.embedding.dim}) "
                  "on training interactions", file=sys.stderr)
        factors = fit_factors(dataset.train_sequences(), dataset.items, config.embedding)
        if factors.users != dataset.users:
            factors = _reorder(factors, dataset)
    factors.save(run_dir / R.EMBEDDINGS_FILE)
    k = min(config.embedding.n_neighbors, dataset.n_users - 1)
    index = build_neighbor_index(
        factors.user_factors, k, chunk_size=config.embedding.neighbor_chunk_size, users=dataset.users
    )
    index.save(run_dir / R.NEIGHBORS_FILE)


def _reorder(factors: Any, dataset: Dataset) -> Any:
    from ..embeddings.factors import Factors

    rows = factors.user_rows(dataset.users)
    return Factors(dataset.users, factors.items, factors.user_factors[rows], factors.item_factors,
                   factors.method, factors.settings, factors.fit_on, factors.item_bias)


def _load_user_inputs(run_dir: Path, dataset: Dataset) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The run's user-embedding matrix and neighbour index as tensors (rows = dataset user order)."""
    from ..embeddings.factors import Factors
    from ..embeddings.neighbors import NeighborIndex

    path = run_dir / R.EMBEDDINGS_FILE
    if not path.is_file():
        return None, None
    factors = Factors.load(path)
    if factors.users != dataset.users:
        raise PeapodError(f"{path}: user rows are not in the dataset's user order")
    index = NeighborIndex.load(run_dir / R.NEIGHBORS_FILE)
    return torch.from_numpy(factors.user_factors.copy()), torch.from_numpy(np.asarray(index.indices).copy())


def _prepare_tokenizer(dataset: Dataset, config: PeapodConfig, run_dir: Path, verbose: bool) -> None:
    from ..model import PromptTokenizer

    spec = config.model.tokenizer
    if spec:
        tok = PromptTokenizer.from_spec(spec, max_whole_words=config.model.max_whole_words)
    else:
        if verbose:
            print(f"peapod: training a {config.model.tokenizer_vocab_size}-token tokenizer on the dataset",
                  file=sys.stderr)
        tok = PromptTokenizer.train(
            tokenizer_corpus(dataset, config), config.model.tokenizer_vocab_size,
            max_whole_words=config.model.max_whole_words,
        )
    tok.save(run_dir / R.TOKENIZER_DIR)


def _build_model(config: PeapodConfig, vocab_size: int, user_embeddings, neighbor_index, users: list[str]):
    from ..model import PeaPOD, build_backbone

    backbone = build_backbone(config.model.backbone, vocab_size, config.model.pretrained, config.model.dropout)
    neighbors = neighbor_index if config.model.user_prompt == "neighbors" else None
    user_ids = users if user_embeddings is not None or config.model.user_prompt == "none" else None
    return PeaPOD(config.model, backbone, user_embeddings, neighbors, user_ids=user_ids)


def _load_dataset(dataset_dir: str | Path, config: PeapodConfig) -> Dataset:
    from ..data.loader import load_dataset

    return load_dataset(
        dataset_dir,
        item_id_scheme=config.data.item_id_scheme,
        scheme_seed=config.data.scheme_seed,
        drop_explanation_leaks=config.data.drop_explanation_leaks,
        require_negatives=False,
    )


# ------------------------------------------------------------------------------------------- train
def train(
    config: PeapodConfig,
    dataset_dir: str | Path,
    out_dir: str | Path,
    embeddings_path: str | Path | None = None,
    tokenizer_spec: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train PeaPOD on the dataset in ``dataset_dir`` into the run folder ``out_dir`` (see peapod.training.run).

    ``tokenizer_spec`` overrides ``config.model.tokenizer``. With ``resume``, the run continues from
    ``out_dir/checkpoints/last`` and reproduces the losses an uninterrupted run would have had.
    """
    start_time = time.perf_counter()
    run_dir = Path(out_dir)
    if tokenizer_spec is not None:
        config = config.override([f"model.tokenizer={json.dumps(str(tokenizer_spec))}"])
    checkpoint = find_checkpoint(run_dir / R.CHECKPOINTS_DIR) if resume else None
    if resume and checkpoint is None:
        raise PeapodError(f"{run_dir}: nothing to resume (no {R.CHECKPOINTS_DIR}/last checkpoint)")
    if checkpoint is not None:
        _check_resume_config(R.read_config(run_dir), config, run_dir)
    elif (run_dir / R.CONFIG_FILE).exists():
        raise PeapodError(
            f"{run_dir}: already holds a run; pass --resume to continue it, or choose another --out "
            "(or delete this one)"
        )
    tc = config.train
    accelerator = _make_accelerator(config)
    is_main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    verbose = progress and is_main

    dataset = _load_dataset(dataset_dir, config)
    if checkpoint is not None:
        info = R.read_json(run_dir / R.DATASET_FILE)
        if info["fingerprint"] != dataset.fingerprint:
            raise PeapodError(
                f"{dataset_dir}: dataset fingerprint {dataset.fingerprint} differs from the run's "
                f"{info['fingerprint']} ({run_dir / R.DATASET_FILE}): cannot resume on other data"
            )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / R.CONFIG_FILE, config.to_dict())  # on resume: the new train section
        if checkpoint is None:
            R.write_dataset_info(run_dir, R.dataset_info(dataset, dataset_dir, config))
            _prepare_embeddings(dataset, config, run_dir, Path(embeddings_path) if embeddings_path else None, verbose)
            _prepare_tokenizer(dataset, config, run_dir, verbose)
    accelerator.wait_for_everyone()

    from ..model import PromptTokenizer

    tokenizer = PromptTokenizer.load(run_dir / R.TOKENIZER_DIR)
    user_embeddings, neighbor_index = _load_user_inputs(run_dir, dataset)
    _seed_everything(tc.seed)  # identical initial weights on every process
    model = _build_model(config, tokenizer.vocab_size, user_embeddings, neighbor_index, dataset.users)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    warmup = max(0, int(tc.warmup_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0
    )
    # The scheduler is stepped by hand: accelerate's wrapper would step it once per process.
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    samplers = build_train_samplers(dataset, config.data, tc.seed, process_index=rank)
    multi = MultiTaskSampler(samplers, tc.batch_size, BUCKET_BATCHES if tc.bucket_by_length else 1,
                             task_weights=tc.task_weights)
    valid = build_validation(dataset, config.data, tc.valid_max_users)
    by_metric = tc.select_by == "metric"
    if by_metric and "topn" not in valid:
        raise ConfigError("train.select_by=metric needs top-n validation samples (users with 3+ items)")
    collator = Collator(tokenizer, dataset.user_index, tc.exp_target_len)
    n_exp = len(dataset.explanations.get("train", []))
    spe = steps_per_epoch(n_exp, dataset.n_users, tc.batch_size, tc.steps_per_epoch)
    total_steps = tc.epochs * spe if tc.max_steps is None else min(tc.max_steps, tc.epochs * spe)

    state: dict[str, Any] = {
        "step": 0, "epoch": 0, "best_metric": None, "best_step": None, "patience_counter": 0,
        "stopped_early": False, "last_valid_step": None, "valid_history": [], "processes": world,
    }
    _seed_everything(tc.seed + PROCESS_SEED_STRIDE * rank)  # dropout stream of this process
    log = _Log(run_dir, is_main, tc.tensorboard)
    if checkpoint is not None:
        saved, sampler_state = load_checkpoint(
            checkpoint, model=unwrapped, optimizer=optimizer, scheduler=scheduler,
            process_index=rank,
        )
        if sampler_state is not None:
            multi.load_state_dict(sampler_state)
        saved_world = int(saved.get("processes", world))
        if saved_world != world and is_main:
            warnings.warn(
                f"{checkpoint}: saved by {saved_world} process(es), resumed on {world}: weights and optimizer "
                "continue, but the batches differ from those of an uninterrupted run", stacklevel=2,
            )
        state.update(saved)
        state["processes"] = world
        log.truncate_after(state["step"])
        if verbose:
            print(f"peapod: resuming {run_dir} at step {state['step']}", file=sys.stderr)
        log.write({"event": "resume", "step": state["step"], "processes": world})
    else:
        log.write({"event": "start", "step": 0, "steps_per_epoch": spe, "total_steps": total_steps,
                   "processes": world, "batch_size_per_process": tc.batch_size,
                   "tasks": list(multi.schedule.order), "mixed_precision": accelerator.mixed_precision,
                   "parameters": sum(p.numel() for p in unwrapped.parameters()),
                   "validation_samples": {t: len(b) for t, b in valid.items()}})

    def save_ckpt() -> None:
        save_checkpoint(
            run_dir / R.CHECKPOINTS_DIR, model=unwrapped, optimizer=optimizer, scheduler=scheduler,
            state=state, sampler_state=multi.state_dict(), process_index=rank, is_main=is_main,
            barrier=accelerator.wait_for_everyone,
        )

    def run_validation(count_patience: bool) -> dict[str, float]:
        # the unwrapped module: a DDP forward may hold collectives, and shards can differ in batches
        losses = validate(unwrapped, valid, collator, accelerator, tc.batch_size)
        mean = float(np.mean(list(losses.values()))) if losses else math.inf
        if by_metric:
            metric = validation_ndcg(unwrapped, valid["topn"], collator, accelerator, tc.batch_size)
        else:
            metric = mean
        improved = update_selection(state, metric, state["step"], by_metric, count_patience)
        if improved:
            if is_main:
                with atomic_dir(run_dir / R.MODEL_DIR) as tmp:
                    unwrapped.save(tmp)
            accelerator.wait_for_everyone()
        state["last_valid_step"] = state["step"]
        record = {"event": "valid", "step": state["step"], "epoch": state["epoch"], "losses": losses,
                  "mean": mean, "select_by": tc.select_by, "metric": metric, "best": improved,
                  "best_metric": state["best_metric"], "patience_counter": state["patience_counter"]}
        state["valid_history"].append({k: record[k] for k in ("step", "epoch", "losses", "mean", "metric")})
        log.write(record)
        if verbose:
            shown = " ".join(f"{t}={v:.4f}" for t, v in losses.items())
            extra = f" ndcg@10={metric:.4f}" if by_metric else ""
            print(f"peapod: step {state['step']} valid {shown} mean={mean:.4f}{extra}{' (best)' if improved else ''}",
                  file=sys.stderr)
        return losses

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=state["step"], disable=not verbose, desc="train", dynamic_ncols=True)
    step_losses: list[tuple[int, str, float]] = []
    window: dict[str, list[float]] = defaultdict(list)
    epoch_losses: dict[str, list[float]] = defaultdict(list)
    last_valid: dict[str, float] = {}
    window_start = time.perf_counter()
    model.train()
    while state["step"] < total_steps and not state["stopped_early"]:
        task = multi.schedule.task_at(state["step"])
        batch = multi.next_batch(state["step"])
        tensors = {k: v.to(accelerator.device) for k, v in collator(batch).items()}
        loss = training_step(model, optimizer, scheduler, tensors, accelerator, tc.max_grad_norm)
        state["step"] += 1
        value = float(accelerator.reduce(loss.detach().float(), reduction="mean"))
        if not math.isfinite(value):
            raise PeapodError(f"training loss is {value} at step {state['step']} ({task}); lower the learning rate")
        step_losses.append((state["step"], task, value))
        window[task].append(value)
        epoch_losses[task].append(value)
        bar.update(1)
        if verbose:
            bar.set_postfix({t: f"{np.mean(v):.3f}" for t, v in window.items()}, refresh=False)

        if state["step"] % max(1, tc.log_every_steps) == 0 or state["step"] == total_steps:
            elapsed = time.perf_counter() - window_start
            n_steps = sum(len(v) for v in window.values())
            for t, values in window.items():
                log.write({"event": "train", "step": state["step"], "epoch": state["epoch"], "task": t,
                           "loss": float(np.mean(values)), "steps": len(values),
                           "lr": float(scheduler.get_last_lr()[0]),
                           "samples_per_s": n_steps * tc.batch_size * world / max(elapsed, 1e-9)})
            window.clear()
            window_start = time.perf_counter()

        if state["step"] % spe == 0:  # end of an epoch
            state["epoch"] += 1
            last_valid = run_validation(count_patience=True)
            if state["patience_counter"] >= tc.patience:
                state["stopped_early"] = True
                log.write({"event": "early_stop", "step": state["step"], "epoch": state["epoch"]})
            train_means = {t: float(np.mean(v)) for t, v in epoch_losses.items()}
            log.write({"event": "epoch", "step": state["step"], "epoch": state["epoch"], "train": train_means})
            epoch_losses.clear()
            save_ckpt()
        elif tc.save_every_steps and state["step"] % tc.save_every_steps == 0:
            save_ckpt()
    bar.close()

    if state["last_valid_step"] != state["step"] and state["step"] > 0:
        # stopped inside an epoch (max_steps): validate so the run has a selected model
        last_valid = run_validation(count_patience=False)
        save_ckpt()
    elif not last_valid and state["valid_history"]:
        last_valid = state["valid_history"][-1]["losses"]

    recent: dict[str, list[float]] = defaultdict(list)  # the last epoch's worth of steps of this call
    for _, t, x in step_losses[-spe:]:
        recent[t].append(x)
    train_means = {t: float(np.mean(v)) for t, v in recent.items()}
    result = TrainResult(
        out_dir=run_dir, steps=state["step"], epochs=state["epoch"], steps_per_epoch=spe,
        best_metric=state["best_metric"], best_step=state["best_step"], stopped_early=state["stopped_early"],
        select_by=tc.select_by, valid_losses=last_valid, train_losses=train_means, step_losses=step_losses,
        seconds=time.perf_counter() - start_time,
    )
    checksum = parameter_checksum(unwrapped)
    if world > 1:
        from accelerate.utils import gather_object

        checksums = gather_object([checksum])
        log.write({"event": "sync_check", "step": state["step"], "checksums": checksums})
        if len(set(checksums)) != 1:
            raise PeapodError(f"processes ended with different weights ({checksums}): training went out of sync")
    result.param_checksum = checksum
    log.write({"event": "end", "step": state["step"], "epoch": state["epoch"], "best_metric": state["best_metric"],
               "best_step": state["best_step"], "stopped_early": state["stopped_early"]})
    log.close()
    if is_main:
        atomic_write_json(run_dir / R.RESULT_FILE, result.to_dict())
    accelerator.wait_for_everyone()
    return result
