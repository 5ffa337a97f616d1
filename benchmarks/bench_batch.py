"""Many videos on one machine (issue 17), measured in the same run.

A folder of short clips converted by sbsconv.convert_many: in this process (one worker)
against two worker processes (devices=["cpu", "cpu"]) and against Ray (backend="ray", a local
cluster of 2 CPUs started by the call: its start is part of the wall time, and reported on its
own); and the scheduling overhead per file
(the batch's wall time minus the files' own conversion times, per file). On a 2-core machine
two CPU workers share the cores the one worker already uses: the figure says what the
workers cost, not what GPUs would gain (each GPU worker would run at the single-worker rate).

    uv run python benchmarks/bench_batch.py [--files 6] [--seconds 2] [--size 320x240] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import sbsconv

sys.path.insert(0, str(Path(__file__).parent))
from measure import tiny_depth_anything  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray row out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = tiny_depth_anything(tmp / "model")
        clips = tmp / "clips"
        clips.mkdir()
        for i in range(args.files):
            subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                            f"testsrc2=size={args.size}:rate=25:duration={args.seconds}", "-vf", f"hue=h={i * 40}",
                            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                            str(clips / f"clip{i}.mp4")], check=True)
        common = {"model": model, "input_size": 140, "progress": False, "resume": False}
        rows = []
        runs = [("one worker (this process)", None, {}), ("two worker processes", ["cpu", "cpu"], {})]
        if not args.no_ray:
            runs.append(("Ray, 2 CPU tasks at a time (cluster started by the call)", None, {"backend": "ray"}))
        ray_start = None
        for label, devices, extra in runs:
            if extra.get("backend") == "ray":
                os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
                import ray

                t0 = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
                ray_start = time.perf_counter() - t0
                ray.shutdown()
            t0 = time.perf_counter()
            summary = sbsconv.convert_many(clips, tmp / f"out_{len(rows)}", devices=devices, **extra, **common)
            wall = time.perf_counter() - t0
            frames = sum(f.frames for f in summary.done)
            workers = 2 if devices or extra else 1
            overhead = (wall - sum(f.seconds for f in summary.done) / workers) / args.files
            rows.append((label, wall, frames / wall, overhead, len(summary.done)))
    print(f"CPU, {torch.get_num_threads()} threads; {args.files} clips of {args.seconds:g} s at {args.size} "
          "25 fps; tiny Depth-Anything-V2 (input 140), libx264")
    print()
    print("| run | wall s | frames/s | scheduling overhead per file, s | files done |")
    print("|---|---|---|---|---|")
    for label, wall, fps, overhead, done in rows:
        print(f"| {label} | {wall:.1f} | {fps:.1f} | {overhead:.2f} | {done} |")
    if ray_start is not None:
        print()
        print(f"Starting (and stopping) a local Ray cluster alone: {ray_start:.1f} s")


if __name__ == "__main__":
    main()
