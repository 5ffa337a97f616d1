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


