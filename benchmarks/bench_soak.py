"""Soak: many short conversions in one process, the way a notebook session or a folder job
uses sbsconv for hours. Mixed clips (H.264, MPEG-4 Part 2, VP8 + Vorbis, 10-bit HEVC, two
video streams with audio and subtitles), with cancels (Ctrl-C from a progress callback) and
bad inputs (not a video, a truncated file, a missing file) interleaved. Reports the resident
memory (settled: garbage collected, glibc's free lists trimmed) and the open file descriptors
after a warm-up and at the end (goal: memory within 5 %, no descriptor growth), the memory's
trend over the runs, and how long each cancel took to stop the run.

    uv run python benchmarks/bench_soak.py [--runs 300]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import sbsconv
from sbsconv.errors import SbsconvError, SbsconvWarning

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = ["bt601_limited_range.mp4", "davis_rollercoaster.mp4", "echo-hereweare.webm", "h265_10bits.mp4",
         "nasa_13013.mp4", "test_non_zero_start.mp4", "testsrc2_odd_height_and_width_444.mp4"]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def settled_rss_mb() -> float:
    """Resident memory with what is merely cached handed back: Python's garbage collected and
    glibc's free lists trimmed, so that the figure shows what is still in use (a leak), not
    what the allocator keeps for the next clip of another size."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_mb()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tiny_model(folder: Path) -> Path:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=1, image_size=70, patch_size=14,
                            out_indices=[1, 2, 3, 4], apply_layernorm=True, reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                 head_hidden_size=8, reassemble_hidden_size=64)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    warnings.simplefilter("ignore", SbsconvWarning)
    work = Path(tempfile.mkdtemp(prefix="sbsconv-soak-"))
    model = str(tiny_model(work / "model"))
    not_video = work / "notes.mp4"
    not_video.write_text("not a video")
    truncated = work / "truncated.mp4"
    raw = (DATA / "nasa_13013.mp4").read_bytes()
    truncated.write_bytes(raw[: len(raw) // 3])
    kinds = {"ok": 0, "cancelled": 0, "bad input": 0}
    cancel_latency: list[float] = []
    trend: list[tuple[int, float]] = []
    start_rss = start_fds = None
    t0 = time.perf_counter()
    for i in range(args.runs):
        if i == args.warmup:
            start_rss, start_fds = settled_rss_mb(), open_fds()
        if i >= args.warmup and i % 10 == 0:
            trend.append((i, settled_rss_mb()))
        out = work / f"out_{i % 4}.mp4"
        kind = i % 10
        try:
            if kind == 7:  # a cancel a few frames in
                stop_at: dict[str, float] = {}

                def interrupt(p, stop_at=stop_at):
                    if p["frames_done"] >= 6 and not stop_at:
                        stop_at["t"] = time.perf_counter()
                        raise KeyboardInterrupt

                try:
                    sbsconv.convert(DATA / "Tokyo-Walk_rgb.mp4", out, model=model, input_size=70, preset="ultrafast",
                                    progress=False, on_progress=interrupt, duration=4, resume=i % 20 == 7)
                except KeyboardInterrupt:
                    cancel_latency.append(time.perf_counter() - stop_at["t"])
                    kinds["cancelled"] += 1
                continue
            if kind == 9:
                bad = [not_video, truncated, work / "missing.mp4"][(i // 10) % 3]
                try:
                    sbsconv.convert(bad, out, model=model, input_size=70, preset="ultrafast", progress=False,
                                    duration=0.5)
                    kinds["ok"] += 1  # the truncated file converts what it holds
                except SbsconvError:
                    kinds["bad input"] += 1
                continue
            clip = DATA / CLIPS[i % len(CLIPS)]
            sbsconv.convert(clip, out, model=model, input_size=70, preset="ultrafast", progress=False,
                            duration=0.5, resume=i % 2 == 0, layout=["full-sbs", "half-tb", "anaglyph"][i % 3])
            kinds["ok"] += 1
        finally:
            if i % 50 == 49:
                print(f"  {i + 1} runs, rss {rss_mb():.1f} MB, fds {open_fds()}", flush=True)
    end_rss, end_fds = settled_rss_mb(), open_fds()
    trend.append((args.runs, end_rss))
    xs = [x for x, _ in trend]
    ys = [y for _, y in trend]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in trend) / max(sum((x - mean_x) ** 2 for x in xs), 1e-9)
    seconds = time.perf_counter() - t0
    growth = 100.0 * (end_rss - start_rss) / start_rss
    print()
    print(f"| runs | ok / cancelled / bad input | rss after {args.warmup} runs | rss at the end | growth | "
          "trend | fds after warm-up | fds at the end | cancel latency median / max | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.runs} | {kinds['ok']} / {kinds['cancelled']} / {kinds['bad input']} | {start_rss:.1f} MB | "
          f"{end_rss:.1f} MB | {growth:+.1f} % | {100 * slope:+.1f} MB per 100 runs | {start_fds} | {end_fds} | "
          f"{statistics.median(cancel_latency):.3f} s / {max(cancel_latency):.3f} s | {seconds:.0f} s |")
    ok = growth <= 5.0 and end_fds <= start_fds
    print("\nverdict:", "flat" if ok else "GROWTH", file=sys.stderr)


if __name__ == "__main__":
    main()
