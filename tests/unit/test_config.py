"""The typed configuration: presets, YAML files, overrides and their errors."""

from __future__ import annotations

import pytest

from peapod.config import PeapodConfig, load_config, preset_names
from peapod.errors import ConfigError


def test_defaults_match_the_paper_where_it_is_explicit():
    cfg = PeapodConfig()
    assert cfg.embedding.dim == 512 and cfg.embedding.max_iter == 100
    assert cfg.embedding.learning_rate == 1e-3 and cfg.embedding.lamda == 1e-3
    assert cfg.model.n_components == 20 and cfg.model.user_prompt_length == 3
    assert cfg.model.task_prompt_length == 3
    assert cfg.train.batch_size == 64 and cfg.eval.num_beams == 20 and cfg.eval.top_k == 10


def test_every_shipped_preset_loads():
    names = preset_names()
    for required in ("tiny", "small", "t5-small", "paper-beauty", "paper-sports", "paper-toys"):
        assert required in names
    for name in names:
        assert isinstance(load_config(name), PeapodConfig)


def test_paper_presets_follow_the_reference_scripts():
    toys, beauty = load_config("paper-toys"), load_config("paper-beauty")
    assert toys.embedding.n_neighbors == 10 and beauty.embedding.n_neighbors == 20
    for cfg in (toys, beauty):
        assert cfg.model.backbone == "t5-small" and cfg.model.n_heads == 4
        assert cfg.train.epochs == 30 and cfg.train.learning_rate == 5e-4 and cfg.train.seed == 1


def test_file_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  user_prompt: neighbors\ntrain:\n  epochs: 7\n")
    cfg = load_config("tiny", path, ["train.epochs=2", "model.task_prompt=false", "train.max_steps=null"])
    assert cfg.model.user_prompt == "neighbors"
    assert cfg.train.epochs == 2 and cfg.model.task_prompt is False and cfg.train.max_steps is None
    assert cfg.model.backbone == "tiny"  # from the preset
    assert PeapodConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.user_prompt=prefix", "not one of"),
        ("train.epochs=many", "expected int"),
        ("train.nope=1", "unknown key"),
        ("epochs=3", "unknown key"),
        ("train.epochs", "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides=[override])


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("huge")
    with pytest.raises(ConfigError, match="not found"):
        load_config(config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("modle:\n  backbone: tiny\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(config_file=unknown)


def test_task_weights_checked_when_the_config_is_loaded():
    from peapod.config import load_config
    from peapod.errors import ConfigError

    assert load_config("tiny").train.task_weights == {"exp": 1, "seq": 3, "topn": 1}
    for bad in ("train.task_weights={seq: -1}", "train.task_weights={rating: 1}", "train.task_weights=3"):
        with pytest.raises(ConfigError, match="task_weights"):
            load_config("tiny", overrides=[bad])
