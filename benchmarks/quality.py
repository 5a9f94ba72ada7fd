"""Quality benchmark: PeaPOD variants against POD and the classic baselines, side by side, same protocol.

    # CPU scale (2 cores, about an hour with the defaults): a seeded user subset of Beauty, the tiny preset
    python benchmarks/quality.py --scale cpu --out runs/quality-cpu

    # paper scale (a GPU): every user, configs/paper-<dataset>.yaml (t5-small shape, 30 epochs), official vocab
    python benchmarks/quality.py --scale paper --datasets beauty --seeds 1 --out runs/quality-paper

Each cell is one `peapod train` + `peapod evaluate` (or `peapod evaluate --baseline`) subprocess with the
same dataset folder, item-id scheme, candidates and evaluation seed, so the numbers compare like with like:

- **variants** (`--variants`): `components` (paper text), `neighbors` (public code), `none` (POD),
  `x` (PeaPOD-X: components without the task prompt);
- **baselines** (`--baselines`): popularity, MF (PMF as the paper), BPR, SASRec (cornac);
- **item-id schemes** (`--schemes`): `original` P5 ids (the successor leak: a test item is often the largest
  history id + 1) and `random` (a seeded leak-free re-indexing); the gap between them is reported;
- **seeds** (`--seeds`): the training seed and the user-embedding seed of every learned model; the table
  gives mean +- sample standard deviation over seeds and the seed count;
- **explanation** (`--exp`): no real explanation data is available, so the explanation task is measured
  on the synthetic default (peapod.data.synthetic) with the same variants.

Sequential and top-n metrics are on the test split, clean protocol (constrained beams, deduplicated, exact
top-n ranking reported beside candidate-restricted beams), `--eval-users` seeded users. Finished cells are
kept (their results.json) and skipped on a re-run, so an interrupted benchmark resumes. Outputs under
`--out`: one folder per cell, `quality.json` (every figure and what produced it), `quality.md` (tables with
the paper's Tables 2-3 beside), `quality.png` (bar chart). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from peapod.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PEAPOD = [sys.executable, "-m", "peapod"]

VARIANTS = {  # name -> (label, peapod train options)
    "components": ("PeaPOD (components)", ["--user-prompt", "components"]),
    "neighbors": ("PeaPOD (neighbors)", ["--user-prompt", "neighbors"]),
    "none": ("POD (no user prompt)", ["--user-prompt", "none"]),
    "x": ("PeaPOD-X (no task prompt)", ["--user-prompt", "components", "--no-task-prompt"]),
}
BASELINES = {"popularity": "Popularity", "pmf": "MF (PMF)", "bpr": "BPR", "sasrec": "SASRec"}
SEEDED_BASELINES = {"pmf", "bpr", "sasrec"}

#: The paper's Tables 2-3 (and 5-6 for PeaPOD-X), as printed: dataset -> task -> row -> metrics.
_SEQ = ("hr@5", "ndcg@5", "hr@10", "ndcg@10")
_TOPN = ("hr@1", "hr@5", "ndcg@5", "hr@10", "ndcg@10")
_PAPER_ROWS = {  # row: (sports, beauty, toys)
    "seq": {"SASRec": ((0.0233, 0.0154, 0.0350, 0.0192), (0.0387, 0.0249, 0.0605, 0.0318), (0.0463, 0.0306, 0.0675, 0.0374)),
            "POD": ((0.0496, 0.0396, 0.0576, 0.0419), (0.0537, 0.0395, 0.0688, 0.0443), (0.0691, 0.0599, 0.0742, 0.0610)),
            "PeaPOD": ((0.0505, 0.0400, 0.0611, 0.0432), (0.0588, 0.0445, 0.0738, 0.0493), (0.0692, 0.0583, 0.0787, 0.0609)),
            "PeaPOD-X": ((0.0480, 0.0381, 0.0581, 0.0412), (0.0565, 0.0402, 0.0732, 0.0456), (0.0705, 0.0557, 0.0835, 0.0594))},
    "topn": {"MF": ((0.0314, 0.1404, 0.0848, 0.2563, 0.1220), (0.0311, 0.1426, 0.0857, 0.2573, 0.1224), (0.0233, 0.1066, 0.0641, 0.2003, 0.0940)),
             "POD": ((0.0895, 0.2086, 0.1506, 0.2873, 0.1756), (0.0829, 0.1926, 0.1391, 0.2670, 0.1629), (0.0567, 0.1433, 0.1009, 0.2082, 0.1215)),
             "PeaPOD": ((0.1212, 0.2741, 0.2007, 0.3616, 0.2286), (0.1097, 0.2441, 0.1780, 0.3260, 0.2039), (0.0728, 0.1618, 0.1190, 0.2315, 0.1411)),
             "PeaPOD-X": ((0.1232, 0.2744, 0.2017, 0.3662, 0.2309), (0.1130, 0.2480, 0.1820, 0.3304, 0.2079), (0.0790, 0.1795, 0.1308, 0.2513, 0.1536))},
}
PAPER = {
    dataset: {task: {row: dict(zip(_SEQ if task == "seq" else _TOPN, values[i])) for row, values in rows.items()}
              for task, rows in _PAPER_ROWS.items()}
    for i, dataset in enumerate(("sports", "beauty", "toys"))
}
PAPER_SOURCE = ("the paper's Tables 2-3 and 5-6, as printed: pretrained t5-small (here: random init), all users "
                "(here: the subset, if any), 30 epochs (here: --steps), original P5 ids, the reference's decoding "
                "(here: the clean protocol)")

# scale -> defaults; the CPU scale is sized for ~1 h on 2 cores (see docs/benchmarks.md). Its budget is the
# step count: early stopping is off (patience 1000), because over 200 validation users the tiny model's
# top-n NDCG is noisy enough that patience 5 stopped Beauty runs after a few epochs on an epoch-1 checkpoint.
SCALES = {
    "cpu": dict(preset="tiny", users=1000, eval_users=200, steps=1000, seeds=[1, 2, 3], datasets=["beauty"],
                schemes=["original", "random"], variants=["components", "none"], exp_steps=600,
                extra=["--set", "train.valid_max_users=200", "--set", "train.patience=1000"]),
    "paper": dict(preset=None, users=None, eval_users=None, steps=None, seeds=[1], datasets=["beauty"],
                  schemes=["original", "random"], variants=list(VARIANTS), exp_steps=None, extra=[]),
}


@dataclass
class Cell:
    """One trained-and-evaluated (or baseline) result."""

    dataset: str
    scheme: str
    model: str  # variant or baseline name
    seed: int | None
    folder: Path
    commands: list[list[str]] = field(default_factory=list)

    @property
    def results_path(self) -> Path:
        return self.folder / "results.json"


def make_subset(source: Path, target: Path, n_users: int | None, seed: int) -> Path:
    """A seeded subset of ``n_users`` users of a P5 dataset folder (all of it when None), written once.

    Keeps the users' sequence and negative lines verbatim and the full item catalogue (datamaps), so
    sequential recommendation still ranks every item.
    """
    if n_users is None:
        return source
    done = target / "subset.json"
    if done.is_file():
        return target
    lines = (source / "sequential_data.txt").read_text().splitlines()
    negatives = (source / "negative_samples.txt").read_text().splitlines()
    if len(negatives) != len(lines):
        raise SystemExit(f"{source}: {len(lines)} sequence lines but {len(negatives)} negative lines")
    if n_users > len(lines):
        raise SystemExit(f"{source} has {len(lines)} users; --users {n_users} is too many")
    keep = sorted(random.Random(seed).sample(range(len(lines)), n_users))
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / "sequential_data.txt", "".join(lines[i] + "\n" for i in keep))
    atomic_write_text(target / "negative_samples.txt", "".join(negatives[i] + "\n" for i in keep))
    shutil.copyfile(source / "datamaps.json", target / "datamaps.json")
    atomic_write_json(done, {"source": str(source), "users": n_users, "seed": seed, "line_numbers": [i + 1 for i in keep]})
    return target


def _run(cmd: list[str], log: Path, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}), see {log}: {' '.join(cmd)}")


def run_cell(cell: Cell, data_dir: Path, args: argparse.Namespace, scale: dict, tasks: str) -> Cell:
    """Train + evaluate one variant, or fit + evaluate one baseline; skipped when its results exist."""
    if cell.results_path.is_file():
        return cell
    log = cell.folder / "log.txt"
    if not args.dry_run:
        cell.folder.mkdir(parents=True, exist_ok=True)
    common_eval = ["--dataset", str(data_dir), "--out", str(cell.results_path), "--tasks", tasks, "--split", "test",
                   "--no-progress"]
    if scale["eval_users"]:
        common_eval += ["--max-users", str(scale["eval_users"])]
    config = _config_args(cell.dataset, scale)
    if cell.model in VARIANTS:
        run_dir = cell.folder / "run"
        train = [*PEAPOD, "train", "--dataset", str(data_dir), "--out", str(run_dir), *config, *VARIANTS[cell.model][1],
                 "--item-id-scheme", cell.scheme, "--set", f"train.seed={cell.seed}",
                 "--set", f"embedding.seed={2021 + cell.seed}", "--no-progress", *scale["extra"]]
        steps = scale["exp_steps"] if cell.dataset == "synthetic" else scale["steps"]
        if steps:
            train += ["--max-steps", str(steps), "--epochs", "1000"]
        if args.tokenizer and cell.dataset != "synthetic":
            train += ["--tokenizer", str(args.tokenizer)]
        if (run_dir / "checkpoints").is_dir():
            train.append("--resume")
        cell.commands = [train, [*PEAPOD, "evaluate", "--checkpoint", str(run_dir), *common_eval]]
    else:
        base = [*PEAPOD, "evaluate", "--baseline", cell.model, *common_eval, "--item-id-scheme", cell.scheme, *config]
        if cell.seed is not None:
            base += ["--set", f"embedding.seed={2021 + cell.seed}", "--seed", "2022"]
            if cell.model == "sasrec":
                base += ["--sasrec", f"seed={cell.seed}"]
        cell.commands = [base]
    if args.dry_run:
        for cmd in cell.commands:
            print(("peapod " + " ".join(cmd[3:])) if cmd[:3] == PEAPOD else " ".join(cmd))
        return cell
    started = time.perf_counter()
    for cmd in cell.commands:
        _run(cmd, log, args.threads)
    (cell.folder / "seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    return cell


def _config_args(dataset: str, scale: dict) -> list[str]:
    if scale["preset"]:
        return ["--preset", scale["preset"]]
    name = "tiny" if dataset == "synthetic" else f"paper-{dataset}"
    return ["--preset", name]


def plan(args: argparse.Namespace, scale: dict, out: Path) -> list[tuple[Cell, Path, str]]:
    """Every cell to run: (cell, dataset folder, tasks)."""
    cells = []
    for dataset in args.datasets:
        data_dir = make_subset(args.data / dataset, out / "data" / f"{dataset}-{args.users}u-seed{args.subset_seed}",
                               args.users, args.subset_seed) if args.users else args.data / dataset
        for scheme in args.schemes:
            for model in args.variants:
                for seed in args.seeds:
                    cells.append((Cell(dataset, scheme, model, seed, out / dataset / scheme / f"{model}-seed{seed}"),
                                  data_dir, "seq,topn"))
            for model in args.baselines:
                seeds = args.seeds if model in SEEDED_BASELINES else [None]
                for seed in seeds:
                    name = f"{model}-seed{seed}" if seed is not None else model
                    cells.append((Cell(dataset, scheme, model, seed, out / dataset / scheme / name), data_dir, "seq,topn"))
    if args.exp:
        from peapod.data.synthetic import write_synthetic

        syn = out / "data" / "synthetic"
        if not (syn / "sequential_data.txt").is_file():
            write_synthetic(syn, n_users=300, n_items=200, seed=0)
        for model in args.variants:
            for seed in args.seeds:
                cells.append((Cell("synthetic", "original", model, seed, out / "synthetic" / f"{model}-seed{seed}"),
                              syn, "seq,topn,exp"))
        cells.append((Cell("synthetic", "original", "popularity", None, out / "synthetic" / "popularity"), syn,
                      "seq,topn"))
    return cells


# ------------------------------------------------------------------------------------------ summary
SEQ_KEYS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10")
TOPN_KEYS = ("hr@1", "hr@5", "ndcg@5", "hr@10", "ndcg@10")
EXP_KEYS = ("bleu4", "rouge1", "rouge2", "rougeL", "reference.rouge1", "reference.rouge2", "reference.rougeL")


def _metrics(results: dict, task: str) -> dict[str, float]:
    m = results.get("metrics", {}).get(task)
    if not m:
        return {}
    if task == "topn":
        m = m.get("exact") or m.get("score") or next(iter(m.values()))
    if task == "exp":
        flat = {}
        for k, v in m.items():
            if isinstance(v, dict):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
            elif isinstance(v, (int, float)):
                flat[k] = v
        return flat
    return {k: v for k, v in m.items() if isinstance(v, (int, float))}


def collect(cells: list[Cell]) -> dict:
    """Group results by (dataset, scheme, model) and task: per-seed values, mean, std."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for cell in cells:
        if cell.results_path.is_file():
            groups.setdefault((cell.dataset, cell.scheme, cell.model), []).append(json.loads(cell.results_path.read_text()))
    summary = {}
    for (dataset, scheme, model), runs in groups.items():
        entry = {"n_seeds": len(runs), "tasks": {}}
        for task in ("seq", "topn", "exp"):
            per_run = [_metrics(r, task) for r in runs]
            per_run = [m for m in per_run if m]
            if not per_run:
                continue
            keys = sorted(set.intersection(*(set(m) for m in per_run)))
            entry["tasks"][task] = {
                k: {"values": [m[k] for m in per_run], "mean": statistics.fmean(m[k] for m in per_run),
                    "std": statistics.stdev([m[k] for m in per_run]) if len(per_run) > 1 else 0.0}
                for k in keys
            }
        entry["provenance"] = {k: runs[0].get(k) for k in ("dataset", "evaluation") if k in runs[0]}
        summary[f"{dataset}/{scheme}/{model}"] = entry
    return summary


def _label(model: str) -> str:
    return VARIANTS[model][0] if model in VARIANTS else BASELINES.get(model, model)


def _cell(stat: dict | None, digits: int = 4) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if len(stat["values"]) > 1 else f"{stat['mean']:.{digits}f}"


def markdown(summary: dict, header: str) -> str:
    lines = [header, ""]
    combos = sorted({tuple(k.split("/")[:2]) for k in summary})
    for dataset, scheme in combos:
        models = [k.split("/")[2] for k in summary if k.startswith(f"{dataset}/{scheme}/")]
        for task, keys in (("seq", SEQ_KEYS), ("topn", TOPN_KEYS), ("exp", None)):
            rows = [(m, summary[f"{dataset}/{scheme}/{m}"]) for m in models if task in summary[f"{dataset}/{scheme}/{m}"]["tasks"]]
            if not rows:
                continue
            if keys is None:  # library BLEU/ROUGE F1, then the reference-compatible ROUGE
                keys = tuple(k for k in EXP_KEYS if k in rows[0][1]["tasks"][task])
            title = {"seq": "sequential (full ranking, constrained beams)",
                     "topn": "top-n (1 + 99 candidates, exact ranking)", "exp": "explanation (synthetic)"}[task]
            lines += [f"### {dataset} · item ids: {scheme} · {title}", "",
                      "| model | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
            for model, entry in rows:
                stats = entry["tasks"][task]
                digits = 2 if task == "exp" else 4
                lines.append(f"| {_label(model)} | {entry['n_seeds']} | "
                             + " | ".join(_cell(stats.get(k), digits) for k in keys) + " |")
            paper = PAPER.get(dataset, {}).get(task)
            if paper and scheme == "original":
                for name, vals in paper.items():
                    lines.append(f"| paper: {name} | - | " + " | ".join(f"{vals[k]:.4f}" if k in vals else "-" for k in keys) + " |")
            lines.append("")
    gaps = _scheme_gaps(summary)
    if gaps:
        lines += ["### original vs leak-free item ids (test HR@10, mean over seeds)", "",
                  "| dataset | model | task | original | random | original - random |", "|---|---|---|---|---|---|"]
        lines += [f"| {d} | {_label(m)} | {t} | {a:.4f} | {b:.4f} | {a - b:+.4f} |" for d, m, t, a, b in gaps]
        lines.append("")
    lines.append(f"Paper rows: {PAPER_SOURCE}. Mean ± sample std over seeds.")
    return "\n".join(lines) + "\n"


def _scheme_gaps(summary: dict) -> list[tuple]:
    out = []
    for key, entry in summary.items():
        dataset, scheme, model = key.split("/")
        other = summary.get(f"{dataset}/random/{model}")
        if scheme != "original" or other is None:
            continue
        for task in ("seq", "topn"):
            a, b = entry["tasks"].get(task, {}).get("hr@10"), other["tasks"].get(task, {}).get("hr@10")
            if a and b:
                out.append((dataset, model, task, a["mean"], b["mean"]))
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in summary if not k.startswith("synthetic/")]
    if not keys:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(keys) + 1.5))
    for ax, task in zip(axes, ("seq", "topn")):
        stats = [summary[k]["tasks"].get(task, {}).get("hr@10") for k in keys]
        ax.barh(range(len(keys)), [s["mean"] if s else 0 for s in stats], xerr=[s["std"] if s else 0 for s in stats])
        ax.set_yticks(range(len(keys)), [k.replace("/", " · ") for k in keys], fontsize=7)
        ax.set_title(f"{task} test HR@10 (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> str:
    """One line: CPU, cores, GPU, torch and Python versions (speed.py's machine record)."""
    from speed import machine_info  # beside this file

    m = machine_info(threads=0)
    gpu = m["device"] if m["device"] != "cpu" else "no GPU"
    return f"{m['cpu']}, {m['cores']} logical cores, {gpu}, torch {m['torch']}, Python {m['python']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding beauty/ sports/ toys/")
    p.add_argument("--datasets", nargs="+", help="default: beauty")
    p.add_argument("--schemes", nargs="+", choices=["original", "random", "first-train"])
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), help="cpu default: components none")
    p.add_argument("--baselines", nargs="*", choices=sorted(BASELINES), default=list(BASELINES))
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--users", type=int, help="user subset size (cpu default 1000; paper: all)")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--eval-users", type=int, help="seeded test users evaluated (cpu default 200; paper: all)")
    p.add_argument("--steps", type=int, help="optimizer steps per model (cpu default 1000; paper: the epochs)")
    p.add_argument("--exp", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the variants on the synthetic default for the explanation task")
    p.add_argument("--tokenizer", type=Path, help="tokenizer for the real datasets (paper default: the official "
                   "t5-small spiece.model in --data)")
    p.add_argument("--jobs", type=int, default=2, help="cells run at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per cell (default 1)")
    p.add_argument("--out", type=Path, default=Path("runs/quality"))
    p.add_argument("--report-only", action="store_true",
                   help="rebuild quality.json/.md/.png from the finished cells of this plan; run nothing")
    p.add_argument("--dry-run", action="store_true", help="prepare the data folders and print every cell's peapod commands; train nothing")
    args = p.parse_args(argv)

    scale = dict(SCALES[args.scale])
    for name in ("datasets", "schemes", "variants", "seeds"):
        if getattr(args, name) is None:
            setattr(args, name, scale[name])
    args.users = args.users if args.users is not None else scale["users"]
    scale["eval_users"] = args.eval_users if args.eval_users is not None else scale["eval_users"]
    scale["steps"] = args.steps if args.steps is not None else scale["steps"]
    if args.scale == "paper" and args.tokenizer is None:
        args.tokenizer = args.data / "t5-small" / "spiece.model"
    for d in args.datasets:
        if not (args.data / d / "sequential_data.txt").is_file():
            raise SystemExit(f"{args.data / d}: no sequential_data.txt (pass --data FOLDER with the P5 datasets)")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    todo = plan(args, scale, args.out)
    print(f"[quality] {len(todo)} cells ({sum(c.results_path.is_file() for c, _, _ in todo)} already done), "
          f"{args.jobs} at a time, {args.threads} thread(s) each -> {args.out}", file=sys.stderr, flush=True)

    def job(item):
        cell, data_dir, tasks = item
        t0 = time.perf_counter()
        run_cell(cell, data_dir, args, scale, tasks)
        print(f"[quality] done {cell.dataset}/{cell.scheme}/{cell.model} seed {cell.seed} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        return cell

    if args.dry_run:
        for item in todo:
            run_cell(item[0], item[1], args, scale, item[2])
        return 0
    failures = []
    if args.report_only:
        todo_run = []
        missing = sum(not c.results_path.is_file() for c, _, _ in todo)
        print(f"[quality] report only: {missing} planned cells have no results and are left out", file=sys.stderr)
    else:
        todo_run = todo
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for item, fut in [(item, pool.submit(job, item)) for item in todo_run]:
            try:
                fut.result()
            except RuntimeError as exc:
                failures.append(str(exc))
                print(f"[quality] FAILED: {exc}", file=sys.stderr, flush=True)

    cells = [c for c, _, _ in todo]
    summary = collect(cells)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# Quality benchmark ({args.scale} scale)\n\n- command: `python benchmarks/quality.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n- machine: {machine()}\n- date: {date}; "
              + ("report rebuilt from finished cells" if args.report_only
                 else f"wall time {time.perf_counter() - started:.0f} s") + f"\n- user subset: {args.users or 'all'} users "
              f"(seed {args.subset_seed}); evaluated test users: {scale['eval_users'] or 'all'}; steps per model: "
              f"{scale['steps'] or 'epochs of the preset'}; preset: {scale['preset'] or 'paper-<dataset>'}; "
              f"seeds {args.seeds}")
    report = markdown(summary, header)
    atomic_write_json(args.out / "quality.json", {"args": {k: str(v) if isinstance(v, Path) else v
                                                           for k, v in vars(args).items()},
                                                  "scale": scale, "machine": machine(), "date": date,
                                                  "summary": summary, "failures": failures})
    atomic_write_text(args.out / "quality.md", report)
    plot(summary, args.out / "quality.png")
    print(report)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
