"""Chunk-parallel encoding's speed-up on this machine (issue 31; Note [Chunk-parallel encoding]
in cpp/sbsconv/pipeline/SegmentEncoders.h).

The same frames (a real clip scaled to each size, as bench_encoder.py) are cut into segments
and encoded by the engine's own parallel segment encoders (``_core.encode_segments``: the
class the encode stage runs) with 1 instance on all the cores given, and with K instances (2,
4, a quarter and half the cores) on cores/K threads each, for 1, 2 and all of this machine's cores (the process's CPU affinity, which
``usable_cores`` and the encoders follow). Reports, per row:
  fps       frames per second, wall clock, start to the last segment's end
  speed-up  against one instance on the same cores, same segments (same run)
  size      the segments' bytes against one stream of all the frames: what the segments'
            keyframes cost (CRF: the quality is the same)

    uv run --no-sync python benchmarks/bench_parallel_encoding.py [--frames 96] [--segment 24]
        [--sizes 2560x720,3840x1080] [--preset medium] [--encoder libx264] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from sbsconv._native import _core

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder import source_frames  # noqa: E402


def encode(frames: torch.Tensor, encoder: str, preset: str, segment: int, instances: int,
           threads: int) -> tuple[float, int]:
    """(wall seconds, bytes written)."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds, paths = _core.encode_segments(frames, tmp, encoder=encoder, preset=preset, segment_frames=segment,
                                               instances=instances, threads=threads)
        return seconds, sum(os.path.getsize(p) for p in paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--segment", type=int, default=24)
    parser.add_argument("--sizes", default="2560x720,3840x1080")
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--encoder", default="libx264")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    all_cores = sorted(os.sched_getaffinity(0))
    base = source_frames(args.frames)
    print(f"bench_parallel_encoding: sbsconv {_core.__version__}, {len(all_cores)} cores, {args.frames} frames, "
          f"segments of {args.segment}, {args.encoder} {args.preset}")
    rows = []
    counts = sorted({1, 2, len(all_cores)} & set(range(1, len(all_cores) + 1)))
    try:
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            frames = torch.nn.functional.interpolate(base.float(), size=(h, w), mode="bilinear",
                                                     align_corners=False).round().clamp(0, 255).to(torch.uint8)
            for cores in counts:
                os.sched_setaffinity(0, all_cores[:cores])
                assert _core.usable_cores() == cores
                _, whole = encode(frames, args.encoder, args.preset, args.frames, 1, cores)
                one = None
                for instances in sorted({1, 2, 4, cores // 4, cores // 2} & set(range(1, cores + 1))):
                    threads = max(1, cores // instances)
                    seconds, size_bytes = encode(frames, args.encoder, args.preset, args.segment, instances, threads)
                    fps = args.frames / seconds
                    one = fps if instances == 1 else one
                    row = {"size": size, "cores": cores, "instances": instances, "threads": threads, "fps": fps,
                           "speedup": fps / one, "size_vs_one_stream": size_bytes / whole}
                    rows.append(row)
                    print(f"  {size:>10} {cores:2} cores  {instances:2} x {threads:2} threads  {fps:6.2f} fps  "
                          f"speed-up {fps / one:4.2f}  size {size_bytes / whole:4.2f} of one stream", flush=True)
    finally:
        os.sched_setaffinity(0, all_cores)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
