"""Pretext inits (ifdd/pretrain.py, ifdd/weights.py, `ifdd pretrain`): what the file holds, that a fine-tune model of
any clip shape takes its whole backbone, reuse, and refusals of wrong or damaged files."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from ifdd.checkpoint import CheckpointError
from ifdd.config import model_preset
from ifdd.model import build_model
from ifdd.pretrain import (
    CHECKPOINT,
    RECORD,
    PretextRecipe,
    default_name,
    default_recipe,
    ensure_pretext,
    pretext_model_config,
)
from ifdd.weights import load_init_weights
from orchestrator.cli import main

SMALL = PretextRecipe(frames=8, size=32, train_clips=32, val_clips=12, epochs=1, warmup_epochs=0, batch_size=16,
                      render_workers=0, seed=5)


@pytest.fixture(scope="module")
def pretext_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "tiny-small"
    path, record, created = ensure_pretext(model_preset("tiny", image_size=32), SMALL, out, log=lambda _m: None)
    assert created and path == out / CHECKPOINT
    return out


def test_the_record_says_how_the_init_was_made(pretext_dir):
    record = json.loads((pretext_dir / RECORD).read_text())
    assert record["generator_version"] >= 1 and record["seed"] == 5 and record["steps"] == 2
    assert record["epochs_run"] == 1 and len(record["accuracy_per_epoch"]) == 1
    assert len(record["data_sha256"]) == 64 and 0.0 <= record["pretext_accuracy"] <= 1.0
    assert record["preset"] == "tiny" and record["recipe"]["train_clips"] == 32
    assert (pretext_dir / (CHECKPOINT + ".sha256")).is_file()


@pytest.mark.parametrize("frames,size", [(8, 32), (16, 64), (8, 64)])
def test_tiny_of_any_clip_shape_takes_the_whole_backbone(pretext_dir, frames, size):
    model = build_model(model_preset("tiny", num_frames=frames, image_size=size))
    report = load_init_weights(model, pretext_dir / CHECKPOINT)
    backbone = sorted(k for k in model.state_dict() if k.startswith("backbone."))
    assert report.source == "ifdd-pretext" and report.missing == [] and report.loaded == backbone
    assert any(k.startswith("head.") for k in report.skipped) and report.unexpected == []
    assert all(k.rsplit(".", 1)[-1].startswith("rel_pos_") for k in report.resized)
    assert bool(report.resized) == ((frames, size) != (8, 32))
    saved = torch.load(pretext_dir / CHECKPOINT, weights_only=True)["model"]
    assert torch.equal(model.backbone.stem.weight, saved["backbone.stem.weight"])
    assert "backbone.blocks.0 ×" in report.summary() and "0 backbone tensors left at init" in report.summary()


def test_a_finished_init_is_reused_and_a_new_recipe_gets_a_new_name(pretext_dir):
    before = (pretext_dir / CHECKPOINT).stat().st_mtime_ns
    _, _, created = ensure_pretext(model_preset("tiny", image_size=32), SMALL, pretext_dir)
    assert not created and (pretext_dir / CHECKPOINT).stat().st_mtime_ns == before
    tiny = model_preset("tiny")
    assert default_name(tiny, SMALL) != default_name(tiny, dataclasses.replace(SMALL, seed=6))
    assert default_name(tiny, SMALL) != default_name(model_preset("xs"), SMALL)
    assert default_name(tiny, SMALL).startswith("tiny-8x32-v")


def test_wrong_or_damaged_files_are_refused(pretext_dir, tmp_path):
    with pytest.raises(ValueError, match="another architecture"):
        load_init_weights(build_model(model_preset("tiny", embed_dim=32, num_heads=2)), pretext_dir / CHECKPOINT)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CHECKPOINT).write_bytes((pretext_dir / CHECKPOINT).read_bytes()[:-10])
    (bad / (CHECKPOINT + ".sha256")).write_text((pretext_dir / (CHECKPOINT + ".sha256")).read_text())
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_init_weights(build_model(model_preset("tiny")), bad / CHECKPOINT)
    (bad / CHECKPOINT).write_bytes((pretext_dir / CHECKPOINT).read_bytes())
    (bad / (CHECKPOINT + ".sha256")).unlink()
    with pytest.raises(ValueError, match="without its checksum file"):
        load_init_weights(build_model(model_preset("tiny")), bad / CHECKPOINT)
    with pytest.raises(FileNotFoundError, match="initial weights not found"):
        load_init_weights(build_model(model_preset("tiny")), bad / "nothing.pt")


@pytest.mark.parametrize("argv,message", [
    (["--preset", "nope"], "--preset: unknown preset 'nope'"),
    (["--epochs", "0"], "--epochs: epochs: must be >= 1"),
    (["--clips", "3"], "--clips: train_clips: 3 is below one batch"),
])
def test_pretrain_command_refuses_bad_flags(argv, message, tmp_path, capsys):
    assert main(["pretrain", "--runs", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pretrain").exists()


def test_every_epoch_draws_clips_it_never_drew_before_and_the_held_out_clips_come_after_them():
    from ifdd.pretrain import _FreshPerEpoch

    sampler = _FreshPerEpoch(50, seed=1)
    drawn = []
    for epoch in (1, 2, 3):
        sampler.set_epoch(epoch)
        drawn.append(list(sampler))
    assert [sorted(d) for d in drawn] == [list(range(e * 50, (e + 1) * 50)) for e in range(3)]
    assert drawn[0] != sorted(drawn[0])  # shuffled within the epoch
    sampler.set_epoch(2)
    assert list(sampler) == drawn[1]  # the same order again for the same epoch (a resumable, seeded stream)


def test_training_ends_at_the_first_epoch_that_reaches_the_target(tmp_path):
    recipe = dataclasses.replace(SMALL, epochs=3, target_accuracy=1e-9)  # any accuracy reaches it
    record = ensure_pretext(model_preset("tiny", image_size=32), recipe, tmp_path / "t", log=lambda _m: None)[1]
    assert record["epochs_run"] == 1 and record["steps"] == 2 and "reached the target" in record["stop_reason"]


@pytest.mark.parametrize("field,value,message", [("target_accuracy", 0.0, "target_accuracy: must be in (0, 1]"),
                                                 ("render_workers", -1, "render_workers: must be >= 0")])
def test_bad_recipe_fields_are_refused(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(SMALL, **{field: value})


@pytest.mark.parametrize(("preset", "size", "pretext_size"), [("tiny", 32, 32), ("tiny", 64, 32), ("tiny", 128, 64),
                                                              ("xs", 224, 96)])
def test_default_recipe_is_a_buildable_clip_size_for_every_model_size(preset, size, pretext_size):
    """Half the model's side, rounded down to a multiple of 32: a 32² model's default init is not a 16² one (which no
    model can take), and a 32² and a 64² tiny model share one init."""
    model = model_preset(preset, image_size=size)
    recipe = default_recipe(model)
    assert recipe.size == pretext_size
    assert pretext_model_config(model, recipe).image_size == pretext_size  # builds (ModelConfig validates)
    if preset == "tiny" and size <= 64:
        assert default_name(model, recipe) == default_name(model_preset("tiny"), default_recipe(model_preset("tiny")))
