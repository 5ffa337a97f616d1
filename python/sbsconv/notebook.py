"""Helpers for the Colab notebook (notebooks/sbsconv_colab.ipynb) and Jupyter.

The options form is generated from :class:`sbsconv.ConvertOptions`' fields, so the notebook
offers exactly the API's options with the API's defaults, help and checks, and cannot drift
from it. Every command
that takes user input runs with an argument list, never through a shell string.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import sbsconv
from sbsconv._native import _core
from sbsconv.errors import InputError, OptionError
from sbsconv.options import Choice, ConvertOptions

__all__ = [
    "IN_COLAB", "OptionsForm", "convert_options", "copy_to_drive", "environment_report", "fetch_checkpoint",
    "fetch_video",
]



def _in_colab() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no "google" package at all
        return False


IN_COLAB = _in_colab()


def convert_options() -> dict[str, Any]:
    """``sbsconv.convert()``'s options (:class:`~sbsconv.ConvertOptions`' fields) and their
    defaults, in order."""
    return {f.name: f.default for f in ConvertOptions.fields()}


def environment_report(show: bool = True) -> dict[str, Any]:
    """GPU, driver, CUDA, torch, FFmpeg and its hardware encoders."""
    report: dict[str, Any] = {"sbsconv": sbsconv.__version__, "torch": torch.__version__,
                              "python": sys.version.split()[0], "colab": IN_COLAB}
    report["cuda_available"] = torch.cuda.is_available()
    report["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
        report["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        report["driver"] = smi.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        report["driver"] = None
    report["mps_available"] = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    info = _core.ffmpeg_info()
    report["ffmpeg"] = {k: v for k, v in info.items() if not k.startswith("encoder:")}
    report["encoders"] = {k.split(":", 1)[1]: v == "1" for k, v in info.items() if k.startswith("encoder:")}
    if show:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:{width}s}  {value}")
    return report


class OptionsForm:
    """An ipywidgets form with one field per :class:`~sbsconv.ConvertOptions` field (name,
    default, help as the tooltip, the choices as a drop-down), in the fields' order.
    ``values()`` gives the options that differ from the defaults, checked, ready for
    ``sbsconv.convert(video, output, **form.values())``; ``options()`` gives them as a
    ``ConvertOptions``. Without ipywidgets (a plain terminal, a headless run) the form is
    the overrides given."""

    def __init__(self, **overrides: Any) -> None:
        self.fields = {f.name: f for f in ConvertOptions.fields()}
        self.defaults = {name: f.default for name, f in self.fields.items()}
        self.overrides = ConvertOptions.merged(None, overrides).non_defaults()  # checked
        self.widgets: dict[str, Any] = {}
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return
        self._build()

    def _build(self) -> None:
        import ipywidgets as w

        style = {"description_width": "150px"}
        for name, f in self.fields.items():
            value = self.overrides.get(name, f.default)
            common = {"description": name, "tooltip": f"{f.help} ({f.describe()})", "style": style}
            if f.kind is bool:
                widget = w.Checkbox(value=bool(value), **common)
            elif isinstance(f.constraint, Choice) and not f.nullable:
                widget = w.Dropdown(options=list(f.constraint.values), value=value, **common)
            elif f.kind is int and f.default is not None:
                widget = w.IntText(value=value, **common)
            elif f.kind is float and f.default is not None:
                widget = w.FloatText(value=value, **common)
            else:
                widget = w.Text(value=_text_of(value), placeholder="default" if f.default is None
                                else _text_of(f.default), **common)
            self.widgets[name] = widget

    def display(self) -> None:
        if not self.widgets:
            print("options:", self.overrides or "(defaults)")
            return
        import ipywidgets as w
        from IPython.display import display

        groups = {}
        for name, widget in self.widgets.items():
            groups.setdefault(self.fields[name].group, []).append(widget)
        tabs = w.Tab(children=[w.VBox(ws) for ws in groups.values()])
        for i, group in enumerate(groups):
            tabs.set_title(i, "3D" if group == "3d" else group)
        display(tabs)

    def options(self) -> ConvertOptions:
        """The form's options, checked (OptionError names the bad one)."""
        if not self.widgets:
            return ConvertOptions(**self.overrides)
        raw: dict[str, Any] = {}
        for name, widget in self.widgets.items():
            value = widget.value
            if isinstance(value, str):
                value = self.fields[name].parse(value)
            raw[name] = value
        return ConvertOptions(**raw)

    def values(self) -> dict[str, Any]:
        """The options that differ from the defaults, checked and normalised."""
        return self.options().non_defaults()


def _text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return str(value)


_DRIVE_ID = re.compile(r"(?:/d/|id=)([A-Za-z0-9_-]{20,})")


def fetch_video(source: str, folder: str | os.PathLike[str] = "videos") -> Path:
    """A local video from ``source``: a path, a web page or video URL (yt-dlp), a Google Drive
    share link or file id (gdown), "upload" (Colab's file picker) or "sample" (the bundled
    sample clip)."""
    if source == "sample":
        from sbsconv import samples

        return samples.path()
    if not source.strip():
        raise OptionError("no video given: a path, a URL, a Google Drive link or id, 'upload' or 'sample'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if source == "upload":
        if not IN_COLAB:
            raise OptionError("upload works in Colab; elsewhere give a path or a URL")
        from google.colab import files  # type: ignore[import-not-found]

        uploaded = files.upload()
        name = next(iter(uploaded))
        target = folder / Path(name).name
        target.write_bytes(uploaded[name])
        return target
    if Path(source).expanduser().exists():
        return Path(source).expanduser()
    drive = _DRIVE_ID.search(source) or (re.fullmatch(r"[A-Za-z0-9_-]{25,}", source) and re.match(r"(.*)", source))
    if drive is not None:
        file_id = drive.group(1)
        target = folder / f"{file_id}.mp4"
        _run([sys.executable, "-m", "gdown", "--id", file_id, "-O", str(target)], "gdown")
        return target
    if source.startswith(("http://", "https://")):
        template = str(folder / "%(title).80s.%(ext)s")
        out = _run([sys.executable, "-m", "yt_dlp", "--no-playlist", "-f", "bv*+ba/b", "--merge-output-format",
                    "mp4", "-o", template, "--print", "after_move:filepath", source], "yt-dlp")
        return Path(out.strip().splitlines()[-1])
    raise InputError(f"cannot find or fetch the video {source!r}", stage="download", path=source)


def _run(args: list[str], tool: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise InputError(f"{tool} is not installed (pip install {tool})", stage="download") from None
    except subprocess.CalledProcessError as exc:
        raise InputError(f"{tool} failed: {exc.stderr.strip()[-500:]}", stage="download") from None
    return done.stdout


def fetch_checkpoint(model: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None) -> Path:
    """The local checkpoint of ``model`` (a registry name, a Hugging Face repo id or a path),
    downloaded into the Hugging Face cache with a progress bar when it is not there yet, so
    that the preview and the conversion start from a local file."""
    from sbsconv import models
    from sbsconv.models import hub

    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise InputError(f"no checkpoint at {path}", stage="download", path=str(path))
        return path
    name = os.fspath(model)
    if name in models.available():
        s = models.spec(name)
        path = hub.download(s.repo_id, s.filename)
        size = path.stat().st_size / 2**20
        print(f"{name}: {s.repo_id}/{s.filename} ({size:.0f} MiB, license {s.license}) at {path}")
        return path
    path = Path(name).expanduser()
    if path.exists():
        return path
    files = hub.list_repo_files(name)  # validates the repo id and reaches the hub or the cache
    wanted = [f for f in files if f.endswith((".safetensors", ".pth", ".pt", ".bin")) or f == "config.json"]
    paths = [hub.download(name, f) for f in wanted]
    if not paths:
        raise InputError(f"{name} has no checkpoint file", stage="download")
    return paths[0].parent


def copy_to_drive(path: str | os.PathLike[str], folder: str = "sbsconv") -> Path:
    """Copies a result into Google Drive (MyDrive/<folder>), mounting Drive if needed."""
    import shutil

    if not IN_COLAB:
        raise OptionError("copy_to_drive works in Colab")
    from google.colab import drive  # type: ignore[import-not-found]

    mount = Path("/content/drive")
    if not (mount / "MyDrive").exists():
        drive.mount(str(mount))
    target = mount / "MyDrive" / folder
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(path, target / Path(path).name))
