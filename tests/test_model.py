"""IFDD model: output shapes, gradients, split ratio × lifting depth, ablations, ISSM sampling."""

import pytest
import torch

from ifdd.config import LossConfig, model_preset
from ifdd.issm import base_positions, temporal_sample
from ifdd.loss import IFDDLoss
from ifdd.model import build_model


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same RNG state, whichever tests ran before (tests/conftest.py restores it)."""
    torch.manual_seed(0)


def tiny_clip(b=2):
    return torch.rand(b, 3, 16, 64, 64)


def test_tiny_output_and_aux_shapes():
    model = build_model(model_preset("tiny")).train()
    out = model(tiny_clip(3))
    assert out["logits"].shape == (3, 7)
    assert out["feature"].shape == (3, 128)
    assert [m.shape for m in out["gc_maps"]] == [(3, 2, 2)]


def test_xs_output_and_aux_shapes():
    # The paper model at full size: 16x224² -> logits (B, 7), feature (B, 768), gc map (B, 7, 7). Two threads (the
    # CI box's cores); tests/conftest.py puts the thread count back afterwards.
    torch.set_num_threads(2)
    model = build_model(model_preset("xs")).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 224, 224))
    assert out["logits"].shape == (1, 7)
    assert out["feature"].shape == (1, 768)
    assert [m.shape for m in out["gc_maps"]] == [(1, 7, 7)]
    assert torch.isfinite(out["logits"]).all()


def test_backbone_stage_shapes_xs():
    with torch.device("meta"):
        model = build_model(model_preset("xs"))
        stages = model.backbone(torch.empty(1, 3, 16, 224, 224))
    assert [(tuple(t.shape), thw) for t, thw in stages] == [
        ((1, 1 + 8 * 56 * 56, 96), (8, 56, 56)),
        ((1, 1 + 8 * 28 * 28, 192), (8, 28, 28)),
        ((1, 1 + 8 * 14 * 14, 384), (8, 14, 14)),
        ((1, 1 + 8 * 7 * 7, 768), (8, 7, 7)),
    ]


def _loss_backward(model, depth_levels_expected):
    out = model(tiny_clip(4))
    loss, _ = IFDDLoss(LossConfig(lambda_gc=1.0), 7)(out, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert len(model.lifting.levels) == depth_levels_expected
    return out


@pytest.mark.parametrize("depth", [1, 3])
def test_gradient_reaches_issm_offsets_and_every_level(depth):
    model = build_model(model_preset("tiny", lifting_depth=depth, ladm_drop_path=0.0)).train()
    # Offsets that point outside [0, T-1] are border-clamped and carry no gradient (as in the reference's
    # grid_sample border padding); the first static and last dynamic base slots sit on the edges, so point every
    # offset inwards to make the check deterministic.
    with torch.no_grad():
        for level in model.lifting.levels:
            level.issm.offset_static.weight.fill_(0.01)
            level.issm.offset_dynamic.weight.fill_(-0.01)
    _loss_backward(model, depth)
    for i, level in enumerate(model.lifting.levels):
        for name in ("issm.offset_static.weight", "issm.offset_dynamic.weight", "issm.descriptor.weight",
                     "update.q.weight", "predict.kv.weight", "token_pool.weight"):
            grad = level.get_parameter(name).grad
            assert grad is not None and grad.abs().sum() > 0, f"level {i + 1}: no gradient on {name}"


# Expected (static, dynamic) slots per level for T' = 8 temporal slots, or None where the config must be rejected.
SLOT_TABLE = {
    (0.25, 1): [(2, 6)], (0.25, 2): [(2, 6), (1, 1)], (0.25, 3): None,
    (0.5, 1): [(4, 4)], (0.5, 2): [(4, 4), (2, 2)], (0.5, 3): [(4, 4), (2, 2), (1, 1)],
    (0.75, 1): [(6, 2)], (0.75, 2): [(6, 2), (5, 1)], (0.75, 3): [(6, 2), (5, 1), (4, 1)],
}


@pytest.mark.parametrize("ratio,depth", sorted(SLOT_TABLE))
def test_split_ratio_by_lifting_depth(ratio, depth):
    expected = SLOT_TABLE[(ratio, depth)]
    if expected is None:
        with pytest.raises(ValueError, match="split_ratio=0.25 with lifting_depth=3: level 3"):
            model_preset("tiny", split_ratio=ratio, lifting_depth=depth)
        return
    cfg = model_preset("tiny", split_ratio=ratio, lifting_depth=depth)
    assert cfg.slots == expected
    model = build_model(cfg).train()
    out = model(tiny_clip())
    assert out["logits"].shape == (2, 7)
    assert len(out["gc_maps"]) == depth
    assert [m.shape for m in out["gc_maps"]] == [(2, 2, 2)] * depth
    out["logits"].sum().backward()


@pytest.mark.parametrize("use_issm,use_ladm", [(False, True), (True, False), (False, False)])
def test_ablations_run(use_issm, use_ladm):
    model = build_model(model_preset("tiny", use_issm=use_issm, use_ladm=use_ladm)).train()
    out = model(tiny_clip())
    assert out["logits"].shape == (2, 7)
    names = {n for n, _ in model.named_parameters()}
    if not use_issm and not use_ladm:
        assert model.lifting is None and out["gc_maps"] == []
        assert not any(n.startswith("lifting.") for n in names)
        return
    assert any("offset_dynamic" in n for n in names) == use_issm
    assert any(".update." in n for n in names) == use_ladm
    assert (len(out["gc_maps"]) == 1) == use_ladm
    out["logits"].sum().backward()


def test_ablated_split_is_the_lazy_even_odd_split():
    model = build_model(model_preset("tiny", use_issm=False)).eval()
    static, dynamic = model.lifting.levels[0].issm.positions(torch.zeros(2, 128, 8, 2, 2))
    assert static.tolist() == [[0, 2, 4, 6]] * 2
    assert dynamic.tolist() == [[1, 3, 5, 7]] * 2


def test_base_positions_generalise_the_even_odd_split():
    s, d = base_positions(8, 2)
    assert s.tolist() == [0.0, 4.0]
    assert d.tolist() == pytest.approx([1 / 3, 5 / 3, 3.0, 13 / 3, 17 / 3, 7.0])
    assert all(0 <= p <= 7 for p in s.tolist() + d.tolist())


def _ramp(t=8):
    # x[..., t, :, :] == t, so a sample's value equals the position it was taken at.
    return torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).expand(1, 2, t, 3, 3).contiguous()


def test_temporal_sample_exact_and_reference_grid():
    x = _ramp()
    s, d = base_positions(8, 4)
    exact = temporal_sample(x, s[None]), temporal_sample(x, d[None])
    assert exact[0][0, 0, :, 0, 0].tolist() == pytest.approx([0, 2, 4, 6])
    assert exact[1][0, 0, :, 0, 0].tolist() == pytest.approx([1, 3, 5, 7])
    ref_s = temporal_sample(x, s[None], reference_grid=True)[0, 0, :, 0, 0]
    ref_d = temporal_sample(x, d[None], reference_grid=True)[0, 0, :, 0, 0]
    # The reference repo's shifted positions (docs/model.md §5.6).
    assert ref_s.tolist() == pytest.approx([0, 1.7857, 4.0714, 6.3571], abs=1e-3)
    assert ref_d.tolist() == pytest.approx([0.6429, 2.9286, 5.2143, 7], abs=1e-3)


def test_temporal_sample_is_differentiable_in_the_position():
    pos = torch.tensor([[1.3, 4.6]], requires_grad=True)
    out = temporal_sample(_ramp(), pos)
    assert out[0, 0, :, 0, 0].tolist() == pytest.approx([1.3, 4.6])
    out.sum().backward()
    assert pos.grad[0].tolist() == pytest.approx([18.0, 18.0])  # d(value)/d(pos) = 1 for each of 2·3·3 elements


def test_offsets_are_bounded_by_the_receptive_field():
    model = build_model(model_preset("tiny", issm_receptive_field=1.5))
    issm = model.lifting.levels[0].issm
    with torch.no_grad():
        issm.offset_static.weight.fill_(100.0)
        issm.offset_dynamic.weight.fill_(-100.0)
    s, d = issm.positions(torch.randn(2, 128, 8, 2, 2))
    base_s, base_d = base_positions(8, 4)
    assert ((s - base_s).abs() <= 1.5 + 1e-6).all() and ((d - base_d).abs() <= 1.5 + 1e-6).all()


@pytest.mark.parametrize("switch", [{"update_first": False}, {"issm_positions": "reference"},
                                    {"value_residual": False}], ids=lambda d: next(iter(d)))
def test_each_reference_switch_changes_the_output_with_the_same_weights(switch):
    """Same parameters, same weights, same clip: the switched model computes something else (an ignored switch
    would give identical logits)."""
    torch.manual_seed(0)
    base = build_model(model_preset("tiny", head_dropout=0.0)).eval()
    switched = build_model(model_preset("tiny", head_dropout=0.0, **switch)).eval()
    assert [(k, v.shape) for k, v in switched.state_dict().items()] == [
        (k, v.shape) for k, v in base.state_dict().items()]
    switched.load_state_dict(base.state_dict())
    x = tiny_clip(4)
    with torch.no_grad():
        a, b = base(x), switched(x)
    assert not torch.allclose(a["feature"], b["feature"], atol=1e-4), switch
    both = build_model(model_preset("tiny", head_dropout=0.0, update_first=False, issm_positions="reference",
                                    value_residual=False, ladm_mlp_drop_path=True)).train()
    assert both(x)["logits"].shape == (4, 7)  # all of them together, as in dfew_paper_parity.yaml


def test_reference_issm_positions_sample_the_shifted_grid():
    torch.manual_seed(0)
    exact = build_model(model_preset("tiny")).eval().lifting.levels[0].issm
    ref = build_model(model_preset("tiny", issm_positions="reference")).eval().lifting.levels[0].issm
    ref.load_state_dict(exact.state_dict())
    with torch.no_grad():
        for w in (exact.offset_static.weight, exact.offset_dynamic.weight, ref.offset_static.weight,
                  ref.offset_dynamic.weight):
            w.zero_()  # no learned offset: the sample positions are the base grid
    x = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 128, 8, 3, 3).contiguous()  # value = temporal position
    (s_exact, d_exact), (s_ref, d_ref) = exact(x), ref(x)
    assert s_exact[0, 0, :, 0, 0].tolist() == pytest.approx([0, 2, 4, 6], abs=1e-4)
    assert d_exact[0, 0, :, 0, 0].tolist() == pytest.approx([1, 3, 5, 7], abs=1e-4)
    assert s_ref[0, 0, :, 0, 0].tolist() == pytest.approx([0, 1.7857, 4.0714, 6.3571], abs=1e-3)
    assert d_ref[0, 0, :, 0, 0].tolist() == pytest.approx([0.6429, 2.9286, 5.2143, 7], abs=1e-3)


def test_ladm_mlp_drop_path_zeroes_whole_features_only_when_on():
    """The reference quirk drops the post-MLP output, which replaces the feature: a dropped clip's feature is all
    zeros (seen before the head, with the reference's un-normalised head). Off, no clip loses its feature."""
    x = tiny_clip(16)
    zeroed = {}
    for on in (False, True):
        torch.manual_seed(0)
        model = build_model(model_preset("tiny", ladm_drop_path=0.5, ladm_mlp_drop_path=on, feature_norm=False,
                                         drop_path=0.0)).train()
        feature = model(x)["feature"]
        zeroed[on] = int((feature.abs().amax(dim=1) == 0).sum())
    assert zeroed[False] == 0 and 0 < zeroed[True] < 16, zeroed


def test_input_norm_standardises_inside_the_model():
    torch.manual_seed(0)
    raw = build_model(model_preset("tiny", input_norm="none")).eval()
    norm = build_model(model_preset("tiny")).eval()
    norm.load_state_dict(raw.state_dict())  # the statistics are buffers outside the state dict
    x = torch.rand(2, 3, 16, 64, 64)
    with torch.no_grad():
        assert torch.allclose(norm(x)["logits"], raw((x - 0.45) / 0.225)["logits"], atol=1e-6)


def test_linear_init_sets_the_spread_of_the_backbone_and_lifting_linears():
    def spread(linear_init):
        torch.manual_seed(0)
        model = build_model(model_preset("tiny", linear_init=linear_init))
        qkv = model.backbone.blocks[0].attn.qkv  # fan_in 16 (the tiny stage-0 width)
        return float(qkv.weight.std()), float(qkv.bias.abs().max())

    (mvit_std, mvit_bias), (torch_std, torch_bias) = spread("mvit"), spread("torch")
    assert mvit_std == pytest.approx(0.02, rel=0.15) and mvit_bias == 0.0
    assert torch_std == pytest.approx(1 / (3 * 16) ** 0.5, rel=0.15) and 0 < torch_bias <= 16 ** -0.5
    assert model_preset("tiny").linear_init == "torch" and model_preset("xs").linear_init == "mvit"


def test_nan_positions_give_nan_samples_not_an_index_error():
    x = torch.rand(2, 4, 8, 3, 3)
    out = temporal_sample(x, torch.tensor([[0.5, float("nan")], [float("inf"), 2.0]]))
    assert out.shape == (2, 4, 2, 3, 3)
    assert torch.isnan(out[0, :, 1]).all() and torch.isfinite(out[0, :, 0]).all()


def test_feature_norm_gives_unit_scale_features_and_false_is_the_reference_head():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 64, 64)
    normed = build_model(model_preset("tiny", head_dropout=0.0, linear_init="mvit")).eval()  # MViT's init, as
    raw = build_model(model_preset("tiny", head_dropout=0.0, feature_norm=False, linear_init="mvit")).eval()  # XS
    with torch.no_grad():
        f_norm, f_raw = normed(x)["feature"], raw(x)["feature"]
    assert f_norm.std(dim=1).min() > 0.5  # LayerNorm: unit scale per clip
    assert f_raw.abs().mean() < 0.05  # the reference path: the token-pooled post-MLP output is tiny at init
    assert not any("feature_norm" in k for k in raw.state_dict())
