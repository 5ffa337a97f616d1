"""``sbsconv-bench``: every depth approach on a few seconds of a video, side by side.

    uv run sbsconv-bench --seconds 3 [--input FILE] [--start S] [--models a,b,...]
                         [--device D] [--out DIR] [--no-normalize] [--layout L]
                         [--precision P] [--batch-size N] [--divergence D] [--convergence C]

Writes into one folder per run: the excerpt the approaches share (normalised to 1080p at
24 fps unless --no-normalize), each approach's 3D clip and colour-mapped depth clip, a
contact sheet (the same frames, the source then every approach's depth, side by side),
results.json and results.md; prints the table. An approach that cannot run (checkpoint
unavailable offline, not enough memory, no such device) is listed as skipped with its
reason, one that fails in any other way (a bug included) as failed with its reason (the
traceback goes to the log at debug level), and the run goes on. The conversion options
(--device, --layout ...) are ``sbsconv convert``'s, checked before any work.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
import traceback
from fractions import Fraction
from pathlib import Path

import torch

import sbsconv
from sbsconv import cli, errors, media, models, samples
from sbsconv._native import _core

logger = logging.getLogger("sbsconv")

STAGES = ("decode", "depth", "stabilise", "stereo", "encode")
# the convert() options sbsconv-bench offers (flags generated from sbsconv.ConvertOptions)
BENCH_OPTIONS = ["device", "layout", "precision", "batch_size", "divergence", "convergence"]
SHEET_FRAMES = 3


def prepare_excerpt(source: Path, out: Path, start: float, seconds: float, normalize: bool) -> Path:
    """The part every approach converts: `seconds` from `start`, with the source's audio;
    normalised to 1080 lines at 24 fps (what a real workflow feeds a depth model) or as is."""
    if not normalize:
        media.reencode(source, out, start=start, duration=seconds, crf=12, preset="veryfast")
        return out
    info = sbsconv.probe(source)
    height = 1080
    width = round(info.width * height / info.height / 2) * 2
    fps = Fraction(24)
    reader = media.VideoReader(source, start=start, duration=seconds, width=width, height=height, batch_size=8)
    origin = info.start_time + start
    with media.VideoWriter(out, width=width, height=height, fps=fps, source=source, time_origin=origin,
                           time_end=origin + seconds, crf=12, preset="veryfast") as writer:
        slot, held = 0, None
        for batch in reader:
            for frame, t in zip(batch.data, batch.pts.tolist(), strict=True):
                # each 1/24 s slot shows the frame on screen at its time
                while held is not None and origin + slot / fps < t - 1e-6:
                    writer.write(held, [origin + slot / fps])
                    slot += 1
                held = frame
        while held is not None and slot < math.floor(seconds * fps + 1e-6):
            writer.write(held, [origin + slot / fps])
            slot += 1
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def contact_sheet(excerpt: Path, depth_clips: dict[str, Path], out: Path) -> Path | None:
    """Rows: a few frames of the excerpt; columns: the frame, then each approach's depth."""
    frames = torch.cat([b.data for b in media.read_frames(excerpt, height=270)])
    if len(frames) == 0:
        return None
    picks = sorted({round(i * (len(frames) - 1) / max(1, SHEET_FRAMES - 1)) for i in range(SHEET_FRAMES)})
    columns = [frames[picks]]
    for clip in depth_clips.values():
        depth = torch.cat([b.data for b in media.read_frames(clip, height=270)])
        columns.append(depth[[min(p, len(depth) - 1) for p in picks]])
    gap = 6
    rows = []
    for r in range(len(picks)):
        pieces = []
        for c in columns:
            pieces += [c[r], torch.full((3, c.shape[2], gap), 32, dtype=torch.uint8)]
        rows += [torch.cat(pieces[:-1], 2)]
        rows += [torch.full((3, gap, rows[-1].shape[2]), 32, dtype=torch.uint8)]
    out.write_bytes(bytes(_core.encode_png(torch.cat(rows[:-1], 1))))
    return out


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="sbsconv-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the excerpt (default 3)")
    parser.add_argument("--input", type=Path, default=None, help="video (default: the bundled sample clip)")
    parser.add_argument("--start", type=float, default=0.0, help="start of the excerpt, in seconds")
    parser.add_argument("--models", default=None,
                        help="comma-separated registry names, repo ids or paths (default: every model family"
                        " at its defaults: " + ", ".join(models.approaches()) + ")")
    parser.add_argument("--out", type=Path, default=Path("sbsconv-bench"), help="folder for the runs")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                        help="normalise the excerpt to 1080p at 24 fps first (default: on)")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of an internal error (it is always "
                        "written to a log file)")
    # the conversion options every approach shares, as `sbsconv convert` takes them
    cli.add_option_arguments(parser, BENCH_OPTIONS)
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error("--seconds must be > 0")
    # every approach converts with these (checked before any work) plus its model
    options = cli.options_from_args(args, BENCH_OPTIONS).replace(resume=False)
    source = args.input or samples.path()
    approaches = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else models.approaches()
    run_dir = args.out / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=False)
    excerpt = prepare_excerpt(Path(source), run_dir / "input.mp4", args.start, args.seconds, args.normalize)
    info = sbsconv.probe(excerpt)
    rows = []
    depth_clips: dict[str, Path] = {}
    for name in approaches:
        label = _safe(Path(name).name if Path(name).exists() else name)
        row = {"approach": name, "status": "ok"}
        t0 = time.perf_counter()
        try:
            result = sbsconv.convert(excerpt, run_dir / f"{label}_3d.mp4", options, model=name,
                                     depth_video=run_dir / f"{label}_depth.mp4")
        except (errors.ModelError, errors.DeviceError) as exc:
            row.update(status="skipped", reason=str(exc))
        except (torch.OutOfMemoryError, MemoryError) as exc:
            row.update(status="skipped", reason=f"not enough memory: {exc}")
        except errors.SbsconvError as exc:
            row.update(status="failed", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 (a bug in one approach: reported, the others go on)
            logger.debug("%s failed:\n%s", name, traceback.format_exc())
            message = str(exc).strip().split("\n")[0]
            row.update(status="failed", reason=f"{type(exc).__name__}: {message}" if message
                       else type(exc).__name__)
        else:
            row.update(frames=result.frames, seconds=round(time.perf_counter() - t0, 3), fps=round(result.fps, 3),
                       model=result.model, encoder=result.encoder,
                       stages={s: round(v, 3) for s, v in result.stage_fps.items()},
                       clip=str(Path(result.output).name), depth_clip=f"{label}_depth.mp4")
            depth_clips[name] = run_dir / f"{label}_depth.mp4"
        if row["status"] != "ok":
            logger.warning("%s %s: %s", name, row["status"], row["reason"])
        rows.append(row)
    try:
        sheet = contact_sheet(excerpt, depth_clips, run_dir / "contact_sheet.png")
    except Exception as exc:  # noqa: BLE001 (the results are written without it)
        logger.debug("the contact sheet failed:\n%s", traceback.format_exc())
        logger.warning("no contact sheet: %s: %s", type(exc).__name__, exc)
        sheet = None
    results = {
        "input": str(source), "start": args.start, "seconds": args.seconds, "normalized": args.normalize,
        "excerpt": {"width": info.width, "height": info.height, "fps": str(info.fps), "frames": info.num_frames},
        "device": args.device, "torch": torch.__version__, "sbsconv": sbsconv.__version__,
        "contact_sheet": sheet.name if sheet else None,
        "columns": ["frame"] + [r["approach"] for r in rows if r["status"] == "ok"],
        "approaches": rows,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (run_dir / "results.md").write_text(table)
    print(table)
    print(f"results in {run_dir}")
    results["folder"] = str(run_dir)
    return results


def markdown(results: dict) -> str:
    lines = [
        f"# sbsconv-bench: {Path(results['input']).name}, {results['seconds']:g} s from {results['start']:g} s",
        "",
        f"Excerpt {results['excerpt']['width']}x{results['excerpt']['height']} at {results['excerpt']['fps']} fps"
        f" ({'normalised' if results['normalized'] else 'as is'}); device {results['device']}; torch "
        f"{results['torch']}. Stage columns: frames per second of each stage's busy time.",
        "",
        "| approach | status | frames/s | seconds | " + " | ".join(STAGES) + " | clip |",
        "|---|---|---|---|" + "---|" * len(STAGES) + "---|",
    ]
    for r in results["approaches"]:
        if r["status"] == "ok":
            stages = " | ".join(f"{r['stages'].get(s, 0):.2f}" for s in STAGES)
            lines.append(f"| {r['approach']} | ok | {r['fps']:.3f} | {r['seconds']:.1f} | {stages} | {r['clip']} |")
        else:
            reason = r["reason"].replace("|", "/").replace("\n", " ")
            if len(reason) > 160:
                reason = reason[:157] + "..."
            lines.append(f"| {r['approach']} | {r['status']}: {reason} | | |" + " |" * len(STAGES) + " |")
    if results.get("contact_sheet"):
        lines += ["", f"Contact sheet: {results['contact_sheet']} (columns: "
                  + ", ".join(results["columns"]) + ")."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``sbsconv-bench``: exit codes 0 ok, 1 an sbsconv error or no approach converted, 2 bad
    arguments, 70 internal error (one line on stderr, the full report in a log file:
    ``sbsconv.cli.log_dir()``), 130 interrupted."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        results = run(argv)
    except errors.InternalError as exc:
        return cli.report_internal_error("sbsconv-bench", exc, debug=debug, argv=argv)
    except errors.SbsconvError as exc:
        print(f"sbsconv-bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sbsconv-bench: interrupted", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 (a bug: one line and a report, never a raw traceback)
        return cli.report_internal_error("sbsconv-bench", exc, debug=debug, argv=argv)
    if not any(r["status"] == "ok" for r in results["approaches"]):
        # nothing was measured (every approach skipped or failed: the table says why)
        print("sbsconv-bench: error: no approach converted; the table above says why each was skipped or "
              "failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
