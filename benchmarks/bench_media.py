"""Media layer speed against reference implementations, measured in the same run.

Decode: a 720p H.264 clip to RGB tensors, sbsconv vs torchcodec (same file, same FFmpeg
thread count), with the ffmpeg command line decoding to raw RGB as a floor.
Encode: the same RGB frames through sbsconv's encoder vs the ffmpeg command line with the
same codec, preset and CRF (and the same RGB->YUV conversion), from raw frames on disk.

    uv run python benchmarks/bench_media.py [--clip PATH] [--repeat 3] [--frames 60]

Prints a Markdown table; paste it into benchmarks/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from sbsconv import media

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved(repeat: int, *fns) -> list[float]:
    """Best time of each function, running them in turn so that a busy moment on a shared
    machine does not land on one side only."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def decode_sbsconv(path: Path, threads: int) -> int:
    return sum(len(b) for b in media.read_frames(path, batch_size=8, threads=threads))


def decode_torchcodec(path: Path, threads: int) -> int:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), num_ffmpeg_threads=threads, dimension_order="NCHW")
    n = decoder.metadata.num_frames
    count = 0
    for start in range(0, n, 8):
        batch = decoder.get_frames_in_range(start, min(n, start + 8))
        count += batch.data.shape[0]
    return count


def decode_ffmpeg_cli(path: Path, threads: int) -> int:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-threads", str(threads), "-i", str(path), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-y", os.devnull],
        check=True,
    )
    return -1


def bench_decode(clip: Path, repeat: int) -> list[tuple[str, ...]]:
    frames = decode_sbsconv(clip, 0)
    rows = []
    for threads in (1, 0):
        label = "1" if threads == 1 else f"auto ({os.cpu_count()})"
        ours, theirs, cli = interleaved(
            repeat,
            lambda: decode_sbsconv(clip, threads),
            lambda: decode_torchcodec(clip, threads),
            lambda: decode_ffmpeg_cli(clip, threads),
        )
        rows.append((
            f"decode {clip.name} ({frames} frames), threads {label}",
            f"{frames / ours:.1f}",
            f"torchcodec {frames / theirs:.1f}",
            f"{theirs / ours:.2f}x",
            f"ffmpeg CLI {frames / cli:.1f}",
        ))
    return rows


def bench_encode(clip: Path, n: int, repeat: int, preset: str, crf: int) -> list[tuple[str, ...]]:
    frames = torch.cat([b.data for b in media.read_frames(clip, batch_size=8, duration=None)])[:n]
    frames = frames.contiguous(memory_format=torch.channels_last)
    _, _, h, w = frames.shape
    fps = 15
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "frames.rgb"
        raw.write_bytes(frames.permute(0, 2, 3, 1).contiguous().numpy().tobytes())

        def ours():
            with media.VideoWriter(Path(tmp) / "ours.mp4", width=w, height=h, fps=fps,
                                   encoder="libx264", preset=preset, crf=crf) as writer:
                for i in range(0, n, 8):
                    writer.write(frames[i : i + 8])

        def cli():
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                 "-s", f"{w}x{h}", "-r", str(fps), "-i", str(raw),
                 "-vf", "scale=out_color_matrix=bt709:out_range=tv:flags=area+accurate_rnd+full_chroma_inp",
                 "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                 "-movflags", "+faststart", str(Path(tmp) / "cli.mp4")],
                check=True,
            )

        t_ours, t_cli = interleaved(repeat, ours, cli)
    return [(
        f"encode {n} frames {w}x{h}, libx264 {preset} crf {crf}",
        f"{n / t_ours:.1f}",
        f"ffmpeg CLI {n / t_cli:.1f}",
        f"time {t_ours / t_cli:.3f}x of the CLI",
        "",
    )]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DATA / "Tokyo-Walk_rgb.mp4")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60, help="frames to encode")
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--crf", type=int, default=16)
    args = parser.parse_args()
    rows = bench_decode(args.clip, args.repeat)
    rows += bench_encode(args.clip, args.frames, args.repeat, args.preset, args.crf)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| work | sbsconv frames/s | reference frames/s | ratio | floor |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
