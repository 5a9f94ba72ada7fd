"""Speed and memory benchmark of PeaPOD: training, evaluation and the neighbour index, in one report.

    python benchmarks/speed.py                                   # all parts, presets tiny and t5-small
    python benchmarks/speed.py --parts train --presets tiny t5-small --steps 4 --threads 2
    python benchmarks/speed.py --parts eval --eval-users 200 [--eval-preset tiny|t5-small]
                               [--eval-dataset /work/shared/data/beauty] [--checkpoint RUN_DIR]
    python benchmarks/speed.py --parts neighbors [--neighbors-dataset sports] [--neighbors-dim 512]
    python benchmarks/speed.py ... --out DIR                     # default: benchmarks/results/speed

Parts (each optional, ``--parts``):

- ``train``: samples/s per task and for the task-alternated mix, peak memory, and the share of a step
  spent building prompt text (samplers), in collation and in the soft-prompt modules, for each
  ``--presets`` entry (``benchmarks/training_speed.py``'s ``measure``, on its synthetic data).
- ``eval``: trains a run (``--eval-preset``, ``--train-steps`` steps; synthetic 300 users x 200 items
  unless ``--eval-dataset``) or takes ``--checkpoint RUN_DIR``, then evaluates it once on the same
  ``--eval-users`` test users: sequential beam search, and top-n with both rankers (candidate-restricted
  beam search and exact scoring), giving users/s for each beside its HR@10 / NDCG@10 so the rankers'
  speeds are read at their reported hit rates. A top-n ranker's users/s counts the encoder pass, which
  both rankers share. With ``--eval-preset t5-small`` the run is trained for 1 step only: an untrained
  model of that shape, fine for timing, not for the hit rates (the report says so).
- ``neighbors``: ``benchmarks/neighbors.py --json`` (each approach in its own subprocess for an honest
  peak RSS): build time and peak memory of the chunked top-k index against the full users x users cosine
  matrix that the reference keeps, and their ratios. Default: sports (35,598 users), dim 512; the
  reference needs ~5 GiB there.

Writes DIR/speed.json, DIR/speed.md (also printed) and DIR/speed.png. Peak memory is the process RSS on
CPU and ``torch.cuda.max_memory_allocated`` on CUDA. A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # benchmarks/ is not a package: import training_speed from beside this file

import torch  # noqa: E402

from peapod.io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402

PARTS = ("train", "eval", "neighbors")


# ---------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
    }


# ---------------------------------------------------------------------------------------------- train
def train_part(args: argparse.Namespace) -> dict:
    import training_speed

    return training_speed.measure(None, tuple(args.presets), args.steps, threads=args.threads)


# ---------------------------------------------------------------------------------------------- eval
def make_run(preset: str, data_dir: Path, run_dir: Path, steps: int) -> Path:
    """Train a short run of ``preset`` on ``data_dir`` into ``run_dir``."""
    from peapod.config import load_config
    from peapod.training.trainer import train

    config = load_config(preset, overrides=[f"train.max_steps={steps}", "train.epochs=1000"])
    train(config, data_dir, run_dir, progress=False)
    return run_dir


def _users_per_s(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def eval_figures(results: dict) -> dict:
    """users/s and HR@10 / NDCG@10 per decoder from an evaluate_checkpoint result."""
    seq, topn = results["tasks"]["seq"], results["tasks"]["topn"]
    metrics = results["metrics"]
    out = {"seq": {"n_users": seq["n_users"], "seconds": seq["time_s"],
                   "users_per_s": _users_per_s(seq["n_users"], seq["time_s"]),
                   "hr@10": metrics["seq"]["hr@10"], "ndcg@10": metrics["seq"]["ndcg@10"]}}
    if topn.get("status") == "ok":
        t = topn["ranker_time_s"]
        for ranker in ("beam", "exact"):
            seconds = t["encode"] + t[ranker]
            out[f"topn_{ranker}"] = {
                "n_users": topn["n_users"], "seconds": seconds, "ranker_only_seconds": t[ranker],
                "encode_seconds": t["encode"], "users_per_s": _users_per_s(topn["n_users"], seconds),
                "hr@10": metrics["topn"][ranker]["hr@10"], "ndcg@10": metrics["topn"][ranker]["ndcg@10"],
            }
        out["n_candidates"] = topn["n_candidates"]
    else:
        out["topn_skipped"] = topn.get("reason")
    return out


def eval_part(args: argparse.Namespace) -> dict:
    from peapod.data.synthetic import write_synthetic
    from peapod.evaluation.runner import EvalOptions, evaluate_checkpoint
    from peapod.training.run import load_run

    torch.set_num_threads(args.threads)
    steps = 1 if args.eval_preset == "t5-small" else args.train_steps
    with tempfile.TemporaryDirectory(prefix="peapod-speed-") as tmp:
        tmp = Path(tmp)
        train_s = None
        if args.checkpoint is not None:
            run_dir = args.checkpoint
            data_dir = args.eval_dataset or Path(load_run(run_dir, device="cpu").dataset["source"])
            source = f"checkpoint {run_dir}"
        else:
            data_dir = args.eval_dataset or write_synthetic(tmp / "data", n_users=300, n_items=200, seed=0)
            t0 = time.perf_counter()
            run_dir = make_run(args.eval_preset, data_dir, tmp / "run", steps)
            train_s = time.perf_counter() - t0
            source = f"{args.eval_preset} trained {steps} step(s)" + (" (untrained: timing only)" if steps == 1 else "")
        options = dict(tasks=("seq", "topn"), split="test", progress=False)
        # warm-up on a few users (one-off costs), then the timed evaluation
        evaluate_checkpoint(run_dir, data_dir, tmp / "warmup" / "results.json",
                            EvalOptions(max_users=min(8, args.eval_users), **options))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        results = evaluate_checkpoint(run_dir, data_dir, tmp / "eval" / "results.json",
                                      EvalOptions(max_users=args.eval_users, **options))
    ev = results["evaluation"]
    out = {
        "run": source,
        "preset": None if args.checkpoint else args.eval_preset,
        "train_steps": None if args.checkpoint else steps,
        "train_seconds": train_s,
        "untrained": args.checkpoint is None and steps == 1,
        "dataset": str(args.eval_dataset) if args.eval_dataset else (
            "synthetic (300 users, 200 items)" if args.checkpoint is None else str(data_dir)),
        "users_requested": args.eval_users,
        "split": ev["split"], "protocol": ev["protocol"], "num_beams": ev["num_beams"], "top_k": ev["top_k"],
        "batch_size": ev["batch_size"], "device": ev["device"], "threads": args.threads,
        "decoders": eval_figures(results),
    }
    if torch.cuda.is_available():
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ---------------------------------------------------------------------------------------------- neighbors
def neighbors_part(args: argparse.Namespace) -> dict:
    """benchmarks/neighbors.py in a subprocess (it starts one child per approach); its --json figures."""
    with tempfile.TemporaryDirectory(prefix="peapod-speed-nb-") as tmp:
        out = Path(tmp) / "neighbors.json"
        cmd = [sys.executable, str(HERE / "neighbors.py"), "--dataset", args.neighbors_dataset,
               "--dim", str(args.neighbors_dim), "--threads", str(args.threads), "--json", str(out)]
        if args.neighbors_data is not None:
            cmd += ["--data", str(args.neighbors_data)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout, end="", file=sys.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks/neighbors.py failed ({done.returncode}):\n{done.stderr}")
        return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------- report
def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _pct(x: float) -> str:
    return f"{x:.1%}"


def train_markdown(t: dict) -> list[str]:
    lines = [f"## Training ({t['dataset']['path']}, {t['steps']} timed steps per task after 1 warm-up, "
             f"{t['threads']} threads, {t['device']})", ""]
    rows = []
    for r in t["presets"]:
        mem = r["memory"]
        peak = (f"{mem['cuda_max_allocated_mib']:.0f} MiB (CUDA)" if "cuda_max_allocated_mib" in mem
                else f"{mem['peak_rss_mib']:.0f} MiB (RSS)")
        for task, d in r["per_task"].items():
            rows.append([r["preset"], task, f"{d['samples_per_s']:.1f}", f"{d['seconds_per_step']:.3f}",
                         _pct(d["share_text"]), _pct(d["share_collate"]), _pct(d["share_prompt_modules"]), ""])
        o = r["overall"]
        rows.append([r["preset"], "**mix**", f"**{o['samples_per_s']:.1f}**", "", _pct(o["share_text"]),
                     _pct(o["share_collate"]), _pct(o["share_prompt_modules"]), peak])
    lines += _table(["preset", "task", "samples/s", "s/step", "prompt text", "collation", "prompt modules",
                     "peak memory"], rows)
    true_peak = t.get("max_rss_mib_process")
    lines += ["", "Shares are of the whole step (text + collation + forward/backward/optimizer). The table's RSS "
              "is sampled between steps, the process's so far (presets run in order); it misses the peak "
              "inside a step" + (f": the process's true peak (getrusage ru_maxrss) was {true_peak:,.0f} MiB, "
                                 f"reached by the last preset. " if true_peak else ". ")
              + "; ".join(f"{r['preset']}: {r['parameters'] / 1e6:.2f} M parameters, batch {r['batch_size']}"
                          for r in t["presets"]) + "."]
    return lines


def eval_markdown(e: dict) -> list[str]:
    lines = [f"## Evaluation ({e['run']}, {e['dataset']}, {e['split']} split, {e['protocol']} protocol, "
             f"{e['num_beams']} beams, batch {e['batch_size']}, {e['threads']} threads, {e['device']})", ""]
    if e["train_seconds"] is not None:
        lines += [f"Training the run took {e['train_seconds']:.0f} s (not part of the timings below).", ""]
    if e["untrained"]:
        lines += ["**Untrained model** (1 training step): the timings hold for this model shape; the hit rates "
                  "mean nothing.", ""]
    names = {"seq": "sequential (beam search)", "topn_beam": "top-n, candidate-restricted beams",
             "topn_exact": "top-n, exact scoring"}
    rows = []
    for key, name in names.items():
        d = e["decoders"].get(key)
        if d:
            rows.append([name, d["n_users"], f"{d['seconds']:.2f}", f"**{d['users_per_s']:.1f}**",
                         f"{d['hr@10']:.4f}", f"{d['ndcg@10']:.4f}"])
    lines += _table(["decoder", "users", "seconds", "users/s", "HR@10", "NDCG@10"], rows)
    dec = e["decoders"]
    if "topn_beam" in dec:
        b, x = dec["topn_beam"], dec["topn_exact"]
        lines += ["", f"Top-n: {dec['n_candidates']} candidates per user; the shared encoder pass "
                  f"({b['encode_seconds']:.2f} s) is counted in both rankers (ranker alone: beams "
                  f"{b['ranker_only_seconds']:.2f} s, exact {x['ranker_only_seconds']:.2f} s). Exact scoring is "
                  f"{x['users_per_s'] / b['users_per_s']:.2f}x the beam ranker's users/s at HR@10 "
                  f"{x['hr@10']:.4f} vs {b['hr@10']:.4f}."]
    elif "topn_skipped" in dec:
        lines += ["", f"Top-n skipped: {dec['topn_skipped']}"]
    if "cuda_max_allocated_mib" in e:
        lines += ["", f"Peak CUDA memory during the timed evaluation: {e['cuda_max_allocated_mib']:.0f} MiB."]
    return lines


def neighbors_markdown(n: dict) -> list[str]:
    lines = [f"## Neighbour index ({n['dataset']}: {n['users']:,} users, dim {n['dim']}, k {n['k']}, "
             f"chunk {n['chunk_size']}, {n['factors']} factors, {n['threads']} threads, CPU)", ""]
    names = {"chunked": "ours: chunked top-k", "reference": "reference: full U x U cosine matrix"}
    rows = []
    for key, name in names.items():
        r = n["results"][key]
        rows.append([name, f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}", f"{r['peak_rss_gib']:.2f}",
                     f"{r['peak_rss_gib'] - r['baseline_rss_gib']:.2f}", f"{r['kept_bytes'] / 2**20:,.1f}"])
    lines += _table(["approach", "build s (wall)", "CPU s", "peak RSS GiB", "above baseline GiB", "kept MiB"], rows)
    lines += [""] + _table(["ratio (reference / ours)", "value"], [
        ["kept memory", f"{n['ratio_kept']}x"],
        ["kept memory, indices only (U*U*4 / U*k*8)", f"{n['ratio_kept_indices_only']}x"],
        ["peak RSS above baseline", f"{n['ratio_peak_above_baseline']}x"],
        ["build time (wall)", f"{n['ratio_time']}x"],
        ["build time (CPU)", f"{n['ratio_cpu_time']}x"],
    ])
    lines += ["", "Each approach ran in its own process (benchmarks/neighbors.py); the baseline is that "
              "process's RSS just before the build."]
    return lines


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# PeaPOD speed and memory", "",
             *_table(["", ""], [["CPU", m["cpu"]], ["cores", f"{m['cores']} ({m['cores_available']} available)"],
                                ["threads", m["threads"]], ["torch", m["torch"]], ["python", m["python"]],
                                ["device", m["device"] + (f" (CUDA {m['cuda']})" if m["cuda"] else "")],
                                ["date", report["date"]], ["command", f"`{report['command']}`"]]), ""]
    sections = {"train": train_markdown, "eval": eval_markdown, "neighbors": neighbors_markdown}
    for part, render in sections.items():
        if part in report["parts"]:
            lines += render(report["parts"][part]) + [""]
    return "\n".join(lines)


def plot(report: dict) -> bytes | None:
    """Bar charts: training samples/s per task per preset; evaluation users/s per decoder."""
    panels = [p for p in ("train", "eval") if p in report["parts"]]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, part in zip(axes[0], panels):
        if part == "train":
            presets = report["parts"]["train"]["presets"]
            tasks = list(presets[0]["per_task"]) + ["mix"]
            width = 0.8 / len(presets)
            for i, r in enumerate(presets):
                values = [r["per_task"].get(t, {}).get("samples_per_s", 0.0) for t in tasks[:-1]]
                values.append(r["overall"]["samples_per_s"])
                ax.bar([j + i * width for j in range(len(tasks))], values, width, label=r["preset"])
            ax.set_xticks([j + width * (len(presets) - 1) / 2 for j in range(len(tasks))], tasks)
            ax.set_ylabel("training samples/s")
            ax.set_title("Training throughput per task")
            ax.legend()
        else:
            dec = report["parts"]["eval"]["decoders"]
            keys = [k for k in ("seq", "topn_beam", "topn_exact") if k in dec]
            bars = ax.bar(keys, [dec[k]["users_per_s"] for k in keys], color=["C2", "C0", "C1"][:len(keys)])
            ax.bar_label(bars, [f"HR@10 {dec[k]['hr@10']:.3f}" for k in keys], fontsize=8)
            ax.set_ylabel("users/s")
            ax.margins(y=0.12)
            ax.set_title(f"Evaluation ({report['parts']['eval']['run']})", fontsize=9)
    fig.suptitle(f"{report['machine']['device']}, {report['machine']['threads']} threads", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--presets", nargs="+", default=["tiny", "t5-small"], help="training presets")
    p.add_argument("--steps", type=int, default=4, help="timed training steps per task and preset")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=HERE / "results" / "speed", help="folder for speed.json/.md/.png")
    p.add_argument("--eval-preset", choices=("tiny", "t5-small"), default="tiny")
    p.add_argument("--eval-users", type=int, default=200, help="test users evaluated (the same for all decoders)")
    p.add_argument("--eval-dataset", type=Path, default=None, help="P5-layout folder (default: synthetic)")
    p.add_argument("--checkpoint", type=Path, default=None, help="evaluate this run folder instead of training one")
    p.add_argument("--train-steps", type=int, default=200, help="training steps of the tiny evaluation run")
    p.add_argument("--neighbors-dataset", default="sports")
    p.add_argument("--neighbors-dim", type=int, default=512)
    p.add_argument("--neighbors-data", type=Path, default=None, help="folder of datasets (neighbors.py's default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {
        "kind": "peapod-speed",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["python", "benchmarks/speed.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(args.threads),
        "parts": {},
    }
    runners = {"train": train_part, "eval": eval_part, "neighbors": neighbors_part}
    for part in PARTS:
        if part in args.parts:
            t0 = time.perf_counter()
            print(f"speed: {part} ...", file=sys.stderr, flush=True)
            report["parts"][part] = runners[part](args)
            print(f"speed: {part} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    text = markdown(report)
    atomic_write_json(args.out / "speed.json", report)
    atomic_write_text(args.out / "speed.md", text)
    png = plot(report)
    if png is not None:
        atomic_write_bytes(args.out / "speed.png", png)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
