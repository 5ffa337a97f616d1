"""``sbsconv ui``: a web app over :func:`sbsconv.convert`, for people who would rather click
(Gradio, the ``sbsconv[ui]`` extra).

    sbsconv ui [--host 127.0.0.1] [--port N] [--share] [--allow-path DIR ...] [--max-upload-mb N]
    sbsconv.ui.launch()          # in Colab or Jupyter: inline

- Input: uploads (several at once, converted in turn), a path on the serving machine (only
  under the folders given with ``allow_paths`` / ``--allow-path``), or a URL (yt-dlp, as the
  notebook fetches).
- Settings: one component per :class:`~sbsconv.ConvertOptions` field, generated from the
  fields (name, default, range or choices, help text), grouped as the options are; headset
  presets (:data:`HEADSET_PRESETS`, data) fill them in.
- Preview: the frame, its depth, the 3D frame and an anaglyph at a chosen time
  (:func:`sbsconv.preview`), refreshed when a setting changes.
- Convert: progress (frames, fps, ETA), Cancel (the engine stops within about a second and
  leaves nothing under the output name), resume (the same input and settings continue an
  interrupted conversion), a result panel (player, downloads, each stage's frames per
  second, the encoder, scene cuts, the comfort report, depth exports).
- Errors from :mod:`sbsconv.errors` are shown as their messages; conversions from several
  browser tabs queue, one at a time.

Binds to 127.0.0.1 unless told otherwise; ``share`` (Gradio's public link) only when asked.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sbsconv import errors
from sbsconv.options import Choice, ConvertOptions, OptionField

logger = logging.getLogger("sbsconv")

# Headset presets: the settings each fills in (every other setting keeps its value).
HEADSET_PRESETS: dict[str, dict[str, Any]] = {
    "Meta Quest 3 / 3S": {"layout": "full-sbs", "codec": "hevc", "headset_suffix": True},
    "Pico 4": {"layout": "full-sbs", "codec": "hevc", "headset_suffix": True},
    "Apple Vision Pro": {"layout": "apple-3d", "codec": "hevc", "headset_suffix": False},
    "VR180 (Quest, Pico, YouTube VR)": {"layout": "vr180", "codec": "hevc", "headset_suffix": True},
    "3D TV (half side-by-side)": {"layout": "half-sbs", "codec": "h264", "headset_suffix": True},
    "Anaglyph (red-cyan glasses)": {"layout": "anaglyph", "codec": "h264", "headset_suffix": False},
}

# The page's sections: the options' groups, in this order (Advanced gathers the rest).
SECTIONS = (
    ("Model", ("model",)),
    ("3D strength and convergence", ("3d",)),
    ("Layout", ("layout",)),
    ("Quality and encoder", ("encoding",)),
    ("Advanced", ("timing", "stability", "output", "advanced")),
)
# Settings whose change refreshes the preview (what the preview shows depends on them).
PREVIEW_SETTINGS = ("model", "checkpoint", "input_size", "precision", "layout", "divergence", "convergence",
                    "max_shift", "synthetic_view", "ipd_mm", "fov_degrees", "screen_distance", "edge_dilation",
                    "percentiles")
DEFAULT_MAX_UPLOAD_MB = 2048


def sections() -> list[tuple[str, list[OptionField]]]:
    """Every ConvertOptions field, in the page's sections (each field exactly once)."""
    fields = ConvertOptions.fields()
    out = []
    for title, groups in SECTIONS:
        out.append((title, [f for f in fields if f.group in groups]))
    placed = {f.name for _, fs in out for f in fs}
    rest = [f for f in fields if f.name not in placed]
    if rest:  # a group added later lands in Advanced rather than nowhere
        out[-1] = (out[-1][0], out[-1][1] + rest)
    return out


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def component_spec(f: OptionField) -> dict[str, Any]:
    """How a field is shown: {"type": checkbox | dropdown | number | text, "value", ...}."""
    spec: dict[str, Any] = {"label": f.name, "info": f"{f.help} ({f.describe()})"}
    if f.kind is bool:
        spec.update(type="checkbox", value=bool(f.default))
    elif isinstance(f.constraint, Choice) and not f.nullable:
        spec.update(type="dropdown", value=f.default, choices=list(f.constraint.values))
    elif f.kind in (int, float) and f.default is not None:
        c = f.constraint
        spec.update(type="number", value=f.default, minimum=getattr(c, "low", None), maximum=getattr(c, "high", None),
                    precision=0 if f.kind is int else None)
    else:
        spec.update(type="text", value=text_of(f.default), placeholder="default" if f.default is None else "")
    return spec


def options_from(values: dict[str, Any]) -> ConvertOptions:
    """The page's values (text as typed, numbers, booleans) as checked ConvertOptions: blank
    text is the default; OptionError names the first bad setting."""
    raw: dict[str, Any] = {}
    for f in ConvertOptions.fields():
        if f.name not in values:
            continue
        value = values[f.name]
        if isinstance(value, str):
            value = f.parse(value) if value.strip() else f.default
        elif value is None:
            value = f.default
        elif f.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        raw[f.name] = value
    return ConvertOptions(**raw)


def apply_preset(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the preset's settings filled in (unknown preset: OptionError)."""
    if name not in HEADSET_PRESETS:
        raise errors.OptionError(f"unknown preset {name!r}; known: {', '.join(HEADSET_PRESETS)}")
    out = dict(values)
    out.update(HEADSET_PRESETS[name])
    return out


def model_choices() -> list[tuple[str, str]]:
    """(label, registry name) for the model menu: licence and whether the checkpoint is cached."""
    from sbsconv import models
    from sbsconv.models import hub

    out = []
    for name in models.depth_models():
        s = models.spec(name)
        try:
            cached = hub.cached_path(s.repo_id, s.filename) is not None
        except Exception:  # an unreadable cache is "not cached", never a broken page
            cached = False
        licence = s.license + ("" if s.commercial_use else ", non-commercial")
        out.append((f"{name} ({licence}{', cached' if cached else ''})", name))
    return out


# ---- inputs -------------------------------------------------------------------------------------


class Inputs:
    """Where the app keeps what it was given and what it wrote: uploads copied under a folder
    named by their content (so that a conversion of the same upload with the same settings
    resumes), outputs beside them."""

    def __init__(self, work_dir: str | os.PathLike[str], allow_paths: Iterable[str | os.PathLike[str]] = (),
                 max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> None:
        self.work = Path(work_dir)
        (self.work / "inputs").mkdir(parents=True, exist_ok=True)
        (self.work / "outputs").mkdir(parents=True, exist_ok=True)
        self.allowed = [Path(p).expanduser().resolve() for p in allow_paths]
        self.max_bytes = int(max_upload_mb * 2**20)
        self._uploads: dict[tuple, Path] = {}

    def upload(self, path: str) -> Path:
        p = Path(path)
        stat = p.stat()
        key = (str(p), stat.st_size, stat.st_mtime_ns)
        if key in self._uploads and self._uploads[key].exists():
            return self._uploads[key]  # a preview per setting change must not hash it again
        size = stat.st_size
        if size > self.max_bytes:
            raise errors.InputError(f"{p.name} is {size / 2**20:.0f} MB; uploads are limited to "
                                    f"{self.max_bytes / 2**20:.0f} MB (sbsconv ui --max-upload-mb)")
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        target = self.work / "inputs" / digest.hexdigest()[:16] / p.name
        if not target.exists():
            # copied under a temporary name, then renamed: another tab never sees half a file
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
            shutil.copyfile(p, partial)
            os.replace(partial, target)
        self._uploads[key] = target
        return target

    def local(self, text: str, kind: str = "video") -> Path:
        """A file (or a folder: a checkpoint, a depth sequence) on this machine, under an allowed folder."""
        p = Path(text.strip()).expanduser().resolve()
        if not self.allowed:
            raise errors.OptionError("paths on this machine are off: start sbsconv ui with --allow-path DIR")
        if not any(p == a or a in p.parents for a in self.allowed):
            raise errors.OptionError(f"{text.strip()} is outside the allowed folders "
                                     f"({', '.join(map(str, self.allowed))})")
        # folders: a transformers-layout checkpoint, a png16/exr depth sequence
        if not (p.is_file() or (kind in ("model", "checkpoint", "depth") and p.is_dir())):
            raise errors.InputNotFoundError(f"no such file: {text.strip()}", path=str(p))
        return p

    def url(self, text: str) -> Path:
        from sbsconv import notebook

        text = text.strip()
        # only web addresses: a path typed here must not get round the allowed folders
        if not text.startswith(("http://", "https://")):
            raise errors.OptionError(f"not a web address (http:// or https://): {text}")
        # one folder per address: two videos with the same title stay apart
        folder = self.work / "inputs" / "downloads" / hashlib.sha256(text.encode()).hexdigest()[:16]
        video = notebook.fetch_video(text, folder)
        if video.stat().st_size > self.max_bytes:
            size = video.stat().st_size
            video.unlink(missing_ok=True)
            raise errors.InputError(f"{text} is {size / 2**20:.0f} MB; videos are limited to "
                                    f"{self.max_bytes / 2**20:.0f} MB (sbsconv ui --max-upload-mb)")
        return video

    def gather(self, files: list | None, local: str, url: str) -> list[Path]:
        out: list[Path] = []
        for f in files or []:
            out.append(self.upload(f if isinstance(f, str) else getattr(f, "name", str(f))))
        if local and local.strip():
            out.append(self.local(local))
        if url and url.strip():
            out.append(self.url(url))
        if not out:
            raise errors.OptionError("give a video: upload one, or name a path or a URL")
        return out

    # The options naming files a run writes besides its output.
    WRITTEN = ("depth_out", "depth_video", "infill_mask", "mask_out")

    def confined(self, options: ConvertOptions) -> ConvertOptions:
        """``options`` with what they read on the server checked: the model a registry name
        or a checkpoint under the allowed folders, as the checkpoint and a depth file to
        re-render from (a page must not read, or fill the cache with, whatever it names)."""
        from sbsconv import models

        changes: dict[str, Any] = {}
        model = str(options.model)
        if model not in models.available():
            try:
                changes["model"] = str(self.local(model, kind="model"))
            except errors.SbsconvError as exc:
                raise errors.OptionError(f"model: a registry name ({', '.join(models.approaches())} ...) or a "
                                         f"checkpoint under the allowed folders; {exc}") from None
        mask_model = str(options.mask_model)
        if mask_model not in models.available():
            try:
                changes["mask_model"] = str(self.local(mask_model, kind="model"))
            except errors.SbsconvError as exc:
                raise errors.OptionError(f"mask_model: a registry name (u2netp, u2net) or a checkpoint under the "
                                         f"allowed folders; {exc}") from None
        for name in ("checkpoint", "depth", "masks"):
            value = getattr(options, name)
            if value is not None:
                changes[name] = str(self.local(str(value), kind=name))
        return options.replace(**changes) if changes else options

    def written_beside(self, options: ConvertOptions, folder: Path) -> ConvertOptions:
        """``options`` confined (what they read) with the extra files it writes (depth export,
        depth video, infill mask) placed in ``folder``: a page names them by file name only,
        never a place on the server."""
        options = self.confined(options)
        changes = {}
        for name in self.WRITTEN:
            value = getattr(options, name)
            if value is None:
                continue
            given = Path(str(value))
            if given.is_absolute() or given.name != str(value) or given.name in ("", ".", ".."):
                raise errors.OptionError(f"{name}: give a file name ({given.name or 'depth.mkv'}); the app writes "
                                         "it beside the 3D video, for download")
            changes[name] = str(folder / given.name)
        return options.replace(**changes) if changes else options

    def output_for(self, video: Path, options: ConvertOptions) -> Path:
        """A name fixed by the input and the settings: the same request resumes."""
        key = hashlib.sha256((str(video) + repr(sorted(options.non_defaults().items()))).encode()).hexdigest()[:10]
        ext = ".mov" if options.layout in ("apple-3d", "spatial") else ".mp4"
        return self.work / "outputs" / key / f"{video.stem}_3d{ext}"


# ---- conversions ----------------------------------------------------------------------------------


class Jobs:
    """The cancel switches of the conversions under way, by the id each page holds."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self) -> tuple[str, threading.Event]:
        job = uuid.uuid4().hex
        event = threading.Event()
        with self._lock:
            self._events[job] = event
        return job, event

    def cancel(self, job: str | None) -> bool:
        with self._lock:
            event = self._events.get(job or "")
        if event is None:
            return False
        event.set()
        return True

    def finish(self, job: str) -> None:
        with self._lock:
            self._events.pop(job, None)


def progress_html(name: str, info: dict | None, index: int, count: int) -> str:
    label = html.escape(f"{name} ({index + 1} of {count})" if count > 1 else name)
    if not info:
        return f"<div class='sbs-status'>{label}: starting (loading the model)</div>"
    done, total = info.get("frames_done", 0), info.get("frames_total")
    fps, eta = info.get("fps") or 0.0, info.get("eta_seconds")
    fraction = info.get("fraction")
    bar = f"<progress value='{fraction or 0:.3f}' max='1'></progress>" if fraction is not None else "<progress></progress>"
    text = f"{done}{f' / {total}' if total else ''} frames, {fps:.1f} frames/s"
    if eta is not None:
        text += f", about {eta:.0f} s left"
    return f"<div class='sbs-status'>{label}: {bar} {html.escape(text)}</div>"


def error_html(exc: BaseException) -> str:
    if isinstance(exc, errors.SbsconvError):
        kind = type(exc).__name__.replace("Error", " error").strip()
        return f"<div class='sbs-error'><b>{html.escape(kind)}</b>: {html.escape(str(exc))}</div>"
    logger.exception("sbsconv ui: unexpected failure")
    return f"<div class='sbs-error'><b>Unexpected error</b>: {html.escape(type(exc).__name__)}: {html.escape(str(exc))}</div>"


def figures_markdown(results: list[Any]) -> str:
    lines = []
    for r in results:
        lines.append(f"**{Path(r.output).name}**: {r.frames} frames {r.width}x{r.height}, {r.layout}, "
                     f"{r.fps:.1f} frames/s overall, model {r.model}"
                     + (f", resumed from frame {r.resumed_from}" if r.resumed_from else ""))
        lines.append(f"- encoder {r.encoder}{f' (preset {r.encoder_preset})' if r.encoder_preset else ''}"
                     f"{f', {r.encoders} encoding segments at once' if r.encoders > 1 else ''}"
                     f"; precision {r.precision or '-'}; batch {r.batch_size}")
        if r.stage_fps:
            lines.append("- frames/s per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in r.stage_fps.items()))
        lines.append(f"- scene cuts: {len(r.cuts)}" + (f" (frames {', '.join(map(str, r.cuts[:12]))}"
                                                       f"{' ...' if len(r.cuts) > 12 else ''})" if r.cuts else ""))
        if r.fov_degrees is not None:
            lines.append(f"- field of view (the model's estimate): {r.fov_degrees:.1f} degrees")
        for scene in r.comfort[:8]:
            lines.append("- comfort: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in scene.items()))
        for w in r.warnings:
            lines.append(f"- warning: {w}")
    return "\n".join(lines)


class App:
    """The app's state and handlers, independent of Gradio's components (tested directly)."""

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.jobs = Jobs()
        self.names = [f.name for f in ConvertOptions.fields()]

    def values(self, args: tuple) -> dict[str, Any]:
        return dict(zip(self.names, args, strict=True))

    def preview(self, files: list | None, local: str, url: str, at: str | float | None, *settings: Any):
        """The four preview images (numpy HWC uint8) and a message."""
        from sbsconv.preview import preview

        try:
            video = self.inputs.gather(files, local, url)[0]
            options = self.inputs.confined(options_from(self.values(settings)))
            when = None
            if at is not None and str(at).strip():
                try:
                    when = float(at)
                except ValueError:
                    raise errors.OptionError(f"the preview time must be a number of seconds, not {at!r}") from None
            p = preview(str(video), at=when, options=options)
            row = p.rows[0]
            images = [panel.image.permute(1, 2, 0).contiguous().numpy() for panel in row[:4]]
            return (*images, f"<div class='sbs-status'>{html.escape(p.captions[0])}</div>")
        except Exception as exc:  # shown on the page, never a traceback
            return None, None, None, None, error_html(exc)

    VIEW_SECONDS = 3.0  # the stretch of video the 3D depth view shows, from the preview time

    def depth_3d(self, files: list | None, local: str, url: str, at: str | float | None, *settings: Any) -> str:
        """The video's depth in 3D (sbsconv.viewer) for a few seconds from the preview time, as a
        frame holding the viewer page: the depth of the model in the settings (or of their
        depth file), and the subject's masks when convergence is "subject"."""
        import sbsconv
        from sbsconv.viewer import depth_view_html

        try:
            video = self.inputs.gather(files, local, url)[0]
            options = self.inputs.confined(options_from(self.values(settings)))
            start = 0.0
            if at is not None and str(at).strip():
                try:
                    start = max(0.0, float(at))
                except ValueError:
                    raise errors.OptionError(f"the preview time must be a number of seconds, not {at!r}") from None
            folder = self.inputs.work / "views" / uuid.uuid4().hex[:12]
            folder.mkdir(parents=True, exist_ok=True)
            window = {"start": start or None, "duration": self.VIEW_SECONDS}
            if options.depth is not None:
                depth = str(options.depth)
            else:
                depth = sbsconv.export_depth(video, folder / "depth.mkv",
                                             options.replace(depth_format="gray16", **window),
                                             progress=False).path
            masks = options.masks
            if masks is None and options.convergence == "subject":
                masks = sbsconv.export_mask(video, folder / "mask.mkv", model=options.mask_model,
                                            device=options.device, **window).path
            page = depth_view_html(video, depth, masks=masks, max_frames=90)
            return (f'<iframe id="sbs-depth-3d-frame" title="depth in 3D" srcdoc="{html.escape(page, quote=True)}" '
                    'style="width:100%;height:600px;border:0"></iframe>')
        except Exception as exc:  # shown on the page, never a traceback
            return error_html(exc)

    def convert(self, files: list | None, local: str, url: str, *settings: Any) -> Iterator[tuple]:
        """Yields (job id, status html, video, downloads, figures) as the conversion goes."""
        import sbsconv

        job, cancel = self.jobs.start()
        results: list[Any] = []
        written: list[str] = []  # depth exports, depth videos, masks
        thread: threading.Thread | None = None
        try:
            # the page holds the job at once: Cancel works from the first moment
            yield job, "<div class='sbs-status'>starting</div>", None, None, None
            videos = self.inputs.gather(files, local, url)
            options = options_from(self.values(settings))
            for index, video in enumerate(videos):
                output = self.inputs.output_for(video, options)
                output.parent.mkdir(parents=True, exist_ok=True)
                run_options = self.inputs.written_beside(options, output.parent)
                latest: dict[str, Any] = {}
                box: dict[str, Any] = {}

                def work(video=video, output=output, latest=latest, box=box, run_options=run_options) -> None:
                    try:
                        box["result"] = sbsconv.convert(video, output, options=run_options, progress=False,
                                                        on_progress=latest.update, cancel=cancel)
                    except BaseException as exc:  # handed to the page
                        box["error"] = exc

                thread = threading.Thread(target=work, name="sbsconv-ui-convert", daemon=True)
                thread.start()
                while thread.is_alive():
                    thread.join(0.5)
                    yield job, progress_html(video.name, dict(latest), index, len(videos)), None, None, None
                if "error" in box:
                    raise box["error"]
                results.append(box["result"])
                extras = [box["result"].depth_out, box["result"].depth_sidecar,
                          run_options.depth_video, run_options.infill_mask, box["result"].mask_out]
                written.extend(str(p) for p in extras if p and Path(p).is_file())
            downloads = [r.output for r in results] + written
            done = (f"<div class='sbs-done'>Done: {len(results)} file{'s' if len(results) > 1 else ''} "
                    f"in 3D</div>")
            yield job, done, results[-1].output, downloads, figures_markdown(results)
        except GeneratorExit:
            cancel.set()  # the page went away (tab closed): its conversion stops too
            if thread is not None:
                thread.join(60)  # stopped before the next queued conversion starts
            raise
        except errors.CancelledError:
            yield job, "<div class='sbs-error'><b>Cancelled</b>: nothing was written under the output name; " \
                       "convert again with the same settings to resume</div>", None, None, figures_markdown(results)
        except Exception as exc:
            yield job, error_html(exc), None, None, figures_markdown(results)
        finally:
            self.jobs.finish(job)

    def cancel(self, job: str | None) -> str:
        if self.jobs.cancel(job):
            return "<div class='sbs-status'>Cancelling...</div>"
        return "<div class='sbs-status'>Nothing is converting.</div>"


CSS = """
.sbs-error {color: #b00020; padding: 6px 0;}
.sbs-done {color: #1b5e20; padding: 6px 0; font-weight: 600;}
.sbs-status progress {width: 40%; vertical-align: middle;}
"""


def default_work_dir() -> Path:
    """The user's own folder for the app's uploads and outputs (private: mode 0700), kept
    across restarts so that an interrupted conversion resumes."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sbsconv" / "ui"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(base, 0o700)
    return base


def build(work_dir: str | os.PathLike[str] | None = None, allow_paths: Iterable[str | os.PathLike[str]] = (),
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB):
    """The Gradio app (gr.Blocks), not yet launched."""
    try:
        import gradio as gr
    except ImportError:
        raise errors.OptionError("sbsconv ui needs Gradio: install the extra, pip install 'sbsconv[ui]'") from None
    work = Path(work_dir) if work_dir is not None else default_work_dir()
    app = App(Inputs(work, allow_paths, max_upload_mb))
    components: dict[str, Any] = {}
    with gr.Blocks(title="sbsconv") as blocks:
        gr.Markdown("# sbsconv: 2D video to 3D\nDepth for every frame, each frame re-rendered for both eyes, "
                    "encoded with the original audio.")
        job = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                files = gr.File(label="Videos (several are converted in turn)", file_count="multiple",
                                type="filepath", elem_id="sbs-files")
                local = gr.Textbox(label="Or a path on this machine", elem_id="sbs-local",
                                   visible=bool(app.inputs.allowed),
                                   info="under " + ", ".join(map(str, app.inputs.allowed)) if app.inputs.allowed else "")
                url = gr.Textbox(label="Or a URL (YouTube and the sites yt-dlp reads)", elem_id="sbs-url")
                preset = gr.Dropdown(label="Headset preset (fills the settings in)", choices=list(HEADSET_PRESETS),
                                     value=None, elem_id="sbs-preset")
                for title, fields in sections():
                    with gr.Accordion(title, open=title in ("Model", "3D strength and convergence")):
                        for f in fields:
                            spec = component_spec(f)
                            kind = spec.pop("type")
                            common = dict(label=spec["label"], info=spec["info"], elem_id=f"sbs-opt-{f.name}")
                            if f.name == "model":
                                components[f.name] = gr.Dropdown(choices=model_choices(), value=spec["value"],
                                                                 allow_custom_value=True, **common)
                            elif kind == "checkbox":
                                components[f.name] = gr.Checkbox(value=spec["value"], **common)
                            elif kind == "dropdown":
                                components[f.name] = gr.Dropdown(choices=spec["choices"], value=spec["value"], **common)
                            elif kind == "number":
                                components[f.name] = gr.Number(value=spec["value"], minimum=spec["minimum"],
                                                               maximum=spec["maximum"], precision=spec["precision"],
                                                               **common)
                            else:
                                components[f.name] = gr.Textbox(value=spec["value"], placeholder=spec["placeholder"],
                                                                **common)
            with gr.Column(scale=3, min_width=480):
                with gr.Row():
                    at = gr.Textbox(label="Preview at (seconds; empty: the middle)", value="", elem_id="sbs-at")
                    preview_button = gr.Button("Preview", elem_id="sbs-preview-button")
                with gr.Row():
                    frame = gr.Image(label="frame", elem_id="sbs-preview-frame", interactive=False)
                    depth = gr.Image(label="depth", elem_id="sbs-preview-depth", interactive=False)
                with gr.Row():
                    packed = gr.Image(label="3D frame", elem_id="sbs-preview-3d", interactive=False)
                    anaglyph = gr.Image(label="anaglyph", elem_id="sbs-preview-anaglyph", interactive=False)
                with gr.Accordion("Depth in 3D", open=False):
                    view_button = gr.Button("Show the depth in 3D (a few seconds from the preview time)",
                                            elem_id="sbs-depth-3d-button")
                    view = gr.HTML(elem_id="sbs-depth-3d")
                with gr.Row():
                    convert_button = gr.Button("Convert", variant="primary", elem_id="sbs-convert")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="sbs-cancel")
                status = gr.HTML(elem_id="sbs-status")
                video = gr.Video(label="Result", elem_id="sbs-result", interactive=False)
                downloads = gr.File(label="Download", file_count="multiple", elem_id="sbs-downloads",
                                    interactive=False)
                figures = gr.Markdown(elem_id="sbs-figures")
        settings = [components[name] for name in app.names]
        sources = [files, local, url]
        preview_outputs = [frame, depth, packed, anaglyph, status]
        preview_button.click(app.preview, [*sources, at, *settings], preview_outputs, concurrency_id="preview",
                             concurrency_limit=1)
        files.upload(app.preview, [*sources, at, *settings], preview_outputs, concurrency_id="preview",
                     concurrency_limit=1)
        def refresh(files_, local_, url_, at_, *values: Any):
            # a setting changed: a new preview if there is a video, else nothing to say
            if not files_ and not (local_ or "").strip() and not (url_ or "").strip():
                return [gr.update() for _ in preview_outputs]
            return app.preview(files_, local_, url_, at_, *values)

        for name in PREVIEW_SETTINGS:
            components[name].change(refresh, [*sources, at, *settings], preview_outputs,
                                    concurrency_id="preview", concurrency_limit=1, trigger_mode="always_last")

        def fill(name: str | None, *current: Any):
            if not name:
                return [gr.update() for _ in current]
            filled = apply_preset(name, app.values(current))
            return [gr.update(value=filled[n]) if n in HEADSET_PRESETS[name] else gr.update() for n in app.names]

        preset.change(fill, [preset, *settings], settings)
        view_button.click(app.depth_3d, [*sources, at, *settings], [view], concurrency_id="preview",
                          concurrency_limit=1)
        convert_button.click(app.convert, [*sources, *settings], [job, status, video, downloads, figures],
                             concurrency_id="convert", concurrency_limit=1)
        cancel_button.click(app.cancel, [job], [status], concurrency_limit=None, queue=False)
    blocks.queue(default_concurrency_limit=1)
    blocks.sbsconv_app = app  # for tests and embedding
    blocks.sbsconv_css = CSS
    return blocks


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def launch(host: str = "127.0.0.1", port: int | None = None, *, share: bool = False,
           allow_paths: Iterable[str | os.PathLike[str]] = (), max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
           work_dir: str | os.PathLike[str] | None = None, block: bool | None = None):
    """Starts the app on ``host``:``port`` (127.0.0.1 unless told otherwise; ``share`` adds
    Gradio's public link). In Colab or Jupyter the page shows under the cell and the call
    returns; elsewhere it serves until Ctrl-C unless ``block=False``. Returns the Gradio app
    (``.close()`` stops it)."""
    blocks = build(work_dir, allow_paths, max_upload_mb)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("sbsconv ui listens on %s: anyone who can reach this machine can use it", host)
    notebook = _in_notebook()
    blocks.launch(server_name=host, server_port=port, share=share, inline=notebook, prevent_thread_lock=True,
                  max_file_size=f"{int(max_upload_mb)}mb", allowed_paths=[str(blocks.sbsconv_app.inputs.work)],
                  css=CSS, show_error=False, inbrowser=False, quiet=not notebook)
    if block if block is not None else not notebook:
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            blocks.close()
    return blocks


def serve(host: str, port: int | None, share: bool, allow_paths: list[str], max_upload_mb: float,
          work_dir: str | None) -> int:
    """The command line's ``sbsconv ui``: serves until Ctrl-C."""
    blocks = launch(host, port, share=share, allow_paths=allow_paths, max_upload_mb=max_upload_mb,
                    work_dir=work_dir, block=False)
    print(f"sbsconv ui: {blocks.local_url}" + (f" (public: {blocks.share_url})" if share else ""), flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        blocks.close()
    return 0
