"""U²-Net salient-object masks (cpp/sbsconv/depth/U2Net.h, Note [U2-Net salient-object masks]):
parity with the reference network (backgroundremover's copy of xuebinqin/U-2-Net's
model/u2net.py) in the published checkpoint layout, the reference's pre- and post-processing,
precision, and refusal where depth is wanted."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

import hubcache
import sbsconv
import sbsconv.models as models
from sbsconv.errors import ModelError, OptionError

pytest.importorskip("backgroundremover.u2net.u2net")

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    net = hubcache.u2net_reference(small=True, seed=3)
    path = tmp_path_factory.mktemp("u2net") / "u2netp.pth"
    torch.save(net.state_dict(), path)
    return net, path


def reference_masks(net, frames: torch.Tensor, side: int = 320) -> torch.Tensor:
    """The reference's test pipeline (RescaleT(320), ToTensorLab(flag=0), d0, normPRED, resize
    back) with torch's antialiased bilinear resize standing in for scikit-image's."""
    x = F.interpolate(frames.float() / 255, (side, side), mode="bilinear", antialias=True, align_corners=False)
    x = (x / x.amax((1, 2, 3), keepdim=True) - MEAN) / STD
    with torch.no_grad():
        d = net(x)[0]
    low, high = d.amin((1, 2, 3), keepdim=True), d.amax((1, 2, 3), keepdim=True)
    d = (d - low) / (high - low)
    return F.interpolate(d, frames.shape[-2:], mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.parametrize("small", [True, False], ids=["u2netp", "u2net"])
def test_forward_matches_the_reference_network(tmp_path, small):
    net = hubcache.u2net_reference(small, seed=1)
    path = tmp_path / ("u2netp.pth" if small else "u2net.pth")
    torch.save(net.state_dict(), path)
    model = models.load(path, device="cpu")
    assert isinstance(model, models.MaskModel) and model.kind == "mask"
    g = torch.Generator().manual_seed(0)
    # the reference's 320 x 320, and a size that is not a multiple of 32 (ceil-mode pooling,
    # upsampling to each skip connection's size)
    for shape in ([(2, 3, 320, 320)] if small else []) + [(1, 3, 72, 108)]:
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            expected = net(x)[0]
        assert float(expected.std()) > 1e-3, "degenerate reference output"
        got = model.forward(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-4


def test_masks_follow_the_reference_pipeline_on_real_frames(small_checkpoint, sample_clip_short):
    net, path = small_checkpoint
    model = models.load(path, device="cpu")
    assert model.input_size == 320 and model.precision == "fp32"  # auto on the CPU: no int8 path
    from sbsconv import media

    frames = next(iter(media.read_frames(sample_clip_short, batch_size=2))).data.contiguous()
    masks = model.masks(frames)
    assert masks.shape == (2, 1, *frames.shape[-2:]) and masks.dtype == torch.float32
    expected = reference_masks(net, frames)
    assert (masks - expected).abs().max().item() <= 1e-4
    # normPRED: each frame's mask spans [0, 1] (less what the resize to the frame averages)
    assert (masks.amin((1, 2, 3)) < 0.02).all() and (masks.amax((1, 2, 3)) > 0.98).all()


def test_a_frame_of_one_colour_has_no_subject(small_checkpoint):
    _, path = small_checkpoint
    model = models.load(path, device="cpu")
    frames = torch.zeros(2, 3, 40, 60, dtype=torch.uint8)
    frames[1] = 200  # flat, not black
    masks = model.masks(frames)
    assert torch.isfinite(masks).all() and masks.shape == (2, 1, 40, 60)
    assert float(masks.abs().max()) == 0.0


def test_bf16_on_the_cpu_is_close_and_int8_is_refused(small_checkpoint):
    net, path = small_checkpoint
    frames = torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    exact = models.load(path, device="cpu", precision="fp32").masks(frames)
    bf16 = models.load(path, device="cpu", precision="bf16")
    assert bf16.dtype == "c10::BFloat16" or "bf" in bf16.dtype.lower()
    assert (bf16.masks(frames) - exact).abs().mean().item() < 0.05
    with pytest.raises(OptionError, match="int8"):
        models.load(path, device="cpu", precision="int8")


def test_the_registry_names_the_licence_and_the_family_is_not_a_depth_approach():
    for name in ("u2net", "u2netp"):
        s = models.spec(name)
        assert s.license == "Apache-2.0" and s.kind == "mask" and s.commercial_use
    assert "u2netp" not in models.approaches() and "u2net" not in models.depth_models()
    assert "depth-anything-v2-small" in models.depth_models()
    from sbsconv import ui

    assert not any(name.startswith("u2net") for _, name in ui.model_choices())  # the app's depth menu


def test_a_checkpoint_of_another_layout_is_a_clear_error(tmp_path):
    state = hubcache.u2net_reference(small=True).state_dict()
    state["stage2.rebnconvin.conv_s1.weight"] = torch.zeros(32, 64, 3, 3)
    path = tmp_path / "u2netp.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match="stage 2"):
        models.load(path, device="cpu")
    del state["outconv.weight"]
    state["stage2.rebnconvin.conv_s1.weight"] = torch.zeros(64, 64, 3, 3)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelError, match="outconv.weight"):
        models.load(path, device="cpu")


def test_a_dataparallel_checkpoint_loads(tmp_path, small_checkpoint):
    net, _ = small_checkpoint
    path = tmp_path / "u2netp_dp.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = net(x)[0]
    assert (models.load(path, device="cpu").forward(x) - expected).abs().max().item() <= 1e-4


def test_convert_refuses_a_mask_model_as_the_depth_model(small_checkpoint, sample_clip_short, tmp_path):
    _, path = small_checkpoint
    out = tmp_path / "out.mp4"
    with pytest.raises(OptionError, match="mask"):
        sbsconv.convert(sample_clip_short, out, model=str(path))
    assert not out.exists()


@pytest.mark.parametrize("device", [
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                    reason="needs an NVIDIA GPU with CUDA")]),
    pytest.param("mps", marks=[pytest.mark.mps, pytest.mark.skipif(
        not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        reason="needs an Apple Silicon GPU (MPS)")]),
])
def test_masks_on_a_gpu_match_the_cpu(small_checkpoint, device):
    _, path = small_checkpoint
    frames = torch.randint(0, 256, (4, 3, 90, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    exact = models.load(path, device="cpu", precision="fp32").masks(frames)
    for precision, budget in (("fp32", 1e-3), ("auto", 0.03)):  # auto: fp16
        model = models.load(path, device=device, precision=precision)
        got = model.masks(frames.to(device)).cpu()
        assert got.shape == exact.shape and (got - exact).abs().mean().item() < budget
