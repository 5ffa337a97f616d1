"""U²-Net subject masks: parity and speed against the reference network in the same run, and
masks per second at 720p beside the depth model (issue 30).

1. Parity: sbsconv's C++ network (batch norms folded) against the reference's U2NET / U2NETP
   (backgroundremover's copy of xuebinqin/U-2-Net's model/u2net.py), random weights in the
   published layout, the reference's 320 x 320 input: largest absolute difference of d0.
2. Speed, same run: the reference network's forward (PyTorch eager, fp32) against sbsconv's
   forward, and sbsconv's infer() on 720p frames (resize, normalise, network, normPRED, resize
   back) next to Depth-Anything-V2-Small's infer() at input 518 on the same frames (random
   weights: speed does not depend on them).

    uv run python benchmarks/bench_masks.py [--frames 8] [--batch 4] [--clip PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from sbsconv import media, models

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from bench_depth import make_checkpoint  # noqa: E402
from hubcache import u2net_reference  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(run, repeat: int) -> float:
    run()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--clip", type=Path, default=DATA / "Tokyo-Walk_rgb.mp4")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    frames = torch.cat([b.data for b in media.read_frames(args.clip, batch_size=args.frames)])[: args.frames]
    frames = frames.contiguous()
    h, w = frames.shape[-2:]
    print(f"torch threads {torch.get_num_threads()}, {args.frames} frames of {w}x{h}, batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        rates = {}
        for name, small in (("u2netp", True), ("u2net", False)):
            net = u2net_reference(small, seed=0)
            path = Path(tmp) / f"{name}.pth"
            torch.save(net.state_dict(), path)
            model = models.load(path, device="cpu", precision="fp32")
            x = torch.randn(args.batch, 3, 320, 320, generator=torch.Generator().manual_seed(1))
            diff = (model.forward(x) - net(x)[0]).abs().max().item()
            ours = timed(lambda m=model: m.forward(x), 3)
            ref = timed(lambda n=net: n(x), 3)
            print(f"{name}: parity max |d0 - reference| = {diff:.2e}; forward at 320, batch {args.batch}: "
                  f"reference {args.batch / ref:.2f} frames/s, sbsconv {args.batch / ours:.2f} frames/s "
                  f"({ref / ours:.2f}x)")

            def masks(m=model):
                for i in range(0, len(frames), args.batch):
                    m.masks(frames[i : i + args.batch])

            rates[name] = len(frames) / timed(masks, 1)
        depth_folder = Path(tmp) / "dav2s"
        make_checkpoint(str(depth_folder), seed=0)
        depth = models.load(depth_folder, device="cpu", precision="auto", input_size=518)

        def depths():
            for i in range(0, len(frames), args.batch):
                depth.infer(frames[i : i + args.batch])

        depth_rate = len(frames) / timed(depths, 1)
        print(f"{w}x{h} infer: depth-anything-v2-small (518, precision {depth.precision}) {depth_rate:.2f} frames/s; "
              + "; ".join(f"{n} {r:.2f} frames/s ({r / depth_rate:.2f}x the depth model)" for n, r in rates.items()))


if __name__ == "__main__":
    main()
