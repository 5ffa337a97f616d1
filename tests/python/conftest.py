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




@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Depth-Anything-V2 in the transformers layout (config.json + safetensors),
    loaded by path wherever a test needs a depth model (conversions are then fast)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=1, image_size=70,
                            patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                 head_hidden_size=8, reassemble_hidden_size=64)
    model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        model.head.conv3.bias.add_(0.5)
    folder = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(folder)
    return folder
