"""Atomic resume checkpoints: weights, optimizer, scheduler, RNG and sampler states, progress.

A checkpoint is a folder ``<run>/checkpoints/last/``:

- ``model.safetensors``: the model's weights (``safetensors.torch.save_model``, tied weights handled);
- ``optimizer.pt``, ``scheduler.pt``: state dicts (``torch.save``; loaded with ``weights_only=True``);
- ``state.json``: step, epoch, best metric, patience counter, validation history;
- ``rank<r>.json``: per process, the sampler states and the Python / NumPy RNG states;
- ``rng_rank<r>.pt``: per process, the torch (and CUDA) RNG states.

It is written into a temporary folder beside ``last`` and swapped in by renames, so a crash leaves
either the old or the new checkpoint (a crash between the two renames leaves ``.last.old``, which
:func:`find_checkpoint` falls back to). With several processes every rank writes its own files and
the main process does the swap; ``barrier`` synchronises them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PeapodError
from ..io import atomic_write_json

LAST = "last"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"


def _noop() -> None:
    return None


# ------------------------------------------------------------------------------------------- folders
def swap_in_dir(tmp: Path, target: Path) -> None:
    """Replace folder ``target`` by folder ``tmp`` with renames (old kept as ``.<name>.old`` until done)."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; swap it in for ``target`` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        swap_in_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def find_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint in ``folder`` (``last``, or ``.last.old`` after a crash mid-swap), or None."""
    folder = Path(folder)
    for name in (LAST, f".{LAST}.old"):
        path = folder / name
        if (path / STATE_FILE).is_file():
            return path
    return None


# ------------------------------------------------------------------------------------------- RNG
def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON-able Python/NumPy global RNG states, torch RNG state tensors) of this process."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    return plain, tensors


def set_rng_state(plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda")), key=lambda k: int(k[4:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    folder: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    sampler_state: dict[str, Any],
    process_index: int = 0,
    is_main: bool = True,
    barrier: Callable[[], None] = _noop,
) -> Path:
    """Write ``folder/last`` atomically. Call on every process (each writes its RNG and sampler state)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    target = folder / LAST
    tmp = folder / f".{LAST}.tmp"
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    plain, tensors = rng_state()
    (tmp / f"rank{process_index}.json").write_text(
        json.dumps({"rng": plain, "samplers": sampler_state}), encoding="utf-8"
    )
    torch.save(tensors, tmp / f"rng_rank{process_index}.pt")
    if is_main:
        save_model(model, str(tmp / MODEL_FILE))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict() if scheduler is not None else {}, tmp / SCHEDULER_FILE)
        atomic_write_json(tmp / STATE_FILE, state)  # written last: its presence marks a complete folder
    barrier()
    if is_main:
        swap_in_dir(tmp, target)
    barrier()
    return target


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    process_index: int = 0,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Restore weights, optimizer, scheduler and this process's RNG states from a checkpoint folder.

    Returns ``(state, sampler_state)``; the caller restores its samplers from the latter. A process
    index the checkpoint has no files for (resuming on more processes than saved it) gets ``None`` and
    keeps its fresh RNG and sampler state.
    """
    from safetensors.torch import load_model

    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise PeapodError(f"{path}: incomplete checkpoint (no {STATE_FILE})")
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    # read on the CPU, copied into the parameters wherever they live (optimizer state follows its params)
    missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=False, device="cpu")
    if unexpected or missing:
        raise PeapodError(
            f"{path / MODEL_FILE}: weights do not fit the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    sched = torch.load(path / SCHEDULER_FILE, weights_only=True)
    if scheduler is not None and sched:
        scheduler.load_state_dict(sched)
    rank_file = path / f"rank{process_index}.json"
    if not rank_file.is_file():
        return state, None
    rank = json.loads(rank_file.read_text(encoding="utf-8"))
    tensors = torch.load(path / f"rng_rank{process_index}.pt", weights_only=True)
    set_rng_state(rank["rng"], tensors)
    return state, rank["samplers"]
