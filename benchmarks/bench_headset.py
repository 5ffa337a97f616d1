"""Headset formats (issue 15), measured in the same run.

1. VR180: the re-projection of both eyes onto their 180-degree canvases, per frame, against
   the rest of the stereo stage (rendering both eyes) on the same frames: what VR180 adds.
2. Apple's boxes: adding them after muxing (a streamed copy of the file with a new moov)
   against copying the same file with shutil (the floor for any after-muxing edit).
3. Spatial video: reading x265's raw two-layer stream back (Note [MV-HEVC bitstreams]: access
   units, POC order, parameter sets) against FFmpeg's own raw-HEVC demuxer and parser reading
   the same bytes (`ffmpeg -f hevc -i ... -c copy -f null -`), on Apple's spatial video repeated.

    uv run python benchmarks/bench_headset.py [--clip PATH] [--frames 8] [--canvas 2880] [--repeat 3000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import sys

import torch

import sbsconv
from sbsconv import media
from sbsconv._native import _core

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
import isobmff  # noqa: E402  (the tests' box reader: Apple's stream out of its MP4)


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
    parser.add_argument("--repeat", type=int, default=3000, help="copies of Apple's 10-picture stream")
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
        boxes = _core.apple_stereo_boxes(_core.AppleStereo(packing="side", projection="rect", baseline_um=63000,
                                                           disparity_adjustment=0, hfov_degrees=60.0))
        edit = best(lambda: _core.copy_with_sample_entry_boxes(str(src), str(Path(tmp) / "e.mp4"), boxes))
        copy = best(lambda: shutil.copyfile(src, Path(tmp) / "c.mp4"))
        size = os.path.getsize(src) / 2**20
    print()
    print(f"| after muxing, a faststart MP4 of {size:.0f} MiB | seconds | MiB/s | ratio |")
    print("|---|---|---|---|")
    print(f"| shutil.copyfile | {copy:.3f} | {size / copy:.0f} | |")
    print(f"| add Apple's boxes (new moov, offsets moved, media copied) | {edit:.3f} | {size / edit:.0f} | "
          f"{edit / copy:.2f}x the copy |")

    stream = isobmff.hevc_annexb(DATA / "apple_spatial_160x120.mp4") * args.repeat
    units = len(_core._hevc_stream_order(stream)[0])
    ours = best(lambda: _core._hevc_stream_order(stream))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "spatial.hevc"
        raw.write_bytes(stream)
        ffmpeg = best(lambda: subprocess.run(["ffmpeg", "-v", "fatal", "-f", "hevc", "-i", str(raw), "-c", "copy",
                                              "-f", "null", "-"], check=True))
    mib = len(stream) / 2**20
    print()
    print(f"| a raw two-layer stream of {mib:.1f} MiB, {units} access units | seconds | access units/s | ratio |")
    print("|---|---|---|---|")
    print(f"| FFmpeg's hevc demuxer + parser (command line) | {ffmpeg:.3f} | {units / ffmpeg:.0f} | |")
    print(f"| sbsconv's reading (units, POC order, parameter sets) | {ours:.3f} | {units / ours:.0f} | "
          f"{ffmpeg / ours:.1f}x FFmpeg's rate |")


if __name__ == "__main__":
    main()
