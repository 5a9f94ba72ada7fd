"""Sharding users across processes: every user exactly once, and a real 2-process CPU run equals 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peapod.evaluation import tasks as T

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 99, 100, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8, 16])
def test_shards_cover_every_user_exactly_once(n, world):
    users = [f"u{i}" for i in range(n)]
    shards = [T.shard(users, world, r) for r in range(world)]
    assert [u for s in shards for u in s] == users  # concatenation in rank order = original order
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1  # balanced, nothing padded or repeated
    bounds = [T.shard_bounds(n, world, r) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_bad_rank_is_rejected():
    with pytest.raises(ValueError):
        T.shard_bounds(10, 2, 2)
    with pytest.raises(ValueError):
        T.shard_bounds(10, 0, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_run_equals_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo): the gathered predictions and metrics equal a 1-process run."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_evaluation_runner import build_run

    from peapod.data.synthetic import write_synthetic
    from peapod.evaluation.runner import EvalOptions, evaluate_checkpoint

    data = write_synthetic(tmp_path / "data", n_users=110, n_items=150, seed=5)
    run = build_run(data, tmp_path / "run")
    args = ["--checkpoint", str(run), "--dataset", str(data), "--max-users", "7", "--tasks", "seq,topn",
            "--ranker", "beam,exact", "--no-progress"]
    single = evaluate_checkpoint(run, data, tmp_path / "one.json",
                                 EvalOptions(tasks=("seq", "topn"), max_users=7, progress=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "peapod", "evaluate", *args, "--out", str(tmp_path / "two.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["evaluation"]["world_size"] == 2 and single["evaluation"]["world_size"] == 1
    assert two["metrics"] == single["metrics"]
    assert two["tasks"]["seq"]["n_users"] == 7 and two["tasks"]["topn"]["n_users"] == 7
    one_preds = (tmp_path / "one.predictions.jsonl").read_text().splitlines()
    two_preds = (tmp_path / "two.predictions.jsonl").read_text().splitlines()
    assert two_preds == one_preds  # no user dropped or duplicated, same order
