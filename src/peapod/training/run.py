"""The run folder: what ``peapod train`` writes and evaluation / the API read.

Layout of ``<run>/``::

    config.json              the full PeapodConfig.to_dict() of the run
    dataset.json             source path, name, item-id scheme and seed, fingerprint, counts, guard notes,
                             and the user / item id order the model uses (user_rows index ``users``)
    tokenizer/               PromptTokenizer.save
    embeddings.safetensors   the user (and item) factors, rows in the run's user order (absent when
                             model.user_prompt is "none" and none were given)
    neighbors.safetensors    the top-k neighbour index over those rows (same condition)
    model/                   PeaPOD.save of the best model (by validation)
    log.jsonl                training / validation records, one JSON object per line
    checkpoints/last/        the resume checkpoint (see peapod.training.checkpoint)
    train_result.json        summary written when training ends
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PeapodConfig
from ..data.dataset import EXPLANATION_SPLITS, Dataset
from ..errors import DataFormatError, PeapodError
from ..io import atomic_write_json

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
TOKENIZER_DIR = "tokenizer"
EMBEDDINGS_FILE = "embeddings.safetensors"
NEIGHBORS_FILE = "neighbors.safetensors"
MODEL_DIR = "model"
LOG_FILE = "log.jsonl"
CHECKPOINTS_DIR = "checkpoints"
RESULT_FILE = "train_result.json"


def dataset_info(dataset: Dataset, source: str | Path, config: PeapodConfig) -> dict[str, Any]:
    """What ``dataset.json`` records about the data a run was trained on."""
    return {
        "source": str(Path(source).resolve()),
        "name": dataset.name,
        "item_id_scheme": dataset.item_id_scheme,
        "scheme_seed": dataset.scheme_seed,
        "fingerprint": dataset.fingerprint,
        "counts": {
            "users": dataset.n_users,
            "items": dataset.n_items,
            "interactions": dataset.n_interactions,
            **{f"explanations_{s}": len(dataset.explanations.get(s, [])) for s in EXPLANATION_SPLITS},
        },
        "notes": dict(dataset.notes),
        "drop_explanation_leaks": config.data.drop_explanation_leaks,
        "explanation_item_token": config.data.explanation_item_token,
        "users": dataset.users,
        "items": list(dataset.items),
    }


def write_dataset_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / DATASET_FILE, info, indent=None)


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataFormatError(path, "not found (is this a peapod run folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None


def read_config(run_dir: str | Path) -> PeapodConfig:
    """The configuration a run was trained with."""
    path = Path(run_dir) / CONFIG_FILE
    return PeapodConfig.from_dict(read_json(path), str(path))


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``log.jsonl`` (a torn last line, from a crash mid-append, is skipped)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


@dataclass
class Run:
    """A trained run loaded for inference: config, model (eval mode), tokenizer and the id order."""

    path: Path
    config: PeapodConfig
    model: Any  # peapod.model.PeaPOD
    tokenizer: Any  # peapod.model.PromptTokenizer
    dataset: dict[str, Any]  # dataset.json
    user_index: dict[str, int] = field(default_factory=dict)  # user id -> row of the model's user matrix
    item_index: dict[str, int] = field(default_factory=dict)

    @property
    def users(self) -> list[str]:
        return self.dataset["users"]

    @property
    def items(self) -> list[str]:
        return self.dataset["items"]

    def load_dataset(self, path: str | Path | None = None, check: bool = True) -> Dataset:
        """Reload the training dataset (same scheme and guards); check its fingerprint unless told not to."""
        from ..data.loader import load_dataset

        source = Path(path) if path is not None else Path(self.dataset["source"])
        ds = load_dataset(
            source,
            item_id_scheme=self.dataset["item_id_scheme"],
            scheme_seed=self.dataset["scheme_seed"] if self.dataset["scheme_seed"] is not None else 2022,
            drop_explanation_leaks=self.dataset["drop_explanation_leaks"],
            require_negatives=False,
        )
        if check and ds.fingerprint != self.dataset["fingerprint"]:
            raise PeapodError(
                f"{source}: dataset fingerprint {ds.fingerprint} differs from the run's "
                f"{self.dataset['fingerprint']} ({self.path / DATASET_FILE}); it is not the data the model was trained on"
            )
        return ds


def load_run(out_dir: str | Path, device: str | None = None) -> Run:
    """Load a run folder: config, best model (eval mode, on ``device``), tokenizer, dataset info, user order."""
    from ..model import PeaPOD, PromptTokenizer

    path = Path(out_dir)
    if not path.is_dir():
        raise DataFormatError(path, "run folder not found")
    config = read_config(path)
    info = read_json(path / DATASET_FILE)
    if not (path / MODEL_DIR).is_dir():
        raise DataFormatError(path / MODEL_DIR, "no saved model (did training reach a validation?)")
    tokenizer = PromptTokenizer.load(path / TOKENIZER_DIR)
    model = PeaPOD.load(path / MODEL_DIR)
    if device is not None:
        model = model.to(device)
    model.eval()
    return Run(
        path=path,
        config=config,
        model=model,
        tokenizer=tokenizer,
        dataset=info,
        user_index={u: i for i, u in enumerate(info["users"])},
        item_index={it: i for i, it in enumerate(info["items"])},
    )
