"""Every pooling-attention kernel (``attention_impl``) and pooling-conv layout (``pool_conv``) computes what the
original eager implementation computed: fp64 forward and gradients against a copy of that implementation kept
here (not in the library), per block and through the whole model; FlexAttention (CPU: compiled, fp32, inference
only) within fp32 tolerance; and the channels-last weights no longer trigger DDP's grad-strides warning."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ifdd.backbone import MViTBlock, PoolingAttention
from ifdd.config import model_preset
from ifdd.model import build_model

sys.path.insert(0, str(Path(__file__).parent))
from mvit_reference import reference_attention  # noqa: E402

IMPLS = ["eager", "sdpa"]
LAYOUTS = ["channels_last", "contiguous", "shifted"]


# Helpers ----------------------------------------------------------------------------------------------------------
# (dim, dim_out, heads, input_thw, stride_q, stride_kv): a stage-0 block (1 head, kv stride 4) and a stage
# transition (width doubles, 2 heads, query stride 2, kv stride 2), on small odd-sized grids.
BLOCKS = {
    "stage0": (16, 16, 1, (4, 12, 12), (1, 1, 1), (1, 4, 4)),
    "transition": (16, 32, 2, (4, 10, 10), (1, 2, 2), (1, 2, 2)),
}


def _block(name: str, impl: str, layout: str, seed: int = 0) -> MViTBlock:
    dim, dim_out, heads, thw, sq, skv = BLOCKS[name]
    torch.manual_seed(seed)
    block = MViTBlock(dim, dim_out, heads, thw, sq, skv, 3, 4.0, 0.0, impl, layout).double()
    with torch.no_grad():  # non-trivial values everywhere, relative tables and norms included
        for p in block.parameters():
            p.normal_(0.0, 0.3)
    return block


def _grads(out: torch.Tensor, tensors) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return torch.autograd.grad((out * torch.randn_like(out)).sum(), tensors)


def _close(got, want, tol, scale=None):
    # Error relative to ``scale`` (default: the largest |want|). Gradients pass the largest over all tensors: some
    # are zero in exact arithmetic (softmax ignores a per-query constant, e.g. the key norm's bias) and ~1e-15 here.
    scale = want.abs().max().item() if scale is None else scale
    err = (got - want).abs().max().item() / max(scale, 1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


def _close_all(got, want, tol):
    scale = max(w.abs().max().item() for w in want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape, i
        _close(g, w, tol, scale)


# Tests ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_attention_equals_reference_fp64_forward_and_gradients(name, impl, layout):
    block = _block(name, impl, layout)
    thw = BLOCKS[name][3]
    x = torch.randn(2, 1 + thw[0] * thw[1] * thw[2], BLOCKS[name][0], dtype=torch.float64, requires_grad=True)
    params = [x, *block.attn.parameters()]
    got, got_thw = block.attn(x, thw)
    want, want_thw = reference_attention(block.attn, x, thw)
    assert got_thw == want_thw
    _close(got, want, 1e-12)
    _close_all(_grads(got, params), _grads(want, params), 1e-12)


@pytest.mark.parametrize("impl,layout", [("auto", "auto"), ("eager", "contiguous"), ("sdpa", "shifted")])
def test_whole_model_equals_reference_fp64(monkeypatch, impl, layout):
    # The tiny model end to end (5 blocks, 4 stages, ISSM/LADM on): logits and every parameter's gradient.
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 64, 64, dtype=torch.float64)
    model = build_model(model_preset("tiny", attention_impl=impl, pool_conv=layout, drop_path=0.0,
                                     ladm_drop_path=0.0, head_dropout=0.0)).double().train()
    params = [p for p in model.parameters() if p.requires_grad]
    got = model(x)["logits"]
    got_g = _grads(got, params)
    monkeypatch.setattr(PoolingAttention, "forward", reference_attention)
    want = model(x)["logits"]
    want_g = _grads(want, params)
    _close(got, want, 1e-12)
    _close_all(got_g, want_g, 1e-12)


def test_inference_mode_and_no_grad_paths_agree():
    block = _block("transition", "auto", "auto")
    thw = BLOCKS["transition"][3]
    x = torch.randn(1, 1 + 4 * 10 * 10, 16, dtype=torch.float64)
    with torch.inference_mode():
        got, _ = block.attn(x, thw)
    with torch.no_grad():
        want, _ = reference_attention(block.attn, x, thw)
    _close(got, want, 1e-12)


def test_sdpa_follows_bf16_inputs():
    # bf16 on CPU (the flash kernel's other dtype): same as the fp64 reference within bf16 precision.
    block = _block("stage0", "sdpa", "auto")
    thw = BLOCKS["stage0"][3]
    x = torch.randn(2, 1 + 4 * 12 * 12, 16, dtype=torch.float64)
    with torch.no_grad():
        want, _ = reference_attention(block.attn, x, thw)
        got, _ = block.bfloat16().attn(x.bfloat16(), thw)
    assert got.dtype == torch.bfloat16
    _close(got.double(), want, 0.05)


@pytest.mark.parametrize("impl", IMPLS)
def test_kernels_under_autocast_follow_the_reference(impl):
    # Mixed dtypes as on a GPU step (bf16 matmuls, fp32 norms): forward and backward run and agree with the old
    # path under the same autocast, to bf16 precision.
    block = _block("transition", impl, "auto").float()
    thw = BLOCKS["transition"][3]
    x = torch.randn(2, 1 + 4 * 10 * 10, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = block.attn(x, thw)
        want, _ = reference_attention(block.attn, x, thw)
    assert got.dtype == want.dtype
    _close(got.float(), want.float(), 0.05)
    _close_all(_grads(got.float(), [x]), _grads(want.float(), [x]), 0.05)


@pytest.mark.slow
def test_flex_cpu_inference_matches_reference_and_refuses_training():
    # Compiles FlexAttention for two shapes (~20-40 s on 2 cores): slow.
    for name in sorted(BLOCKS):
        block = _block(name, "flex", "auto")
        thw = BLOCKS[name][3]
        x = torch.randn(2, 1 + thw[0] * thw[1] * thw[2], BLOCKS[name][0], dtype=torch.float64)
        with torch.no_grad():
            want, _ = reference_attention(block.attn, x, thw)
            got, _ = block.float().attn(x.float(), thw)
        _close(got.double(), want, 1e-5)
    with pytest.raises(RuntimeError, match="no backward on CPU"):
        block.attn(x.float().requires_grad_(), thw)
    with pytest.raises(RuntimeError, match="no float64"), torch.no_grad():
        block.double().attn(x, thw)


def test_model_info_counts_the_architecture_not_a_kernel():
    # `ifdd model info` runs on the meta device, where auto means the plain computation: the sdpa kernel's padded
    # widths would add ~47 % to the tiny model's MACs.
    from ifdd.info import model_info

    macs = {impl: model_info(model_preset("tiny", attention_impl=impl))["macs_per_clip"] for impl in ("auto", "eager")}
    assert macs["auto"] == macs["eager"] == 105_774_816


def test_config_rejects_unknown_kernels():
    with pytest.raises(ValueError, match="attention_impl: must be"):
        model_preset("tiny", attention_impl="fast")
    with pytest.raises(ValueError, match="pool_conv: must be"):
        model_preset("tiny", pool_conv="nhwc")


_DDP_SCRIPT = textwrap.dedent("""
    import sys, tempfile, warnings
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from ifdd.backbone import TokenPool
    from ifdd.config import model_preset
    from ifdd.model import build_model
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(tempfile.mktemp(), 1), rank=0, world_size=1)
    model = build_model(model_preset("tiny", pool_conv=sys.argv[1]))
    if sys.argv[2] == "contiguous-weights":  # the weights as they were before: plain contiguous strides
        for m in model.modules():
            if isinstance(m, TokenPool):
                m.conv.weight = torch.nn.Parameter(torch.empty(m.conv.weight.shape).copy_(m.conv.weight.detach()))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ddp = DDP(model)  # held: its reducer (which copies gradients into the buckets) lives as long as it
        ddp(torch.rand(2, 3, 16, 64, 64))["logits"].sum().backward()
    print("GRAD_STRIDES_WARNING" if any("Grad strides" in str(w.message) for w in rec) else "NO_WARNING")
    dist.destroy_process_group()
""")


@pytest.mark.parametrize("layout,weights,expected", [
    ("auto", "as-built", "NO_WARNING"), ("contiguous", "as-built", "NO_WARNING"), ("shifted", "as-built", "NO_WARNING"),
    ("channels_last", "contiguous-weights", "GRAD_STRIDES_WARNING"),  # the control: the warning is detected
])
def test_ddp_grad_strides_warning_is_gone_at_its_cause(layout, weights, expected):
    # A fresh process per case: the warning is emitted once per process.
    run = subprocess.run([sys.executable, "-c", _DDP_SCRIPT, layout, weights], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == expected
