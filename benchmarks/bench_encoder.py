"""The software encoders' cost by preset and frame size on this machine (issue 31): the table
behind Note [Encoder preset chosen to keep pace] (choose_encoder_preset in
cpp/sbsconv/media/EncoderSelection.cpp).

For each encoder (libx264, libx265), frame size and preset (medium down to veryfast, the
presets sbsconv may choose; superfast and ultrafast beside them for reference), encodes the
same frames with sbsconv's own writer (sbsconv.media.VideoWriter, sbsconv's encoder settings:
CRF 16/18, mbtree off for x264) and reports:
  core ns/px  the process's CPU time per pixel (all the encoder's threads) in the steady state
              (after the first third of the frames), the table's unit
  x medium    that, relative to medium: the table's relative costs
  fps         frames per second, wall clock, with the encoder's own thread count (all cores)
  eff         the thread efficiency: fps / (cores / core-seconds a frame)
The frames are a real clip (the first sample video found in ../shared/data, else FFmpeg's
testsrc2 pattern), scaled to each size: encoders' costs depend on the picture.

    uv run --no-sync python benchmarks/bench_encoder.py [--frames 60] [--sizes 1280x720,2560x720,3840x1080]
        [--encoders libx264,libx265] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sbsconv import media
from sbsconv._native import _core

CHOSEN = ("medium", "fast", "faster", "veryfast")
REFERENCE = ("superfast", "ultrafast")


def source_frames(count: int) -> torch.Tensor:
    """uint8 [N,3,H,W] frames of a real clip (or testsrc2)."""
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    clips = sorted(p for p in data.glob("*.mp4")) if data.is_dir() else []
    if clips:
        frames = []
        for batch in media.read_frames(clips[0], batch_size=8):
            frames.append(batch.data)
            if sum(f.shape[0] for f in frames) >= count:
                break
        out = torch.cat(frames)[:count]
        if out.shape[0] == count:
            return out
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "src.mkv")
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30",
                        "-frames:v", str(count), "-c:v", "ffv1", path], check=True)
        return next(iter(media.read_frames(path, batch_size=count))).data


def encode(frames: torch.Tensor, encoder: str, preset: str, skip: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) a frame in the steady state: from frame ``skip`` to the last
    one written (the encoder's start-up and its lookahead's filling are left out; what is still
    in the lookahead at the end is not counted, which the same rate covers)."""
    n, _, h, w = frames.shape
    codec = "hevc" if encoder == "libx265" else "h264"
    with tempfile.TemporaryDirectory() as tmp:
        with media.VideoWriter(os.path.join(tmp, "out.mkv"), width=w, height=h, fps=30, codec=codec,
                               encoder=encoder, preset=preset) as writer:
            for i in range(n):
                if i == skip:
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                writer.write(frames[i:i + 1], [i / 30.0])
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return cpu / (n - skip), wall / (n - skip)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--sizes", default="1280x720,2560x720,3840x1080")
    parser.add_argument("--encoders", default="libx264,libx265")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cores = _core.usable_cores()
    base = source_frames(args.frames)
    print(f"bench_encoder: sbsconv {_core.__version__}, {cores} cores, {args.frames} frames per row "
          f"(measured after the first {args.frames // 3})")
    rows = []
    for encoder in args.encoders.split(","):
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            frames = torch.nn.functional.interpolate(base.float(), size=(h, w), mode="bilinear",
                                                     align_corners=False).round().clamp(0, 255).to(torch.uint8)
            medium = None
            for preset in CHOSEN + REFERENCE:
                cpu, wall = encode(frames, encoder, preset, args.frames // 3)
                per_pixel = cpu / (w * h)
                medium = per_pixel if preset == "medium" else medium
                fps = 1.0 / wall
                eff = fps / (cores / cpu)
                row = {"encoder": encoder, "size": size, "preset": preset, "core_ns_per_pixel": per_pixel * 1e9,
                       "relative": per_pixel / medium, "fps": fps, "efficiency": eff}
                rows.append(row)
                print(f"  {encoder:8} {size:>10} {preset:10} core {per_pixel * 1e9:7.1f} ns/px  "
                      f"x medium {per_pixel / medium:5.2f}  {fps:6.2f} fps  eff {eff:4.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
