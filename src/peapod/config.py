"""One typed configuration for the whole pipeline: dataclasses, YAML files, presets, overrides.

Every key lives here with its default and a one-line comment. A configuration is built as:

    preset (a named YAML file in ``peapod/configs``)  ->  ``--config FILE``  ->  ``key=value`` overrides

and is saved in full (``to_dict``) beside every run so that a result says what produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

ItemIdScheme = Literal["original", "random", "first-train"]
UserPromptKind = Literal["components", "neighbors", "none"]
EmbeddingMethod = Literal["pmf", "bivae", "bpr", "als"]
TaskName = Literal["exp", "seq", "topn"]

#: Task ids as in the reference implementation: explanation 0, sequential 1, top-n 2.
TASKS: tuple[str, ...] = ("exp", "seq", "topn")


@dataclass
class DataConfig:
    """How a dataset is read and split."""

    item_id_scheme: ItemIdScheme = "original"  # original P5 ids (leak order) or a leak-free re-indexing
    scheme_seed: int = 2022  # seed of the random item permutation (scheme "random")
    drop_explanation_leaks: bool = True  # drop explanation-train records on a user's valid/test item
    explanation_item_token: Literal["numeric", "raw"] = "numeric"  # item_<id> or item_<ASIN> (reference)
    max_history: int = 20  # items of history in a sequential prompt (reference: 20)
    n_negatives: int = 99  # top-n negatives per positive (reference: 99)
    valid_negatives_seed: int = 2022  # seed of the redrawn validation negatives


@dataclass
class EmbeddingConfig:
    """Collaborative-filtering user embeddings (the query of the personalized prompt)."""

    method: EmbeddingMethod = "pmf"  # paper: PMF
    dim: int = 512  # paper: 512 (independent of the model width d)
    max_iter: int = 100  # paper: 100 iterations
    learning_rate: float = 1e-3  # paper: 1e-3
    lamda: float = 1e-3  # paper: lambda 1e-3 (cornac spells it "lamda")
    seed: int = 2022
    n_neighbors: int = 20  # k most similar users (reference: 20; Toys 10)
    neighbor_chunk_size: int = 4096  # users per chunk when building the top-k index


@dataclass
class ModelConfig:
    """The T5 backbone and the two soft prompts."""

    backbone: str = "tiny"  # preset (tiny | small | t5-small) or a Hugging Face name / local folder
    pretrained: bool = False  # load weights from `backbone` (name or folder) instead of random init
    tokenizer: str | None = None  # HF name, folder, spiece.model file; None: train one on the dataset
    tokenizer_vocab_size: int = 2000  # size of a tokenizer trained on the dataset's text
    user_prompt: UserPromptKind = "components"  # components (paper text) | neighbors (code) | none (POD)
    task_prompt: bool = True  # False is the paper's PeaPOD-X ablation
    task_prompt_length: int = 3
    user_prompt_length: int = 3  # L
    n_components: int = 20  # M (components design)
    n_heads: int = 4  # H (neighbors design)
    train_user_embeddings: bool = False  # fine-tune the user embeddings end to end (paper: frozen)
    max_whole_words: int = 512  # rows of the whole-word embedding table (reference: 512)
    dropout: float = 0.1


@dataclass
class TrainConfig:
    """Task-alternated multi-task training."""

    batch_size: int = 64
    learning_rate: float = 5e-4  # reference code 5e-4; the paper text says 5e-3
    weight_decay: float = 0.01
    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimizer steps (short runs)
    steps_per_epoch: int | None = None  # None: the reference formula (exp/64 + 2 * users/64)
    seed: int = 1
    select_by: Literal["loss", "metric"] = "loss"  # best checkpoint by mean valid loss or valid NDCG
    patience: int = 5  # early stopping: epochs without improvement (reset on improvement)
    save_every_steps: int = 200  # checkpoint for --resume every this many steps
    log_every_steps: int = 20
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    tensorboard: bool = False
    exp_target_len: int = 20  # explanation target tokens (reference: 20)
    bucket_by_length: bool = False
    valid_max_users: int | None = None  # cap validation users (None: all)
    # batches of each task per cycle of the task-alternated schedule (reference: one each)
    task_weights: dict[str, int] = field(default_factory=lambda: {"exp": 1, "seq": 1, "topn": 1})

    def __post_init__(self) -> None:
        check_task_weights(self.task_weights)


def check_task_weights(weights: Any) -> dict[str, int]:
    """``train.task_weights`` as a dict, or a ConfigError: known tasks, integer weights >= 0."""
    if not isinstance(weights, dict):
        raise ConfigError(f"train.task_weights: expected a mapping task -> batches, got {weights!r}")
    bad = {t: w for t, w in weights.items()
           if t not in TASKS or not isinstance(w, int) or isinstance(w, bool) or w < 0}
    if bad:
        raise ConfigError(f"train.task_weights: need tasks {list(TASKS)} with integer weights >= 0, got {bad}")
    return dict(weights)


@dataclass
class EvalConfig:
    """Decoding and evaluation."""

    protocol: Literal["clean", "reference"] = "clean"
    num_beams: int = 20  # paper: 20
    top_k: int = 10  # items returned per user
    exp_num_beams: int = 21  # reference: 21 beams (3 groups of 7 with no diversity penalty)
    exp_min_length: int = 10  # paper: 10
    exp_max_new_tokens: int = 49  # reference: max_length 50 including the start token
    batch_size: int = 32  # paper: 32
    exclude_history: bool = False  # drop the user's history items from sequential recommendations
    seed: int = 2022  # candidate shuffles and the reference protocol's random fill-in


@dataclass
class PeapodConfig:
    """The whole configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> "PeapodConfig":
        return _build(cls, raw, source)

    def override(self, assignments: list[str], source: str = "override") -> "PeapodConfig":
        """Return a copy with ``section.key=value`` assignments applied (values parsed as YAML)."""
        raw = self.to_dict()
        for assignment in assignments:
            if "=" not in assignment:
                raise ConfigError(f"{source}: expected section.key=value, got {assignment!r}")
            key, value = assignment.split("=", 1)
            parts = key.strip().split(".")
            if len(parts) != 2 or parts[0] not in raw:
                raise ConfigError(
                    f"{source}: unknown key {key!r}; keys look like model.user_prompt or train.learning_rate"
                )
            section, name = parts
            if name not in raw[section]:
                known = ", ".join(sorted(raw[section]))
                raise ConfigError(f"{source}: unknown key {key!r}; {section} has: {known}")
            raw[section][name] = yaml.safe_load(value) if value.strip() else None
        return _build(PeapodConfig, raw, source)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = get_origin(annotation)
    if origin is Literal:
        if value not in get_args(annotation):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(annotation))}")
        return value
    args = get_args(annotation)
    if origin is not None and type(None) in args:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _check_type(value, inner, where)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation in (int, float, bool, str):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type, raw: Any, source: str, prefix: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        hint = hints[f.name]
        if is_dataclass(hint):
            kwargs[f.name] = _build(hint, raw[f.name] or {}, source, prefix=f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _check_type(raw[f.name], hint, f"{source}: {prefix}{f.name}")
    return cls(**kwargs)


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (``peapod/configs/*.yaml``)."""
    folder = resources.files("peapod") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> PeapodConfig:
    """Build a configuration from a preset name, a YAML file and ``section.key=value`` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if preset is not None:
        names = preset_names()
        if preset not in names:
            raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(names)}")
        text = (resources.files("peapod") / "configs" / f"{preset}.yaml").read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
        source = f"preset {preset}"
    if config_file is not None:
        raw = _merge(raw, load_yaml(config_file))
        source = str(config_file)
    config = PeapodConfig.from_dict(raw, source)
    if overrides:
        config = config.override(overrides)
    return config
