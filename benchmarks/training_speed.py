"""Training throughput per task of the real training step, and where a step's time goes.

    python benchmarks/training_speed.py [--dataset DIR] [--presets tiny t5-small] [--steps 4]
                                        [--tokenizer NAME|DIR|FILE] [--threads 2] [--json OUT]

For each preset: ``--steps`` timed optimizer steps per task (after one untimed warm-up step) with the
trainer's own samplers, collator and :func:`peapod.training.trainer.training_step`, giving

- samples/s per task and overall (the task-alternated mix: one batch of each task);
- the share of step time spent building prompt text (samplers), in collation (tokenizer -> tensors) and
  in the soft-prompt modules' forward (task + user prompt, timed with forward hooks);
- collation throughput of 100-candidate top-n prompts alone against the model's top-n training throughput;
- peak memory: process RSS (psutil, sampled after every step) on CPU, ``torch.cuda.max_memory_allocated``
  on GPU.

Without ``--dataset`` a synthetic P5 dataset (peapod.data.synthetic) is generated in a temporary folder.
User embeddings are random (the embedding fit is not what is measured). Prints figures only; never part
of the test suite. ``measure()`` is what benchmarks/speed.py calls.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import torch

from peapod.config import load_config
from peapod.data.loader import load_dataset
from peapod.model import PromptTokenizer
from peapod.training.collate import Collator
from peapod.training.samplers import build_train_samplers
from peapod.training.trainer import _build_model, tokenizer_corpus, training_step


class _Accel:
    """The two accelerate calls training_step makes, for a single process without accelerate's state."""

    def __init__(self, device: torch.device):
        self.device = device

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params, max_norm: float):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


class _HookTimer:
    """Wall time spent inside the forward of some modules (synchronised on GPU)."""

    def __init__(self, modules, device: torch.device):
        self.total = 0.0
        self.device = device
        self._start = 0.0
        for m in modules:
            if m is not None:
                m.register_forward_pre_hook(self._pre)
                m.register_forward_hook(self._post)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _pre(self, *_):
        self._sync()
        self._start = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._start


def bench_preset(preset: str, dataset, tokenizer: PromptTokenizer, steps: int, device: torch.device,
                 batch_size: int | None) -> dict:
    config = load_config(preset)
    if batch_size is not None:
        config = config.override([f"train.batch_size={batch_size}"])
    tc = config.train
    rng = np.random.default_rng(0)
    users = torch.from_numpy(rng.normal(size=(dataset.n_users, config.embedding.dim)).astype(np.float32))
    k = min(config.embedding.n_neighbors, dataset.n_users - 1)
    neighbors = torch.from_numpy(np.stack([rng.choice(dataset.n_users, k, replace=False) for _ in range(dataset.n_users)]))
    torch.manual_seed(0)
    model = _build_model(config, tokenizer.vocab_size, users, neighbors, dataset.users).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.learning_rate,
                                  weight_decay=tc.weight_decay)
    accel = _Accel(device)
    prompt_timer = _HookTimer([model.task_prompt, model.user_prompt], device)
    samplers = build_train_samplers(dataset, config.data, tc.seed)
    collator = Collator(tokenizer, dataset.user_index, tc.exp_target_len)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    proc = psutil.Process()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak_rss = proc.memory_info().rss

    per_task: dict[str, dict] = {}
    for task, sampler in samplers.items():
        times = defaultdict(float)
        tokens = 0
        prompt_timer.total = 0.0
        for i in range(steps + 1):
            t0 = time.perf_counter()
            batch = sampler.draw(tc.batch_size)
            t1 = time.perf_counter()
            tensors = {k_: v.to(device) for k_, v in collator(batch).items()}
            t2 = time.perf_counter()
            with autocast:
                loss = training_step(model, optimizer, None, tensors, accel, tc.max_grad_norm)
            float(loss)  # waits for the device
            t3 = time.perf_counter()
            peak_rss = max(peak_rss, proc.memory_info().rss)
            if i == 0:
                prompt_timer.total = 0.0  # the warm-up step is not counted
                continue
            times["text"] += t1 - t0
            times["collate"] += t2 - t1
            times["step"] += t3 - t2
            tokens += int(tensors["attention_mask"].sum())
        prompt_s = prompt_timer.total
        total = times["text"] + times["collate"] + times["step"]
        per_task[task] = {
            "samples_per_s": steps * tc.batch_size / total,
            "seconds_per_step": total / steps,
            "source_tokens_per_sample": tokens / (steps * tc.batch_size),
            "share_text": times["text"] / total,
            "share_collate": times["collate"] / total,
            "share_prompt_modules": prompt_s / total,
            "prompt_modules_s": prompt_s,
        }
    mix_seconds = sum(d["seconds_per_step"] for d in per_task.values())
    overall = {
        "samples_per_s": len(per_task) * tc.batch_size / mix_seconds,
        "share_collate": sum(d["share_collate"] * d["seconds_per_step"] for d in per_task.values()) / mix_seconds,
        "share_text": sum(d["share_text"] * d["seconds_per_step"] for d in per_task.values()) / mix_seconds,
        "share_prompt_modules": sum(d["prompt_modules_s"] for d in per_task.values()) / (mix_seconds * steps),
    }

    # top-n collation alone: 100-candidate prompts tokenised and turned into tensors
    topn = {}
    if "topn" in samplers:
        batches = [samplers["topn"].draw(tc.batch_size) for _ in range(max(steps, 5))]
        t0 = time.perf_counter()
        for b in batches:
            collator(b)
        collate_rate = len(batches) * tc.batch_size / (time.perf_counter() - t0)
        topn = {
            "collate_samples_per_s": collate_rate,
            "train_samples_per_s": per_task["topn"]["samples_per_s"],
            "collate_over_train": collate_rate / per_task["topn"]["samples_per_s"],
        }
    memory = {"peak_rss_mib": peak_rss / 2**20}
    if device.type == "cuda":
        memory["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return {
        "preset": preset,
        "batch_size": tc.batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "user_prompt": config.model.user_prompt,
        "per_task": {t: {k_: v for k_, v in d.items() if k_ != "prompt_modules_s"} for t, d in per_task.items()},
        "overall": overall,
        "topn_collation": topn,
        "memory": memory,
    }


def load_data(dataset_dir: Path | None, tmp: str | Path):
    """The benchmark's dataset: ``dataset_dir``, or a synthetic one written under ``tmp``; and its description."""
    if dataset_dir is None:
        from peapod.data.synthetic import write_synthetic

        dataset_dir = write_synthetic(Path(tmp) / "synthetic", n_users=2000, n_items=1500, seed=0)
        label = "synthetic (2000 users, 1500 items)"
    else:
        label = str(dataset_dir)
    return load_dataset(dataset_dir, require_negatives=False), label


def measure(dataset_dir: Path | None = None, presets=("tiny", "t5-small"), steps: int = 4,
            tokenizer_spec: str | None = None, batch_size: int | None = None, threads: int = 2,
            on_preset=None) -> dict:
    """Benchmark every preset on one dataset and tokenizer; return the figures (``on_preset(r)`` after each)."""
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="peapod-bench-") as tmp:
        dataset, label = load_data(dataset_dir, tmp)
        t0 = time.perf_counter()
        if tokenizer_spec:
            tokenizer = PromptTokenizer.from_spec(tokenizer_spec)
        else:
            config = load_config(presets[0])
            tokenizer = PromptTokenizer.train(tokenizer_corpus(dataset, config), config.model.tokenizer_vocab_size)
        tokenizer_s = time.perf_counter() - t0
        results = {
            "device": str(device),
            "threads": threads,
            "steps": steps,
            "dataset": {"path": label, "users": dataset.n_users, "items": dataset.n_items,
                        "explanations_train": len(dataset.explanations.get("train", []))},
            "tokenizer": {"source": tokenizer.source, "vocab_size": tokenizer.vocab_size, "seconds": tokenizer_s},
            "presets": [],
        }
        for preset in presets:
            r = bench_preset(preset, dataset, tokenizer, steps, device, batch_size)
            results["presets"].append(r)
            if on_preset is not None:
                on_preset(r)
        results["max_rss_mib_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def print_preset(r: dict, threads: int, device: str) -> None:
    print(f"\n== {r['preset']}: {r['parameters'] / 1e6:.2f} M parameters, batch {r['batch_size']}, "
          f"{threads} threads, {device}")
    print(f"{'task':6} {'samples/s':>10} {'s/step':>8} {'tokens':>7} {'text':>6} {'collate':>8} {'prompts':>8}")
    for task, d in r["per_task"].items():
        print(f"{task:6} {d['samples_per_s']:10.1f} {d['seconds_per_step']:8.3f} "
              f"{d['source_tokens_per_sample']:7.0f} {d['share_text']:6.1%} {d['share_collate']:8.1%} "
              f"{d['share_prompt_modules']:8.1%}")
    o = r["overall"]
    print(f"{'mix':6} {o['samples_per_s']:10.1f} {'':8} {'':7} {o['share_text']:6.1%} "
          f"{o['share_collate']:8.1%} {o['share_prompt_modules']:8.1%}")
    if r["topn_collation"]:
        c = r["topn_collation"]
        print(f"top-n collation {c['collate_samples_per_s']:.0f} samples/s vs training "
              f"{c['train_samples_per_s']:.1f} samples/s ({c['collate_over_train']:.0f}x)")
    print("memory: " + ", ".join(f"{k} {v:.0f}" for k, v in r["memory"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=None, help="P5-layout folder (default: synthetic)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer spec (default: train one on the data)")
    parser.add_argument("--presets", nargs="+", default=["tiny", "t5-small"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per task and preset")
    parser.add_argument("--batch-size", type=int, default=None, help="override the presets' batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures here")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = measure(args.dataset, args.presets, args.steps, args.tokenizer, args.batch_size, args.threads,
                      on_preset=lambda r: print_preset(r, args.threads, device))
    if args.json:
        from peapod.io import atomic_write_json

        atomic_write_json(args.json, results)
        print(f"\nwritten to {args.json}", file=sys.stderr)
    else:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
