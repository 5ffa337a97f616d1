"""One video in parts (issue 17, Note [Parts of one video]), measured in the same run.

A clip converted once (convert) against the same clip split into parts (convert_split): run in
turn in this process, and on two worker processes; and the seams: the 3D frames' PSNR against
the single run at every frame and around each cut, with the warm-up stretch and without it
(warm_up=0), for Depth-Anything-V2 and for Video-Depth-Anything (a temporal model whose windows
span the cut). On a 2-core machine two CPU workers share the cores one worker already uses: the
figure shows what splitting costs, not what two GPUs would gain.

    uv run python benchmarks/bench_split.py [--seconds 12] [--parts 3] [--size 320x240]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sbsconv

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from measure import tiny_depth_anything  # noqa: E402
from conftest import tiny_vda_state_dict  # noqa: E402


def frames(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--size", default="320x240")
    args = parser.parse_args()
    w, h = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size={args.size}:rate=25:duration={args.seconds}", "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={args.seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                        "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)], check=True)
        vda = tmp / "tiny_video_depth_anything.pth"
        torch.save(tiny_vda_state_dict(), vda)
        models = {"Depth-Anything-V2 (tiny, random)": tiny_depth_anything(tmp / "dav2"),
                  "Video-Depth-Anything (tiny, random)": str(vda)}
        common = {"input_size": 140, "progress": False, "resume": False}
        timing = []
        seams = []
        for name, model in models.items():
            t0 = time.perf_counter()
            sbsconv.convert(clip, tmp / "single.mp4", model=model, **common)
            single_s = time.perf_counter() - t0
            reference = frames(tmp / "single.mp4", 2 * w, h)
            for label, extra in (("in turn, this process", {}), ("two worker processes", {"devices": ["cpu", "cpu"]})):
                if extra and name.startswith("Video"):
                    continue
                t0 = time.perf_counter()
                result = sbsconv.convert_split(clip, tmp / "split.mp4", split=args.parts, model=model, **extra,
                                               **common)
                wall = time.perf_counter() - t0
                p = psnr(reference, frames(tmp / "split.mp4", 2 * w, h))
                cuts = np.cumsum(result.part_frames)[:-1]
                near = np.concatenate([p[max(0, c - 3):c + 3] for c in cuts])
                timing.append((name, label, single_s, wall, len(result.parts)))
                seams.append((name, f"warm-up 3 s, {label}", p.min(), near.min(), np.median(p)))
            result = sbsconv.convert_split(clip, tmp / "cold.mp4", split=args.parts, model=model, warm_up=0, **common)
            p = psnr(reference, frames(tmp / "cold.mp4", 2 * w, h))
            cuts = np.cumsum(result.part_frames)[:-1]
            near = np.concatenate([p[max(0, c - 3):c + 3] for c in cuts])
            seams.append((name, "no warm-up (warm_up=0)", p.min(), near.min(), np.median(p)))
    n = int(round(args.seconds * 25))
    print(f"CPU, {torch.get_num_threads()} threads; a {args.seconds:g} s clip ({n} frames) at {args.size} 25 fps, "
          f"keyframe every second, {args.parts} parts; input 140, libx264")
    print()
    print("| model | split run | single s | split s | ratio | parts |")
    print("|---|---|---|---|---|---|")
    for name, label, single_s, wall, parts in timing:
        print(f"| {name} | {label} | {single_s:.1f} | {wall:.1f} | {wall / single_s:.2f}x | {parts} |")
    print()
    print("| model | split run | PSNR vs single, worst frame | worst within 3 frames of a cut | median |")
    print("|---|---|---|---|---|")
    for name, label, worst, seam, median in seams:
        print(f"| {name} | {label} | {worst:.1f} dB | {seam:.1f} dB | {median:.1f} dB |")


if __name__ == "__main__":
    main()
