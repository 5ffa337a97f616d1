"""The entry points' error boundaries: batch workers that fail or die (never a hang), the
command line's one-line internal errors and exit codes, flags that take effect or are refused,
sbsconv-bench going on past a failing approach, and doctor's precision line.

Tests that could hang on a regression run under ``within(seconds, ...)``: a hang fails."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import sbsconv
from sbsconv import bench, cli, conversion
from sbsconv.batch import BatchSummary, _WorkerPool
from sbsconv.errors import InternalError

FAST = {"input_size": 70, "preset": "ultrafast", "progress": False}


def within(seconds: float, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread: its result (or its exception), or a test failure
    when it has not returned after ``seconds`` (a hang fails instead of blocking the run)."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {seconds} s: it hangs")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _pool_job(payload: str, device: str):
    """A worker pool's job (run in the spawned worker, imported from this module by name)."""
    if payload == "type-error":
        raise TypeError("an unexpected bug")
    if payload == "exit":
        os._exit(3)
    return payload, device


@pytest.fixture()
def videos(video_folder) -> Path:
    """Two tiny videos, one in a subfolder (mirrored under the output folder)."""
    return video_folder("entry")


# ---- batch: workers that fail or die -----------------------------------------------------------


def test_a_worker_pool_reports_any_exception_and_a_dead_worker():
    def go():
        out = {}
        with _WorkerPool(["cpu"], _pool_job) as pool:
            for index, payload in enumerate(["first", "type-error", "exit", "after"]):
                pool.submit(index, payload)
            for _ in range(4):
                index, value = pool.result()
                out[index] = value
        return out

    out = within(90, go)
    assert out[0] == ("first", "cpu") and out[3] == ("after", "cpu")  # a new worker took over
    assert isinstance(out[1], InternalError) and "TypeError: an unexpected bug" in str(out[1])
    assert "Traceback" in out[1].details  # the worker's traceback, for the report
    assert isinstance(out[2], InternalError) and "died (exit code 3)" in str(out[2])


@pytest.mark.parametrize("devices", [None, ["cpu"]], ids=["in-process", "worker"])
def test_an_output_folder_blocked_by_a_file_fails_that_file_only(tmp_path, videos, tiny_model,
                                                                 devices):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the subfolder's outputs would go")
    summary = within(120, sbsconv.convert_many, videos, out, recursive=True, devices=devices,
                     model=str(tiny_model), **FAST)
    assert [Path(f.input).name for f in summary.done] == ["a.mp4"]
    (failed,) = summary.failed
    assert Path(failed.input).name == "b.mkv"
    assert "cannot make the output folder" in failed.reason and str(out / "sub") in failed.reason
    assert (out / "sub").is_file()


def test_an_unexpected_exception_in_convert_is_that_files_failure(tmp_path, videos, tiny_model,
                                                                   monkeypatch):
    real = conversion.convert

    def convert(source, target, *args, **kwargs):
        if Path(source).name == "a.mp4":
            raise TypeError("'NoneType' object is not iterable")
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(conversion, "convert", convert)
    summary = sbsconv.convert_many(videos, tmp_path / "out", recursive=True, model=str(tiny_model),
                                   **FAST)
    (failed,) = summary.failed
    assert Path(failed.input).name == "a.mp4"
    assert failed.reason == "TypeError: 'NoneType' object is not iterable"
    assert "Traceback" in failed.details and "raise TypeError" in failed.details
    assert [Path(f.input).name for f in summary.done] == ["b.mkv"]  # the batch went on


def test_a_killed_worker_fails_its_file_and_the_batch_stops_per_on_error(tmp_path, videos,
                                                                          tiny_model, monkeypatch):
    monkeypatch.setenv("SBSCONV_TEST_FAULT", "decode:0:kill")  # the worker kills itself (SIGKILL)
    inputs = [videos / "a.mp4", videos / "sub" / "b.mkv"]
    summary = within(120, sbsconv.convert_many, inputs, tmp_path / "out", devices=["cpu"],
                     on_error="stop", model=str(tiny_model), **FAST)
    assert [f.status for f in summary.files] == ["failed", "not started"]
    reason = summary.failed[0].reason
    assert "worker process on cpu died" in reason
    assert "SIGKILL" in reason and "exit code -9" in reason
    assert not (tmp_path / "out" / "a.mp4").exists()


def test_a_split_conversion_whose_worker_dies_is_a_clear_error(tmp_path, testsrc, tiny_model,
                                                               monkeypatch):
    clip = testsrc("entry_keyframes.mp4", size="96x64", rate=25, seconds=1.0, extra=["-g", "5"])
    out = tmp_path / "split.mp4"
    monkeypatch.setenv("SBSCONV_TEST_FAULT", "decode:0:kill")
    died = r"part 1 of 2 failed: the worker process on cpu died"
    with pytest.raises(InternalError, match=died) as caught:
        within(120, sbsconv.convert_split, clip, out, split=2, warm_up=0.2, devices=["cpu"],
               model=str(tiny_model), input_size=70, preset="ultrafast")
    assert "SIGKILL" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no parts folder


# ---- the command line: one error boundary ------------------------------------------------------


@pytest.fixture()
def logs(tmp_path, monkeypatch) -> Path:
    """Internal-error reports go under tmp_path (not the user's cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "sbsconv" / "logs"


def test_an_unexpected_exception_is_one_line_with_a_report(tmp_path, logs, capsys, monkeypatch):
    import sbsconv.media

    def probe(path):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(sbsconv.media, "probe", probe)
    assert cli.main(["probe", str(tmp_path / "clip.mp4")]) == cli.EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("sbsconv: internal error")
    assert "RuntimeError: something nobody expected" in err
    assert "--debug" in err and "Traceback" not in err
    (report,) = logs.iterdir()
    assert str(report) in err
    text = report.read_text()
    assert "Traceback" in text and "RuntimeError: something nobody expected" in text
    assert "command: sbsconv probe" in text
    # --debug (before or after the command) and -v print the traceback too
    for argv in (["--debug", "probe", "x.mp4"], ["probe", "x.mp4", "--debug"],
                 ["-v", "probe", "x.mp4"]):
        assert cli.main(argv) == cli.EXIT_INTERNAL
        err = capsys.readouterr().err
        assert "Traceback" in err and "sbsconv: internal error" in err.strip().splitlines()[-1]


def test_ctrl_c_is_one_line_and_130(logs, capsys, monkeypatch):
    import sbsconv.media

    def probe(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(sbsconv.media, "probe", probe)
    assert cli.main(["probe", "x.mp4"]) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.strip() == "sbsconv: interrupted"


def test_help_documents_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for code in ("0 ok", "1 other errors", "2 bad usage", "3 unusable input", "4 encoding",
                 "5 model failure", "70 internal error", "130 interrupted"):
        assert code in out


def test_reported_crashes_are_errors_with_exit_codes(tmp_path, logs, capsys):
    sample = str(tmp_path / "in.mp4")  # checked before the input is opened
    out = tmp_path / "out.mp4"
    assert cli.main(["convert", sample, str(out), "--split", "two"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.strip() == ("sbsconv: error: --split must be a positive integer (the number of "
                           "parts) or auto, got 'two'")
    assert cli.main(["convert", sample, str(out), "--split", "0"]) == cli.EXIT_USAGE
    assert "--split must be a positive integer" in capsys.readouterr().err
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert cli.main(["convert", sample, "--output-dir", str(blocker)]) == cli.EXIT_OUTPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is a file" in err and "Traceback" not in err
    assert not logs.exists()  # errors with a message are not internal errors
    assert not out.exists() and blocker.read_text() == "a file"


# ---- the command line: every flag takes effect or is refused -----------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--devices", "cpu,cpu"], "--devices runs one worker per device"),
        (["--backend", "ray"], "--backend ray needs --output-dir"),
        (["--address", "auto"], "--address applies to --backend ray only"),
        (["--retries", "1"], "--retries applies to --backend ray only"),
        (["--warm-up", "2"], "--warm-up applies to --split only"),
        (["--recursive"], "--recursive applies to many inputs"),
        (["--pattern", "*.mkv"], "--pattern applies to many inputs"),
        (["--no-skip-existing"], "--no-skip-existing applies to many inputs"),
        (["--on-error", "stop"], "--on-error applies to many inputs"),
        (["--split", "2", "--retries", "1"], "--retries applies to --backend ray only"),
        (["--split", "2", "--on-error", "stop"], "--on-error applies to many inputs"),
        (["--devices", ""], "--devices must name devices"),
    ],
)
def test_a_flag_that_does_not_apply_to_one_file_is_refused(tmp_path, capsys, extra, message):
    out = tmp_path / "out.mp4"
    assert cli.main(["convert", str(tmp_path / "in.mp4"), str(out), *extra]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "2"], "--split converts one file in parts"),
        (["--warm-up", "2"], "--warm-up applies to --split only"),
        (["--retries", "1"], "--retries applies to --backend ray only"),
        (["--address", "auto"], "--address applies to --backend ray only"),
    ],
)
def test_a_flag_that_does_not_apply_to_many_files_is_refused(tmp_path, capsys, extra, message):
    argv = ["convert", str(tmp_path / "in.mp4"), "--output-dir", str(tmp_path / "out"), *extra]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_batch_flags_reach_convert_many_and_convert_split(tmp_path, capsys, monkeypatch):
    import sbsconv.batch

    calls = []

    def convert_many(inputs, output_dir, options, **kwargs):
        calls.append(kwargs)
        return BatchSummary(files=(), seconds=0.0)

    class Split:
        output, frames, parts, seconds = "out.mp4", 10, ((0.0, 1.0), (1.0, None)), 0.1

    def convert_split(input, output, options, **kwargs):
        calls.append(kwargs)
        return Split()

    monkeypatch.setattr(sbsconv.batch, "convert_many", convert_many)
    monkeypatch.setattr(sbsconv.batch, "convert_split", convert_split)
    src = str(tmp_path / "in")
    many_dir = ["--output-dir", str(tmp_path / "o")]
    assert cli.main(["convert", src, *many_dir, "--devices", "cpu, cpu", "--on-error", "stop",
                     "--recursive", "--pattern", "*.mkv", "--no-skip-existing"]) == 0
    assert cli.main(["convert", src, *many_dir, "--backend", "ray", "--address", "auto",
                     "--retries", "5"]) == 0
    assert cli.main(["convert", src, str(tmp_path / "o.mp4"), "--split", "3", "--devices", "all",
                     "--warm-up", "1.5"]) == 0
    assert cli.main(["convert", src, str(tmp_path / "o.mp4"), "--split", "auto", "--backend", "ray",
                     "--retries", "0"]) == 0
    many, ray_many, split, ray_split = calls
    assert many["devices"] == ["cpu", "cpu"] and many["on_error"] == "stop" and many["recursive"]
    assert many["pattern"] == "*.mkv" and many["skip_existing"] is False
    assert many["backend"] == "local"
    assert (ray_many["backend"], ray_many["address"], ray_many["retries"]) == ("ray", "auto", 5)
    assert (split["split"], split["devices"], split["warm_up"]) == (3, "all", 1.5)
    assert (ray_split["split"], ray_split["backend"], ray_split["retries"]) == ("auto", "ray", 0)
    capsys.readouterr()


def test_ui_help_says_the_work_folder_the_code_uses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["ui", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "temporary folder" not in out and "~/.cache/sbsconv/ui" in out  # ui.default_work_dir()


# ---- sbsconv-bench -----------------------------------------------------------------------------


def test_bench_reports_a_failing_approach_and_writes_the_others(tmp_path, testsrc, tiny_model,
                                                                monkeypatch):
    clip = testsrc("entry_bench.mp4", size="160x96", rate=10, seconds=1.0)
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # loads as nothing known
    real = sbsconv.convert

    def convert(*args, model=None, **kwargs):
        if model == "exploding-model":
            raise RuntimeError("a crash inside convert")
        return real(*args, model=model, **kwargs)

    monkeypatch.setattr(sbsconv, "convert", convert)
    results = bench.run(["--seconds", "0.5", "--input", str(clip), "--no-normalize",
                         "--device", "cpu", "--models", f"{tiny_model},{broken},exploding-model",
                         "--out", str(tmp_path / "runs")])
    ok, unloadable, exploded = results["approaches"]
    assert ok["status"] == "ok" and ok["frames"] == 5
    assert unloadable["status"] in ("skipped", "failed") and str(broken) in unloadable["reason"]
    assert exploded["status"] == "failed"
    assert exploded["reason"] == "RuntimeError: a crash inside convert"
    folder = Path(results["folder"])
    written = json.loads((folder / "results.json").read_text())
    statuses = [r["status"] for r in written["approaches"]]
    assert statuses == [ok["status"], unloadable["status"], "failed"]
    table = (folder / "results.md").read_text()
    assert "| ok |" in table and "failed: RuntimeError: a crash inside convert" in table


def test_bench_main_has_the_same_error_boundary(logs, capsys, monkeypatch):
    def run(argv):
        raise ValueError("an unexpected bug")

    monkeypatch.setattr(bench, "run", run)
    assert bench.main(["--seconds", "1"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "ValueError: an unexpected bug" in err
    assert err.startswith("sbsconv-bench: internal error") and len(list(logs.iterdir())) == 1


# ---- doctor --------------------------------------------------------------------------------------


def test_doctor_reports_the_precision_auto_resolves_to_on_the_cpu():
    from sbsconv.models.precision import auto_cpu_precision

    report = sbsconv.doctor(device="cpu", hub=False)
    precision, _ = auto_cpu_precision(bf16_on_amx=True)  # the default model, a Depth-Anything-V2
    assert report.choices["precision"].startswith(f"{precision} (auto on the CPU")
    assert f"  precision: {precision} (auto on the CPU" in str(report)


def test_an_sbsconv_error_stays_its_message_and_exit_code(tmp_path, logs, capsys):
    assert cli.main(["probe", str(tmp_path / "missing.mp4")]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("sbsconv: error:") and len(err.strip().splitlines()) == 1
    assert not logs.exists()


def test_bench_that_converted_nothing_says_so_and_fails(tmp_path, testsrc, capsys):
    # a mistyped model name alone: skipped, and the run's exit code says nothing was measured
    clip = testsrc("entry_bench_none.mp4", size="160x96", rate=10, seconds=1.0)
    code = bench.main(["--seconds", "0.5", "--input", str(clip), "--no-normalize", "--device", "cpu",
                       "--models", "depth-anything-v9", "--out", str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert code == 1
    assert "skipped: unknown model 'depth-anything-v9'" in captured.out
    assert captured.err.strip().endswith("no approach converted; the table above says why each was skipped or failed")
    assert "Traceback" not in captured.err
