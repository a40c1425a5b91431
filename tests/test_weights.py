"""K400 mapping: a state dict in torchvision's mvit_v2_s key layout lands on the XS backbone."""

import argparse

import pytest
import torch

from ifdd.config import model_preset
from ifdd.model import build_model
from ifdd.weights import XS_FROM_S, load_k400_weights, map_torchvision_key

# Our block-level key suffixes -> torchvision's, used to write a file in torchvision's layout.
OURS_TO_TV = {
    "attn.proj.": "attn.project.0.", "attn.pool_q.conv.": "attn.pool_q.pool.", "attn.pool_k.conv.": "attn.pool_k.pool.",
    "attn.pool_v.conv.": "attn.pool_v.pool.", "attn.pool_q.norm.": "attn.pool_q.norm_act.0.",
    "attn.pool_k.norm.": "attn.pool_k.norm_act.0.", "attn.pool_v.norm.": "attn.pool_v.norm_act.0.",
    "mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3.", "proj.": "project.",
}


def _tv_suffix(suffix):
    for ours, tv in OURS_TO_TV.items():
        if suffix.startswith(ours):
            return tv + suffix[len(ours):]
    return suffix


@pytest.fixture(scope="module")
def xs_model():
    return build_model(model_preset("xs"))


def fake_mvit_v2_s(model):
    """A random mvit_v2_s state dict: 16 blocks ([1, 2, 11, 2]), stem, class token, final norm, 400-way head."""
    g = torch.Generator().manual_seed(0)
    ours = model.state_dict()
    sd = {"conv_proj.weight": torch.randn(96, 3, 3, 7, 7, generator=g), "conv_proj.bias": torch.randn(96, generator=g),
          "pos_encoding.class_token": torch.randn(96, generator=g),
          "norm.weight": torch.randn(768, generator=g), "norm.bias": torch.randn(768, generator=g),
          "head.1.weight": torch.randn(400, 768, generator=g), "head.1.bias": torch.randn(400, generator=g)}
    for src in range(16):
        # Blocks 8–13 of S are 384-wide stage-2 blocks like XS block 7.
        like = {s: x for x, s in XS_FROM_S.items()}.get(src, 7)
        prefix = f"backbone.blocks.{like}."
        for key, value in ours.items():
            if key.startswith(prefix):
                sd[f"blocks.{src}.{_tv_suffix(key[len(prefix):])}"] = torch.randn(value.shape, generator=g)
    return sd


def test_key_layout_facts():
    assert map_torchvision_key("blocks.14.attn.project.0.weight") == "backbone.blocks.8.attn.proj.weight"
    assert map_torchvision_key("blocks.15.mlp.3.bias") == "backbone.blocks.9.mlp.fc2.bias"
    assert map_torchvision_key("blocks.1.attn.pool_k.norm_act.0.weight") == "backbone.blocks.1.attn.pool_k.norm.weight"
    assert map_torchvision_key("blocks.10.norm1.weight") is None
    assert map_torchvision_key("head.1.weight") is None and map_torchvision_key("conv_proj.weight") is None
    assert map_torchvision_key("whatever.weight") is False


def test_load_k400_state_dict_onto_xs(xs_model, tmp_path):
    sd = fake_mvit_v2_s(xs_model)
    # Shapes that only hold for the real MViTv2-S: block 0 sees 56² queries and 7² keys -> 2·56−1 relative rows.
    assert sd["blocks.0.attn.rel_pos_h"].shape == (111, 96)
    assert sd["blocks.1.attn.qkv.weight"].shape == (3 * 192, 96)
    assert sd["blocks.14.project.weight"].shape == (768, 384)
    path = tmp_path / "mvit_v2_s.pth"
    torch.save({"model": sd}, path)
    stem_before = xs_model.backbone.stem.weight.clone()
    report = load_k400_weights(xs_model, path)
    state = xs_model.state_dict()
    for dst, src in XS_FROM_S.items():
        assert torch.equal(state[f"backbone.blocks.{dst}.attn.qkv.weight"], sd[f"blocks.{src}.attn.qkv.weight"])
        assert torch.equal(state[f"backbone.blocks.{dst}.mlp.fc2.bias"], sd[f"blocks.{src}.mlp.3.bias"])
        assert torch.equal(state[f"backbone.blocks.{dst}.attn.rel_pos_t"], sd[f"blocks.{src}.attn.rel_pos_t"])
    assert torch.equal(state["backbone.blocks.8.proj.weight"], sd["blocks.14.project.weight"])
    assert torch.equal(state["backbone.cls_token"].flatten(), sd["pos_encoding.class_token"])
    assert torch.equal(state["backbone.norm.weight"], sd["norm.weight"])
    assert torch.equal(xs_model.backbone.stem.weight, stem_before)  # stem skipped, as in the reference
    assert report.missing == ["backbone.stem.bias", "backbone.stem.weight"]
    assert report.unexpected == []
    assert {k.split(".")[1] for k in report.skipped if k.startswith("blocks.")} == {str(i) for i in range(8, 14)}
    assert "head.1.weight" in report.skipped and "conv_proj.weight" in report.skipped
    assert len(report.loaded) == len([k for k in state if k.startswith("backbone.")]) - 2


def test_load_stem_option_and_errors(xs_model, tmp_path):
    sd = fake_mvit_v2_s(xs_model)
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
