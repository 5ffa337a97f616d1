"""Shared fixtures: clips the tests generate with the ffmpeg command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import run

@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def make_clip(clip_dir) -> Callable[..., Path]:
    """Builds a clip with the ffmpeg command line once per session (cached by name)."""

    def make(name: str, args: list[str]) -> Path:
        out = clip_dir / name
        if not out.exists():
            run(["ffmpeg", "-v", "error", "-y", *args, str(out)])
        return out

    return make


@pytest.fixture(scope="session")
def cut_clip(make_clip) -> Path:
    """76 frames (3 s at 25 fps), 160x96, a cut at frame 38: every stage has state to carry over."""
    return make_clip("cut_at_38.mp4", [
        "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1.5",
        "-f", "lavfi", "-i", "mandelbrot=size=160x96:rate=25",
        "-filter_complex", "[1:v]trim=duration=1.5,setpts=PTS-STARTPTS[b];[0:v][b]concat=n=2:v=1[v]",
        "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])


@pytest.fixture(scope="session")
def testsrc(make_clip) -> Callable[..., Path]:
    """A synthetic clip: testsrc2 at a size, rate and length, optionally with a tone."""

    def make(name: str, *, size="160x120", rate=25, seconds=1.0, audio=False, extra=()) -> Path:
        args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
        if audio:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra]
        if audio:
            args += ["-c:a", "aac", "-b:a", "96k"]
        return make_clip(name, args)

    return make




@pytest.fixture
def video_folder(tmp_path, testsrc) -> Callable[[str], Path]:
    """Makes a folder of two tiny videos, one in a subfolder (a.mp4, sub/b.mkv), for the
    batch conversions; the argument names the clips (each test file its own)."""

    def make(prefix: str) -> Path:
        folder = tmp_path / "videos"
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        for name, target in (("a.mp4", folder / "a.mp4"), ("b.mkv", folder / "sub" / "b.mkv")):
            clip = testsrc(f"{prefix}_{name}", size="96x64", rate=10, seconds=0.5,
                           extra=["-f", "matroska"] if name.endswith(".mkv") else [])
            target.write_bytes(Path(clip).read_bytes())
        return folder

    return make


def tiny_depth_anything(*, seed: int = 0, **config: object):
    """A tiny random Depth-Anything-V2 (transformers); ``config``: more DepthAnythingConfig fields
    (depth_estimation_type="metric", max_depth=20, ...). The caller adjusts and saves it
    (``save_pretrained``: the transformers layout, config.json + safetensors)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=1, image_size=70,
                            patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                            reshape_hidden_states=False)
    return DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        reassemble_hidden_size=64, **config))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Depth-Anything-V2 in the transformers layout (config.json + safetensors),
    loaded by path wherever a test needs a depth model (conversions are then fast)."""
    import torch

    model = tiny_depth_anything()
    with torch.no_grad():
        model.head.conv3.bias.add_(0.5)
    folder = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(folder)
    return folder


def sinusoid_table(channels: int, length: int = 32):
    """The fixed position table of Video-Depth-Anything's temporal attention, [1, 32, C]."""
    import math

    import torch

    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, length, channels)
    table[0, :, 0::2] = torch.sin(position * div)
    table[0, :, 1::2] = torch.cos(position * div)
    return table


def tiny_vda_state_dict(seed: int = 0) -> dict:
    """A tiny random Video-Depth-Anything state dict in the original layout: the DINOv2 and DPT
    weights of a tiny Depth-Anything (renamed to ``pretrained.*`` and ``head.*``) and four
    motion modules with every tensor the released checkpoints hold."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from sbsconv.models.depth_anything_v2 import original_keys_from_transformers

    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=1, image_size=70,
                            patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[16, 32, 32, 64], fusion_hidden_size=32,
                                 head_hidden_size=16, reassemble_hidden_size=64)
    model = DepthAnythingForDepthEstimation(config)
    weights = {}
    for key, value in original_keys_from_transformers(model.state_dict()).items():
        value = value + torch.randn_like(value) * 0.05 if value.is_floating_point() else value
        weights[key.replace("depth_head.", "head.", 1)] = value
    weights["head.scratch.output_conv2.2.bias"] = weights["head.scratch.output_conv2.2.bias"] + 0.5
    for m, c in enumerate([32, 64, 32, 32]):  # out_channels[2], out_channels[3], features, features
        t = f"head.motion_modules.{m}.temporal_transformer."
        b = t + "transformer_blocks.0."

        def rand(*shape, scale=0.1):
            return torch.randn(*shape) * scale

        weights.update({t + "norm.weight": 1 + rand(c), t + "norm.bias": rand(c),
                        t + "proj_in.weight": rand(c, c, scale=c ** -0.5), t + "proj_in.bias": rand(c),
                        t + "proj_out.weight": rand(c, c, scale=c ** -0.5), t + "proj_out.bias": rand(c)})
        for i in range(2):
            a = b + f"attention_blocks.{i}."
            weights.update({a + "to_q.weight": rand(c, c, scale=0.5), a + "to_k.weight": rand(c, c, scale=0.5),
                            a + "to_v.weight": rand(c, c, scale=c ** -0.5),
                            a + "to_out.0.weight": rand(c, c, scale=c ** -0.5), a + "to_out.0.bias": rand(c),
                            a + "pos_encoder.pe": sinusoid_table(c),
                            b + f"norms.{i}.weight": 1 + rand(c), b + f"norms.{i}.bias": rand(c)})
        weights.update({b + "ff_norm.weight": 1 + rand(c), b + "ff_norm.bias": rand(c),
                        b + "ff.net.0.proj.weight": rand(8 * c, c, scale=c ** -0.5), b + "ff.net.0.proj.bias": rand(8 * c),
                        b + "ff.net.2.weight": rand(c, 4 * c, scale=(4 * c) ** -0.5), b + "ff.net.2.bias": rand(c)})
    return weights


@pytest.fixture(scope="session")
def tiny_vda(tmp_path_factory) -> Path:
    """A tiny random Video-Depth-Anything checkpoint (.pth, original layout)."""
    import torch

    path = tmp_path_factory.mktemp("tiny_vda") / "tiny_video_depth_anything.pth"
    torch.save(tiny_vda_state_dict(), path)
    return path


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (item.rep_call ...): fixtures such as the web
    app's browser see a failure and keep a screenshot."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


# ---- the way users reach things ----------------------------------------------------------------


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face hub cache laid out as `hf download` leaves it (blobs, snapshots, refs), with
    random weights in the published file layouts (tests/python/hubcache.py) of the default model
    and of each family's default (what the README, the notebook, the web app, export_mask and
    sbsconv-bench reach without naming a model)."""
    import hubcache
    import sbsconv
    from sbsconv import models

    # every family's default: the depth approaches and the mask model (export_mask's default)
    names = sorted({sbsconv.ConvertOptions().model, *(f.default for f in models.families().values() if f.default)})
    return hubcache.hub_cache_fixture(tmp_path_factory, names)


@pytest.fixture(scope="session")
def hub_cache_all(tmp_path_factory) -> Path:
    """As `hub_cache`, with every registry model."""
    import hubcache

    return hubcache.hub_cache_fixture(tmp_path_factory)


@pytest.fixture
def offline_hub(hub_cache, monkeypatch) -> Path:
    """This process reads models from `hub_cache`, offline (HF_HUB_OFFLINE=1), as a user whose
    cache holds them does; subprocesses get the same with `hubcache.hub_env(hub_cache)`."""
    import hubcache

    hubcache.use_hub_cache(monkeypatch, hub_cache)
    return hub_cache


@pytest.fixture(scope="session")
def sample_clip(make_clip) -> Path:
    """The bundled sample clip (sbsconv.samples: 1280x720, 15 fps), its first second: what the
    README's and the notebook's `clip.mp4` stand for in the tests."""
    from sbsconv import samples

    return make_clip("sample_1s.mp4", ["-i", str(samples.path()), "-t", "1", "-an", "-c:v", "libx264",
                                       "-preset", "ultrafast", "-pix_fmt", "yuv420p"])


@pytest.fixture(scope="session")
def sample_clip_short(make_clip) -> Path:
    """The sample clip's first 0.4 s (6 frames at 1280x720)."""
    from sbsconv import samples

    return make_clip("sample_6frames.mp4", ["-i", str(samples.path()), "-t", "0.4", "-an", "-c:v", "libx264",
                                            "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
