"""Run config: YAML loading (bare or a search space's `base`), presets, overrides, key-naming errors."""

import pytest

from ifdd.runconfig import load_run_config, run_config_from_dict, with_overrides


def test_preset_plus_overrides_and_base_section(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("base:\n  model: {preset: tiny, split_ratio: 0.75}\n  train: {epochs: 3}\n"
                    "  optim: {warmup_epochs: 1}\nsearch: {}\n")
    cfg = load_run_config(path)
    assert cfg.model.image_size == 64 and cfg.model.split_ratio == 0.75 and cfg.train.epochs == 3
    bare = tmp_path / "run.yaml"
    bare.write_text("model: {preset: xs}\n")
    assert load_run_config(bare).model.image_size == 224


def test_overrides_are_validated():
    cfg = run_config_from_dict({"model": {"preset": "tiny"}, "train": {"epochs": 4}, "optim": {"warmup_epochs": 1}})
    out = with_overrides(cfg, {"model.lifting_depth": 2, "loss.lambda_gc": 0.5})
    assert out.model.lifting_depth == 2 and out.model.image_size == 64 and out.loss.lambda_gc == 0.5
    with pytest.raises(ValueError, match="model.nope: not a path"):
        with_overrides(cfg, {"model.nope": 1})
    with pytest.raises(ValueError, match="level 3"):
        with_overrides(cfg, {"model.split_ratio": 0.25, "model.lifting_depth": 3})


@pytest.mark.parametrize("text,needle", [
    ("base:\n  model: {split_rato: 0.5}\n", "base.model.split_rato: unknown key"),
    ("base:\n  train: {epochs: ten}\n", "base.train.epochs: expected an integer"),
    ("base:\n  model: {preset: huge}\n", "base.model.preset: unknown preset 'huge'"),
    ("base:\n  data: {mix_prob: 2}\n", "base.data.mix_prob: must be in [0, 1]"),
    ("base:\n  train: {epochs: 5}\n  optim: {warmup_epochs: 5}\n", "warmup_epochs: 5 must be below"),
    ("base: [1, 2]\n", "base: expected a mapping"),
    ("base: {model: {preset: tiny}\n", "not valid YAML"),
])
def test_bad_run_configs_name_file_and_key(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_run_config(path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml: config file not found"):
        load_run_config("nope.yaml")
