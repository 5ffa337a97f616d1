"""Stereo synthesis speed: warp + fill + pack into full side-by-side at 1920x1080 per eye on
the CPU, sbsconv's native kernel (render_stereo) vs the naive grid_sample shortcut (each eye
sampled at x -+ d/2 with the target's own disparity, then concatenated), same frames and
disparity, same threads, measured in the same run.

    uv run python benchmarks/bench_stereo.py [--frames 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sbsconv import media, stereo
from sbsconv._native import _core

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    frames = next(iter(media.read_frames(DATA / "Tokyo-Walk_rgb.mp4", batch_size=n))).data
    frames = F.interpolate(frames.float(), (1080, 1920), mode="bilinear").round().to(torch.uint8)
    frames = frames.contiguous(memory_format=torch.channels_last)  # as the decoder delivers them
    # A plausible depth: a ground-plane gradient with rounded objects in front, normalised.
    torch.manual_seed(0)
    y = torch.linspace(0, 1, 1080).view(1, 1, 1080, 1)
    depth = (0.2 + 0.6 * y).expand(n, 1, 1080, 1920).clone()
    blobs = F.interpolate(torch.rand(n, 1, 9, 16), (1080, 1920), mode="bicubic").clamp(0, 1)
    depth = torch.maximum(depth, (blobs > 0.7).float() * blobs)
    return frames, stereo.disparity_from_depth(depth, divergence=2.0, convergence=0.5)


def naive(frames: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    left = _core.render_eye_naive(frames, disparity, 0.5)
    right = _core.render_eye_naive(frames, disparity, -0.5)
    return torch.cat([left, right], dim=3)


def ours(frames: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    return _core.render_stereo(frames, disparity, layout="full-sbs")["packed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frames, disparity = inputs(args.frames)
    best = {"sbsconv": float("inf"), "naive grid_sample": float("inf")}
    for _ in range(args.repeat):
        for name, fn in (("sbsconv", ours), ("naive grid_sample", naive)):
            with torch.inference_mode():
                t0 = time.perf_counter()
                for i in range(args.frames):
                    fn(frames[i : i + 1], disparity[i : i + 1])
                best[name] = min(best[name], time.perf_counter() - t0)
    print(f"CPU, {torch.get_num_threads()} threads ({os.cpu_count()} cores); full SBS, 1920x1080 per eye, "
          f"{args.frames} frames, best of {args.repeat}")
    print("| implementation | frames/s | ms/frame |")
    print("|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {args.frames / seconds:.1f} | {1000 * seconds / args.frames:.1f} |")
    print(f"speed-up over the naive shortcut: {best['naive grid_sample'] / best['sbsconv']:.2f}x")


if __name__ == "__main__":
    main()
