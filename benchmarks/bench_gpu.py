"""The GPU path end to end against its depth model alone (issue 16's benchmark).

Measures, on one device (CUDA, MPS, or the CPU as a smoke test):
  - depth-only frames/s: the model's own rate (preprocessing included) on frames already on
    the device, batch after batch, the device synchronised before the clock stops;
  - end-to-end frames/s: sbsconv.convert() on the same clip (decode, depth, stabilise, stereo,
    encode, all overlapping), wall time of the call;
  - their ratio (the target on a GPU: >= 0.9 for Depth-Anything-V2-Small at 1080p), each
    stage's busy time, the batch size and encoder chosen;
  - host synchronisations per batch, per stage (Note [Host synchronisation]), from a shorter
    run in the engine's check mode;
  - with --profile TRACE: a PyTorch profiler Chrome trace of a short conversion (open it in
    chrome://tracing or Perfetto) to see the stages' streams overlap.

    uv run python benchmarks/bench_gpu.py --device cuda --random-weights [--height 1080]
    uv run python benchmarks/bench_gpu.py --device cpu --random-weights --height 360 --seconds 2

--random-weights builds a Depth-Anything-V2-Small-sized model with random weights
(transformers layout; speed does not depend on the values), for machines without the hub.
The input (default: the Tokyo walk sample) is scaled to --height with sbsconv's own reader and
writer first, so every machine measures the same picture size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_depth import make_checkpoint  # noqa: E402  (DA-V2-Small's architecture, random weights)
DEFAULT_INPUT = HERE.parent.parent / "shared" / "data" / "Tokyo-Walk_rgb.mp4"


def scaled_input(source: Path, height: int, seconds: float, folder: Path, device: str) -> Path:
    """The first `seconds` of `source` at `height` lines (even width, aspect kept)."""
    from sbsconv import media

    info = media.probe(source).video
    width = round(info.width * height / info.height / 2) * 2
    out = folder / f"input_{height}p.mp4"
    with media.VideoWriter(out, width=width, height=height, fps=info.avg_frame_rate, preset="veryfast", crf=18,
                           audio="none", subtitles="none") as writer:
        for batch in media.read_frames(source, batch_size=16, duration=seconds, width=width, height=height):
            writer.write(batch.data, batch.pts.tolist())
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def depth_only(model_path: str, clip: Path, device: str, batch: int, rounds: int) -> dict:
    """The model's rate on frames already on the device (its preprocessing included)."""
    from sbsconv import media, models

    model = models.load(model_path, device=device)
    frames = next(iter(media.read_frames(clip, batch_size=batch))).data.to(device)
    for _ in range(3):  # warm-up: kernels chosen, allocator filled
        model.infer(frames)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(rounds):
        model.infer(frames)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"fps": rounds * len(frames) / seconds, "batch": len(frames), "dtype": str(model.dtype)}


def end_to_end(model_path: str, clip: Path, out: Path, device: str, batch: int | None, **extra) -> object:
    import sbsconv

    # resumable, as a user's run is by default: its segments are what several encoder
    # instances encode at once when one would set the pace (Note [Chunk-parallel encoding])
    options = {"model": model_path, "device": device, "progress": False}
    if batch:
        options["batch_size"] = batch
    options.update(extra)
    return sbsconv.convert(clip, out, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--seconds", type=float, default=12.0, help="of the input to convert")
    parser.add_argument("--model", default="depth-anything-v2-small")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--batch", type=int, default=None, help="default: chosen by sbsconv")
    parser.add_argument("--layout", default="full-sbs")
    parser.add_argument("--preset", default=None, help="the encoder's preset (default: sbsconv's)")
    parser.add_argument("--depth-rounds", type=int, default=20)
    parser.add_argument("--sync-seconds", type=float, default=2.0)
    parser.add_argument("--profile", type=Path, default=None, help="write a Chrome trace here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    model_path = args.model
    if args.random_weights:
        model_path = str(work / "da2_small_random")
        make_checkpoint(model_path)
    t0 = time.perf_counter()
    clip = scaled_input(args.input, args.height, args.seconds, work, args.device)
    prepare = time.perf_counter() - t0

    extra = {"layout": args.layout}
    if args.preset:
        extra["preset"] = args.preset
    e2e = end_to_end(model_path, clip, work / "e2e.mp4", args.device, args.batch, **extra)
    batch = e2e.batch_size
    depth = depth_only(model_path, clip, args.device, batch, args.depth_rounds)
    e2e_fps = e2e.frames / e2e.seconds
    os.environ["SBSCONV_CHECK_SYNCS"] = "1"
    try:
        checked = end_to_end(model_path, clip, work / "syncs.mp4", args.device, batch, duration=args.sync_seconds,
                             **extra)
    finally:
        del os.environ["SBSCONV_CHECK_SYNCS"]
    syncs = {s["name"]: round(s["host_syncs"] / max(s["batches"], 1), 2) for s in checked.stages}
    figures = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "size": f"{e2e.width}x{e2e.height} output from {args.height}p",
        "frames": e2e.frames,
        "batch_size": batch,
        "encoder": e2e.encoder,
        "layout": args.layout,
        "preset": args.preset or e2e.encoder_preset or "default",
        "preset_reason": e2e.encoder_preset_reason,
        "encoders": e2e.encoders,
        "depth_only_fps": round(depth["fps"], 1),
        "end_to_end_fps": round(e2e_fps, 1),
        "ratio": round(e2e_fps / depth["fps"], 3),
        "stage_busy_s": {s["name"]: round(s["busy_seconds"], 3) for s in e2e.stages},
        "stage_fps": {k: round(v, 1) for k, v in e2e.stage_fps.items()},
        "host_syncs_per_batch": syncs,
        "prepare_input_s": round(prepare, 1),
        "model_dtype": depth["dtype"],
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if args.device.startswith("cuda"):
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            end_to_end(model_path, clip, work / "profiled.mp4", args.device, batch, duration=args.sync_seconds,
                       **extra)
        prof.export_chrome_trace(str(args.profile))
        figures["trace"] = str(args.profile)
    print(json.dumps(figures, indent=2))
    print()
    print("| device | output | batch | encoder (preset, instances) | depth-only fps | end-to-end fps | ratio | host syncs per batch |")
    print("|---|---|---|---|---|---|---|---|")
    sync_text = ", ".join(f"{k} {v}" for k, v in syncs.items())
    print(f"| {figures['device_name']} | {figures['size']} | {batch} | {e2e.encoder} ({figures['preset']}, {e2e.encoders}) "
          f"| {figures['depth_only_fps']} "
          f"| {figures['end_to_end_fps']} | {figures['ratio']} | {sync_text} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return None


if __name__ == "__main__":
    sys.exit(main())
