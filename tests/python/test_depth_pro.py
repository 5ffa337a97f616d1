"""Apple Depth Pro in C++ (issue 9): parity with transformers' DepthProForDepthEstimation on
small random configurations, the original checkpoint layout, the field of view in
conversions, and errors. Every model is tiny, random, made here, written in the real on-disk
formats and loaded through the real code."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

import sbsconv
import sbsconv.models as models
from sbsconv._native import _core
from sbsconv.errors import ModelError, OptionError
from sbsconv.models import depth_anything_v2 as dav2
from sbsconv.models import depth_pro

from helpers import HAS_CUDA, psnr

transformers = pytest.importorskip("transformers")
from transformers import DepthProConfig, DepthProForDepthEstimation  # noqa: E402


def tiny_reference(*, layers=12, hooks=(11, 5), fov=True, tile=32, vit_patch=8, hidden=32, fusion=16,
                   seed=0) -> DepthProForDepthEstimation:
    torch.manual_seed(seed)
    vit = {"model_type": "dinov2", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
           "patch_size": vit_patch, "image_size": tile, "mlp_ratio": 2}
    config = DepthProConfig(
        patch_size=tile, fusion_hidden_size=fusion, intermediate_hook_ids=list(hooks),
        intermediate_feature_dims=[fusion] * len(hooks), scaled_images_ratios=[0.25, 0.5, 1],
        scaled_images_overlap_ratios=[0.0, 0.5, 0.25], scaled_images_feature_dims=[2 * hidden, 2 * hidden, hidden],
        merge_padding_value=3, use_fov_model=fov, num_fov_head_layers=2,
        image_model_config=dict(vit), patch_model_config=dict(vit), fov_model_config=dict(vit))
    model = DepthProForDepthEstimation(config, use_fov_model=fov).eval()
    with torch.no_grad():  # move every parameter off its initial value (zero biases, layer scale 1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.head.layers[4].bias.add_(0.5)  # keep the final ReLU open
        if fov:
            model.fov_model.head.layers[-1].bias.fill_(FOV_BIAS)  # a plausible field of view
    return model


def save(model, folder, image_size: int) -> None:
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": image_size, "width": image_size}}))


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert float(ref.abs().max()) > 0 and (ref.numel() == 1 or float(ref.std()) > 0), "degenerate reference"
    return float((ours - ref).abs().max() / ref.abs().max())


FOV_BIAS = 55.0


def fov_rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative error of the field of view's network part (the bias set by the tests is exact)."""
    return rel(ours - FOV_BIAS, ref - FOV_BIAS)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = tiny_reference()
    folder = tmp_path_factory.mktemp("depth_pro_hf")
    save(ref, folder, 128)
    return ref, models.load(folder, device="cpu", precision="fp32"), folder


@pytest.mark.parametrize("size", [128, 160])
def test_network_matches_transformers(pair, size):
    ref, ours, _ = pair
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = ref(pixel_values=x)
    depth, fov = _core.depth_pro_forward(ours._core, x)
    assert depth.shape == (2, 1, *out.predicted_depth.shape[1:])
    assert rel(depth[:, 0], out.predicted_depth) < 1e-4
    assert fov_rel(fov, out.field_of_view) < 1e-4


@pytest.mark.parametrize("variant", [{"fov": False}, {"hooks": (3,), "layers": 4}, {"tile": 64, "vit_patch": 16}])
def test_other_configurations_match_transformers(variant, tmp_path):
    ref = tiny_reference(**variant)
    size = 4 * ref.config.patch_size
    save(ref, tmp_path, size)
    ours = models.load(tmp_path, device="cpu", precision="fp32")
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = ref(pixel_values=x)
    depth, fov = _core.depth_pro_forward(ours._core, x)
    assert rel(depth[:, 0], out.predicted_depth) < 1e-4
    if variant.get("fov", True):
        assert fov_rel(fov, out.field_of_view) < 1e-4
    else:
        assert fov is None and out.field_of_view is None


def reference_infer(ref, frames: torch.Tensor, size: int, fov_degrees=None):
    """transformers' DepthPro pre- and post-processing, written out (its image processor
    needs torchvision): normalise, resize to the square input, run, scale the canonical
    inverse depth by width / focal length, resize back, invert."""
    x = (frames.float() / 255 - 0.5) / 0.5
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    with torch.no_grad():
        out = ref(pixel_values=x)
    fov = out.field_of_view if fov_degrees is None else torch.full((len(frames),), float(fov_degrees))
    width = frames.shape[3]
    focal = 0.5 * width / torch.tan(0.5 * torch.deg2rad(fov))
    depth = out.predicted_depth * (width / focal)[:, None, None]
    depth = F.interpolate(depth[:, None], size=frames.shape[2:], mode="bilinear", align_corners=False)
    return 1.0 / depth.clamp(1e-4, 1e4), fov


def frames(n=2, h=90, w=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h // 6, w // 8), generator=g, dtype=torch.uint8)
    return F.interpolate(x.float(), size=(h, w), mode="bilinear").round().byte()


def test_infer_gives_metric_depth_and_the_field_of_view(pair):
    ref, ours, _ = pair
    assert ours.kind == "metric" and not ours.temporal
    f = frames()
    expected, fov = reference_infer(ref, f, 128)
    got = ours.estimate(f)
    assert got.depth.shape == (2, 1, 90, 160)
    # compared as inverse depth, what the network outputs (depth near the 1e4 m clamp is
    # arbitrarily sensitive to the last digit of an inverse depth near zero)
    assert rel(1 / got.depth, 1 / expected) < 1e-4
    torch.testing.assert_close(got.fov_degrees, fov, rtol=1e-4, atol=1e-4)
    assert 40 < float(fov.mean()) < 70


def test_a_given_field_of_view_replaces_the_estimate(pair):
    ref, ours, _ = pair
    f = frames(1)
    expected, _ = reference_infer(ref, f, 128, fov_degrees=80.0)
    ours._core.set_field_of_view(80.0)
    try:
        got = ours.estimate(f)
    finally:
        ours._core.set_field_of_view(None)
    assert rel(1 / got.depth, 1 / expected) < 1e-4
    assert float(got.fov_degrees[0]) == pytest.approx(80.0)
    # a wider view means a shorter focal length: everything is nearer by tan ratio
    estimate = ours.estimate(f)
    ratio = math.tan(math.radians(float(estimate.fov_degrees[0]) / 2)) / math.tan(math.radians(40.0))
    away_from_clamp = (1 / estimate.depth > 1e-3) & (1 / got.depth > 1e-3)
    assert int(away_from_clamp.sum()) > 1000
    torch.testing.assert_close(got.depth[away_from_clamp], (estimate.depth * ratio)[away_from_clamp], rtol=1e-4,
                               atol=1e-6)


def original_layout(ref) -> dict[str, torch.Tensor]:
    """The reference weights under the original checkpoint's names (apple/ml-depth-pro),
    written out independently of sbsconv's own mapping."""
    state = ref.state_dict()
    out: dict[str, torch.Tensor] = {}
    vits = {"depth_pro.encoder.patch_encoder.model.": "encoder.patch_encoder.",
            "depth_pro.encoder.image_encoder.model.": "encoder.image_encoder.",
            "fov_model.fov_encoder.model.": "fov.encoder.0."}
    for hf, original in vits.items():
        part = {"backbone." + k[len(hf):]: v for k, v in state.items() if k.startswith(hf)}
        for k, v in dav2.original_keys_from_transformers(part).items():
            if k == "pretrained.mask_token":
                continue  # timm's ViT has none
            out[original + k.removeprefix("pretrained.")] = v
    up = "depth_pro.neck.feature_upsample."
    names = {up + "image_block.layers.0": "encoder.upsample_lowres",
             "depth_pro.neck.fuse_image_with_low_res": "encoder.fuse_lowres",
             "fov_model.fov_encoder.neck": "fov.encoder.1", "fov_model.conv": "fov.downsample.0"}
    for level, original in enumerate(["encoder.upsample2", "encoder.upsample1", "encoder.upsample0"]):
        for j in range(2):
            names[f"{up}scaled_images.{level}.layers.{j}"] = f"{original}.{j}"
    for j in range(3):
        names[f"{up}intermediate.0.layers.{j}"] = f"encoder.upsample_latent1.{j}"
    for j in range(4):
        names[f"{up}intermediate.1.layers.{j}"] = f"encoder.upsample_latent0.{j}"
    for i in range(4):
        names[f"depth_pro.neck.feature_projection.projections.{i}"] = f"decoder.convs.{4 - i}"
    for i in range(5):
        ours = "fusion_stage.final" if i == 0 else f"fusion_stage.intermediate.{4 - i}"
        for r in (1, 2):
            names[f"{ours}.residual_layer{r}.convolution1"] = f"decoder.fusions.{i}.resnet{r}.residual.1"
            names[f"{ours}.residual_layer{r}.convolution2"] = f"decoder.fusions.{i}.resnet{r}.residual.3"
        names[f"{ours}.deconv"] = f"decoder.fusions.{i}.deconv"
        names[f"{ours}.projection"] = f"decoder.fusions.{i}.out_conv"
    for i in (0, 1, 2, 4):
        names[f"head.layers.{i}"] = f"head.{i}"
    for i in (0, 2, 4):
        names[f"fov_model.head.layers.{i}"] = f"fov.head.{i}"
    for k, v in state.items():
        if any(k.startswith(p) for p in vits):
            continue
        module, param = k.rsplit(".", 1)
        out[f"{names[module]}.{param}"] = v
    return out


def test_original_checkpoint_loads_and_agrees(tmp_path):
    # the original code fixes the pyramid, the hooks on blocks 11 and 5 and an input of four
    # tiles; its ViTs have 64-wide attention heads (the layout does not record the count)
    ref = tiny_reference(tile=64, vit_patch=16, hidden=128)
    weights = {k: v.half() for k, v in original_layout(ref).items()}  # the release is fp16
    path = tmp_path / "depth_pro.pt"
    torch.save(weights, path)
    separate_qkv = sum(1 for k in ref.state_dict()
                       if re.search(r"\.attention\.(attention\.(query|key|value)|[qkv]_proj)\.", k))
    assert len(weights) == len(ref.state_dict()) - 3 - separate_qkv * 2 // 3  # no mask tokens; q, k, v merged
    ours = models.load(path, device="cpu", precision="fp32")
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        for p in ref.parameters():  # the same fp16-rounded weights
            p.copy_(p.half().float())
        out = ref(pixel_values=x)
    depth, fov = _core.depth_pro_forward(ours._core, x)
    assert rel(depth[:, 0], out.predicted_depth) < 1e-4
    assert fov_rel(fov, out.field_of_view) < 1e-4
    # the registry name with a local copy of the file
    named = models.load("depth-pro", checkpoint=path, device="cpu", precision="fp32")
    assert named.name == "depth-pro" and named.license == "apple-amlr" and not named.spec.commercial_use


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_run_close_to_fp32(pair, precision):
    ref, ours, folder = pair
    try:
        half = models.load(folder, device="cpu", precision=precision)
    except OptionError:
        pytest.skip(f"{precision} is not available on this CPU")
    f = frames(1)
    full = ours.estimate(f).depth
    got = half.estimate(f).depth
    assert got.dtype == torch.float32 and got.shape == full.shape
    assert float(((got - full).abs() / full).median()) < 0.05


def test_licence_is_named_when_chosen(caplog, tmp_path):
    import logging

    ref = tiny_reference(tile=64, vit_patch=16)
    path = tmp_path / "depth_pro.pt"
    torch.save(original_layout(ref), path)
    with caplog.at_level(logging.WARNING, logger="sbsconv"):
        models.load("depth-pro", checkpoint=path, device="cpu")
    assert "apple-amlr" in caplog.text and "non-commercial" in caplog.text


def test_bad_checkpoints_are_refused(pair, tmp_path):
    ref, _, _ = pair
    weights = original_layout(tiny_reference(tile=64, vit_patch=16))
    del weights["decoder.fusions.2.out_conv.weight"]
    weights["head.0.bias"] = torch.zeros(3)
    path = tmp_path / "depth_pro.pt"
    torch.save(weights, path)
    with pytest.raises(ModelError) as info:
        models.load(path, device="cpu")
    message = str(info.value)
    assert "fusion_stage.intermediate.2.projection.weight" in message and "head.layers.0.bias" in message
    flat = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, flat)
    with pytest.raises(ModelError, match="transformers layout"):
        depth_pro.build(None, flat, "cpu", "fp32", 518)


def test_input_too_small_for_the_pyramid_is_refused(pair):
    _, ours, _ = pair
    with pytest.raises(OptionError, match="too small"):
        _core.depth_pro_forward(ours._core, torch.randn(1, 3, 96, 96))


def test_registry_entry():
    s = models.spec("depth-pro")
    assert (s.repo_id, s.filename, s.kind, s.alternative_repo) == ("apple/DepthPro", "depth_pro.pt", "metric",
                                                                    "apple/DepthPro-hf")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_fp16_agrees_with_cpu(pair):
    _, ours, folder = pair
    gpu = models.load(folder, device="cuda", precision="fp16")
    f = frames(2)
    cpu = ours.estimate(f)
    out = gpu.estimate(f.cuda())
    assert float(((out.depth.cpu() - cpu.depth).abs() / cpu.depth).median()) < 0.02
    torch.testing.assert_close(out.fov_degrees.cpu(), cpu.fov_degrees, rtol=0.02, atol=0.5)


# ---- the field of view in conversions --------------------------------------------------------

def test_estimated_field_of_view_drives_the_conversion(pair, testsrc, tmp_path):
    _, ours, folder = pair
    source = testsrc("pro_src.mp4", size="160x96", rate=10, seconds=0.5)
    options = {"model": folder, "progress": False, "preset": "ultrafast", "crf": 0, "device": "cpu"}
    estimated = sbsconv.convert(source, tmp_path / "estimated.mp4", **options)
    from sbsconv import media

    all_frames = torch.cat([b.data for b in media.read_frames(source, batch_size=8)])
    expected = float(ours.estimate(all_frames).fov_degrees.mean())
    assert estimated.fov_degrees == pytest.approx(expected, rel=1e-3)
    same = sbsconv.convert(source, tmp_path / "same.mp4", fov_degrees=round(expected, 4), **options)
    wider = sbsconv.convert(source, tmp_path / "wider.mp4", fov_degrees=expected + 40, **options)
    assert same.fov_degrees is None or same.fov_degrees == pytest.approx(round(expected, 4))
    def decoded(result):
        return torch.cat([b.data for b in media.read_frames(result.output, batch_size=8)]).numpy()

    close = psnr(decoded(estimated), decoded(same))
    far = psnr(decoded(estimated), decoded(wider))
    assert close > far + 3, (close, far)


def test_a_default_conversion_makes_no_float64_on_the_model_device(pair, testsrc, tmp_path, monkeypatch):
    # Note [No float64 on devices]: the CPU stands in for the GPU; the field-of-view path,
    # the metric disparity and the resumable states included.
    _, _, folder = pair
    monkeypatch.setenv("SBSCONV_CHECK_FLOAT64", "1")
    source = testsrc("pro_src_f64.mp4", size="160x96", rate=10, seconds=0.6)
    result = sbsconv.convert(source, tmp_path / "checked.mp4", model=folder, progress=False, preset="ultrafast",
                             device="cpu", segment_seconds=0.3)
    assert result.frames == 6 and result.fov_degrees is not None


PRO_OFFLINE = """
import json, sys
import sbsconv.models as models
from sbsconv._native import _core
import torch
m = models.load("depth-pro", device="cpu", precision="fp32")
depth, fov = _core.depth_pro_forward(m._core, torch.load(sys.argv[1]))
print(json.dumps({"name": m.name, "source": m.source, "fov": fov.tolist()}))
"""


def test_registry_falls_back_to_the_transformers_repository_offline(pair, tmp_path):
    """apple/DepthPro's depth_pro.pt is not cached, apple/DepthPro-hf is: the registry name
    loads the transformers copy (HF_HUB_OFFLINE=1, a cache laid out on disk)."""
    from test_depth_anything_v2 import write_cache_entry

    from helpers import run_python

    ref, _, folder = pair
    home = tmp_path / "hf_home"
    write_cache_entry(home / "hub", "apple/DepthPro-hf", {
        "config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors",
        "preprocessor_config.json": folder / "preprocessor_config.json"})
    x = torch.randn(1, 3, 128, 128)
    torch.save(x, tmp_path / "x.pt")
    proc = run_python(PRO_OFFLINE, str(tmp_path / "x.pt"), env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"},
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["name"] == "depth-pro" and "DepthPro-hf" in out["source"]
    with torch.no_grad():
        expected = ref(pixel_values=x).field_of_view
    assert fov_rel(torch.tensor(out["fov"]), expected) < 1e-4


def test_one_frame_per_batch_by_default(pair):
    _, ours, _ = pair
    assert ours._core.preferred_batch(True) == ours._core.preferred_batch(False) == 1


def test_other_models_batch_more_frames(tiny_model):
    core = models.load(tiny_model, device="cpu")._core
    assert (core.preferred_batch(True), core.preferred_batch(False)) == (8, 2)
