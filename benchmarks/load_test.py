"""A bounded load test of the HTTP service: throughput and p50/p99 latency per endpoint, errors (must be 0).

    python benchmarks/load_test.py [--checkpoint RUN] [--requests 200] [--concurrency 16] [--max-seconds 60]
                                   [--max-batch 16] [--max-wait-ms 5] [--compare-unbatched] [--threads 1]
                                   [--json OUT]

Loopback only: the service binds 127.0.0.1 on a free port chosen by the OS, in a thread of this process
(uvicorn), and the load comes from httpx on the same machine. Bounded: each endpoint gets a fixed number
of requests and a wall-clock cap, whichever ends first; the service stops by itself at the end.
Without ``--checkpoint`` a tiny run is trained first on synthetic data (about half a minute on 2 cores).

Per endpoint (``/recommend`` for known users, ``/recommend`` for cold-start histories, ``/rank`` with
20 candidates, ``/explain``), requests are built from a seeded sample of the run's users and items and
sent by ``--concurrency`` workers. ``--compare-unbatched`` repeats the run against a second service
with ``max_batch=1`` (every request its own model call) to show what micro-batching buys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ENDPOINTS = ("recommend", "recommend_cold", "rank", "explain")


# ---------------------------------------------------------------------------------------------- setup
def train_tiny_run(work: Path) -> Path:
    """A tiny run on synthetic data (what the tests use), trained once into ``work``."""
    from peapod.config import load_config
    from peapod.data.synthetic import write_synthetic
    from peapod.training import train

    run = work / "run"
    if (run / "train_result.json").is_file():
        return run
    data = write_synthetic(work / "data", n_users=200, n_items=150, seed=0, n_negatives=19)
    overrides = [
        "train.max_steps=30", "train.batch_size=8", "train.valid_max_users=12", "embedding.method=als",
        "embedding.max_iter=10", "model.tokenizer_vocab_size=400", "data.n_negatives=19", "eval.num_beams=8",
        "eval.exp_num_beams=2", "eval.exp_min_length=3", "eval.exp_max_new_tokens=12",
    ]
    print(f"load_test: training a tiny run into {run} ...", file=sys.stderr, flush=True)
    train(load_config("tiny", None, overrides), data, run, progress=False)
    return run


class Service:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a background thread; a context manager."""

    def __init__(self, app: Any):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))  # loopback only; the OS picks a free port
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Service":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def build_requests(rec: Any, n: int, seed: int) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """``n`` seeded request bodies per endpoint, from the run's own users and items."""
    rng = np.random.default_rng(seed)
    ds = rec.dataset
    users = [ds.users[i] for i in rng.integers(0, len(ds.users), n)]
    cold = [ds.users[i] for i in rng.integers(0, len(ds.users), n)]
    n_cand = min(20, len(ds.items))
    return {
        "recommend": [("/recommend", {"user": u, "k": 10}) for u in users],
        "recommend_cold": [("/recommend", {"history": ds.sequences[u][:-1], "k": 10}) for u in cold],
        "rank": [
            ("/rank", {"user": u, "candidates": [ds.items[j] for j in rng.choice(len(ds.items), n_cand, replace=False)]})
            for u in users
        ],
        "explain": [("/explain", {"user": u, "item": ds.sequences[u][-1]}) for u in users],
    }


# ---------------------------------------------------------------------------------------------- load
async def fire(url: str, requests: list[tuple[str, dict[str, Any]]], concurrency: int,
               max_seconds: float) -> dict[str, Any]:
    """Send ``requests`` with ``concurrency`` workers until done or ``max_seconds`` pass."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    queue = list(reversed(requests))
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue and time.perf_counter() < deadline:
            path, body = queue.pop()
            t0 = time.perf_counter()
            try:
                r = await client.post(path, json=body)
                if r.status_code != 200:
                    errors.append(f"{path} {r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(f"{path}: {type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=max_seconds + 30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "planned": len(requests),
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "errors": len(errors),
        "error_samples": errors[:5],
        "capped": len(latencies) < len(requests),
    }


def run_service(rec: Any, requests: dict[str, list], args: argparse.Namespace, max_batch: int) -> dict[str, Any]:
    """Start a service with ``max_batch``, load every endpoint in turn, stop it; results per endpoint."""
    import httpx

    from peapod.serving.app import create_app

    app = create_app(rec, max_batch=max_batch, max_wait_ms=args.max_wait_ms)
    out: dict[str, Any] = {}
    with Service(app) as service:
        httpx.get(service.url + "/health", timeout=30).raise_for_status()
        for name in ENDPOINTS:
            warm = requests[name][: min(4, len(requests[name]))]
            asyncio.run(fire(service.url, warm, 1, args.max_seconds))  # first-call costs (trie, caches)
            out[name] = asyncio.run(fire(service.url, requests[name], args.concurrency, args.max_seconds))
        health = httpx.get(service.url + "/health", timeout=30).json()
    for name, stats in health["batching"].items():
        out.setdefault("batching", {})[name] = stats
    return out


def print_table(title: str, results: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(f"{'endpoint':<16} {'requests':>8} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}")
    for name in ENDPOINTS:
        r = results[name]
        capped = " (capped)" if r["capped"] else ""
        print(f"{name:<16} {r['requests']:>8} {r['throughput_rps']:>8.1f} {r['p50_ms']:>9.1f} "
              f"{r['p99_ms']:>9.1f} {r['errors']:>6}{capped}")
    batching = results.get("batching", {})
    if batching:
        print("mean requests per model call: " + ", ".join(
            f"{k} {v['mean_batch']:.2f}" for k, v in batching.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="a run folder (default: train a tiny one)")
    p.add_argument("--work-dir", type=Path, help="where the tiny run is trained (default: a temp folder)")
    p.add_argument("--requests", type=int, default=200, help="requests per endpoint (default 200)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="wall-clock cap per endpoint (default 60)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--compare-unbatched", action="store_true", help="also run with max_batch=1")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.max_seconds <= 0:
        p.error("--requests and --concurrency must be >= 1 and --max-seconds > 0")

    import torch

    import peapod

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="peapod-load-") as tmp:
        checkpoint = args.checkpoint or train_tiny_run(args.work_dir or Path(tmp))
        rec = peapod.load(checkpoint, device=args.device)
        requests = build_requests(rec, args.requests, args.seed)
        results: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "model": rec.info(),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {"python": platform.python_version(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "cpu_count": __import__("os").cpu_count(), "platform": platform.platform()},
            "batched": run_service(rec, requests, args, args.max_batch),
        }
        print_table(f"max_batch={args.max_batch}, max_wait_ms={args.max_wait_ms}, concurrency={args.concurrency}",
                    results["batched"])
        if args.compare_unbatched:
            results["unbatched"] = run_service(rec, requests, args, 1)
            print_table(f"max_batch=1 (no batching), concurrency={args.concurrency}", results["unbatched"])
    errors = sum(results[k][name]["errors"] for k in ("batched", "unbatched") if k in results for name in ENDPOINTS)
    results["errors"] = errors
    if args.json:
        from peapod.io import atomic_write_json

        atomic_write_json(args.json, results)
        print(f"\nwrote {args.json}")
    print(f"\ntotal errors: {errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
