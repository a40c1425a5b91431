"""Config validation: every invalid field raises a ValueError naming it."""

import pytest

from ifdd.config import LossConfig, ModelConfig, from_dict, model_preset, to_dict


@pytest.mark.parametrize("overrides,field", [
    ({"split_ratio": 1.0}, "split_ratio"),
    ({"split_ratio": 0.0}, "split_ratio"),
    ({"split_ratio": 0.05}, "split_ratio"),          # round(0.05 * 8) = 0 static slots
    ({"split_ratio": 0.95}, "split_ratio"),          # leaves the dynamic branch no slot
    ({"lifting_depth": 4}, "lifting_depth"),         # 8 -> 4 -> 2 -> 1 -> cannot split 1
    ({"lifting_depth": 0}, "lifting_depth"),
    ({"lifting_heads": 5}, "lifting_heads"),
    ({"num_frames": 15}, "num_frames"),
    ({"image_size": 100}, "image_size"),
    ({"stage_depths": (1, 2, 5)}, "stage_depths"),
    ({"head_dropout": 1.0}, "head_dropout"),
    ({"issm_positions": "shifted"}, "issm_positions"),
    ({"input_norm": "imagenet"}, "input_norm"),
    ({"linear_init": "xavier"}, "linear_init"),
    ({"num_classes": 1}, "num_classes"),
])
def test_invalid_model_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**overrides)


def test_ablation_without_lifting_skips_the_slot_check():
    # Both modules off: no split happens, so a depth the slots cannot support is irrelevant.
    cfg = ModelConfig(use_issm=False, use_ladm=False, lifting_depth=9)
    assert cfg.lifting_depth == 9


@pytest.mark.parametrize("overrides,field", [
    ({"lambda_gc": -0.1}, "lambda_gc"),
    ({"gc_reduction": "sum"}, "gc_reduction"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"class_balance": -1.0}, "class_balance"),
    ({"huber_beta": 0.0}, "huber_beta"),
])
def test_invalid_loss_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        LossConfig(**overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset: unknown preset 'small'"):
        model_preset("small")


def test_from_dict_round_trip_and_type_checks():
    cfg = model_preset("tiny", split_ratio=0.75)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="model.split_rato: unknown key"):
        from_dict(ModelConfig, {"split_rato": 0.5}, "model")
    with pytest.raises(ValueError, match="model.lifting_depth: expected an integer, got str '2'"):
        from_dict(ModelConfig, {"lifting_depth": "2"}, "model")
    with pytest.raises(ValueError, match="model.use_issm: expected true/false"):
        from_dict(ModelConfig, {"use_issm": 1}, "model")
    with pytest.raises(ValueError, match=r"model.stage_depths\[1\]: expected an integer"):
        from_dict(ModelConfig, {"stage_depths": [1, 2.5, 5, 2]}, "model")
    with pytest.raises(ValueError, match="model.split_ratio: must be in"):
        from_dict(ModelConfig, {"split_ratio": 2}, "model")
    assert from_dict(LossConfig, {"lambda_gc": 1}).lambda_gc == 1.0  # ints are accepted as floats
