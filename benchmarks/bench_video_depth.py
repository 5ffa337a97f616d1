"""Video-Depth-Anything's two drivers against Depth-Anything-V2 with the same encoder.

Small architecture (ViT-S encoder, 64-feature head; random weights, in the original
checkpoint layout): frames per second on a moving clip (Tokyo-Walk, 720p, input 518) for
Depth-Anything-V2, Video-Depth-Anything windowed and streaming, each through
``estimate``/``flush`` on the CPU with the same threads; and a temporal-flicker figure on a
static-camera synthetic clip (one frame repeated with independent sensor noise, sigma 3):
the mean absolute frame-to-frame change of each frame's depth normalised to [0, 1].

Random weights show the drivers' cost and the mechanism's effect on flicker, not the trained
models' quality (the hub is out of reach here).

    uv run python benchmarks/bench_video_depth.py [--frames 54] [--static 32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

import sbsconv.models as models
from sbsconv import media
from sbsconv.models.depth_anything_v2 import original_keys_from_transformers

DATA = Path(os.environ.get("SBSCONV_TEST_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def small_checkpoints(folder: Path) -> tuple[Path, Path]:
    """Depth-Anything-V2-Small and Video-Depth-Anything-Small architectures, random weights,
    the same encoder and DPT weights in both."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518,
                            patch_size=14, out_indices=[3, 6, 9, 12], apply_layernorm=True,
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384],
                                 fusion_hidden_size=64, head_hidden_size=32, reassemble_hidden_size=384)
    base = original_keys_from_transformers(DepthAnythingForDepthEstimation(config).state_dict())
    base["depth_head.scratch.output_conv2.2.bias"] = base["depth_head.scratch.output_conv2.2.bias"] + 0.5
    dav2 = folder / "depth_anything_v2_vits.pth"
    torch.save(base, dav2)
    video = {k.replace("depth_head.", "head.", 1): v for k, v in base.items()}
    for m, c in enumerate([192, 384, 64, 64]):
        t = f"head.motion_modules.{m}.temporal_transformer."
        b = t + "transformer_blocks.0."
        position = torch.arange(32.0)[:, None]
        div = torch.exp(torch.arange(0, c, 2).float() * (-math.log(10000.0) / c))
        pe = torch.zeros(1, 32, c)
        pe[0, :, 0::2], pe[0, :, 1::2] = torch.sin(position * div), torch.cos(position * div)

        def lin(o, i):
            return torch.randn(o, i) * i ** -0.5

        video.update({t + "norm.weight": torch.ones(c), t + "norm.bias": torch.zeros(c),
                      t + "proj_in.weight": lin(c, c), t + "proj_in.bias": torch.zeros(c),
                      t + "proj_out.weight": lin(c, c) * 0.1, t + "proj_out.bias": torch.zeros(c),
                      b + "ff_norm.weight": torch.ones(c), b + "ff_norm.bias": torch.zeros(c),
                      b + "ff.net.0.proj.weight": lin(8 * c, c), b + "ff.net.0.proj.bias": torch.zeros(8 * c),
                      b + "ff.net.2.weight": lin(c, 4 * c), b + "ff.net.2.bias": torch.zeros(c)})
        for i in range(2):
            a = b + f"attention_blocks.{i}."
            video.update({a + "to_q.weight": lin(c, c), a + "to_k.weight": lin(c, c), a + "to_v.weight": lin(c, c),
                          a + "to_out.0.weight": lin(c, c), a + "to_out.0.bias": torch.zeros(c),
                          a + "pos_encoder.pe": pe, b + f"norms.{i}.weight": torch.ones(c),
                          b + f"norms.{i}.bias": torch.zeros(c)})
    vda = folder / "video_depth_anything_vits.pth"
    torch.save(video, vda)
    return dav2, vda


def frames_of(path: Path, count: int) -> torch.Tensor:
    out = []
    for batch in media.read_frames(path, batch_size=8):
        out.append(batch.data)
        if sum(len(b) for b in out) >= count:
            break
    return torch.cat(out)[:count]


def run(model, frames: torch.Tensor, chunk: int = 2) -> tuple[torch.Tensor, float]:
    model.reset()
    t0 = time.perf_counter()
    parts = [model.estimate(frames[i:i + chunk]).depth for i in range(0, len(frames), chunk)]
    if model.temporal:
        parts.append(model.flush().depth)
    seconds = time.perf_counter() - t0
    return torch.cat([p for p in parts if p.numel()]), seconds


def static_clip(moving: torch.Tensor, count: int) -> torch.Tensor:
    """A static camera: the first frame `count` times with independent sensor noise (sigma 3)."""
    g = torch.Generator().manual_seed(0)
    still = moving[:1].float().expand(count, -1, -1, -1)
    return (still + torch.randn(still.shape, generator=g) * 3).round().clamp(0, 255).byte()


def flicker(depth: torch.Tensor) -> float:
    d = depth.flatten(1)
    lo, hi = d.amin(1, keepdim=True), d.amax(1, keepdim=True)
    n = (d - lo) / (hi - lo).clamp_min(1e-12)
    return float((n[1:] - n[:-1]).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=54, help="moving-clip frames (54: three windows)")
    parser.add_argument("--static", type=int, default=32, help="static-clip frames")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    moving = frames_of(DATA / "Tokyo-Walk_rgb.mp4", args.frames)
    static = static_clip(moving, args.static)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dav2, vda = small_checkpoints(Path(tmp))
        approaches = [
            ("Depth-Anything-V2 (ViT-S)", dav2, "windowed"),
            ("Video-Depth-Anything windowed (ViT-S)", vda, "windowed"),
            ("Video-Depth-Anything streaming (ViT-S)", vda, "streaming"),
        ]
        for label, path, mode in approaches:
            model = models.load(path, device="cpu", precision="fp32", input_size=args.input_size, temporal_mode=mode)
            run(model, moving[:2])  # warm-up
            depth, seconds = run(model, moving)
            assert depth.shape[0] == len(moving)
            still_depth, _ = run(model, static)
            rows.append({"approach": label, "fps": len(moving) / seconds, "seconds": seconds,
                         "flicker": flicker(still_depth)})
            print(json.dumps(rows[-1]))
    base = rows[0]["fps"]
    print(f"\n{len(moving)} frames of {moving.shape[3]}x{moving.shape[2]}, input {args.input_size}, "
          f"{args.threads} threads\n")
    print("| approach | frames/s | vs DA-V2 | flicker (static clip) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['approach']} | {r['fps']:.3f} | {r['fps'] / base:.2f}x | {r['flicker']:.4f} |")


if __name__ == "__main__":
    main()
