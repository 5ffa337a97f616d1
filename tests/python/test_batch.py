"""Many videos on one machine (issue 17, first part): sbsconv.convert_many and
`sbsconv convert ... --output-dir`: files, folders and globs; a broken file reported while the
rest continue; finished outputs skipped; one worker process per device."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sbsconv
from sbsconv.batch import find_inputs
from sbsconv.errors import OptionError


@pytest.fixture()
def folder(video_folder) -> Path:
    src = video_folder("batch")
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))  # not a video
    (src / "notes.txt").write_text("not a video, not taken")
    return src


def test_a_folder_converts_with_the_broken_file_reported(tmp_path, folder, tiny_model):
    out = tmp_path / "out"
    summary = sbsconv.convert_many(folder, out, recursive=True, model=str(tiny_model), progress=False)
    assert [Path(f.input).name for f in summary.done] == ["a.mp4", "b.mkv"]
    assert [Path(f.input).name for f in summary.failed] == ["broken.mp4"] and summary.failed[0].reason
    assert (out / "a.mp4").is_file() and (out / "sub" / "b.mkv").is_file()  # the tree is mirrored
    assert not (out / "broken.mp4").exists() and not [p for p in out.rglob(".*")]  # nothing half-written
    assert sbsconv.probe(out / "a.mp4").width == 192
    text = str(summary)
    assert text.startswith("2 done, 0 skipped, 1 failed") and "broken.mp4" in text
    # again: what is finished is skipped, the broken file fails again
    again = sbsconv.convert_many(folder, out, recursive=True, model=str(tiny_model), progress=False)
    assert len(again.skipped) == 2 and len(again.failed) == 1 and not again.done


def test_on_error_stop_and_globs(tmp_path, folder, tiny_model):
    out = tmp_path / "out"
    summary = sbsconv.convert_many([folder / "broken.mp4", folder / "a.mp4"], out, on_error="stop",
                                   model=str(tiny_model), progress=False)
    assert [f.status for f in summary.files] == ["failed", "not started"]
    globbed = find_inputs(str(folder / "*.mp4"))
    assert [p.name for p, _ in globbed] == ["a.mp4", "broken.mp4"]
    assert [p.name for p, _ in find_inputs(folder)] == ["a.mp4", "broken.mp4"]  # not recursive
    assert [p.name for p, _ in find_inputs(folder, recursive=True, pattern="*.mkv")] == ["b.mkv"]
    with pytest.raises(OptionError, match="no such file"):
        find_inputs(folder / "missing.mp4")
    with pytest.raises(OptionError, match="on_error"):
        sbsconv.convert_many(folder, out, on_error="ignore")


def test_headset_names_and_one_worker_per_device(tmp_path, folder, tiny_model):
    out = tmp_path / "out"
    summary = sbsconv.convert_many([folder / "a.mp4", folder / "sub" / "b.mkv"], out, devices=["cpu", "cpu"],
                                   headset_suffix=True, layout="half-sbs", model=str(tiny_model), progress=False)
    assert sorted(Path(f.output).name for f in summary.done) == ["a_3dh.mp4", "b_3dh.mkv"]
    assert {f.device for f in summary.done} == {"cpu"}


def test_command_line_many_inputs(tmp_path, folder, tiny_model):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", str(folder / "a.mp4"),
                           str(folder / "broken.mp4"), "--output-dir", str(out), "--model", str(tiny_model), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 1  # a file failed
    assert "1 done, 0 skipped, 1 failed" in proc.stdout and (out / "a.mp4").is_file()
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", str(folder / "a.mp4"), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--output-dir" in proc.stderr


def test_a_batchs_outputs_are_not_its_inputs(tmp_path, video_folder, tiny_model):
    # Note [3D input]: run twice with the outputs inside the input folder (recursive), or beside
    # their inputs (the same folder, headset names): the second run converts nothing again
    videos = video_folder("outputs")
    inside = videos / "3d"
    first = sbsconv.convert_many(videos, inside, recursive=True, model=str(tiny_model), progress=False)
    assert sorted(Path(f.input).name for f in first.done) == ["a.mp4", "b.mkv"]
    second = sbsconv.convert_many(videos, inside, recursive=True, model=str(tiny_model), progress=False)
    assert not second.done and not second.failed
    assert sorted(Path(f.input).name for f in second.skipped) == ["a.mp4", "b.mkv"]  # not 3d/a.mp4
    assert not (inside / "3d").exists()
    # the walk skips only the outputs' folder: given as an input itself, it is walked
    assert [p.name for p, _ in find_inputs(inside, output_dir=inside)] == ["a.mp4"]

    beside = sbsconv.convert_many(videos / "a.mp4", videos, headset_suffix=True, model=str(tiny_model),
                                  progress=False)
    assert [Path(f.output).name for f in beside.done] == ["a_LR.mp4"]
    again = sbsconv.convert_many(videos, videos, headset_suffix=True, model=str(tiny_model), progress=False)
    by_name = {Path(f.input).name: f for f in again.files}
    assert by_name["a.mp4"].status == "skipped" and by_name["a.mp4"].reason == "already converted"
    assert by_name["a_LR.mp4"].status == "skipped", str(again)
    assert "output for" in by_name["a_LR.mp4"].reason and "a.mp4" in by_name["a_LR.mp4"].reason
    assert not (videos / "a_LR_LR.mp4").exists()


def test_a_ray_tasks_progress_before_the_length_is_known_reaches_the_caller_as_zero():
    """convert() reports fraction None until it knows the video's length; on a loaded machine a
    Ray task's first report comes that early, and it once failed the task (float(None)). (Ray
    itself is not needed here: the task's reporter is given a stand-in actor and clock.)"""
    from sbsconv import batch

    sent = []

    class Method:
        def remote(self, *args):
            sent.append(args)

    class Reporter:
        update = Method()

    clock = iter([10.0, 10.1, 10.2, 11.0])
    report = batch._task_reporter(Reporter(), 3, clock=lambda: next(clock))
    report({"frames_done": 0, "frames_total": None, "fraction": None})  # sent: the first report
    report({"frames_done": 1, "frames_total": 10, "fraction": 0.1})  # within 0.5 s: held back
    report({"frames_done": 10, "frames_total": 10, "fraction": 1.0})  # the end: always sent
    report({"frames_done": 10, "frames_total": 10, "fraction": 1.0})
    assert [(i, f) for i, f, _ in sent] == [(3, 0.0), (3, 1.0), (3, 1.0)]
    assert all(pid == os.getpid() for *_, pid in sent)


def test_a_folder_without_videos_is_said(tmp_path, folder, caplog):
    # nothing to convert anywhere: an OptionError that says what was looked for, and where else
    # to look; one empty folder beside videos: a warning, the others convert
    empty = tmp_path / "empty"
    (empty / "season").mkdir(parents=True)
    (empty / "notes.txt").write_text("no video here")
    with pytest.raises(OptionError, match=r"no videos \(\.mp4, .*\) in '.*empty' \(their subfolders too: "
                                          r"--recursive / recursive=True\)"):
        find_inputs(empty)
    with pytest.raises(OptionError, match=r"no files matching '\*\.avi' in"):
        find_inputs(empty, pattern="*.avi")
    with pytest.raises(OptionError, match="no videos"):
        sbsconv.convert_many(empty, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with caplog.at_level("WARNING", logger="sbsconv"):
        found = find_inputs([empty, folder])
    assert [p.name for p, _ in found] == ["a.mp4", "broken.mp4"]
    assert "no videos" in caplog.text and "empty" in caplog.text
    # the advice followed: the subfolders too
    shutil.copyfile(folder / "a.mp4", empty / "season" / "episode.mp4")
    assert [p.name for p, _ in find_inputs(empty, recursive=True)] == ["episode.mp4"]
