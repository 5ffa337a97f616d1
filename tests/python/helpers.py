"""Test helpers: the sample clips in ../shared/data and reference readings (ffprobe,
FFmpeg's own RGB conversion)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SBSCONV_TEST_DATA_DIR", REPO.parent / "shared" / "data"))

SAMPLE_CLIPS = [
    "Tokyo-Walk_rgb.mp4",
    "bt601_limited_range.mp4",
    "bt709_full_range.mp4",
    "davis_rollercoaster.mp4",
    "echo-hereweare.webm",
    "h265_10bits.mp4",
    "nasa_13013.mp4",
    "test_non_zero_start.mp4",
    "testsrc2_odd_height_and_width_444.mp4",
]

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def data(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.fail(f"sample clip {path} is missing (../shared/data beside the checkout)")
    return path


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, **kwargs)


def ffprobe(path: Path | str, *args: str) -> dict:
    out = run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)]).stdout
    return json.loads(out)


def ffmpeg_rgb(path: Path | str, width: int, height: int, *, input_args=(), output_args=()) -> np.ndarray:
    """Frames as FFmpeg's command line converts them to RGB24: [N, H, W, 3] uint8."""
    raw = run(
        ["ffmpeg", "-v", "error", *input_args, "-i", str(path), *output_args,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def psnr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def to_hwc(frames: torch.Tensor) -> np.ndarray:
    return frames.permute(0, 2, 3, 1).contiguous().numpy()


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (crash isolation, its own environment variables):
    returns the completed process."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def requires_ffmpeg_cli() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.fail("the ffmpeg and ffprobe command line tools are needed by the tests")


requires_ffmpeg_cli()
