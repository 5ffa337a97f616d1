"""Depth Anything 3 beside the models of the same size: frames per second on the CPU at each
model's default input on 720p frames, and temporal flicker on a static-camera clip.

Full-size architectures with random weights (the hub is out of reach here), each model at its
reference's input rule: Depth-Anything-V2 and Video-Depth-Anything at 518 on the shorter side
(518x924 for 720p), Depth Anything 3 at 504 on the longer side (280x504). Pairs:
DA3-Small (any-view, 8-frame windows sharing 2) with Depth-Anything-V2-Small and
Video-Depth-Anything-Small; DA3-Base with Depth-Anything-V2-Base; DA3-Mono-Large (the metric
model is the same network) with Depth-Anything-V2-Large. Flicker: the mean absolute
frame-to-frame change of each frame's inverse depth normalised to [0, 1], on one frame repeated
with independent sensor noise (sigma 3). Random weights show the cost and the mechanism, not
the trained models' quality.

    uv run python benchmarks/bench_depth_anything_3.py [--frames 20] [--large-frames 3] [--static 24]
                                                       [--precision auto] [--threads N] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
import da3_weights  # noqa: E402  (the tests' published-layout writer)
from bench_video_depth import DATA, flicker, frames_of, run, small_checkpoints, static_clip  # noqa: E402

import sbsconv.models as models  # noqa: E402
from sbsconv.models.depth_anything_v2 import original_keys_from_transformers  # noqa: E402

DAV2 = {  # transformers configurations of the Depth-Anything-V2 sizes
    "base": dict(hidden=768, layers=12, heads=12, out=[3, 6, 9, 12], neck=[96, 192, 384, 768], fusion=128),
    "large": dict(hidden=1024, layers=24, heads=16, out=[5, 12, 18, 24], neck=[256, 512, 1024, 1024], fusion=256),
}


def dav2_checkpoint(folder: Path, size: str) -> Path:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    c = DAV2[size]
    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=c["hidden"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                            image_size=518, patch_size=14, out_indices=c["out"], apply_layernorm=True,
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=c["neck"], fusion_hidden_size=c["fusion"],
                                 head_hidden_size=32, reassemble_hidden_size=c["hidden"])
    state = original_keys_from_transformers(DepthAnythingForDepthEstimation(config).state_dict())
    enc = {"base": "vitb", "large": "vitl"}[size]
    path = folder / f"depth_anything_v2_{enc}.pth"
    torch.save(state, path)
    return path


def timed(model, frames: torch.Tensor, chunk: int) -> tuple[torch.Tensor, float]:
    """bench_video_depth's run, the depth as the pipeline takes it (DA3's inverted)."""
    depth, seconds = run(model, frames, chunk)
    return model.pipeline_depth(depth), seconds


def measure(label: str, path: Path, frames: torch.Tensor, static: torch.Tensor | None, precision: str,
            chunk: int) -> dict:
    model = models.load(str(path), device="cpu", precision=precision)
    timed(model, frames[:2], chunk)  # warm-up: kernels, position tables
    depth, seconds = timed(model, frames, chunk)
    assert depth.shape[0] == len(frames)
    row = {"approach": label, "input": model.input_size, "precision": model.precision,
           "fps": len(frames) / seconds, "seconds": seconds}
    if static is not None:
        still, _ = timed(model, static, chunk)
        row["flicker"] = flicker(still)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20, help="moving 720p frames (20: three DA3 windows)")
    parser.add_argument("--large-frames", type=int, default=3)
    parser.add_argument("--static", type=int, default=24, help="static-clip frames")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    moving = frames_of(DATA / "Tokyo-Walk_rgb.mp4", args.frames)
    static = static_clip(moving, args.static)
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        dav2_s, vda_s = small_checkpoints(t)
        small = da3_weights.write(t / "DA3-SMALL", "da3-small", tiny=False)
        base = da3_weights.write(t / "DA3-BASE", "da3-base", tiny=False)
        rows.append(("small", measure("Depth-Anything-V2-Small", dav2_s, moving, static, args.precision, 2)))
        rows.append(("small", measure("Video-Depth-Anything-Small (windowed)", vda_s, moving, static, args.precision, 2)))
        rows.append(("small", measure("Depth Anything 3 Small (any-view)", small, moving, static, args.precision, 2)))
        rows.append(("base", measure("Depth-Anything-V2-Base", dav2_checkpoint(t, "base"), moving, None,
                                     args.precision, 2)))
        rows.append(("base", measure("Depth Anything 3 Base (any-view)", base, moving, None, args.precision, 2)))
        if not args.skip_large:
            few = moving[:args.large_frames]
            mono = da3_weights.write(t / "DA3MONO-LARGE", "da3mono-large", tiny=False)
            rows.append(("large", measure("Depth-Anything-V2-Large", dav2_checkpoint(t, "large"), few, None,
                                          args.precision, 1)))
            rows.append(("large", measure("Depth Anything 3 Mono-Large", mono, few, None, args.precision, 1)))
    print(f"\n{moving.shape[3]}x{moving.shape[2]} frames (Tokyo-Walk), CPU, {args.threads} threads, "
          f"precision {args.precision}\n")
    print("| approach | input | frames/s | vs DA-V2 of the size | flicker (static clip) |")
    print("|---|---|---|---|---|")
    first = {}
    for size, r in rows:
        first.setdefault(size, r["fps"])
        fl = f"{r['flicker']:.4f}" if "flicker" in r else "-"
        print(f"| {r['approach']} | {r['input']} | {r['fps']:.3f} | {r['fps'] / first[size]:.2f}x | {fl} |")


if __name__ == "__main__":
    main()
