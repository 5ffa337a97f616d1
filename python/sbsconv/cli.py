"""The ``sbsconv`` command line.

Exit codes: 0 success; 1 any other sbsconv error (also: a file of a batch failed, or
``doctor`` found that something asked for cannot work); 2 bad usage or options; 3 unusable
input; 4 encoding or output failure; 5 model failure; 70 internal error (a bug: one line on
stderr, the full report in a log file, ``--debug`` prints it); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Any

from sbsconv import errors

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_MODEL = 5
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): a bug in sbsconv
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 other errors (also: a file of a batch failed, doctor found that "
    "something asked for cannot work); 2 bad usage or options; 3 unusable input; 4 encoding or "
    "output failure; 5 model failure; 70 internal error (a bug: the full report goes to a log "
    "file under ~/.cache/sbsconv/logs, --debug prints it); 130 interrupted."
)


def log_dir() -> Path:
    """Where the reports of internal errors go: $XDG_CACHE_HOME/sbsconv/logs (else
    ~/.cache/sbsconv/logs)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sbsconv" / "logs"


def _write_report(prog: str, details: str, argv: list[str] | None) -> Path | None:
    """The full report of an internal error, in a new file under :func:`log_dir` (or the
    system's temporary folder when that cannot be written); None when neither can."""
    try:
        from sbsconv import __version__ as version
    except Exception:  # noqa: BLE001 (the report must not fail on a broken import)
        version = "unknown"
    header = (f"{prog} {version}, Python {platform.python_version()}, {platform.platform()}\n"
              f"command: {' '.join([prog, *(sys.argv[1:] if argv is None else argv)])}\n"
              f"time: {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n")
    name = f"{prog}-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(header + details)
            return path
        except OSError:
            continue
    return None


def report_internal_error(prog: str, exc: BaseException, *, debug: bool = False,
                          argv: list[str] | None = None) -> int:
    """An unexpected exception (a bug) at a command line's top: ONE line on stderr naming it and
    where its full report was written (the traceback is also printed with ``debug``).
    Returns :data:`EXIT_INTERNAL`."""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path = _write_report(prog, details, argv)
    if debug:
        print(details, file=sys.stderr, end="")
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if not isinstance(exc, errors.SbsconvError):
        message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    where = f"the full report is in {path}" if path else "the report could not be written"
    hint = "" if debug else "; --debug prints it here"
    print(f"{prog}: internal error (a bug, please report it): {message} ({where}{hint})",
          file=sys.stderr)
    return EXIT_INTERNAL


def _exit_code(exc: errors.SbsconvError) -> int:
    if isinstance(exc, errors.InternalError):
        return EXIT_INTERNAL
    if isinstance(exc, errors.OptionError):
        return EXIT_USAGE
    if isinstance(exc, errors.InputError):
        return EXIT_INPUT
    if isinstance(exc, errors.EncoderError | errors.OutputError):
        return EXIT_OUTPUT
    if isinstance(exc, errors.ModelError):
        return EXIT_MODEL
    if isinstance(exc, errors.CancelledError):
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _json_default(value: Any) -> Any:
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# the transfers whose frames are tone-mapped (Note [HDR to SDR] in media/ColorConversion.h)
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")


def _stereo_line(stereo: dict) -> str:
    """The stereo signalling in one line: what a headset will see."""
    parts = []
    if stereo.get("layout"):
        parts.append(f"{stereo['layout']} (st3d/StereoMode)")
    if stereo.get("spherical"):
        parts.append(stereo["spherical"])
    if stereo.get("mv_hevc"):
        parts.append("MV-HEVC second view (Apple spatial video)")
    apple = stereo.get("apple")
    if apple:
        fields = [f"{k}={v}" for k, v in apple.items() if v is not None]
        parts.append("Apple vexu/hfov: " + ", ".join(fields))
    return "; ".join(parts) if parts else "none (plays as 2D unless the player is told the layout)"


def _cmd_probe(args: argparse.Namespace) -> int:
    from sbsconv.media import probe

    info = probe(args.input)
    if args.json:
        print(json.dumps(asdict(info), default=_json_default, indent=2))
        return EXIT_OK
    duration = f"{info.duration:.3f} s" if info.duration is not None else "unknown"
    frames = info.num_frames if info.num_frames is not None else "unknown"
    print(f"{info.path}  ({info.format_name})")
    print(
        f"  video #{info.video_stream}: {info.codec} {info.width}x{info.height} {info.pix_fmt}"
        f" {float(info.fps):.3f} fps, {duration}, {frames} frames"
    )
    print(
        f"  colour: range={info.color_range} matrix={info.color_space}"
        f" transfer={info.color_transfer} primaries={info.color_primaries}"
        + (" (HDR: tone-mapped to SDR BT.709 when converted)" if info.color_transfer in HDR_TRANSFERS else "")
        + (f", rotation {info.rotation:g} deg" if info.rotation else "")
    )
    sar, dar = info.sample_aspect_ratio, info.display_aspect_ratio
    print(f"  aspect: pixels {sar.numerator}:{sar.denominator}, display {dar.numerator}:{dar.denominator}"
          + (f" (shown as {info.display_width}x{info.height})" if sar != 1 else ""))
    print("  3D: " + _stereo_line(info.stereo))
    for s in info.streams:
        extra = ""
        if s.type == "video":
            extra = f" {s.width}x{s.height}"
        elif s.type == "audio":
            extra = f" {s.sample_rate} Hz {s.channel_layout or s.channels}"
        language = f" [{s.language}]" if s.language else ""
        print(f"  stream #{s.index}: {s.type} {s.codec}{extra}{language}")
    return EXIT_OK


def _cmd_reencode(args: argparse.Namespace) -> int:
    from sbsconv.media import reencode

    result = reencode(
        args.input,
        args.output,
        start=args.start,
        duration=args.duration,
        codec=args.codec,
        encoder=args.encoder,
        crf=args.crf,
        cq=args.cq,
        quality=args.quality,
        preset=args.preset,
        audio=args.audio,
        subtitles=args.subtitles,
    )
    print(f"wrote {result.path}: {result.frames} frames with {result.encoder}")
    for line in result.streams:
        print(f"  {line}")
    for line in result.skipped_encoders:
        logging.getLogger("sbsconv").info("skipped encoder %s", line)
    return EXIT_OK


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoding")
    g.add_argument("--codec", default="h264", choices=["h264", "hevc"], help="video codec (default: h264)")
    g.add_argument(
        "--encoder",
        default="auto",
        help="auto (NVENC, then VideoToolbox, then libx264/libx265), nvenc, videotoolbox, "
        "software, or an FFmpeg encoder name (default: auto)",
    )
    g.add_argument("--crf", type=int, default=None, help="x264/x265 quality, 0-51, lower is better (default 16/18)")
    g.add_argument("--cq", type=int, default=None, help="NVENC constant quality, 0-51 (default 21)")
    g.add_argument("--quality", type=int, default=None, help="VideoToolbox quality, 1-100 (default 65)")
    g.add_argument("--preset", default=None, help="encoder preset (default: x264/x265 the slowest of medium..veryfast that keeps pace with "
                   "the model, p5 for NVENC)")
    g.add_argument(
        "--audio",
        default="copy",
        choices=["copy", "aac", "none"],
        help="copy: stream copy where the container allows, else AAC (default); aac: always transcode",
    )
    g.add_argument("--subtitles", default="copy", choices=["copy", "none"], help="carry subtitles over (default: copy)")


def add_option_arguments(p: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """One flag per :class:`~sbsconv.options.ConvertOptions` field (or per field in ``names``),
    generated from the fields: the same name (dashes for underscores), default, help text and
    choices, in argument groups by the fields' groups. Values are parsed here and checked
    when the options are made (:func:`options_from_args`)."""
    from sbsconv.options import Choice, ConvertOptions

    fields = ConvertOptions.fields() if names is None else [ConvertOptions.field_named(n)
                                                             for n in names]
    groups: dict[str, Any] = {}
    for f in fields:
        if f.group not in groups:
            groups[f.group] = p.add_argument_group(f"{'3D' if f.group == '3d' else f.group} options")
        g = groups[f.group]
        help_text = f.help.replace("%", "%%")
        if f.kind is bool:
            g.add_argument(f.flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        if f.default is not None or "default" not in f.help:  # else the help says what None does
            shown = "none" if f.default is None else f.default
            help_text += f" (default: {' '.join(map(str, shown)) if f.kind is tuple else shown})"
        extra: dict[str, Any] = {}
        if f.kind is tuple:  # percentiles: --percentiles 1 99
            extra = {"type": float, "nargs": len(f.default), "metavar": ("LOW", "HIGH")}
        else:
            extra = {"type": _parser_of(f)}
            if isinstance(f.constraint, Choice):
                extra["choices"] = f.constraint.values
                if len(f.constraint.values) > 4:  # the help lists them
                    extra["metavar"] = f.name.upper()
        g.add_argument(f.flag, default=f.default, help=help_text, **extra)


def _parser_of(f):
    def parse(text: str) -> Any:
        try:
            return f.parse(text)
        except errors.OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = f.kind.__name__  # argparse names the type in its messages
    return parse


def options_from_args(args: argparse.Namespace, names: list[str] | None = None):
    """The :class:`~sbsconv.options.ConvertOptions` of parsed arguments (checked: OptionError)."""
    from sbsconv.options import ConvertOptions

    names = list(ConvertOptions.names()) if names is None else names
    return ConvertOptions(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def _split_arg(text: str) -> int | str:
    """--split: "auto" or a whole number of parts >= 1 (else OptionError)."""
    value = text.strip().lower()
    if value == "auto":
        return "auto"
    try:
        parts = int(value)
    except ValueError:
        parts = 0
    if parts < 1:
        raise errors.OptionError("--split must be a positive integer (the number of parts) or "
                                 f"auto, got {text!r}")
    return parts


def _devices_arg(text: str | None) -> str | list[str] | None:
    """--devices: "all", or device names separated by commas (else OptionError)."""
    if text is None:
        return None
    if text.strip() == "all":
        return "all"
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise errors.OptionError("--devices must name devices (cuda:0,cuda:1) or be all, "
                                 f"got {text!r}")
    return names


def _check_convert_flags(args: argparse.Namespace) -> None:
    """Every flag of ``convert`` takes effect or is refused: the flags of many inputs, of a
    split conversion and of Ray each need their mode (OptionError, before any work)."""
    backend = args.backend or "local"
    given = {"--recursive": args.recursive, "--pattern": args.pattern is not None,
             "--no-skip-existing": args.no_skip_existing, "--on-error": args.on_error is not None}
    if backend != "ray":
        for flag, value in (("--address", args.address), ("--retries", args.retries)):
            if value is not None:
                raise errors.OptionError(f"{flag} applies to --backend ray only")
    if args.output_dir is not None:
        if args.split is not None:
            raise errors.OptionError("--split converts one file in parts (INPUT OUTPUT --split N); "
                                     "--output-dir converts many files, each whole: use one or the "
                                     "other")
        if args.warm_up is not None:
            raise errors.OptionError("--warm-up applies to --split only")
        return
    for flag, value in given.items():
        if value:
            raise errors.OptionError(f"{flag} applies to many inputs (--output-dir DIR) only")
    if args.split is None:
        if args.devices is not None:
            raise errors.OptionError("--devices runs one worker per device: it needs --output-dir "
                                     "(many files) or --split (one file in parts); one file on one "
                                     "device: --device")
        if backend == "ray":
            raise errors.OptionError("--backend ray needs --output-dir (many files) or --split "
                                     "(one file in parts)")
        if args.warm_up is not None:
            raise errors.OptionError("--warm-up applies to --split only")


def _cmd_convert(args: argparse.Namespace) -> int:
    from sbsconv.conversion import convert

    split = _split_arg(args.split) if args.split is not None else None
    devices = _devices_arg(args.devices)
    _check_convert_flags(args)
    backend = args.backend or "local"
    retries = 3 if args.retries is None else args.retries
    if args.output_dir is not None:  # many inputs: files, folders, globs
        from sbsconv.batch import convert_many

        summary = convert_many(args.paths, args.output_dir, options_from_args(args),
                               recursive=args.recursive, pattern=args.pattern,
                               skip_existing=not args.no_skip_existing, devices=devices,
                               on_error=args.on_error or "continue", backend=backend,
                               address=args.address, retries=retries, progress=not args.quiet)
        print(summary)
        if args.debug:  # each failure's full report (also in the log at debug level, -vv)
            for failed in summary.failed:
                if failed.details:
                    print(f"{failed.input}:\n{failed.details}", file=sys.stderr)
        return EXIT_OK if not summary.failed else EXIT_ERROR
    if len(args.paths) != 2:
        raise errors.OptionError("convert takes an input and an output, or inputs and --output-dir DIR")
    args.input, args.output = args.paths
    if split is not None:  # one video in parts, side by side (Note [Parts of one video])
        from sbsconv.batch import convert_split

        warm_up = 3.0 if args.warm_up is None else args.warm_up
        result = convert_split(args.input, args.output, options_from_args(args), split=split,
                               warm_up=warm_up, backend=backend, address=args.address,
                               devices=devices, retries=retries, progress=not args.quiet)
        print(f"{result.output}: {result.frames} frames in {len(result.parts)} parts, {result.seconds:.1f} s")
        return EXIT_OK
    result = convert(args.input, args.output, options_from_args(args), progress=not args.quiet)
    print(f"wrote {result.output}: {result.frames} frames, {result.width}x{result.height} {result.layout}, "
          f"{result.fps:.1f} frames/s, encoder {result.encoder}"
          + (f" (preset {result.encoder_preset})" if result.encoder_preset else "")
          + (f", {result.encoders} encoding segments at once" if result.encoders > 1 else "")
          + (f", resumed at frame {result.resumed_from}" if result.resumed_from else ""))
    for line in result.streams:
        print(f"  {line}")
    for image in result.images[:3]:
        print(f"  preview image {image}" + (" ..." if len(result.images) > 3 else ""))
    return EXIT_OK


def _cmd_depth(args: argparse.Namespace) -> int:
    from sbsconv.exporting import export_depth
    from sbsconv.options import DEPTH_FORMATS

    options = options_from_args(args)
    if args.format is not None:
        if args.format not in DEPTH_FORMATS:
            raise errors.OptionError(f"--format must be one of {', '.join(DEPTH_FORMATS)}; got {args.format!r}")
        options = options.replace(depth_format=args.format)
    result = export_depth(args.input, args.output, options, progress=not args.quiet)
    print(f"wrote {result.path}: {result.frames} frames of {'relative' if result.relative else 'metric'} depth "
          f"({result.format}), {result.fps:.1f} frames/s" + (f", sidecar {result.sidecar}" if result.sidecar else ""))
    if result.point_clouds:
        print(f"  {len(result.point_clouds)} point clouds in {os.path.dirname(result.point_clouds[0])}")
    return EXIT_OK


def _cmd_mask(args: argparse.Namespace) -> int:
    from sbsconv.masks import export_mask

    result = export_mask(args.input, args.output, model=args.model, checkpoint=args.checkpoint,
                         device=args.device, precision=args.precision, input_size=args.input_size,
                         batch_size=args.batch_size, start=args.start, duration=args.duration,
                         smoothing=args.smoothing)
    print(f"wrote {result.path}: {result.frames} frames of {result.model} subject masks, {result.fps:.1f} frames/s, "
          f"sidecar {result.sidecar}" + (f"; scene cuts at {', '.join(map(str, result.cuts))}" if result.cuts else ""))
    return EXIT_OK


def _cmd_view_depth(args: argparse.Namespace) -> int:
    from sbsconv.viewer import write_depth_view

    path = write_depth_view(args.video, args.depth, args.output, masks=args.masks, points_wide=args.points,
                            max_frames=args.max_frames, every=args.every)
    print(f"wrote {path}")
    if not args.no_open:
        import webbrowser

        if not webbrowser.open(Path(path).resolve().as_uri()):
            print("  (no browser found here: open that file in one)")
    return EXIT_OK


def _cmd_infill_merge(args: argparse.Namespace) -> int:
    from sbsconv.infill import MERGE_OPTIONS, infill_merge

    result = infill_merge(args.sbs_video, args.infilled_video, args.output, progress=not args.quiet,
                          **{name: getattr(args, name) for name in MERGE_OPTIONS})
    print(f"wrote {result.output}: {result.frames} frames, {result.width}x{result.height} {result.codec}, "
          f"encoder {result.encoder}"
          + (f" (the inpainted video had {result.infilled_frames})" if result.infilled_frames != result.frames
             else ""))
    print("  3D: " + _stereo_line(result.stereo))
    for line in result.streams:
        print(f"  {line}")
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from sbsconv.diagnostics import doctor

    report = doctor(device=args.device, encoder=args.encoder, codec=args.codec, hub=not args.no_hub)
    print(report)
    return EXIT_OK if report.ok else EXIT_ERROR


def _cmd_models(args: argparse.Namespace) -> int:
    from sbsconv import models

    if args.json:
        print(json.dumps([models.spec(n).__dict__ for n in models.available()], indent=2, default=str))
        return EXIT_OK
    for name in models.available():
        s = models.spec(name)
        licence = s.license + ("" if s.commercial_use else ", non-commercial")
        print(f"{name:42s} {s.kind:8s} {licence:30s} {s.repo_id}/{s.filename}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sbsconv",
        description="2D-to-3D video conversion for VR headsets.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for FFmpeg's); also prints an internal error's "
                        "traceback")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="print the full traceback of an internal error (it is always written "
                        "to a log file)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "convert",
        help="convert a 2D video into a 3D video",
        description="Convert a 2D video into a stereoscopic 3D video (depth model, stereo rendering, "
        "encoding with the original audio). The output appears only when complete; an interrupted "
        "run continues where it stopped when started again with the same options.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="INPUT OUTPUT (a video file and the output: .mp4, .mov or .mkv), or with --output-dir "
                   "any number of video files, folders and globs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    many = p.add_argument_group("many inputs (sbsconv.convert_many)")
    many.add_argument("--output-dir", default=None, metavar="DIR", help="convert every input into this folder")
    many.add_argument("--recursive", action="store_true", help="folders: their subfolders too (mirrored)")
    many.add_argument("--pattern", default=None, help="folders: file names to take, e.g. '*.mkv' (default: videos)")
    many.add_argument("--no-skip-existing", action="store_true", help="convert again what is already converted")
    many.add_argument("--devices", default=None,
                      help="--output-dir or --split: one worker process per device, cuda:0,cuda:1 "
                      "or all (default: convert in this process)")
    many.add_argument("--on-error", default=None, choices=("continue", "stop"),
                      help="--output-dir: continue (default) after a failed file, or stop (start "
                      "nothing more)")
    many.add_argument("--backend", default=None, choices=("local", "ray"),
                      help="--output-dir or --split: local (default): this machine (--devices); "
                      "ray: each file or part a Ray task (pip install 'sbsconv[ray]')")
    many.add_argument("--address", default=None,
                      help="--backend ray: the cluster (auto, ray://host:10001); default: a local one for this run")
    many.add_argument("--split", default=None, metavar="N|auto",
                      help="one video: convert it as N parts side by side (--devices or --backend "
                      "ray) and join them; auto: one part per worker, each at least a minute")
    many.add_argument("--warm-up", type=float, default=None,
                      help="--split: seconds before each part that settle the temporal state "
                      "(discarded; default 3)")
    many.add_argument("--retries", type=int, default=None,
                      help="--backend ray: how often a file or part whose worker died is run again "
                      "(a file from its journal; default 3)")
    add_option_arguments(p)
    p.set_defaults(run=_cmd_convert)

    p = sub.add_parser(
        "depth",
        help="export a video's depth (or convert a depth file to another format)",
        description="Write the depth of a video as gray16 (16-bit FFV1 video), gray8 (8-bit), rgb-packed (the metric-depth "
        "toolboxes' RGB video), png16 or exr (one image per frame, in a folder), npy (one array) or colormap "
        "(a preview video), with a JSON sidecar that says how to read it. Given a depth file (found by its "
        "sidecar, or an RGB-packed video with --max-depth), converts it into another format without a model. "
        "Re-render 3D from an export with: sbsconv convert VIDEO OUT --depth EXPORT.",
    )
    p.add_argument("input", help="video file, or a depth file to convert")
    p.add_argument("output", help="depth file (.mkv, .npy) or folder (png16, exr)")
    p.add_argument("--format", default=None, metavar="FORMAT",
                   help="gray16, gray8, rgb-packed, png16, exr, npy or colormap (default: --depth-format, gray16)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_option_arguments(p)
    p.set_defaults(run=_cmd_depth)

    p = sub.add_parser(
        "doctor",
        help="what this machine will run: devices, encoders and decoders tried for real, the model cache",
        description="Check what this machine will actually run: devices (CUDA, MPS, CPU), versions, every "
        "video encoder and hardware decoder tried on a few real frames, the default model's cache status, and "
        "what convert() would pick. Exits with 1 when something asked for (--device, --encoder) cannot work.",
    )
    p.add_argument("--device", default="auto", help="the device you intend to use (auto, cpu, cuda, cuda:N, mps)")
    p.add_argument("--encoder", default="auto", help="the encoder you intend to use (auto, nvenc, videotoolbox, "
                   "software, or an FFmpeg encoder name)")
    p.add_argument("--codec", default="h264", choices=("h264", "hevc"))
    p.add_argument("--no-hub", action="store_true", help="do not contact the Hugging Face hub")
    p.set_defaults(run=_cmd_doctor)

    p = sub.add_parser(
        "infill-merge",
        help="after inpainting with your own model: its picture with the 3D video's audio and 3D metadata",
        description="For inpainting with your own model: after 'sbsconv convert IN SBS_VIDEO --fill none "
        "--infill-mask MASK.mkv' and your model's run on SBS_VIDEO with the mask, writes OUT: the inpainted "
        "picture of INFILLED_VIDEO with SBS_VIDEO's audio and subtitles (copied), its stereo metadata (st3d or "
        "StereoMode, Apple's vexu/hfov boxes), its frame timing and its comment. INFILLED_VIDEO must have "
        "SBS_VIDEO's frame size, frame rate and frames (one more or fewer at the end is allowed); it needs no "
        "audio or metadata. Checked before anything is written; OUT appears only when complete.",
    )
    p.add_argument("sbs_video", metavar="SBS_VIDEO", help="the 3D video sbsconv wrote (with --fill none)")
    p.add_argument("infilled_video", metavar="INFILLED_VIDEO",
                   help="the same frames with the holes painted in, from your inpainting model")
    p.add_argument("output", metavar="OUT", help="the merged 3D video (.mp4, .m4v, .mov or .mkv)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--codec", default="auto", choices=("auto", "h264", "hevc"),
                   help="auto: SBS_VIDEO's codec and bit depth (default), h264 or hevc")
    add_option_arguments(p, ["encoder", "crf", "cq", "quality", "preset", "audio", "subtitles"])
    p.set_defaults(run=_cmd_infill_merge)

    p = sub.add_parser(
        "mask",
        help="export a video's subject masks (U²-Net salient-object masks)",
        description="Write the salient subject of every frame (people, the object in focus) as a mask video: "
        "16-bit FFV1 in Matroska, 0 background to 1 subject, with a JSON sidecar (product: mask). Stable over "
        "time on still pixels, afresh at every scene cut. Models: u2netp (default, small) and u2net.",
    )
    p.add_argument("input", help="video file")
    p.add_argument("output", nargs="?", default=None, help="mask file (.mkv; default INPUT_mask.mkv)")
    p.add_argument("--model", default="u2netp", help="u2netp (default), u2net, or a checkpoint path")
    p.add_argument("--checkpoint", default=None, help="a local file for the registry model (no download)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--input-size", type=int, default=None, help="the side frames are resized to (default 320)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per model call (default: the model's)")
    p.add_argument("--start", type=float, default=None, help="start, in seconds from the beginning")
    p.add_argument("--duration", type=float, default=None, help="length to process, in seconds")
    p.add_argument("--smoothing", type=float, default=0.6,
                   help="how much of the previous mask a still pixel keeps, 0..0.95 (default 0.6)")
    p.set_defaults(run=_cmd_mask)

    p = sub.add_parser(
        "view-depth",
        help="look at a video's depth in 3D, in the browser",
        description="Write a web page that plays a depth export (sbsconv depth, depth_out=) as a moving, "
        "coloured point cloud: drag to orbit, wheel to zoom, play/pause, the camera's path and frustum when the "
        "depth holds poses, the subject mask on/off with --masks, edges between depth layers removed. Opens it "
        "in the browser unless --no-open.",
    )
    p.add_argument("video", metavar="VIDEO", help="the video the depth belongs to (its colours)")
    p.add_argument("depth", metavar="DEPTH", help="its depth file (any sbsconv depth format, with its sidecar)")
    p.add_argument("output", nargs="?", default=None, help="the page (.html; default: a temporary file)")
    p.add_argument("--masks", default=None, help="a mask file (sbsconv mask, mask_out=) to show the subject")
    p.add_argument("--points", type=int, default=160, help="points across each frame (default 160)")
    p.add_argument("--max-frames", type=int, default=120, help="at most this many frames (default 120)")
    p.add_argument("--every", type=int, default=1, help="every N-th frame (default 1)")
    p.add_argument("--no-open", action="store_true", help="only write the page")
    p.set_defaults(run=_cmd_view_depth)

    p = sub.add_parser("models", help="list the models", description="List the registered models: depth models, and the "
                       "subject-mask models (kind mask) that sbsconv mask runs.")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.set_defaults(run=_cmd_models)

    p = sub.add_parser("probe", help="describe a video's streams", description="Describe a video's streams.")
    p.add_argument("input", help="video file")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.set_defaults(run=_cmd_probe)

    p = sub.add_parser(
        "reencode",
        help="decode and re-encode a video with its audio and subtitles",
        description="Decode a video and encode it again (H.264/HEVC in MP4, MOV or MKV), carrying "
        "its audio and subtitle streams over. The output appears only when complete.",
    )
    p.add_argument("input", help="video file")
    p.add_argument("output", help="output file (.mp4, .mov or .mkv)")
    p.add_argument("--start", type=float, default=None, help="start, in seconds from the beginning")
    p.add_argument("--duration", type=float, default=None, help="length to process, in seconds")
    _add_encoder_options(p)
    p.set_defaults(run=_cmd_reencode)

    p = sub.add_parser(
        "ui",
        help="the web app: convert videos from a browser",
        description="Serve the sbsconv web app (Gradio; the sbsconv[ui] extra): upload or name videos, "
        "preview the depth and the 3D frame, convert with progress and cancel, download the result. "
        "Binds to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                   help="a folder whose videos may be named by path in the page (repeatable)")
    p.add_argument("--max-upload-mb", type=float, default=2048, help="largest upload, in MB (default 2048)")
    p.add_argument("--work-dir", default=None,
                   help="where uploads and outputs are kept (default: $XDG_CACHE_HOME/sbsconv/ui, "
                   "else ~/.cache/sbsconv/ui: private to you, kept across restarts so that an "
                   "interrupted conversion resumes)")
    p.set_defaults(run=_cmd_ui)
    for command in sub.choices.values():  # --debug after the command too (convert ... --debug)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="print the full traceback of an internal error")
        command.epilog = command.epilog or EXIT_CODES_HELP
    return parser


def _cmd_ui(args: argparse.Namespace) -> int:
    from sbsconv import ui

    if args.port is not None and not 1 <= args.port <= 65535:
        raise errors.OptionError(f"--port must be within 1..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise errors.OptionError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    for folder in args.allow_path:
        if not os.path.isdir(folder):
            raise errors.OptionError(f"--allow-path {folder}: not a folder")
    return ui.serve(args.host, args.port, args.share, args.allow_path, args.max_upload_mb, args.work_dir)


def _command_missing(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The first word when it is a file, not a command (``sbsconv clip.mp4 clip_3d.mp4``): the
    hint to give instead of argparse's list of choices."""
    from sbsconv.batch import VIDEO_EXTENSIONS

    words = [a for a in argv if not a.startswith("-")]
    # (argparse has no public list of a parser's subcommands)
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    if not words or words[0] in commands:
        return None
    first = words[0]
    if not (os.path.isfile(first) or Path(first).suffix.lower() in VIDEO_EXTENSIONS):
        return None
    rest = " ".join(shlex.quote(w) for w in words[1:2]) or "OUT"
    return (f"sbsconv: error: {first!r} is not a command; to convert a video: sbsconv convert "
            f"{shlex.quote(first)} {rest} (sbsconv --help lists the commands)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    hint = _command_missing(parser, sys.argv[1:] if argv is None else list(argv))
    if hint is not None:
        print(hint, file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    debug = bool(args.debug or args.verbose)
    # the one error boundary: sbsconv's errors are messages with their exit codes; anything else
    # is a bug, said in one line with where its report is
    try:
        return args.run(args)
    except errors.InternalError as exc:
        return report_internal_error("sbsconv", exc, debug=debug, argv=argv)
    except errors.SbsconvError as exc:
        if args.debug:  # (an error with a message: its traceback only when asked for)
            traceback.print_exc(file=sys.stderr)
        print(f"sbsconv: error: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("sbsconv: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 (a bug: one line and a report, never a raw traceback)
        return report_internal_error("sbsconv", exc, debug=debug, argv=argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
