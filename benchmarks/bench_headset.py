"""Headset formats (issue 15), measured in the same run.

1. VR180: the re-projection of both eyes onto their 180-degree canvases, per frame, against
   the rest of the stereo stage (rendering both eyes) on the same frames: what VR180 adds.
2. Apple's boxes: adding them after muxing (a streamed copy of the file with a new moov)
   against copying the same file with shutil (the floor for any after-muxing edit).

    uv run python benchmarks/bench_headset.py [--clip PATH] [--frames 8] [--canvas 2880]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import sbsconv
from sbsconv import media
from sbsconv._native import _core

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def best(call, repeat: int = 3) -> float:
    call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DATA / "Tokyo-Walk_rgb.mp4")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--canvas", type=int, default=2880)
    args = parser.parse_args()
    frames = torch.cat([b.data for b in media.read_frames(args.clip, batch_size=args.frames)])[: args.frames]
    n, _, h, w = frames.shape
    depth = torch.linspace(0, 1, w).expand(n, 1, h, w).contiguous()
    disparity = sbsconv.stereo.disparity_from_depth(depth)
    flat = best(lambda: _core.render_stereo(frames, disparity, layout="full-sbs"))
    vr = best(lambda: _core.render_stereo(frames, disparity, layout="full-sbs", vr180_canvas=args.canvas,
                                          vr180_fov=60.0))
    print(f"CPU, {torch.get_num_threads()} threads; {args.clip.name}: {n} frames of {w}x{h}")
    print()
    print("| stereo stage | ms per frame | ratio |")
    print("|---|---|---|")
    print(f"| full-sbs ({2 * w}x{h}) | {flat / n * 1000:.1f} | |")
    print(f"| vr180 ({2 * args.canvas}x{args.canvas}) | {vr / n * 1000:.1f} | {vr / flat:.2f}x full-sbs |")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "20", "-i", str(args.clip), "-c", "copy",
                        "-movflags", "+faststart", str(src)], check=True)
        boxes = _core.apple_stereo_boxes({"packing": "side", "projection": "rect", "hfov_degrees": 60.0})
        edit = best(lambda: _core.copy_with_sample_entry_boxes(str(src), str(Path(tmp) / "e.mp4"), boxes))
        copy = best(lambda: shutil.copyfile(src, Path(tmp) / "c.mp4"))
        size = os.path.getsize(src) / 2**20
    print()
    print(f"| after muxing, a faststart MP4 of {size:.0f} MiB | seconds | MiB/s | ratio |")
    print("|---|---|---|---|")
    print(f"| shutil.copyfile | {copy:.3f} | {size / copy:.0f} | |")
    print(f"| add Apple's boxes (new moov, offsets moved, media copied) | {edit:.3f} | {size / edit:.0f} | "
          f"{edit / copy:.2f}x the copy |")


if __name__ == "__main__":
    main()
