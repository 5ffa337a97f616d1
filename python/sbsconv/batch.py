"""Many videos: ``sbsconv.convert_many()`` converts files, folders and globs into an output
folder, one file at a time per worker, and reports what happened to each.

    summary = sbsconv.convert_many(["season1/", "extra.mkv"], "season1_3d/", recursive=True,
                                   layout="half-sbs")
    print(summary)              # done, skipped, failed (with reasons), total time
    summary.failed              # the FileOutcome of each failure

Each file is an ordinary :func:`sbsconv.convert` with the same options (one checked
``ConvertOptions`` for all), so each keeps its own resume journal: running the same command
again skips finished files and continues interrupted ones. ``devices=["cuda:0", "cuda:1"]`` (or
``"all"``) runs one worker process per device, each converting whole files. The scheduling of
many conversions lives here and only here: the engine stays one process converting one video.
"""

from __future__ import annotations

import fnmatch
import glob
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbsconv.errors import OptionError, SbsconvError
from sbsconv.options import CALL_KEYWORDS, CONTAINERS, ConvertOptions

__all__ = ["BatchSummary", "FileOutcome", "convert_many", "find_inputs", "output_for"]

# what a folder's files are taken as when no pattern is given
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg",
                    ".wmv", ".flv", ".3gp")


@dataclass(frozen=True)
class FileOutcome:
    input: str
    output: str
    status: str  # "done", "skipped" (already converted), "failed", "not started" (stopped earlier)
    reason: str = ""  # why it failed or was skipped
    seconds: float = 0.0
    frames: int = 0
    device: str = ""


@dataclass(frozen=True)
class BatchSummary:
    files: tuple[FileOutcome, ...]
    seconds: float

    def _with(self, status: str) -> tuple[FileOutcome, ...]:
        return tuple(f for f in self.files if f.status == status)

    @property
    def done(self) -> tuple[FileOutcome, ...]:
        return self._with("done")

    @property
    def skipped(self) -> tuple[FileOutcome, ...]:
        return self._with("skipped")

    @property
    def failed(self) -> tuple[FileOutcome, ...]:
        return self._with("failed")

    def __str__(self) -> str:
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
                 + (f", {len(self._with('not started'))} not started" if self._with("not started") else "")
                 + f" in {self.seconds:.1f} s"]
        for f in self.files:
            detail = f" ({f.frames} frames, {f.seconds:.1f} s{', ' + f.device if f.device else ''})" \
                if f.status == "done" else (f": {f.reason}" if f.reason else "")
            lines.append(f"  {f.status:11s} {f.input} -> {f.output}{detail}")
        return "\n".join(lines)


def find_inputs(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, recursive: bool = False,
                pattern: str | None = None) -> list[tuple[Path, Path]]:
    """The files to convert, each with the folder its output path is relative to: files as
    given, the videos of folders (``recursive``: their subfolders too; ``pattern``: a file-name
    glob such as ``"*.mkv"`` instead of the video extensions), and globs. In order, once each."""
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def take(path: Path, base: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, base))

    def wanted(path: Path) -> bool:
        if pattern is not None:
            return fnmatch.fnmatch(path.name, pattern)
        return path.suffix.lower() in VIDEO_EXTENSIONS

    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files = path.rglob("*") if recursive else path.iterdir()
            for f in sorted(p for p in files if p.is_file() and not p.name.startswith(".")):
                if wanted(f):
                    take(f, path)
        elif path.is_file():
            take(path, path.parent)
        elif any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=recursive))
            if not matches:
                raise OptionError(f"no file matches {text!r}")
            for m in matches:
                if Path(m).is_file():
                    take(Path(m), Path(m).parent)
        else:
            raise OptionError(f"no such file or folder: {text!r}")
    return found


def output_for(path: Path, base: Path, output_dir: Path, options: ConvertOptions) -> Path:
    """A file's output: the same relative path under ``output_dir``, in the input's container
    when convert() writes it (else MP4), named for headsets when ``headset_suffix`` says so."""
    from sbsconv.conversion import output_name

    relative = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
    suffix = path.suffix.lower() if path.suffix.lower() in CONTAINERS else ".mp4"
    if options.layout in ("apple-3d", "spatial") and suffix == ".mkv":
        suffix = ".mov"  # Vision Pro reads its boxes in QuickTime files
    out = output_dir / relative.with_suffix(suffix)
    return Path(output_name(out, options.layout) if options.headset_suffix else out)


def _finished(output: Path) -> bool:
    """An output that a run completed: it exists and no resume journal beside it says that a
    run is still under way."""
    journal = output.with_name("." + output.name + ".sbsconv-resume")
    return output.is_file() and not journal.exists()


def _convert_one(job: tuple[str, str, ConvertOptions, bool]) -> FileOutcome:
    from sbsconv.conversion import convert

    source, target, options, progress = job
    t0 = time.perf_counter()
    try:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        result = convert(source, target, options, progress=progress)
    except SbsconvError as exc:
        return FileOutcome(source, target, "failed", str(exc).split("\n")[0], time.perf_counter() - t0,
                           device=options.device)
    return FileOutcome(source, result.output, "done", "", time.perf_counter() - t0, result.frames,
                       device=options.device)


def _worker(device: str, jobs: Any, results: Any) -> None:
    """One device's worker process: converts whole files until the queue says stop."""
    import warnings

    from sbsconv.errors import SbsconvWarning

    warnings.simplefilter("ignore", SbsconvWarning)  # reported in the file's result instead
    while True:
        job = jobs.get()
        if job is None:
            return
        index, source, target, options = job
        results.put((index, _convert_one((source, target, options.replace(device=device), False))))


def _devices(devices: str | Iterable[str] | None) -> list[str] | None:
    if devices is None:
        return None
    if devices == "all":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    if isinstance(devices, str):
        devices = [devices]
    out = [str(d) for d in devices]
    if not out:
        raise OptionError("devices must name at least one device, or be 'all'")
    return out


def convert_many(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    options: ConvertOptions | None = None,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    skip_existing: bool = True,
    devices: str | Iterable[str] | None = None,
    on_error: str = "continue",
    progress: bool = True,
    on_progress: Callable[[dict], Any] | None = None,
    **overrides: Any,
) -> BatchSummary:
    """Converts every file of ``inputs`` (files, folders, globs; see :func:`find_inputs`) into
    ``output_dir`` with the same options (a ConvertOptions and/or keywords, as
    :func:`sbsconv.convert`). A file that fails is reported and the others continue
    (``on_error="stop"``: nothing more starts after a failure); finished outputs are skipped
    (``skip_existing``), interrupted ones continue from their journals. ``devices``: one worker
    process per device (``"all"``: every CUDA device, or the CPU); None converts in this
    process. ``on_progress`` receives {"files_done", "files_total", "current"} after each file.
    Returns a :class:`BatchSummary` (also what the command line prints)."""
    ConvertOptions.check_names(overrides, also=CALL_KEYWORDS)
    options = ConvertOptions.merged(options, overrides)
    if on_error not in ("continue", "stop"):
        raise OptionError(f"on_error must be 'continue' or 'stop', got {on_error!r}")
    if options.depth is not None or options.depth_out is not None or options.infill_mask is not None:
        raise OptionError("depth, depth_out and infill_mask name one file each: use convert() per file for them")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = _devices(devices)
    files = find_inputs(inputs, recursive=recursive, pattern=pattern)
    t0 = time.perf_counter()
    outcomes: list[FileOutcome | None] = [None] * len(files)
    jobs: list[tuple[int, str, str]] = []
    for i, (path, base) in enumerate(files):
        target = output_for(path, base, out_dir, options)
        if path.resolve() == target.resolve():
            outcomes[i] = FileOutcome(str(path), str(target), "failed", "the output would overwrite the input")
        elif skip_existing and _finished(target):
            outcomes[i] = FileOutcome(str(path), str(target), "skipped", "already converted")
        else:
            jobs.append((i, str(path), str(target)))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="file", desc="files", position=0, leave=True,
                   initial=sum(o is not None for o in outcomes))

    def record(i: int, outcome: FileOutcome) -> None:
        outcomes[i] = outcome
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{Path(outcome.input).name}: {outcome.status}")
        if on_progress is not None:
            on_progress({"files_done": sum(o is not None for o in outcomes), "files_total": len(files),
                         "current": outcome.input, "status": outcome.status})

    stopped = False
    try:
        if workers is None:
            for i, source, target in jobs:
                if stopped:
                    break
                outcome = _convert_one((source, target, options, progress))
                record(i, outcome)
                stopped = on_error == "stop" and outcome.status == "failed"
        else:
            context = multiprocessing.get_context("spawn")  # CUDA and threads do not survive fork
            queue, results = context.Queue(), context.Queue()
            processes = [context.Process(target=_worker, args=(d, queue, results), daemon=True) for d in workers]
            for p in processes:
                p.start()
            pending = list(jobs)
            running = 0
            try:
                while pending and running < len(processes):  # one file per worker at a time
                    i, source, target = pending.pop(0)
                    queue.put((i, source, target, options))
                    running += 1
                while running:
                    i, outcome = results.get()
                    running -= 1
                    record(i, outcome)
                    stopped = stopped or (on_error == "stop" and outcome.status == "failed")
                    if pending and not stopped:
                        j, source, target = pending.pop(0)
                        queue.put((j, source, target, options))
                        running += 1
            finally:
                for _ in processes:
                    queue.put(None)
                for p in processes:
                    p.join(timeout=30)
                    if p.is_alive():
                        p.terminate()
    finally:
        if bar is not None:
            bar.close()
    final = tuple(o if o is not None else FileOutcome(files[i][0].as_posix(), "", "not started",
                                                      "stopped after a failure (on_error='stop')")
                  for i, o in enumerate(outcomes))
    return BatchSummary(files=final, seconds=time.perf_counter() - t0)
