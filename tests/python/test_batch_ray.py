"""convert_many(backend="ray") (issue 17): files as Ray tasks on a local cluster started here
with 2 CPUs; tiny models and clips of a second or two. Skips only if Ray (the `ray` extra, which
the README's test command installs) is missing."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import sbsconv
from helpers import ffprobe, run
from sbsconv.errors import OptionError

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # (before Ray is imported: see batch.py)
ray = pytest.importorskip("ray", reason="Ray is not installed (the 'ray' extra)")

FAST = dict(input_size=70, preset="ultrafast", progress=False)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, testsrc) -> Path:
    """Two clips and a file that is not a video."""
    root = tmp_path_factory.mktemp("ray_inputs")
    shutil.copy(testsrc("ray_a.mp4", size="160x120", seconds=1.0, audio=True), root / "a.mp4")
    shutil.copy(testsrc("ray_b.mp4", size="128x96", seconds=1.2), root / "b.mkv")
    (root / "c.mp4").write_bytes(b"not a video at all")
    return root


def _framemd5(path) -> list[str]:
    out = run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"]).stdout.decode()
    return [line.split(",")[-1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def _reasons(summary) -> str:
    """Each file's outcome, for a failed assertion's message."""
    return "; ".join(f"{Path(f.input).name}: {f.status} {f.reason} {f.details}".strip() for f in summary.files)


def _scratch(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def test_a_folder_on_ray_matches_the_local_run(cluster, folder, tmp_path, tiny_model):
    events = []
    summary = sbsconv.convert_many(folder, tmp_path / "ray", model=str(tiny_model), backend="ray",
                                   on_progress=events.append, **FAST)
    assert [f.status for f in summary.files] == ["done", "done", "failed"], _reasons(summary)
    assert "cannot open" in summary.failed[0].reason and not (tmp_path / "ray" / "c.mp4").exists()
    assert all(" on " in f.device for f in summary.done)  # the device and the node that ran it
    assert any("running" in e for e in events) and events[-1]["files_done"] == 3
    local = sbsconv.convert_many(folder, tmp_path / "local", model=str(tiny_model), **FAST)
    for ray_file, local_file in zip(summary.done, local.done, strict=True):
        assert ray_file.frames == local_file.frames
        assert _framemd5(ray_file.output) == _framemd5(local_file.output)
    streams = ffprobe(tmp_path / "ray" / "a.mp4", "-show_streams")["streams"]
    assert [s["codec_type"] for s in streams] == ["video", "audio"]
    assert not _scratch(tmp_path)
    # again: everything finished is skipped
    again = sbsconv.convert_many(folder, tmp_path / "ray", model=str(tiny_model), backend="ray", **FAST)
    assert [f.status for f in again.files] == ["skipped", "skipped", "failed"], _reasons(again)


def test_a_worker_killed_mid_task_is_retried_and_resumes(cluster, testsrc, tmp_path, tiny_model):
    """The worker's process is killed once a few segments are finished; Ray runs the task again
    and the conversion continues from the file's journal."""
    src = tmp_path / "in"
    src.mkdir()
    # 150 frames packed as 3840x1080: long enough (seconds) for the kill to land mid-run
    shutil.copy(testsrc("ray_long.mp4", size="320x240", seconds=6.0), src / "long.mp4")
    out = tmp_path / "out"
    journal = out / ".long.mp4.sbsconv-resume"
    killed = []

    def kill_when_segments_exist(event: dict) -> None:
        pid = event.get("pids", {}).get((src / "long.mp4").as_posix())
        # a segment's state file is written just before its record is appended to the journal
        # (segment files are opened when they start, several at once when encoding in parallel):
        # three states mean the first two segments' 20 frames are in the journal
        if not killed and pid and len(list(journal.glob("segment_*.state"))) >= 3:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = sbsconv.convert_many(src, out, model=str(tiny_model), backend="ray", eye_size="1080",
                                   segment_seconds=0.4, on_progress=kill_when_segments_exist, **FAST)
    assert killed, f"the conversion ended before a worker could be killed: {_reasons(summary)}"
    (outcome,) = summary.files
    assert outcome.status == "done" and outcome.frames == 150 and outcome.resumed_from >= 20, _reasons(summary)
    assert len(_framemd5(outcome.output)) == 150
    assert not _scratch(tmp_path)


def test_cancelling_stops_every_task_and_leaves_nothing(cluster, testsrc, tmp_path, tiny_model):
    """A raising progress callback (as Ctrl-C) cancels the running and the queued tasks: each
    conversion stops cleanly, nothing appears under an output name and no temporary is left."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("one.mp4", "two.mp4", "three.mp4"):
        # long enough that no file can finish before the first progress report on a loaded machine
        shutil.copy(testsrc("ray_cancel_20s.mp4", size="320x240", seconds=20.0), src / name)

    class Stop(Exception):
        pass

    def stop(event: dict) -> None:
        if event.get("running"):  # the first report of a file under way
            raise Stop

    t0 = time.monotonic()
    with pytest.raises(Stop):
        sbsconv.convert_many(src, tmp_path / "out", model=str(tiny_model), backend="ray", eye_size="1080",
                             on_progress=stop, **FAST)
    assert time.monotonic() - t0 < 60
    assert not list((tmp_path / "out").glob("*.mp4"))  # no output under its name
    assert not _scratch(tmp_path)


def test_ray_options_are_checked(tmp_path, folder):
    with pytest.raises(OptionError, match="backend"):
        sbsconv.convert_many(folder, tmp_path, backend="dask")
    with pytest.raises(OptionError, match="devices"):
        sbsconv.convert_many(folder, tmp_path, backend="ray", devices=["cuda:0"])
    with pytest.raises(OptionError, match="address"):
        sbsconv.convert_many(folder, tmp_path, address="auto")


def test_the_command_line_joins_a_running_cluster(cluster, folder, tmp_path, tiny_model):
    import subprocess
    import sys

    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", str(folder), "--output-dir",
                           str(tmp_path / "out"), "--backend", "ray", "--address", address, "--model",
                           str(tiny_model), "--input-size", "70", "--preset", "ultrafast", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # the broken file
    assert "2 done, 0 skipped, 1 failed" in proc.stdout
    assert (tmp_path / "out" / "a.mp4").is_file() and (tmp_path / "out" / "b.mkv").is_file()


def test_a_split_conversion_on_ray_equals_a_single_run(cluster, testsrc, tmp_path, tiny_model):
    """Segment-parallel (Note [Parts of one video]): two parts as Ray tasks, joined; every frame
    once with the single run's timestamps and pictures (40 dB at every frame)."""
    import numpy as np

    clip = testsrc("ray_split.mp4", size="160x120", seconds=4.0, audio=True, extra=["-g", "25"])
    single = sbsconv.convert(clip, tmp_path / "single.mp4", model=str(tiny_model), **FAST)
    result = sbsconv.convert_split(clip, tmp_path / "split.mp4", split=2, backend="ray", model=str(tiny_model),
                                   **FAST)
    assert len(result.parts) == 2 and result.frames == single.frames == 100

    def frames(path):
        raw = run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]).stdout
        return np.frombuffer(raw, np.uint8).reshape(-1, 120, 320, 3).astype(np.float64)

    mse = ((frames(single.output) - frames(result.output)) ** 2).reshape(100, -1).mean(1)
    assert (10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))).min() >= 40
    times = [ffprobe(p, "-select_streams", "v", "-show_frames", "-show_entries", "frame=pts_time")["frames"]
             for p in (single.output, result.output)]
    assert [f["pts_time"] for f in times[0]] == [f["pts_time"] for f in times[1]]
