"""The shipped default pretext init (ifdd/pretrained/): it is the one the current code would make, a first use
copies it instead of pretraining, and the default recipe still makes an equivalent one from scratch (`make
test-load`)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ifdd.config import model_preset
from ifdd.model import build_model
from ifdd.pretrain import CHECKPOINT, RECORD, SHIPPED, default_name, default_recipe, ensure_pretext, shipped_init
from ifdd.weights import load_init_weights

TINY = model_preset("tiny")
NAME = default_name(TINY, default_recipe(TINY))


def test_the_shipped_init_is_the_current_default_of_tiny_and_nothing_else_ships():
    shipped = sorted(p.name for p in SHIPPED.iterdir())
    assert shipped == [NAME], (
        f"ifdd/pretrained holds {shipped}, the current default init of tiny is {NAME} (the architecture, recipe or "
        f"generator changed): make it with `ifdd pretrain --preset tiny --out ifdd/pretrained/{NAME}` and remove "
        "the old folder")
    record = json.loads((SHIPPED / NAME / RECORD).read_text())
    recipe = default_recipe(TINY)
    assert record["recipe"] == dataclasses.asdict(recipe) and record["preset"] == "tiny"
    assert record["pretext_accuracy"] >= recipe.target_accuracy and "reached the target" in record["stop_reason"]


def test_the_shipped_init_gives_the_fine_tuned_tiny_its_whole_backbone():
    model = build_model(model_preset("tiny", num_frames=16, image_size=64))  # the demo's clips
    report = load_init_weights(model, SHIPPED / NAME / CHECKPOINT)  # verifies the checksum file too
    assert report.source == "ifdd-pretext" and report.missing == [] and report.unexpected == []
    assert report.loaded == sorted(k for k in model.state_dict() if k.startswith("backbone."))


def test_a_first_use_copies_the_shipped_init_instead_of_pretraining(tmp_path, monkeypatch, capsys):
    import ifdd.pretrain
    from ifdd.runconfig import run_config_from_dict
    from orchestrator.inputs import ensure_default_pretext
    from orchestrator.outputs import Outputs

    def no_training(*_a, **_k):
        raise AssertionError("pretrained although a shipped init matches")

    monkeypatch.setattr(ifdd.pretrain, "pretrain", no_training)
    out = Outputs.resolve(str(tmp_path / "runs"))
    path = ensure_default_pretext(run_config_from_dict({"model": {"preset": "tiny"}}), out)
    assert path == out.pretrain_dir / NAME / CHECKPOINT
    for name in (CHECKPOINT, CHECKPOINT + ".sha256", RECORD):
        assert (path.parent / name).read_bytes() == (SHIPPED / NAME / name).read_bytes()
    assert f"default pretext init: copying the shipped {SHIPPED / NAME}" in capsys.readouterr().out
    assert ensure_default_pretext(run_config_from_dict({"model": {"preset": "tiny"}}), out) == path  # reused
    assert capsys.readouterr().out == ""
    assert shipped_init("tiny-8x32-v0-s0-00000000") is None


@pytest.mark.slow
@pytest.mark.load  # `make test-load`: ~8 min on a 2-core box
@pytest.mark.timeout(1800)
def test_the_default_recipe_makes_an_init_like_the_shipped_one_from_scratch(tmp_path):
    path, record, created = ensure_pretext(TINY, default_recipe(TINY), tmp_path / NAME, log=lambda _m: None)
    assert created and record["pretext_accuracy"] >= default_recipe(TINY).target_accuracy
    shipped = json.loads((SHIPPED / NAME / RECORD).read_text())
    for key in ("arch", "recipe", "generator_version", "classes", "data_sha256"):
        assert record[key] == shipped[key], key
    report = load_init_weights(build_model(model_preset("tiny")), path)
    assert report.missing == []
