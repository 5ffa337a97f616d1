"""Depth Anything 3 (cpp/sbsconv/depth/DepthAnything3.h): checkpoints with random weights in the
published layout (da3_weights, the loader's inverse), loaded through the real code, and checked
for what the architecture guarantees. The parity against the reference implementation's own
network (ByteDance-Seed/Depth-Anything-3, not on PyPI) was measured by hand: see the README's
Depth Anything 3 paragraph and benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import logging
import math
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import da3_weights
import sbsconv
import sbsconv.models as models
from helpers import data, ffmpeg_rgb, run_python
from sbsconv.errors import ModelError, OptionError
from sbsconv.models import depth_anything_3 as da3
from test_depth_anything_v2 import write_cache_entry

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
H, W = 98, 140  # multiples of 14: at input_size 140 the network sees the frames as they are


def clip_frames(n: int, seed: int = 0) -> torch.Tensor:
    """A textured picture panning right, one pixel per frame: uint8 [n,3,H,W]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 24 + n, generator=g), size=(H, W + 4 * n),
                                           mode="bilinear", align_corners=False)
    frames = torch.cat([base[..., 4 * i:4 * i + W] for i in range(n)])
    return (frames * 255).round().to(torch.uint8)


def normalised(frames: torch.Tensor) -> torch.Tensor:
    return (frames.float() / 255 - MEAN) / STD


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return da3_weights.write(tmp_path_factory.mktemp("da3") / "DA3-SMALL", "da3-small")


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    return da3_weights.write(tmp_path_factory.mktemp("da3") / "DA3MONO-LARGE", "da3mono-large")


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    return da3_weights.write(tmp_path_factory.mktemp("da3") / "DA3METRIC-LARGE", "da3metric-large")


def video_model(folder, *, window: int = 8, overlap: int = 2, reference_view: str = "saddle_balanced"):
    core = da3.build(None, folder, "cpu", "fp32", 140, window=window, overlap=overlap, reference_view=reference_view)
    return models.DepthModel(core, None, str(folder), 140, "fp32")


# ---- the registry ------------------------------------------------------------------------------


def test_registry_names_the_four_models_with_their_licences():
    expected = {
        "depth-anything-3-mono-large": ("depth-anything/DA3MONO-LARGE", "relative-depth"),
        "depth-anything-3-metric-large": ("depth-anything/DA3METRIC-LARGE", "metric"),
        "depth-anything-3-small": ("depth-anything/DA3-SMALL", "relative-depth"),
        "depth-anything-3-base": ("depth-anything/DA3-BASE", "relative-depth"),
    }
    for name, (repo, kind) in expected.items():
        s = models.spec(name)
        assert (s.repo_id, s.filename, s.kind, s.license) == (repo, "model.safetensors", kind, "Apache-2.0")
        assert s.commercial_use
    # the giant and large any-view models are non-commercial, and say so
    assert not models.spec("depth-anything-3-giant").commercial_use
    assert not models.spec("depth-anything-3-large").commercial_use
    assert "depth-anything-3-small" in models.approaches()  # sbsconv-bench compares the family


def test_input_size_defaults_to_the_family_s(small, tiny_model):
    assert models.load(str(small), device="cpu").input_size == 504  # the longer side, as the reference
    assert models.load(str(tiny_model), device="cpu").input_size == 518  # Depth-Anything-V2's shorter side
    assert models.load(str(small), device="cpu", input_size=280).input_size == 280


def test_upper_bound_size_is_the_reference_s():
    from sbsconv._native import _core

    # the longer side to 504, each side to its nearest multiple of 14
    assert _core.upper_bound_size(720, 1280, 504) == (280, 504)
    assert _core.upper_bound_size(1080, 1920, 504) == (280, 504)
    assert _core.upper_bound_size(1920, 1080, 504) == (504, 280)
    assert _core.upper_bound_size(480, 640, 504) == (378, 504)
    assert _core.upper_bound_size(10, 20, 504) == (252, 504)


def opencv_reference(image: np.ndarray, size: int = 504) -> np.ndarray:
    """The reference's upper_bound_resize on a uint8 HxWx3 picture, with OpenCV as it uses it."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) != size:
        scale = size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)

    def nearest(x):
        down = x // 14 * 14
        return down + 14 if abs(down + 14 - x) <= abs(x - down) else down

    h, w = image.shape[:2]
    th, tw = max(14, nearest(h)), max(14, nearest(w))
    if (th, tw) != (h, w):
        enlarge = tw > w or th > h
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA)
    return image


@pytest.mark.parametrize("clip", ["Tokyo-Walk_rgb.mp4", "bt601_limited_range.mp4", "testsrc2_odd_height_and_width_444.mp4"])
def test_preprocessing_is_the_reference_s_opencv_resizes(small, clip):
    from sbsconv import media
    from sbsconv._native import _core

    frames = next(iter(media.read_frames(data(clip), batch_size=2))).data
    model = models.load(str(small), device="cpu", precision="fp32")
    ours = _core.depth_anything_3_preprocess(model._core, frames)
    grey = (ours * STD + MEAN) * 255  # back to grey levels
    expected = torch.from_numpy(np.stack([opencv_reference(f.permute(1, 2, 0).contiguous().numpy())
                                          for f in frames])).permute(0, 3, 1, 2).float()
    assert grey.shape == expected.shape
    diff = (grey - expected).abs()
    # OpenCV's fixed-point arithmetic may round a grey level the other way, nothing more
    assert float(diff.max()) <= 1.01 and float(diff.mean()) < 0.05, (float(diff.max()), float(diff.mean()))


# ---- the monocular models ------------------------------------------------------------------------


def test_monocular_images_are_independent_and_positive(mono):
    model = models.load(str(mono), device="cpu", precision="fp32")
    assert model.kind == "relative-depth" and not model.temporal and model.relative
    x = normalised(clip_frames(3))
    together = da3.predict(model, x, batch=3)
    assert together["world_to_camera"] is None and together["sky"].shape == (3, 1, H, W)
    assert (together["depth"] > 0).all()  # exp: depth, never zero
    for i in range(3):
        alone = da3.predict(model, x[i:i + 1], batch=1)
        torch.testing.assert_close(alone["depth"], together["depth"][i:i + 1], rtol=1e-5, atol=0)


def test_sky_goes_to_the_far_plane(tmp_path):
    x = normalised(clip_frames(2, seed=3))
    # First without sky (the sky branch far below 0.3): the raw depth.
    plain = models.load(str(da3_weights.write(tmp_path / "plain" / "da3mono", "da3mono-large",
                                              sky_from_depth=-1e4)), device="cpu", precision="fp32")
    raw = da3.predict(plain, x, batch=2)
    assert (raw["sky"] == 0).all()
    # Then the sky branch equal to log(depth) + offset: the farthest 30 % of each picture is sky.
    logd = raw["depth"].log()
    offset = 0.3 - float(torch.quantile(logd.flatten(), 0.7))
    skyed = models.load(str(da3_weights.write(tmp_path / "sky" / "da3mono", "da3mono-large",
                                              sky_from_depth=offset)), device="cpu", precision="fp32")
    out = da3.predict(skyed, x, batch=2)
    for i in range(2):
        sky = out["sky"][i, 0] >= 0.3
        assert 0.1 < sky.float().mean() < 0.6
        ground = raw["depth"][i, 0][~sky]
        far = torch.quantile(ground.double(), 0.99).float()
        torch.testing.assert_close(out["depth"][i, 0][~sky], ground, rtol=1e-5, atol=0)
        torch.testing.assert_close(out["depth"][i, 0][sky], far.expand(int(sky.sum())), rtol=1e-5, atol=0)
        assert out["depth"][i, 0].max() <= far * (1 + 1e-5)  # nothing beyond the sky


def test_metric_depth_is_focal_length_times_output_over_300(metric, caplog):
    model = models.load(str(metric), device="cpu", precision="fp32", input_size=140)
    assert model.kind == "metric"
    frames = clip_frames(2)
    raw = da3.predict(model, normalised(frames), batch=2)["depth"]
    for fov in (90.0, 45.0):
        model._core.set_field_of_view(fov)
        focal = (W / 2) / math.tan(math.radians(fov) / 2)
        torch.testing.assert_close(model.infer(frames), raw * focal / 300, rtol=1e-4, atol=0)
    model._core.set_field_of_view(None)
    caplog.set_level(logging.WARNING, logger="sbsconv")
    at_60 = model.infer(frames)
    torch.testing.assert_close(at_60, raw * (W / 2) / math.tan(math.radians(30)) / 300, rtol=1e-4, atol=0)
    assert any("60 degrees" in r.getMessage() for r in caplog.records)
    with pytest.raises(OptionError, match="field of view"):
        model._core.set_field_of_view(200.0)


# ---- the any-view models -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["saddle_balanced", "first"])
def test_views_are_exchangeable(small, strategy):
    """Across views every patch shares one position and every non-reference view the same
    camera token: reordering the views reorders the predictions (the reference view is chosen by
    content, or fixed first)."""
    model = video_model(small, reference_view=strategy)
    x = normalised(clip_frames(5, seed=1)) + 0.3 * torch.randn(5, 3, H, W, generator=torch.Generator().manual_seed(2))
    order = torch.tensor([0, 3, 1, 4, 2]) if strategy == "first" else torch.tensor([2, 4, 0, 3, 1])
    a = da3.predict(model, x, batch=1)
    b = da3.predict(model, x[order], batch=1)
    for key in ("depth", "confidence", "world_to_camera", "intrinsics"):
        torch.testing.assert_close(b[key], a[key][order], rtol=2e-4, atol=2e-5)
    # and the views really do see each other: one view changed moves the others' depth
    y = x.clone()
    y[4] = -y[4]
    c = da3.predict(model, y, batch=1)
    assert not torch.allclose(c["depth"][:4], a["depth"][:4], rtol=1e-6, atol=0)


def test_cameras_are_a_rotation_and_a_centred_pinhole(small):
    model = video_model(small)
    out = da3.predict(model, normalised(clip_frames(3)), batch=1)
    rotation = out["world_to_camera"][:, :, :3]
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(3), atol=1e-5)
    k = out["intrinsics"]
    assert (k[:, 0, 2] == W / 2).all() and (k[:, 1, 2] == H / 2).all() and (k[:, 2, 2] == 1).all()
    assert (k[:, 0, 0] > 0).all() and (k[:, 1, 1] > 0).all()
    # the field of view given with the depth is the decoder's
    est = video_model(small, window=3, overlap=1).estimate_clip(clip_frames(3))
    fov = 2 * torch.atan((W / 2) / k[:, 0, 0]) * 180 / math.pi
    torch.testing.assert_close(est.fov_degrees, fov, rtol=1e-5, atol=1e-4)


def test_windows_chain_their_scale_and_camera_path(small):
    frames = clip_frames(14)
    model = video_model(small, window=8, overlap=2)
    first = model.estimate(frames)
    assert first.depth.shape == (14, 1, H, W)  # windows 0..7 and 6..13: all released
    pose = first.camera_to_world
    assert pose.shape == (14, 3, 4)
    torch.testing.assert_close(pose[0], torch.eye(4)[:3], atol=1e-5, rtol=0)  # the first frame at the origin

    # Frame by frame: the same windows, the same answers.
    model.reset()
    one_by_one = [model.estimate(frames[i:i + 1]) for i in range(14)]
    assert [e.depth.shape[0] for e in one_by_one] == [0] * 7 + [8] + [0] * 5 + [6]
    torch.testing.assert_close(torch.cat([e.depth for e in one_by_one]), first.depth)
    torch.testing.assert_close(torch.cat([e.camera_to_world for e in one_by_one if e.depth.numel()]), pose)

    # The second window (frames 6..13) scaled so that its overlap matches what was released.
    second = da3.predict(model, normalised(frames[6:14]), batch=1)
    scale = (first.depth[6:8] / second["depth"][:2]).flatten().median()
    torch.testing.assert_close(first.depth[8:], second["depth"][2:] * scale, rtol=1e-4, atol=0)
    # ... and its camera path continues from frame 7: relative motions are the window's, scaled.
    def c2w(w2c):
        m = torch.eye(4).repeat(w2c.shape[0], 1, 1)
        m[:, :3, :3] = w2c[:, :, :3].transpose(1, 2)
        m[:, :3, 3:] = -w2c[:, :, :3].transpose(1, 2) @ w2c[:, :, 3:]
        return m
    window = c2w(second["world_to_camera"])
    window[:, :3, 3] *= scale
    full = torch.eye(4).repeat(14, 1, 1)
    full[:, :3] = pose
    for j in range(8, 14):
        torch.testing.assert_close(torch.linalg.inv(full[7]) @ full[j], torch.linalg.inv(window[1]) @ window[j - 6],
                                   atol=1e-4, rtol=1e-4)


def test_flush_and_resume_continue_the_sequence(small):
    frames = clip_frames(20, seed=4)
    a = video_model(small, window=8, overlap=2)
    head = a.estimate(frames[:11])
    tail = a.flush()
    assert head.depth.shape[0] + tail.depth.shape[0] == 11  # a shorter last window, nothing held
    state = {k: v.clone() for k, v in a.state().items()}
    assert set(state) >= {"frame_size", "carry_input", "carry_depth", "carry_pose"}
    rest_a = [a.estimate(frames[11:]), a.flush()]
    b = video_model(small, window=8, overlap=2)
    b.load_state(state)
    rest_b = [b.estimate(frames[11:]), b.flush()]
    depth_a = torch.cat([e.depth for e in rest_a])
    assert depth_a.shape[0] == 9
    torch.testing.assert_close(torch.cat([e.depth for e in rest_b]), depth_a)
    torch.testing.assert_close(torch.cat([e.camera_to_world for e in rest_b if e.depth.numel()]),
                               torch.cat([e.camera_to_world for e in rest_a if e.depth.numel()]))
    # saved by a model sharing more frames between windows (another device): the last ones carry on
    wide = video_model(small, window=8, overlap=3)
    wide.estimate(frames[:11])
    wide.flush()
    narrow = video_model(small, window=8, overlap=2)
    narrow.load_state(wide.state())
    assert sum(e.depth.shape[0] for e in (narrow.estimate(frames[11:]), narrow.flush())) == 9
    # reset: a new sequence, as a fresh model starts one
    a.reset()
    fresh = video_model(small, window=8, overlap=2)
    torch.testing.assert_close(a.estimate_clip(frames[:5]).depth, fresh.estimate_clip(frames[:5]).depth)
    # a saved state for another input size is refused
    other = models.DepthModel(da3.build(None, small, "cpu", "fp32", 70, window=8, overlap=2), None, "", 70)
    with pytest.raises(Exception, match="does not match"):
        other.load_state(state)


def test_frames_must_be_uint8_rgb(small, mono):
    model = video_model(small)
    with pytest.raises(OptionError, match="uint8"):
        model.estimate(torch.zeros(2, 3, H, W))
    with pytest.raises(OptionError, match="at least one"):
        models.load(str(mono), device="cpu").infer(torch.zeros(1, 3, 0, W, dtype=torch.uint8))
    with pytest.raises(Exception, match="does not match"):
        model.load_state({"frame_size": torch.tensor([H, W]), "carry_input": torch.zeros(3)})
    with pytest.raises(OptionError, match="window"):
        da3.build(None, small, "cpu", "fp32", 140, window=4, overlap=4)
    with pytest.raises(OptionError, match="reference_view"):
        da3.build(None, small, "cpu", "fp32", 140, reference_view="best")


# ---- checkpoints -------------------------------------------------------------------------------------


def test_the_giant_layout_loads(tmp_path):
    """DA3-GIANT's layout (non-commercial; supported because it is cheap): a SwiGLU feed-forward
    and a Gaussian-splatting head beside the depth head, which sbsconv leaves unused."""
    folder = da3_weights.write(tmp_path / "DA3-GIANT", "da3-small", swiglu=True, gs_head=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_name="da3-giant")))
    model = video_model(folder)
    out = da3.predict(model, normalised(clip_frames(3)), batch=1)
    assert out["depth"].shape == (3, 1, H, W) and torch.isfinite(out["world_to_camera"]).all()
    assert models.spec("depth-anything-3-giant").repo_id == "depth-anything/DA3-GIANT"


def test_damaged_checkpoints_are_model_errors(tmp_path, small):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(small / "model.safetensors"))
    broken = tmp_path / "broken_da3"
    broken.mkdir()
    (broken / "config.json").write_text((small / "config.json").read_text())
    save_file({k: v for k, v in weights.items() if "cam_dec.fc_t" not in k}, str(broken / "model.safetensors"))
    with pytest.raises(ModelError, match="cam_dec.fc_t"):
        models.load(str(broken), device="cpu")
    (broken / "config.json").write_text(json.dumps({"model_name": "da3nested-giant-large"}))
    with pytest.raises(ModelError, match="nested"):
        models.load(str(broken), device="cpu")
    # a full-size preset named over a tiny encoder, without the structure that fits it
    (broken / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    save_file(weights, str(broken / "model.safetensors"))
    with pytest.raises(ModelError, match="out_layers"):
        models.load(str(broken), device="cpu")
    (broken / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        models.load(str(broken), device="cpu")


OFFLINE = textwrap.dedent(
    """
    import json, sys, torch
    import sbsconv.models as models
    m = models.load("depth-anything-3-small", device="cpu", precision="fp32", input_size=140)
    e = m.estimate_clip(torch.zeros(3, 3, 98, 140, dtype=torch.uint8))
    print(json.dumps([m.name, m.kind, m.input_size, list(e.depth.shape), list(e.camera_to_world.shape)]))
    """
)


def test_loads_by_name_from_an_offline_hugging_face_cache(tmp_path, small):
    home = tmp_path / "hf_home"
    write_cache_entry(home / "hub", "depth-anything/DA3-SMALL",
                      {"model.safetensors": small / "model.safetensors", "config.json": small / "config.json"})
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1")
    out = run_python(OFFLINE, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        "depth-anything-3-small", "relative-depth", 140, [3, 1, 98, 140], [3, 3, 4]]


# ---- the engine ---------------------------------------------------------------------------------------


def test_convert_inverts_relative_depth_and_exports_the_camera_path(tmp_path, small):
    clip = data("bt601_limited_range.mp4")  # 320x240, 30 fps
    out = tmp_path / "d.npy"
    result = sbsconv.export_depth(clip, out, format="npy", model=str(small), device="cpu", duration=0.5,
                                  progress=False)
    side = json.loads(Path(result.sidecar).read_text())
    n = result.frames
    assert n == 15 and side["units"] == "relative inverse depth"
    frames = side["frames"]
    assert len(frames["camera_to_world"]) == n and len(frames["intrinsics"]) == n and len(frames["fov"]) == n
    assert np.allclose(np.array(frames["camera_to_world"][0]).reshape(3, 4), np.eye(4)[:3], atol=1e-5)
    fx, fy, cx, cy = frames["intrinsics"][0]
    assert fx == pytest.approx(160 / math.tan(math.radians(frames["fov"][0]) / 2), rel=1e-6) and (cx, cy) == (160, 120)
    assert "camera_source" in side
    # The export is inverse depth: nearer (smaller depth) is larger, frame by frame.
    exported = torch.from_numpy(np.load(result.path)).float().reshape(n, -1)
    rgb = torch.from_numpy(np.array(ffmpeg_rgb(clip, 320, 240)[:n])).permute(0, 3, 1, 2).contiguous()
    depth = models.load(str(small), device="cpu").estimate_clip(rgb).depth.reshape(n, -1)
    for i in range(n):
        inverse = torch.corrcoef(torch.stack([exported[i], depth[i].reciprocal()]))[0, 1]
        assert inverse > 0.9, (i, float(inverse))
    # A conversion reports the model's field of view (the mean of its per-frame estimates).
    converted = sbsconv.convert(clip, tmp_path / "sbs.mp4", model=str(small), device="cpu", duration=0.5,
                                progress=False, preset="ultrafast")
    assert converted.fov_degrees == pytest.approx(float(np.mean(frames["fov"])), rel=1e-3)


# ---- devices ------------------------------------------------------------------------------------------

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_windows_agree_with_the_cpu(small):
    frames = clip_frames(14)
    cpu = video_model(small).estimate_clip(frames)
    gpu = models.DepthModel(da3.build(None, small, "cuda", "fp32", 140, window=8, overlap=2), None, "", 140)
    out = gpu.estimate_clip(frames.cuda())
    # cuDNN's convolutions run in TF32 on Ampere and later (LibTorch's default)
    torch.testing.assert_close(out.depth.cpu(), cpu.depth, rtol=5e-3, atol=5e-3)
    torch.testing.assert_close(out.camera_to_world.cpu(), cpu.camera_to_world, rtol=5e-3, atol=5e-3)
    half = models.DepthModel(da3.build(None, small, "cuda", "fp16", 140, window=8, overlap=2), None, "", 140)
    depth = half.estimate_clip(frames.cuda()).depth
    assert torch.isfinite(depth).all() and (depth > 0).all()


@pytest.mark.skipif(not HAS_MPS, reason="needs Apple's MPS")
def test_mps_agrees_with_the_cpu(small, mono):
    frames = clip_frames(10)
    cpu = video_model(small).estimate_clip(frames)
    mps = models.DepthModel(da3.build(None, small, "mps", "fp32", 140, window=8, overlap=2), None, "", 140)
    torch.testing.assert_close(mps.estimate_clip(frames.to("mps")).depth.cpu(), cpu.depth, rtol=1e-3, atol=1e-3)
    m_cpu = models.load(str(mono), device="cpu", precision="fp32")
    m_mps = models.load(str(mono), device="mps", precision="fp32")
    torch.testing.assert_close(m_mps.infer(frames[:2].to("mps")).cpu(), m_cpu.infer(frames[:2]), rtol=1e-3, atol=1e-3)
