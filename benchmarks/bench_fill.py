"""Disocclusion fill against exact ground truth (issue 29): synthetic layered scenes with exact
geometry (tests/python/stereoscenes.py) converted by sbsconv from their exact metric depth, each
fill method beside the naive backward warp, in the same run.

For each scene: the source frames and their exact depth are written losslessly (FFV1 RGB and
an npy depth file whose sidecar carries the field of view), converted by sbsconv's own
conversion (the plan and engine of sbsconv.convert, full side by side, with ``fill=<method>``
for each method the installed sbsconv accepts; while it has no ``fill`` option, today's
default, labelled "spatial (current)") and the eyes read back losslessly (the engine's
per-frame PNGs). The naive warp is ``_core.render_eye_naive`` on the same source frames with
the exact disparity (sbsconv's metric disparity of the exact depth; shares +1/2 left, -1/2
right). Every other conversion option is sbsconv's default (edge_dilation 2 included; change
it with --edge-dilation).

Measures, per eye, on luma (BT.709: Y = 0.2126 R + 0.7152 G + 0.0722 B, 0..255, unrounded):
  dis     PSNR over the disoccluded pixels: the eye's scene point lies inside the source's
          picture but behind a nearer surface (the scenes' ``hidden`` masks, exact geometry),
          squared errors pooled over every frame
  whole   PSNR over the whole eye, pooled over every frame
  edge    PSNR over the strips at the frame's edges that the eye sees beyond the source's
          picture (``outside`` masks; not part of dis)
  flicker temporal flicker in the disoccluded regions: the mean, over pixels disoccluded in
          both frames t-1 and t (every t), of |(out_t - out_t-1) - (truth_t - truth_t-1)|
          (0..255 luma)
  s       end-to-end seconds of the conversion with the method (plan and engine: decoding,
          depth read from the file, rendering, H.264 encoding; the PNGs too, a small share);
          with --convert-timing, of a separate plain sbsconv.convert() call; for naive, the
          disparity and the warp alone
Deltas are against naive in the same eye. Goals (issue 29), judged per eye: on moving video
dis >= naive + 6 dB and dis >= 30 dB, flicker <= half naive's; on the still pair whole >=
naive + 8 dB and dis >= naive + 4.5 dB.

    uv run --no-sync python benchmarks/bench_fill.py [--size 640x360] [--frames 24]
        [--scenes trucking,panning,dolly,thin,large,still] [--methods temporal,spatial,none]
        [--edge-dilation N] [--convert-timing] [--keep DIR] [--json PATH] [--breakdown]

The default is smaller than the issue's 720p: 640x360, 24 frames, about a minute on 2 cores
when each fill costs what the spatial one does (the conversions dominate, one per method and
scene; with the first temporal fill, 4x slower than the spatial one, about 4 minutes).
``--size 1280x720 --frames 48`` is the issue's size: 8x the pixel-frames, rendering the
truth alone takes about 40 s per scene there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sbsconv
from sbsconv import stereo
from sbsconv._native import _core
from sbsconv.errors import OptionError
from sbsconv.options import ConvertOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
import stereoscenes as S  # noqa: E402  (the tests' scene generator)

METHODS = ("temporal", "spatial", "none")
CURRENT = "spatial (current)"


def beside_nearer(hidden: np.ndarray, depth: np.ndarray, reach: int = 2) -> np.ndarray:
    """The disoccluded pixels within ``reach`` pixels along their row of a pixel that is not
    disoccluded and nearer (the foreground's edge), [N,H,W]."""
    out = np.zeros_like(hidden)
    for step in range(1, reach + 1):
        for dx in (step, -step):
            other = np.roll(hidden, dx, axis=2)
            nearer = np.roll(depth, dx, axis=2) < depth
            # np.roll wraps around: the columns it brought from the row's other end do not count
            if dx > 0:
                nearer[..., :dx] = False
            else:
                nearer[..., dx:] = False
            out |= hidden & ~other & nearer
    return out


def measure(
    out: np.ndarray,
    truth: np.ndarray,
    hidden: np.ndarray,
    outside: np.ndarray,
    depth: np.ndarray | None = None,
    holes: np.ndarray | None = None,
) -> dict:
    """The measures of one eye: out and truth uint8 [N,H,W,3], masks bool [N,H,W]; with the
    eye's exact depth [N,H,W], where the errors are too (--breakdown), and with the warp's
    holes [N,H,W] (fill="none"'s black pixels), the disoccluded pixels the warp covered."""
    yo, yt = S.luma(out), S.luma(truth)
    both = hidden[1:] & hidden[:-1]
    flicker = float("nan")
    change = np.abs((yo[1:] - yo[:-1]) - (yt[1:] - yt[:-1]))
    if both.any():
        flicker = float(change[both].mean())
    m = {
        "dis": S.psnr(yo, yt, hidden),
        "whole": S.psnr(yo, yt),
        "edge": S.psnr(yo, yt, outside),
        "flicker": flicker,
    }
    if depth is not None:
        err = (yo - yt) ** 2
        total = max(float(err.sum()), 1e-12)
        near = beside_nearer(hidden, depth)
        edges = S.near_edges(depth) & ~hidden & ~outside
        rest = ~hidden & ~outside & ~edges
        m["where"] = {
            "beside_fg_px": float(near.sum() / max(hidden.sum(), 1)),
            "beside_fg_dis": float(err[near].sum() / max(err[hidden].sum(), 1e-12)),
            "beside_fg_flicker": float(
                change[both & (near[1:] | near[:-1])].sum() / max(change[both].sum(), 1e-12)
            ),
            "whole_hidden": float(err[hidden].sum() / total),
            "whole_outside": float(err[outside].sum() / total),
            "whole_edges": float(err[edges].sum() / total),
            "whole_rest": float(err[rest].sum() / total),
        }
        if holes is not None:
            covered = hidden & ~holes
            m["where"]["covered_px"] = float(covered.sum() / max(hidden.sum(), 1))
            m["where"]["covered_dis"] = float(err[covered].sum() / max(err[hidden].sum(), 1e-12))
    return m


def goals(m: dict, naive: dict, moving: bool) -> str:
    failed = []
    if moving:
        if not m["dis"] >= naive["dis"] + 6.0:
            failed.append("dis<naive+6")
        if not m["dis"] >= 30.0:
            failed.append("dis<30")
        if not m["flicker"] <= 0.5 * naive["flicker"]:
            failed.append("flicker>naive/2")
    else:
        if not m["whole"] >= naive["whole"] + 8.0:
            failed.append("whole<naive+8")
        if not m["dis"] >= naive["dis"] + 4.5:
            failed.append("dis<naive+4.5")
    return "PASS" if not failed else "fail: " + ", ".join(failed)


def naive_eyes(truth: S.Truth, scene: S.Scene) -> tuple[np.ndarray, np.ndarray, float]:
    frames = torch.from_numpy(truth.source).permute(0, 3, 1, 2).contiguous()
    depth = torch.from_numpy(truth.depth).unsqueeze(1)
    t0 = time.perf_counter()
    disparity = stereo.disparity_from_depth(
        depth,
        depth_kind="metric",
        fov_degrees=scene.fov_degrees,
        ipd_mm=scene.ipd_mm,
        screen_distance=scene.screen_distance,
    )
    left = _core.render_eye_naive(frames, disparity, 0.5)
    right = _core.render_eye_naive(frames, disparity, -0.5)
    seconds = time.perf_counter() - t0
    return left.permute(0, 2, 3, 1).numpy(), right.permute(0, 2, 3, 1).numpy(), seconds


def run_scene(name: str, args, folder: Path) -> list[dict]:
    scene = S.make_scene(name, args.size, args.frames)
    t0 = time.perf_counter()
    truth = S.render(scene)
    render_s = time.perf_counter() - t0
    video, depth = S.write_scene(scene, folder, truth)
    outputs: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    left, right, seconds = naive_eyes(truth, scene)
    outputs["naive"] = (left, right, seconds)
    extra = {} if args.edge_dilation is None else {"edge_dilation": args.edge_dilation}
    runs: dict[str, dict] = {}  # label -> the options of its conversion
    # convert() refuses an unknown keyword (OptionError): without a fill option, today's
    # default is the spatial fill, run once
    has_fill = "fill" in ConvertOptions.names()
    methods = args.methods if has_fill else [m for m in args.methods if m == "spatial"]
    for method in methods:
        if has_fill:
            label, options = method, {"fill": method}
        else:
            label, options = CURRENT, {}
        try:
            eyes = S.convert_eyes(video, depth, folder, tag=f"{name}_{method}", **options, **extra)
        except OptionError as exc:
            print(f"  {name}: fill={method!r} refused by this sbsconv ({exc}): skipped")
            continue
        if eyes.fov_degrees is not None and abs(eyes.fov_degrees - scene.fov_degrees) > 1e-3:
            raise SystemExit(
                f"the conversion used a {eyes.fov_degrees} degree field of view, not the scene's"
            )
        outputs[label] = (eyes.left, eyes.right, eyes.seconds)
        runs[label] = options
    if args.convert_timing:
        for label, options in runs.items():
            t0 = time.perf_counter()
            sbsconv.convert(
                video,
                folder / f"{name}_{label.split()[0]}_timed.mkv",
                depth=depth,
                progress=False,
                **options,
                **extra,
            )
            left, right, _ = outputs[label]
            outputs[label] = (left, right, time.perf_counter() - t0)
    holes_of = {}  # --breakdown: the warp's holes per eye, fill="none"'s black pixels
    if args.breakdown and has_fill:
        if "none" in outputs:
            none_left, none_right = outputs["none"][:2]
        else:
            none_eyes = S.convert_eyes(video, depth, folder, tag=f"{name}_holes", fill="none", **extra)
            none_left, none_right = none_eyes.left, none_eyes.right
        holes_of = {"left": (none_left == 0).all(-1), "right": (none_right == 0).all(-1)}
    rows = []
    for side in ("right", "left"):
        eye, eye_depth, hidden, outside = truth.eye(side)
        where = eye_depth if args.breakdown else None
        holes = holes_of.get(side)
        naive = measure(outputs["naive"][1 if side == "right" else 0], eye, hidden, outside, where, holes)
        for label, (left, right, seconds) in outputs.items():
            m = (
                naive
                if label == "naive"
                else measure(right if side == "right" else left, eye, hidden, outside, where, holes)
            )
            rows.append(
                {
                    "scene": name,
                    "eye": side,
                    "method": label,
                    **m,
                    "seconds": seconds,
                    "naive": naive,
                    "hidden_share": float(hidden.mean()),
                    "goals": "" if label == "naive" else goals(m, naive, scene.moving),
                }
            )
    print(
        f"  {name}: {scene.description}; {scene.frames} frame(s), truth rendered in "
        f"{render_s:.1f} s, disoccluded {truth.right_hidden.mean() * 100:.2f} % (right) / "
        f"{truth.left_hidden.mean() * 100:.2f} % "
        f"(left) of the pixels",
        flush=True,
    )
    return rows


def fmt(value: float, spec: str = "6.2f", signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(int(spec.split(".")[0]))
    return format(value, ("+" if signed else "") + spec)


def table(rows: list[dict]) -> str:
    head = (
        f"{'scene':9} {'eye':5} {'method':18} {'dis dB':>7} {'Δ':>6} {'whole dB':>8} {'Δ':>6} "
        f"{'edge dB':>7} {'flicker':>7} {'×naive':>6} {'s':>6}  goals"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        n = r["naive"]
        own = r["method"] == "naive"
        ratio = float("nan") if own or not n["flicker"] > 0 else r["flicker"] / n["flicker"]
        lines.append(
            f"{r['scene']:9} {r['eye']:5} {r['method']:18} {fmt(r['dis'], '7.2f')} "
            f"{'' if own else fmt(r['dis'] - n['dis'], '6.2f', True):>6} {fmt(r['whole'], '8.2f')} "
            f"{'' if own else fmt(r['whole'] - n['whole'], '6.2f', True):>6} "
            f"{fmt(r['edge'], '7.2f')} {fmt(r['flicker'], '7.2f')} "
            f"{'' if own else fmt(ratio, '6.2f'):>6} {fmt(r['seconds'], '6.2f')}  "
            f"{r['goals']}"
        )
    return "\n".join(lines)


def where_table(rows: list[dict]) -> str:
    """--breakdown: the disoccluded pixels beside the foreground (within 2 pixels along the
    row): their share of the pixels, of the squared error and of the flicker; those the warp
    covered (no hole there: a nearer surface's edge drawn over them): their share of the pixels
    and of the squared error; and the whole eye's squared error by where it is."""
    head = (
        f"{'scene':9} {'eye':5} {'method':18} {'beside fg: px':>13} {'dis err':>7} "
        f"{'flicker':>7} | {'covered: px':>11} {'dis err':>7} "
        f"| {'whole err: dis':>14} {'border':>6} {'edges':>6} {'rest':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        w = r.get("where")
        if w is None:
            continue
        pct = lambda v: f"{100 * v:5.1f}%"  # noqa: E731
        lines.append(
            f"{r['scene']:9} {r['eye']:5} {r['method']:18} {pct(w['beside_fg_px']):>13} "
            f"{pct(w['beside_fg_dis']):>7} {pct(w['beside_fg_flicker']):>7} | "
            f"{pct(w['covered_px']) if 'covered_px' in w else '-':>11} "
            f"{pct(w['covered_dis']) if 'covered_dis' in w else '-':>7} | "
            f"{pct(w['whole_hidden']):>14} {pct(w['whole_outside']):>6} "
            f"{pct(w['whole_edges']):>6} {pct(w['whole_rest']):>6}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    parser.add_argument(
        "--frames", type=int, default=24, help="frames per moving scene (default 24)"
    )
    parser.add_argument("--scenes", default=",".join(S.SCENES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--edge-dilation", type=int, default=None, help="default: sbsconv's (2)")
    parser.add_argument(
        "--convert-timing",
        action="store_true",
        help="time a separate plain sbsconv.convert() per method (without the PNGs)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the clips, depth files and eyes here"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also say where the errors are: beside the foreground, the border, depth edges",
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    args.size = (width, height)
    args.scenes = [s for s in args.scenes.split(",") if s]
    args.methods = [m for m in args.methods.split(",") if m]
    for name in args.scenes:
        if name not in S.SCENES:
            parser.error(f"unknown scene {name!r}: {', '.join(S.SCENES)}")
    print(
        f"bench_fill: sbsconv {sbsconv.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} "
        f"threads; {width}x{height}, {args.frames} frames (still: 1), edge_dilation "
        f"{'default' if args.edge_dilation is None else args.edge_dilation}; luma BT.709; "
        + ("fill= " + ", ".join(args.methods) if "fill" in ConvertOptions.names()
           else f"no fill option: today's default as {CURRENT!r}"),
        flush=True,
    )
    t0 = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_fill_") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.scenes:
            rows += run_scene(name, args, folder)
    rows.sort(key=lambda r: (args.scenes.index(r["scene"]), r["eye"] != "right"))
    print()
    print(table(rows))
    print(
        f"\n(dis: disoccluded pixels; Δ: against naive; flicker ×naive: the ratio to naive's; s: "
        f"end-to-end seconds of the conversion, naive: the warp alone; "
        f"{time.perf_counter() - t0:.0f} s in all)"
    )
    if args.breakdown:
        print()
        print(where_table(rows))
        print(
            "\n(beside fg: disoccluded pixels within 2 pixels, along the row, of a nearer surface"
            " that is in view: their share of the disoccluded pixels, of their squared error and"
            " of their flicker; covered: disoccluded pixels the warp drew a nearer surface over"
            " (no hole in fill='none''s eye), their share of the pixels and of the squared error;"
            " whole err: the eye's squared error in the disocclusions, the"
            " border the source never saw, within 2 pixels of a depth edge, and elsewhere)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
