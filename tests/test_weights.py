"""K400 mapping: a state dict in torchvision's mvit_v2_s key layout lands on the XS backbone."""

import argparse
import json
import math
from pathlib import Path

import ifdd_testkit
import pytest
import torch

from ifdd.config import model_preset
from ifdd.model import build_model
from ifdd.weights import load_k400_weights, map_torchvision_key

# Every key of torchvision 0.29.1's mvit_v2_s state dict with its shape, generated once from the real torchvision
# (tests/support/ifdd_testkit/make_mvit_v2_s_shapes.py): the stand-in K400 file below has exactly these keys and
# shapes, so a wrong mapping or a wrong XS shape cannot agree with it by construction.
TV = json.loads((Path(ifdd_testkit.__file__).parent / "mvit_v2_s_shapes.json").read_text())
TV_SHAPES = {k: tuple(v) for k, v in TV["shapes"].items()}

# Where each torchvision block parameter lands, written out independently of ifdd/weights.py's patterns.
TV_TO_OURS = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias", "attn.qkv.weight": "attn.qkv.weight", "attn.qkv.bias": "attn.qkv.bias",
    "attn.project.0.weight": "attn.proj.weight", "attn.project.0.bias": "attn.proj.bias",
    "attn.rel_pos_h": "attn.rel_pos_h", "attn.rel_pos_w": "attn.rel_pos_w", "attn.rel_pos_t": "attn.rel_pos_t",
    **{f"attn.pool_{x}.pool.weight": f"attn.pool_{x}.conv.weight" for x in "qkv"},
    **{f"attn.pool_{x}.norm_act.0.{p}": f"attn.pool_{x}.norm.{p}" for x in "qkv" for p in ("weight", "bias")},
    "mlp.0.weight": "mlp.fc1.weight", "mlp.0.bias": "mlp.fc1.bias", "mlp.3.weight": "mlp.fc2.weight",
    "mlp.3.bias": "mlp.fc2.bias", "project.weight": "proj.weight", "project.bias": "proj.bias",
}
S_FROM_XS = {**{i: i for i in range(8)}, 8: 14, 9: 15}  # XS keeps S blocks 0-7 and its last stage (14, 15)


def expected_target(tv_key: str) -> str | None:
    """The XS key a torchvision key must fill (None: deliberately unused)."""
    if tv_key == "pos_encoding.class_token":
        return "backbone.cls_token"
    if tv_key in ("norm.weight", "norm.bias"):
        return "backbone." + tv_key
    if tv_key.startswith(("head.", "conv_proj.")):
        return None
    _, src, suffix = tv_key.split(".", 2)
    dst = {s: x for x, s in S_FROM_XS.items()}.get(int(src))
    return None if dst is None else f"backbone.blocks.{dst}.{TV_TO_OURS[suffix]}"


@pytest.fixture(scope="module")
def xs_model():
    return build_model(model_preset("xs"))


def fake_mvit_v2_s():
    """A random state dict with torchvision mvit_v2_s's real keys and shapes (what the K400 file holds)."""
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=g) for k, shape in TV_SHAPES.items()}


def test_the_committed_key_list_is_torchvisions_mvit_v2_s():
    assert TV["torchvision"].startswith("0.29.1") and len(TV_SHAPES) == 397
    assert TV["parameters"] == sum(math.prod(s) for s in TV_SHAPES.values()) == 34_537_744  # MViTv2-S: 34.5 M
    assert {int(k.split(".")[1]) for k in TV_SHAPES if k.startswith("blocks.")} == set(range(16))  # [1, 2, 11, 2]


def test_key_layout_facts():
    assert map_torchvision_key("blocks.14.attn.project.0.weight") == "backbone.blocks.8.attn.proj.weight"
    assert map_torchvision_key("blocks.15.mlp.3.bias") == "backbone.blocks.9.mlp.fc2.bias"
    assert map_torchvision_key("blocks.1.attn.pool_k.norm_act.0.weight") == "backbone.blocks.1.attn.pool_k.norm.weight"
    assert map_torchvision_key("blocks.10.norm1.weight") is None
    assert map_torchvision_key("head.1.weight") is None and map_torchvision_key("conv_proj.weight") is None
    assert map_torchvision_key("whatever.weight") is False


def test_load_k400_state_dict_onto_xs(xs_model, tmp_path):
    sd = fake_mvit_v2_s()
    path = tmp_path / "mvit_v2_s.pth"
    torch.save({"model": sd}, path)
    stem_before = xs_model.backbone.stem.weight.clone()
    report = load_k400_weights(xs_model, path)
    state = xs_model.state_dict()
    targets = {k: expected_target(k) for k in sd}
    for tv_key, ours in targets.items():  # every tensor lands where it must, unchanged
        if ours is not None:
            assert torch.equal(state[ours].reshape(sd[tv_key].shape), sd[tv_key]), f"{tv_key} -> {ours}"
    assert torch.equal(xs_model.backbone.stem.weight, stem_before)  # stem skipped, as in the reference
    assert report.loaded == sorted(t for t in targets.values() if t)
    assert report.skipped == [k for k, t in targets.items() if t is None]  # stem, head, S blocks 8-13
    assert {k.split(".")[1] for k in report.skipped if k.startswith("blocks.")} == {str(i) for i in range(8, 14)}
    assert report.missing == ["backbone.stem.bias", "backbone.stem.weight"] and report.unexpected == []
    # every backbone parameter but the stem comes from the file
    assert set(report.loaded) == {k for k in state if k.startswith("backbone.")} - set(report.missing)


def test_load_stem_option_and_errors(xs_model, tmp_path):
    sd = fake_mvit_v2_s()
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    report = load_k400_weights(xs_model, path, load_stem=True)
    assert report.missing == []
    assert torch.equal(xs_model.backbone.stem.weight, sd["conv_proj.weight"])

    sd["blocks.3.attn.qkv.weight"] = torch.zeros(5, 5)
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"blocks.3.attn.qkv.weight has shape \(5, 5\)"):
        load_k400_weights(xs_model, path)
    torch.save({"model": {}}, path)
    with pytest.raises(ValueError, match="not a state dict"):
        load_k400_weights(xs_model, path)
    with pytest.raises(ValueError, match="only the xs preset"):
        load_k400_weights(build_model(model_preset("tiny")), path)


def test_pickled_code_is_refused(xs_model, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": argparse.Namespace(run="code")}, path)  # any non-tensor global needs unpickling
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_k400_weights(xs_model, path)
