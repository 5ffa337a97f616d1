"""The conversion engine's speed, measured in the same run.

1. Overlap: end-to-end frames/s of sbsconv.convert() over depth-model-only frames/s (the same
   model, batch and frames; decoded in advance, timed around infer() alone). Goal >= 0.9:
   the model is the only thing the user waits for.
2. Against a sequential pipeline written the way notebook scripts do it: an ffmpeg
   subprocess decoding to raw RGB, the transformers PyTorch model (same architecture, weights
   and input size, the reference preprocessing), a grid_sample warp per eye, and an ffmpeg
   subprocess encoding (libx264, same preset and CRF). Goal: sbsconv >= 1.5x faster.

Depth-Anything-V2-Small architecture with random weights (speed does not depend on them),
input size 518, on the CPU.

    uv run python benchmarks/bench_engine.py [--seconds 2] [--clip PATH] [--precision auto|fp32|int8|bf16]
        [--auto-preset] [--fill-cost] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import sbsconv
from sbsconv import media, models

sys.path.insert(0, str(Path(__file__).parent))
from bench_depth import make_checkpoint  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PRESET, CRF, BATCH = "medium", 16, 2


def depth_only(folder: str, clip: Path, seconds: float, precision: str = "auto",
               input_size: int = 518) -> tuple[int, float]:
    model = models.load(folder, device="cpu", precision=precision, input_size=input_size)
    frames = torch.cat([b.data for b in media.read_frames(clip, duration=seconds)])
    model.infer(frames[:BATCH])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(frames), BATCH):
        model.infer(frames[i : i + BATCH])
    return len(frames), time.perf_counter() - t0


def engine(folder: str, clip: Path, seconds: float, out: Path, precision: str = "auto", input_size: int = 518,
           preset: str | None = PRESET, fill: str = "temporal") -> tuple[int, float, object]:
    t0 = time.perf_counter()
    result = sbsconv.convert(clip, out, model=folder, device="cpu", duration=seconds, batch_size=BATCH,
                             preset=preset, crf=CRF, progress=False, resume=False, precision=precision,
                             input_size=input_size, fill=fill)
    return result.frames, time.perf_counter() - t0, result


def sequential(folder: str, clip: Path, seconds: float, out: Path, input_size: int = 518) -> tuple[int, float]:
    """The notebook way: one frame at a time through every step, each waiting for the last."""
    import cv2
    from transformers import DepthAnythingForDepthEstimation

    t0 = time.perf_counter()
    ref = DepthAnythingForDepthEstimation.from_pretrained(folder).eval()
    info = sbsconv.probe(clip)
    w, h = info.width, info.height
    decoder = subprocess.Popen(["ffmpeg", "-v", "error", "-t", str(seconds), "-i", str(clip), "-f", "rawvideo",
                                "-pix_fmt", "rgb24", "-"], stdout=subprocess.PIPE)
    encoder = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                                f"{2 * w}x{h}", "-r", str(float(info.fps)), "-i", "-", "-c:v", "libx264", "-preset",
                                PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p", str(out)], stdin=subprocess.PIPE)
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    nh, nw = sbsconv._core.lower_bound_size(h, w, input_size)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    frames = 0
    while True:
        raw = decoder.stdout.read(w * h * 3)
        if len(raw) < w * h * 3:
            break
        rgb = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        x = cv2.resize(rgb / 255.0, (nw, nh), interpolation=cv2.INTER_CUBIC)
        x = torch.from_numpy(((x - mean) / std).transpose(2, 0, 1)).float()[None]
        with torch.inference_mode():
            depth = ref(pixel_values=x).predicted_depth[:, None]
        depth = F.interpolate(depth, (h, w), mode="bilinear", align_corners=True)[0, 0]
        d = (depth - depth.min()) / (depth.max() - depth.min() + 1e-6)
        shift = (d - 0.5) * 0.02 * w  # divergence 2 %, convergence 0.5
        img = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float()
        eyes = []
        for sign in (0.5, -0.5):
            grid = torch.stack([xs - sign * shift * 2 / (w - 1), ys], -1)[None]
            eyes.append(F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True))
        sbs = torch.cat(eyes, 3)[0].round().clamp(0, 255).byte().permute(1, 2, 0).contiguous().numpy()
        encoder.stdin.write(sbs.tobytes())
        frames += 1
    encoder.stdin.close()
    encoder.wait()
    decoder.wait()
    return frames, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DATA / "Tokyo-Walk_rgb.mp4")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--precision", default="auto", help="sbsconv's (the sequential pipeline is fp32 eager)")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--fill-cost", action="store_true",
                        help="also convert with fill='spatial': the temporal fill's share of the time (issue 29)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternated rounds of the model alone and the conversions; medians reported")
    parser.add_argument("--auto-preset", action="store_true",
                        help="also convert with the preset left to sbsconv (Note [Encoder preset on the CPU])")
    args = parser.parse_args()
    size = args.input_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "model")
        make_checkpoint(folder, seed=0)
        # Alternated rounds (the machine is shared, ±10 % between runs): each round measures the
        # model alone, then each conversion; the ratios are taken within a round, then the median.
        rounds = []
        for _ in range(args.repeats):
            n_depth, t_depth = depth_only(folder, args.clip, args.seconds, args.precision, size)
            n_engine, t_engine, ran = engine(folder, args.clip, args.seconds, Path(tmp) / "engine.mp4",
                                             args.precision, size)
            got = {"depth": n_depth / t_depth, "engine": n_engine / t_engine}
            if args.auto_preset:
                n_auto, t_auto, ran_auto = engine(folder, args.clip, args.seconds, Path(tmp) / "auto.mp4",
                                                  args.precision, size, preset=None)
                got["auto"] = n_auto / t_auto
                got["auto_preset"] = ran_auto.encoder_preset
            if args.fill_cost:
                n_spatial, t_spatial, _ = engine(folder, args.clip, args.seconds, Path(tmp) / "spatial.mp4",
                                                 args.precision, size, fill="spatial")
                got["spatial"] = n_spatial / t_spatial
            rounds.append(got)
        n_seq, t_seq = sequential(folder, args.clip, args.seconds, Path(tmp) / "sequential.mp4", size)

    def median(key, of=None):
        values = [r[key] / (r[of] if of else 1.0) for r in rounds]
        return statistics.median(values)

    fps_depth, fps_engine, fps_seq = median("depth"), median("engine"), n_seq / t_seq
    print(f"CPU, {torch.get_num_threads()} threads; {args.clip.name}, {args.seconds:g} s ({n_engine} frames), "
          f"Depth-Anything-V2-Small (random weights), input {size}, batch {BATCH}, libx264 {PRESET} crf {CRF}; "
          f"sbsconv at precision {args.precision} ({ran.precision}); medians of {len(rounds)} alternated round(s)")
    print("| measurement | frames/s | ratio |")
    print("|---|---|---|")
    print(f"| depth model only (sbsconv infer) | {fps_depth:.3f} | |")
    print(f"| sbsconv.convert end to end | {fps_engine:.3f} | {median('engine', 'depth'):.2f} of depth-only |")
    if args.auto_preset:
        chosen = "/".join(sorted({r["auto_preset"] for r in rounds}))
        print(f"| sbsconv.convert, preset chosen by sbsconv ({chosen}) | {median('auto'):.3f} | "
              f"{median('auto', 'depth'):.2f} of depth-only |")
    if args.fill_cost:
        fps_spatial = median("spatial")
        print(f"| sbsconv.convert, fill='spatial' | {fps_spatial:.3f} | the temporal fill (the default) takes "
              f"{max(0.0, 1 - fps_engine / fps_spatial) * 100:.0f} % of the end-to-end time |")
    against = f"sbsconv {fps_engine / fps_seq:.2f}x faster ({PRESET} named)"
    if args.auto_preset:
        against += f", {median('auto') / fps_seq:.2f}x with the preset sbsconv chooses (preset left alone)"
    print(f"| sequential notebook pipeline | {fps_seq:.3f} | {against} |")
    print("stage frames/s of busy time:", {k: round(v, 2) for k, v in ran.stage_fps.items()})
    if len(rounds) > 1:
        print("rounds:", [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rounds])


if __name__ == "__main__":
    main()
