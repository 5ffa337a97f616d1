"""Depth as a product (issue 14), measured in the same run.

1. Re-rendering from an export against the direct conversion it replaces: frames/s of
   sbsconv.convert(depth=<gray16 export>) over frames/s of sbsconv.convert() with the model
   (Depth-Anything-V2-Small architecture, random weights, input 518, CPU), same clip, same
   options. Also what writing the export costs the direct run (with depth_out vs without).
2. Conversions between depth formats (no model): frames/s and bytes per frame of each format.
3. Memory: peak resident memory of exporting (npy and gray16, tiny model) a 10 s and a 40 s
   clip, each in a fresh process; flat means the 40 s export needs no more than the 10 s one.

    uv run python benchmarks/bench_depth_products.py [--seconds 2] [--clip PATH]
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

import sbsconv

sys.path.insert(0, str(Path(__file__).parent))
from bench_depth import make_checkpoint  # noqa: E402
from measure import tiny_depth_anything  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COMMON = {"device": "cpu", "batch_size": 2, "preset": "medium", "crf": 16, "progress": False, "resume": False}

MEMORY_WORKER = """
import sys
import sbsconv
clip, out, fmt, model = sys.argv[1:5]
sbsconv.export_depth(clip, out, format=fmt, model=model, input_size=140, progress=False)
# VmHWM: this process's own peak (ru_maxrss would keep the forking parent's across exec)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""


def timed(call) -> tuple[object, float]:
    t0 = time.perf_counter()
    result = call()
    return result, time.perf_counter() - t0


def size_of(path: str) -> int:
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DATA / "Tokyo-Walk_rgb.mp4")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = str(tmp / "model")
        make_checkpoint(folder)
        plain, t_plain = timed(lambda: sbsconv.convert(args.clip, tmp / "plain.mp4", model=folder,
                                                       duration=args.seconds, **COMMON))
        direct, t_direct = timed(lambda: sbsconv.convert(args.clip, tmp / "direct.mp4", model=folder,
                                                         duration=args.seconds, depth_out=tmp / "d.mkv", **COMMON))
        again, t_again = timed(lambda: sbsconv.convert(args.clip, tmp / "again.mp4", depth=tmp / "d.mkv",
                                                       duration=args.seconds, **COMMON))
        n = direct.frames
        print(f"CPU, {torch.get_num_threads()} threads; {args.clip.name}, {args.seconds:g} s ({n} frames, "
              f"{direct.width // 2}x{direct.height} per eye); Depth-Anything-V2-Small (random weights), input 518, "
              "batch 2, libx264 medium crf 16")
        print()
        print("| run | frames/s | ratio |")
        print("|---|---|---|")
        print(f"| convert() with the model | {plain.frames / t_plain:.3f} | |")
        print(f"| convert() with the model, depth_out gray16 | {n / t_direct:.3f} | "
              f"{t_plain / t_direct:.2f} of the run without export |")
        print(f"| convert(depth=export): re-render, no model | {again.frames / t_again:.3f} | "
              f"{t_plain / t_again:.1f}x the direct run |")
        print()
        print("| format | conversion from gray16, frames/s | bytes per frame |")
        print("|---|---|---|")
        print(f"| gray16 (written by the run above) | | {size_of(str(tmp / 'd.mkv')) / n:,.0f} |")
        for fmt, out in (("rgb-packed", tmp / "p.mkv"), ("png16", tmp / "png"), ("exr", tmp / "exr"),
                         ("npy", tmp / "d.npy"), ("colormap", tmp / "c.mp4")):
            result, t = timed(lambda fmt=fmt, out=out: sbsconv.export_depth(tmp / "d.mkv", out, format=fmt,
                                                                           progress=False))
            print(f"| {fmt} | {result.frames / t:.1f} | {size_of(result.path) / result.frames:,.0f} |")
        print()
        model = tiny_depth_anything(tmp / "tiny")
        print("| export of a 320x240 30 fps clip (tiny model, input 140) | 10 s: peak RSS MB | 40 s: peak RSS MB |")
        print("|---|---|---|")
        clips = {}
        for seconds in (10, 40):
            clips[seconds] = tmp / f"src{seconds}.mp4"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc2=size=320x240:rate=30:duration={seconds}", "-c:v", "libx264", "-preset",
                            "ultrafast", "-pix_fmt", "yuv420p", str(clips[seconds])], check=True)
        for fmt, ext in (("npy", ".npy"), ("gray16", ".mkv")):
            peaks = []
            for seconds in (10, 40):
                out = subprocess.run([sys.executable, "-c", MEMORY_WORKER, str(clips[seconds]),
                                      str(tmp / f"m{seconds}{ext}"), fmt, model], capture_output=True, text=True,
                                     check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
                peaks.append(float(out.stdout.strip().splitlines()[-1]))
            print(f"| {fmt} | {peaks[0]:.0f} | {peaks[1]:.0f} ({peaks[1] - peaks[0]:+.0f}) |")
        print(json.dumps({"direct_fps": plain.frames / t_plain, "rerender_fps": again.frames / t_again}))


if __name__ == "__main__":
    main()
