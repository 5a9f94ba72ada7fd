"""`peapod train` on 2 CPU processes (accelerate launch -> torchrun -> gloo): ranks stay in sync."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch.distributed as dist

from peapod.training import run as R

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_stay_in_sync(tmp_path):
    from peapod.data.loader import load_dataset
    from peapod.data.synthetic import write_synthetic
    from peapod.embeddings.factors import Factors

    data = write_synthetic(tmp_path / "data", n_users=80, n_items=120, seed=5)
    ds = load_dataset(data)
    rng = np.random.default_rng(0)
    emb = tmp_path / "emb.safetensors"
    Factors(ds.users, ds.items, rng.normal(size=(ds.n_users, 16)), rng.normal(size=(ds.n_items, 16)),
            method="pmf", fit_on="train").save(emb)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "peapod", "train", "--dataset", str(data), "--preset", "tiny", "--out", str(out),
        "--embeddings", str(emb), "--max-steps", "4", "--no-progress",
        "--set", "train.batch_size=4", "--set", "train.steps_per_epoch=3", "--set", "train.valid_max_users=9",
        "--set", "model.tokenizer_vocab_size=300", "--set", "train.save_every_steps=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("run saved to") == 1  # printed by the main process only
    log = R.read_log(out)
    start = next(r for r in log if r["event"] == "start")
    assert start["processes"] == 2
    sync = next(r for r in log if r["event"] == "sync_check")
    assert len(sync["checksums"]) == 2 and sync["checksums"][0] == sync["checksums"][1]
    # one validation at the epoch end (step 3) and one at the stop (step 4), reduced over both ranks
    # (9 users: rank 0 validates 2 batches of a task, rank 1 one; no collective may hang on that)
    assert [r["step"] for r in log if r["event"] == "valid"] == [3, 4]
    ckpt = out / R.CHECKPOINTS_DIR / "last"
    assert (ckpt / "rank0.json").is_file() and (ckpt / "rank1.json").is_file()
    assert (ckpt / "rng_rank1.pt").is_file() and (out / R.MODEL_DIR / "model.safetensors").is_file()
