"""Benchmark: the chunked top-k neighbour index against the reference's full U x U cosine matrix.

    python benchmarks/neighbors.py [--data ../shared/data] [--dataset sports] [--dim 512] [--k 20]
                                   [--chunk-size 4096] [--factors FILE] [--threads 2] [--json OUT]

Each approach runs in its own child process (this script with ``--worker``), so its peak resident
memory (``ru_maxrss``) is its own; the baseline (interpreter, torch, the factors) is measured in the
same child just before building and reported beside the peak. The factors are seeded random normal
vectors (one row per user of ``sequential_data.txt``) unless ``--factors`` names a factors file.

(a) ours: ``peapod.embeddings.build_neighbor_index`` (chunked, keeps U*k int64 indices + U*k float32
    similarities);
(b) reference (module_multihead.py, precompute_cosine_similarities + get_top_k_similar_users):
    normalise, the full U x U cosine matrix, which it keeps; then per-row self = -inf and topk. The
    reference does the top-k per sample at training time; here it is done for every row once, in
    chunks of rows, on the kept matrix.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _count_users(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _current_rss_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def _factors(args: argparse.Namespace):
    import numpy as np

    if args.factors:
        sys.path.insert(0, str(REPO / "src"))
        from peapod.embeddings import Factors

        return Factors.load(args.factors).user_factors
    n = _count_users(Path(args.data) / args.dataset / "sequential_data.txt")
    return np.random.default_rng(args.seed).standard_normal((n, args.dim), dtype=np.float32)


def worker(args: argparse.Namespace) -> None:
    """Build one index in this process and print a JSON line of its figures."""
    import torch

    torch.set_num_threads(args.threads)
    x = _factors(args)
    n, k = x.shape[0], args.k
    base = _current_rss_gib()
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.worker == "chunked":
        sys.path.insert(0, str(REPO / "src"))
        from peapod.embeddings.neighbors import build_neighbor_index

        index = build_neighbor_index(x, k, chunk_size=args.chunk_size, device="cpu")
        indices = index.indices
        kept = index.nbytes
    else:
        t = torch.from_numpy(x)
        t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
        full = t @ t.T  # (U, U) float32: what the reference keeps
        kept = full.numel() * full.element_size()
        rows = []
        for s in range(0, n, args.chunk_size):
            block = full[s : s + args.chunk_size].clone()  # the reference copies a row before masking
            local = torch.arange(block.shape[0])
            block[local, local + s] = float("-inf")
            rows.append(torch.topk(block, k, dim=1).indices)
            del block
        indices = torch.cat(rows).numpy()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    assert indices.shape == (n, k)
    print(json.dumps({
        "approach": args.worker, "users": n, "dim": int(x.shape[1]), "k": k, "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "baseline_rss_gib": round(base, 3), "peak_rss_gib": round(_rss_gib(), 3),
        "kept_bytes": int(kept), "self_excluded": bool((indices != __import__("numpy").arange(n)[:, None]).all()),
    }))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="folder of datasets")
    parser.add_argument("--dataset", default="sports")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--factors", type=Path, default=None, help="a peapod factors file instead of random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures here")
    parser.add_argument("--worker", choices=("chunked", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    results = {}
    for approach in ("chunked", "reference"):
        cmd = [sys.executable, __file__, "--worker", approach, "--data", str(args.data), "--dataset", args.dataset,
               "--dim", str(args.dim), "--k", str(args.k), "--chunk-size", str(args.chunk_size),
               "--seed", str(args.seed), "--threads", str(args.threads)]
        if args.factors:
            cmd += ["--factors", str(args.factors)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            print(f"{approach}: failed with exit code {done.returncode}", file=sys.stderr)
            return 1
        results[approach] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[approach]
        print(f"{approach:>9}: {r['seconds']:7.1f} s wall, {r['cpu_seconds']:7.1f} s CPU   peak RSS {r['peak_rss_gib']:6.2f} GiB "
              f"(baseline {r['baseline_rss_gib']:.2f})   kept {r['kept_bytes'] / 2**20:9.1f} MiB")
    a, b = results["chunked"], results["reference"]
    n, k = a["users"], a["k"]
    summary = {
        "dataset": args.dataset, "users": n, "dim": a["dim"], "k": k, "chunk_size": args.chunk_size,
        "factors": str(args.factors) if args.factors else f"random normal (seed {args.seed})",
        "threads": args.threads, "results": results,
        "indices_bytes": n * k * 8, "full_matrix_bytes": n * n * 4,
        "ratio_kept": round(b["kept_bytes"] / a["kept_bytes"], 1),
        "ratio_kept_indices_only": round(n * n * 4 / (n * k * 8), 1),
        "ratio_peak_above_baseline": round(
            (b["peak_rss_gib"] - b["baseline_rss_gib"]) / max(a["peak_rss_gib"] - a["baseline_rss_gib"], 1e-9), 1
        ),
        "ratio_time": round(b["seconds"] / a["seconds"], 2),
        "ratio_cpu_time": round(b["cpu_seconds"] / a["cpu_seconds"], 2),
    }
    print(f"users {n}, dim {a['dim']}, k {k}: kept {summary['ratio_kept']}x smaller "
          f"(indices alone U*k*8 = {n * k * 8 / 2**20:.1f} MiB vs U*U*4 = {n * n * 4 / 2**30:.2f} GiB: "
          f"{summary['ratio_kept_indices_only']}x); peak memory above baseline "
          f"{summary['ratio_peak_above_baseline']}x lower; time reference/ours {summary['ratio_time']} (wall), {summary['ratio_cpu_time']} (CPU)")
    if args.json:
        sys.path.insert(0, str(REPO / "src"))
        from peapod.io import atomic_write_json

        atomic_write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
