"""Depth inference on the CPU at fp32, bf16 and int8 (issue 19), measured in the same run.

Depth-Anything-V2-Small's architecture (random weights: speed does not depend on the values) at
input 518 on 1280x720 frames of the Tokyo walk sample, batch 1 and 4: frames/s of infer() (best
of --repeat after a warm-up), the process's peak resident-memory growth, each precision in its
own worker process. Then the quality of each against fp32 on the same real frames: the relative
depth error after each frame's own normalisation (1st/99th percentiles to [0, 1]; budget <= 1 %)
and the PSNR of the synthesised right eye against fp32's (budget >= 40 dB), for --seeds random
networks (a random network's figures depend on its draw: the worst and the mean are reported),
and what precision="auto" picks on this CPU, with its speed against fp32.

    uv run python benchmarks/bench_cpu_precision.py [--repeat 3] [--frames 4] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
DATA = BENCHMARKS.parents[1] / "shared" / "data"
sys.path.insert(0, str(BENCHMARKS))
from bench_depth import make_checkpoint  # noqa: E402

WORKER = r"""
import sys, torch
sys.path.insert(0, sys.argv[-1])
from measure import report
from sbsconv import media, models
folder, precision, batch, repeat, clip = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
model = models.load(folder, device="cpu", precision=precision)
frames = next(iter(media.read_frames(clip, batch_size=batch))).data
report(lambda: model.infer(frames), repeat)
"""


def measure(folder: str, precision: str, batch: int, repeat: int, clip: Path) -> dict:
    args = [folder, precision, str(batch), str(repeat), str(clip), str(BENCHMARKS)]
    out = subprocess.run([sys.executable, "-c", WORKER, *args], check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    figures["fps"] = batch / figures["seconds"]
    return figures


def normalised(depth: torch.Tensor) -> torch.Tensor:
    x = depth.flatten(1).double()
    lo, hi = x.quantile(0.01, 1, keepdim=True), x.quantile(0.99, 1, keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def aligned_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean |s*ours + t - reference| / mean(reference) after each frame's least-squares scale and
    shift (the affine ambiguity of relative depth, as depth benchmarks align predictions)."""
    p = ours.flatten(1).double()
    r = reference.flatten(1).double()
    a = torch.stack([p, torch.ones_like(p)], -1)
    fit = torch.linalg.lstsq(a, r.unsqueeze(-1)).solution
    return float(((a @ fit).squeeze(-1) - r).abs().mean() / r.abs().mean())


def quality(folder: str, clip: Path, n: int) -> dict[str, dict]:
    """Each precision against fp32 on the same frames: AbsRel and the right eye's PSNR."""
    from sbsconv import media, models, stereo

    frames = torch.cat([b.data for b in media.read_frames(clip, batch_size=n, duration=None)][:1])[:n]

    def eye(depth: torch.Tensor) -> torch.Tensor:
        d = normalised(depth).view_as(depth).float()
        return stereo.render(frames, depth=d, layout="full-sbs")[..., frames.shape[-1]:]

    reference = models.load(folder, device="cpu", precision="fp32").infer(frames)
    ref_eye = eye(reference)
    out = {}
    for precision in ("bf16", "int8"):
        depth = models.load(folder, device="cpu", precision=precision).infer(frames).float()
        a, r = normalised(depth), normalised(reference)
        mse = ((eye(depth).double() - ref_eye.double()) ** 2).mean(dim=(1, 2, 3))
        out[precision] = {"abs_rel": float((a - r).abs().mean() / r.mean()),
                          "aligned": aligned_error(depth, reference),
                          "eye_psnr_db": float((10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).min())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DATA / "Tokyo-Walk_rgb.mp4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4, help="frames for the quality comparison")
    parser.add_argument("--seeds", type=int, default=3, help="random networks for the quality comparison")
    args = parser.parse_args()
    from sbsconv.models.precision import auto_cpu_precision, cpu_flags, cpu_name

    auto, why = auto_cpu_precision(bf16_on_amx=True)  # Depth-Anything-V2
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512_bf16", "avx512_vnni", "avx_vnni", "amx")))
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "model")
        make_checkpoint(folder, seed=0)
        rows = {}
        for batch in (1, 4):
            for precision in ("fp32", "bf16", "int8"):  # interleaved per batch size
                rows[(precision, batch)] = measure(folder, precision, batch, args.repeat, args.clip)
        draws = [quality(folder, args.clip, args.frames)]
        for seed in range(1, args.seeds):
            other = str(Path(tmp) / f"model{seed}")
            make_checkpoint(other, seed=seed)
            draws.append(quality(other, args.clip, args.frames))
    # The worst draw of each figure.
    q = {p: {"abs_rel": max(d[p]["abs_rel"] for d in draws), "aligned": max(d[p]["aligned"] for d in draws),
             "eye_psnr_db": min(d[p]["eye_psnr_db"] for d in draws)} for p in draws[0]}
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"flags: {', '.join(flags) or 'none of bf16/VNNI/AMX'}")
    print(f"Depth-Anything-V2-Small (random weights), input 518, 1280x720 frames; quality: the worst of {len(draws)} "
          "random networks")
    print()
    print("| precision | batch | frames/s | vs fp32 | peak memory (MB) | AbsRel vs fp32 (percentile-normalised) "
          "| error after scale-and-shift | right eye vs fp32 (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in (1, 4):
        base = rows[("fp32", batch)]["fps"]
        for precision in ("fp32", "bf16", "int8"):
            r = rows[(precision, batch)]
            qual = q.get(precision)
            rel = f"{100 * qual['abs_rel']:.2f} %" if qual else "(reference)"
            aligned = f"{100 * qual['aligned']:.3f} %" if qual else ""
            db = f"{qual['eye_psnr_db']:.1f}" if qual else ""
            print(f"| {precision} | {batch} | {r['fps']:.3f} | {r['fps'] / base:.2f}x | {r['peak_mb']:.0f} | {rel} "
                  f"| {aligned} | {db} |")
    print()
    print("Each random network (seed: AbsRel / after scale-and-shift / eye dB):")
    for p in q:
        each = ", ".join(f"{i}: {100 * d[p]['abs_rel']:.2f} % / {100 * d[p]['aligned']:.2f} % / {d[p]['eye_psnr_db']:.1f}"
                         for i, d in enumerate(draws))
        print(f"- {p}: {each}")
    print()
    speed = [rows[(auto, b)]["fps"] / rows[("fp32", b)]["fps"] for b in (1, 4)]
    print(f"precision='auto' here: {why}; {speed[0]:.2f}x fp32 at batch 1, {speed[1]:.2f}x at batch 4")


if __name__ == "__main__":
    main()
