"""int8 depth inference on the CPU (Note [int8 linear layers]) and precision="auto"'s choice
(sbsconv.models.precision): the quality budget against fp32 on tiny models of every family."""
from __future__ import annotations

import logging
import math

import pytest
import torch

import sbsconv
from helpers import data, psnr, to_hwc
from sbsconv import _core, media, models
from sbsconv.errors import SbsconvError
from sbsconv.models import precision

FAST = {"progress": False, "preset": "ultrafast", "crf": 0, "resume": False}


def normalised(depth: torch.Tensor) -> torch.Tensor:
    """Each frame to [0, 1] by its own 1st and 99th percentiles (as the stabiliser ranges it)."""
    x = depth.flatten(1).double()
    lo, hi = x.quantile(0.01, 1, keepdim=True), x.quantile(0.99, 1, keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def abs_rel(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The relative depth error after each frame's own normalisation."""
    a, r = normalised(ours), normalised(reference)
    return float((a - r).abs().mean() / r.mean())


def test_the_int8_layer_is_the_quantisation_the_note_describes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 48, generator=g)
    x[0, 0, 5] = 40.0  # one token with an outlier keeps its own scale
    w = torch.randn(24, 48, generator=g) * 0.1
    b = torch.randn(24, generator=g)
    ours = _core._int8_linear(x, w, b)
    # the reference: per-channel weight scales, per-token activation scales, symmetric, round
    # to nearest (ties to even), int32 accumulation
    ws = w.abs().amax(1) / 127
    wq = torch.round(w / ws[:, None]).clamp(-127, 127)
    flat = x.reshape(-1, 48)
    xs = flat.abs().amax(1) / 127
    xq = torch.round(flat * (1 / xs[:, None]))
    expected = ((xq.double() @ wq.double().t()) * xs[:, None].double() * ws[None, :].double() + b.double())
    torch.testing.assert_close(ours.reshape(-1, 24).double(), expected, rtol=1e-5, atol=1e-4)
    assert ours.shape == (3, 7, 24)
    exact = torch.nn.functional.linear(x, w, b)
    assert float((ours - exact).abs().max() / exact.abs().max()) < 0.03
    # without a bias, and a token of zeros (scale of nothing) stays zero
    zero = _core._int8_linear(torch.zeros(2, 48), w)
    assert torch.equal(zero, torch.zeros(2, 24))
    # bfloat16 in, bfloat16 out (the int8-bf16 variant), the same arithmetic
    half = _core._int8_linear(x.bfloat16(), w, b)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), _core._int8_linear(x.bfloat16().float(), w, b), rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("flags,int8,amx_family", [
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "int8", "int8"),  # AMD EPYC (Zen 4)
    ({"avx2", "amx_int8", "amx_bf16", "avx512_vnni", "avx512_bf16"}, "int8", "bf16"),  # Xeon with AMX
    ({"avx2", "avx_vnni"}, "int8", "int8"),  # client cores with AVX-VNNI
    ({"avx2", "fma"}, "fp32", "fp32"),  # no int8 dot products
    (set(), "fp32", "fp32"),  # not Linux, nothing known
])
def test_auto_picks_int8_where_the_cpu_has_int8_dot_products(flags, int8, amx_family):
    chosen, why = precision.auto_cpu_precision(frozenset(flags))
    assert chosen == int8
    assert why.startswith(chosen)
    # a family whose bf16 path is the faster one on AMX-BF16 (Depth-Anything-V2) gets bf16 there
    chosen, why = precision.auto_cpu_precision(frozenset(flags), bf16_on_amx=True)
    assert chosen == amx_family
    assert why.startswith(chosen)


def test_which_families_take_bf16_on_amx():
    families = models.families()
    assert families["depth-anything-v2"].bf16_on_amx
    assert not any(f.bf16_on_amx for name, f in families.items() if name != "depth-anything-v2")


def test_auto_on_the_cpu_says_what_it_picked(tiny_model, caplog):
    with caplog.at_level(logging.INFO, logger="sbsconv"):
        model = models.load(str(tiny_model), device="cpu")
    expected, _ = precision.auto_cpu_precision(bf16_on_amx=True)  # a Depth-Anything-V2
    assert model.precision == expected
    assert any(f"precision auto on the CPU: {expected}" in r.getMessage() for r in caplog.records)
    assert models.load(str(tiny_model), device="cpu", precision="int8").precision == "int8"
    assert models.load(str(tiny_model), device="cpu", precision="fp32").precision == "fp32"


# The kernel's 2^f on [0, 1) (Int8Linear.cpp, exp2_nonpositive): a cubic, 7.5e-5 relative error.
EXP2_CUBIC = torch.tensor([0.99992520, 0.69583374, 0.22606722, 0.07802419], dtype=torch.float32).double()


def exp2_cubic(y):
    """2^y for y <= 0 as the kernel computes it: 2^floor(y) exactly, the rest by the cubic."""
    y = y.clamp_min(-126.0)
    i = torch.floor(y)
    f = y - i
    c0, c1, c2, c3 = EXP2_CUBIC.tolist()
    return (c0 + f * (c1 + f * (c2 + f * c3))) * torch.pow(2.0, i)


def reference_int8_attention(q, k, v, bf16_values):
    """Note [int8 attention] written out with torch operations."""
    def rows(x):  # symmetric per-row int8, as the linear layers' activations
        scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127
        return (x / scale).round().clamp(-127, 127), scale
    qi, qs = rows(q)
    ki, ks = rows(k - k.mean(-2, keepdim=True))
    scores = (qi.double() @ ki.double().transpose(-1, -2)) * (qs * ks.transpose(-1, -2)).double()
    scores = scores / q.shape[-1] ** 0.5
    # in log2 units, by the kernel's 2^y; normalised after the product with v
    e = exp2_cubic((scores - scores.amax(-1, keepdim=True)) * math.log2(math.e))
    if bf16_values:  # bfloat16 probabilities and product
        out = (e.float().bfloat16().double() @ v.bfloat16().double()).float().bfloat16().double()
    else:
        out = e @ v.double()
    return (out / e.sum(-1, keepdim=True)).float()


def test_the_int8_mlp_is_the_two_layers_with_the_gelu_between():
    # Note [int8 MLP]: the fused middle (rescale, exact GELU, quantisation for the second
    # layer, one pass a row) against the two int8 layers with LibTorch's GELU between them
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 9, 48, generator=g)
    w1, b1 = torch.randn(192, 48, generator=g) * 0.2, torch.randn(192, generator=g)
    w2, b2 = torch.randn(48, 192, generator=g) * 0.1, torch.randn(48, generator=g)
    ours = _core._int8_mlp(x, w1, b1, w2, b2)
    assert ours.shape == (5, 9, 48)
    apart = _core._int8_linear(torch.nn.functional.gelu(_core._int8_linear(x, w1, b1)), w2, b2)
    # the same but for a few middle values rounding to the neighbouring int8 step (the erf's
    # polynomial is within 1e-4 of LibTorch's)
    step = float(apart.abs().max()) / 127
    assert float((ours - apart).abs().max()) < 2 * step
    assert float((ours - apart).abs().mean()) < 0.05 * step
    exact = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(x, w1, b1)), w2, b2)
    assert float((ours - exact).norm() / exact.norm()) < 0.02
    # negative inputs far out: the GELU is 0 there, positive ones pass through
    far = torch.tensor([[[-30.0] * 48], [[30.0] * 48]])
    eye = torch.eye(48).repeat(4, 1)  # 192 x 48: each hidden unit copies an input
    ident = torch.eye(48).repeat(1, 4) / 4  # 48 x 192: the average of the four copies
    out = _core._int8_mlp(far, eye, torch.zeros(192), ident, torch.zeros(48))
    torch.testing.assert_close(out[0], torch.zeros(1, 48), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], torch.full((1, 48), 30.0), atol=0.3, rtol=0)


def test_int8_attention_is_the_computation_the_note_describes():
    g = torch.Generator().manual_seed(1)
    for tokens in (5, 70, 300):  # one block, several blocks and a short last one (attention_block_rows)
        qkv = torch.randn(2, tokens, 3, 3, 16, generator=g).permute(2, 0, 3, 1, 4)  # [3, n, heads, t, d] views
        q, k, v = qkv[0] * 2, qkv[1] * 2 + torch.randn(2, 3, 1, 16, generator=g), qkv[2]
        ours, bf16_values, rows = _core._int8_attention(q, k, v)
        assert 64 <= rows <= 512
        # the blocks' size is the schedule's, not the result's: 16-row blocks give the same
        torch.testing.assert_close(_core._int8_attention(q, k, v, block_rows=16)[0], ours, rtol=1e-6, atol=1e-6)
        assert bf16_values == ("avx512_bf16" in precision.cpu_flags())
        torch.testing.assert_close(ours, reference_int8_attention(q, k, v, bf16_values), rtol=1e-2 if bf16_values else 1e-5, atol=1e-3 if bf16_values else 1e-5)
        exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        assert float((ours - exact).norm() / exact.norm()) < 0.03  # int8 scores: about 1 % off


def test_int8_layers_balance_wide_layer_norm_channels(tmp_path, frames):
    """Trained ViTs' LayerNorms scale a few channels tens of times wider than the rest; the int8
    path moves that spread into the weights (Note [int8 linear layers]), keeping the budget."""
    from conftest import tiny_depth_anything

    model = tiny_depth_anything()
    with torch.no_grad():
        model.head.conv3.bias.add_(0.5)
        for layer in model.backbone.encoder.layer:
            for norm in (layer.norm1, layer.norm2):
                norm.weight[:3] *= 45.0  # three wide channels (1.2 % off in int8 without the balance)
    model.save_pretrained(tmp_path)
    f32 = models.load(str(tmp_path), device="cpu", precision="fp32", input_size=140).infer(frames)
    i8 = models.load(str(tmp_path), device="cpu", precision="int8", input_size=140).infer(frames)
    assert float(normalised(f32).std()) > 0.1
    assert not torch.equal(i8, f32)
    assert abs_rel(i8, f32) <= 0.01


def test_int8_is_a_cpu_precision(tiny_model):
    with pytest.raises(SbsconvError, match="int8|cuda|CUDA"):
        models.load(str(tiny_model), device="cuda", precision="int8")
    with pytest.raises(SbsconvError, match="precision"):
        models.load(str(tiny_model), device="cpu", precision="int4")


@pytest.fixture(scope="module")
def frames():
    return next(iter(media.read_frames(data("Tokyo-Walk_rgb.mp4"), batch_size=3))).data


def test_depth_anything_v2_int8_meets_the_quality_budget(tiny_model, frames):
    f32 = models.load(str(tiny_model), device="cpu", precision="fp32", input_size=140)
    i8 = models.load(str(tiny_model), device="cpu", precision="int8", input_size=140)
    reference = f32.infer(frames)
    assert float(normalised(reference).std()) > 0.1  # a depth map with structure, not a constant
    ours = i8.infer(frames)
    assert not torch.equal(ours, reference)  # the int8 layers did run
    assert abs_rel(ours, reference) <= 0.01


def test_int8_runs_the_head_in_bfloat16_where_the_cpu_has_bf16_dot_products(tiny_model, frames):
    # Note [int8 with the head in bfloat16]: the DPT head's convolutions in bfloat16 on a CPU
    # with avx512_bf16, in float32 elsewhere; output_conv2 and the depth in float32 either way
    # (the tests' model's depth varies by 1e-6 around 0.5, below bfloat16's step there)
    bf16_dots = "avx512_bf16" in precision.cpu_flags()
    f32 = models.load(str(tiny_model), device="cpu", precision="fp32", input_size=140)
    i8 = models.load(str(tiny_model), device="cpu", precision="int8", input_size=140)
    assert f32.head_dtype == "Float"
    assert i8.dtype == "Float"  # the encoder's activations
    assert i8.head_dtype == ("BFloat16" if bf16_dots else "Float")
    reference, ours = f32.infer(frames), i8.infer(frames)
    assert ours.dtype == torch.float32
    assert float(ours.std()) > 0.5 * float(reference.std())  # not flattened to bfloat16's steps
    assert abs_rel(ours, reference) <= 0.01


def test_depth_anything_v2_bf16_on_the_cpu_meets_the_quality_budget(tiny_model, frames):
    # Note [bf16 on the CPU: the depth in float32]: the tests' model puts its depth's whole
    # variation below bfloat16's step at its value (0.5 +- 1e-6), so a depth rounded to bfloat16
    # would be one flat value; its last convolutions in float32 keep it
    f32 = models.load(str(tiny_model), device="cpu", precision="fp32", input_size=140)
    b16 = models.load(str(tiny_model), device="cpu", precision="bf16", input_size=140)
    reference = f32.infer(frames)
    ours = b16.infer(frames)
    assert ours.dtype == torch.float32
    assert float(ours.std()) > 0.5 * float(reference.std())  # not flattened
    assert not torch.equal(ours, reference)  # the bf16 path did run
    assert abs_rel(ours, reference) <= 0.01


def test_video_depth_anything_int8_meets_the_quality_budget(tiny_vda, frames):
    def run(p):
        m = models.load(tiny_vda, device="cpu", precision=p, input_size=70)
        clip = frames.repeat(3, 1, 1, 1)  # a short sequence
        out = [m.infer(clip).to(torch.float32)]
        out.append(m.flush().depth)
        return torch.cat([o for o in out if o.numel()])
    ours, reference = run("int8"), run("fp32")
    assert not torch.equal(ours, reference)  # the int8 layers did run
    assert abs_rel(ours, reference) <= 0.01


@pytest.mark.parametrize("preset", ["da3mono-large", "da3-small"])
def test_depth_anything_3_int8_meets_the_quality_budget(tmp_path, frames, preset):
    import da3_weights

    folder = da3_weights.write(tmp_path / preset, preset)

    def run(p):
        m = models.load(str(folder), device="cpu", precision=p, input_size=140)
        # inverse depth, as the pipeline takes it; a short clip: two any-view windows
        return m.pipeline_depth(m.estimate_clip(frames.repeat(3, 1, 1, 1)).depth)
    reference, ours = run("fp32"), run("int8")
    assert float(normalised(reference).std()) > 0.1
    assert not torch.equal(ours, reference)  # the int8 layers did run (QK-norm, RoPE, cross-view attention)
    assert abs_rel(ours, reference) <= 0.01


def test_depth_pro_int8_meets_the_quality_budget(tmp_path, frames):
    from test_depth_pro import save, tiny_reference

    save(tiny_reference(), tmp_path, 128)
    f32 = models.load(tmp_path, device="cpu", precision="fp32").estimate(frames)
    i8 = models.load(tmp_path, device="cpu", precision="int8").estimate(frames)
    assert not torch.equal(i8.depth, f32.depth)  # the int8 layers did run
    assert abs_rel(i8.depth, f32.depth) <= 0.01
    torch.testing.assert_close(i8.fov_degrees, f32.fov_degrees, rtol=0.01, atol=0.5)


def test_the_int8_and_bf16_eyes_are_within_40_db_of_the_fp32_eye(tiny_model, tmp_path):
    clip = data("Tokyo-Walk_rgb.mp4")
    options = dict(model=str(tiny_model), device="cpu", input_size=140, duration=1.0, **FAST)
    f32 = sbsconv.convert(clip, tmp_path / "fp32.mp4", precision="fp32", **options)
    a = torch.cat([b.data for b in media.read_frames(f32.output)])
    for name in ("int8", "bf16"):
        low = sbsconv.convert(clip, tmp_path / f"{name}.mp4", precision=name, **options)
        assert low.precision == name and f32.precision == "fp32"
        b = torch.cat([b.data for b in media.read_frames(low.output)])
        assert min(psnr(to_hwc(a[i:i + 1]), to_hwc(b[i:i + 1])) for i in range(len(a))) >= 40, name
