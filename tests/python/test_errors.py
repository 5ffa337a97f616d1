"""Bad input: every case raises its documented exception, in a process that exits normally,
and leaves nothing under the output name."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import textwrap

import pytest

import sbsconv
from sbsconv import errors
from sbsconv.errors import OptionError

from helpers import data, run_python

# The cases run in fresh interpreters: a crash (or a hang) there cannot take the test session
# down with it, and the test sees exactly how the process ended. One interpreter per action
# runs every case, to keep the cost of importing torch down.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    import sbsconv
    from sbsconv import media
    p = json.loads(sys.argv[1])
    results = {}
    for name, path in p["cases"].items():
        result = {"warnings": []}
        output = os.path.join(p["outdir"], name + ".mp4")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if p["action"] == "probe":
                    sbsconv.probe(path)
                elif p["action"] == "read":
                    result["frames"] = sum(len(b) for b in media.read_frames(path, strict=p["strict"]))
                else:
                    media.reencode(path, output)
                result["error"] = None
            except Exception as exc:
                result["error"] = type(exc).__name__
                result["mro"] = [c.__name__ for c in type(exc).__mro__]
                result["message"] = str(exc)
                result["path"] = getattr(exc, "path", None)
                result["stage"] = getattr(exc, "stage", None)
        result["warnings"] = [str(w.message) for w in caught
                              if issubclass(w.category, sbsconv.errors.SbsconvWarning)]
        result["output_exists"] = os.path.exists(output)
        results[name] = result
    print(json.dumps(results))
    """
)


def attempt(action: str, cases: dict, outdir, strict: bool = False) -> dict:
    params = {"action": action, "cases": {k: str(v) for k, v in cases.items()},
              "outdir": str(outdir), "strict": strict}
    proc = run_python(SCRIPT, json.dumps(params), timeout=300)
    assert proc.returncode == 0, f"the process did not exit normally:\n{proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        if result["error"] is not None:
            assert not result["output_exists"], f"{name}: a failed run left its output file"
    leftovers = [p for p in os.listdir(outdir) if p.endswith(".part")]
    assert leftovers == [], f"temporary files left: {leftovers}"
    return results


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, make_clip):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("These are my notes, not a video.\n" * 40)
    (d / "random.mp4").write_bytes(os.urandom(300_000))
    audio_only = make_clip(
        "audio_only.m4a", ["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"]
    )
    full = make_clip(
        "to_truncate.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-c:v", "libx264",
         "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    )
    blob = full.read_bytes()
    (d / "truncated.mp4").write_bytes(blob[: len(blob) // 2])
    moov_last = make_clip(
        "moov_last.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2", "-c:v", "libx264",
         "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    )
    blob = moov_last.read_bytes()
    (d / "truncated_no_index.mp4").write_bytes(blob[: len(blob) // 2])
    os.mkdir(d / "folder.mp4")
    return {
        "missing": d / "missing.mp4",
        "empty": d / "empty.mp4",
        "text": d / "notes.mp4",
        "random": d / "random.mp4",
        "audio_only": audio_only,
        "truncated": d / "truncated.mp4",
        "truncated_no_index": d / "truncated_no_index.mp4",
        "folder": d / "folder.mp4",
    }


UNUSABLE = {
    "missing": "InputNotFoundError",
    "empty": "InputError",
    "text": "InputError",
    "random": "InputError",
    "audio_only": "InputError",
    "truncated_no_index": "InputError",
    "folder": "InputError",
}


@pytest.mark.parametrize("action", ["probe", "read", "reencode"])
def test_unusable_inputs_raise_input_errors(bad_inputs, tmp_path, action):
    results = attempt(action, {k: bad_inputs[k] for k in UNUSABLE}, tmp_path)
    for case, error in UNUSABLE.items():
        result = results[case]
        assert result["error"] == error, (case, result)
        assert "InputError" in result["mro"] and "SbsconvError" in result["mro"]
        assert result["path"] == str(bad_inputs[case])
        assert str(bad_inputs[case]) in result["message"]
    assert "FileNotFoundError" in results["missing"]["mro"]
    assert "no video stream" in results["audio_only"]["message"]
    assert "audio aac" in results["audio_only"]["message"]


def test_truncated_file_decodes_what_it_can_or_raises_in_strict_mode(bad_inputs, tmp_path):
    result = attempt("read", {"t": bad_inputs["truncated"]}, tmp_path)["t"]
    assert result["error"] is None
    assert 10 < result["frames"] < 100
    assert any("truncated" in w or "stopped early" in w for w in result["warnings"]), result
    strict = attempt("read", {"t": bad_inputs["truncated"]}, tmp_path, strict=True)["t"]
    assert strict["error"] == "DecodeError", strict
    assert strict["stage"] == "decode"


def test_reencoding_a_truncated_file_completes_with_a_warning(bad_inputs, tmp_path):
    result = attempt("reencode", {"t": bad_inputs["truncated"]}, tmp_path)["t"]
    assert result["error"] is None
    assert result["warnings"]
    assert (tmp_path / "t.mp4").exists()


def test_error_classes_derive_from_the_matching_builtins():
    assert issubclass(errors.InputNotFoundError, FileNotFoundError)
    assert issubclass(errors.InputNotFoundError, errors.InputError)
    assert issubclass(errors.InputError, ValueError)
    assert issubclass(errors.OptionError, ValueError)
    assert issubclass(errors.OutputError, OSError)
    assert issubclass(errors.DecodeError, errors.InputError)
    for cls in (errors.EncoderError, errors.ModelError, errors.DeviceError, errors.CancelledError):
        assert issubclass(cls, errors.SbsconvError)


def test_errors_carry_their_parts_and_pickle():
    exc = errors.InputNotFoundError("open: no such file [x.mp4]", stage="open", reason="no such file",
                                    path="x.mp4")
    assert (exc.stage, exc.reason, exc.path, exc.errno, exc.filename) == (
        "open", "no such file", "x.mp4", 2, "x.mp4")
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is errors.InputNotFoundError and clone.path == "x.mp4" and str(clone) == str(exc)


def test_ffmpeg_reason_is_part_of_the_message(bad_inputs):
    import sbsconv

    with pytest.raises(errors.InputError) as info:
        sbsconv.probe(bad_inputs["text"])
    assert info.value.ffmpeg_message and "Invalid data" in info.value.ffmpeg_message
    assert info.value.stage == "probe"


def test_sample_clip_is_fine():
    import sbsconv

    assert sbsconv.probe(data("bt601_limited_range.mp4")).num_frames == 60


def test_entry_points_say_what_their_paths_must_be(tmp_path, tiny_model):
    # a wrong type or a folder where a file goes: an OptionError naming the argument, before any
    # work; what the messages advise, done as written, converts
    clip = str(data("bt601_limited_range.mp4"))
    quick = dict(model=str(tiny_model), input_size=70, duration=0.3, preset="ultrafast", progress=False)
    with pytest.raises(OptionError, match="input: expected the path of a video, got 123"):
        sbsconv.convert(123, tmp_path / "out.mp4")
    with pytest.raises(OptionError, match=r"input: expected the path of a video, got \[.*\] \(several videos: "
                                          r"sbsconv.convert_many\(inputs, output_dir\)\)"):
        sbsconv.convert([clip], tmp_path / "out.mp4")
    summary = sbsconv.convert_many([clip], tmp_path / "many", **quick)  # convert_many(inputs, output_dir)
    assert [f.status for f in summary.files] == ["done"]
    with pytest.raises(OptionError, match="output: expected the path of the 3D video to write, got None"):
        sbsconv.convert(clip, None)
    with pytest.raises(OptionError, match="output: expected the path of the depth file to write, got None"):
        sbsconv.export_depth(clip, None)
    with pytest.raises(OptionError, match="input: expected the path of a video, got 1.5"):
        sbsconv.export_mask(1.5)
    folder = tmp_path / "videos"
    folder.mkdir()
    with pytest.raises(OptionError, match=r"is a folder: name the 3D video to write in it \(such as "
                                          r"'.*bt601_limited_range_3d.mp4'\)") as caught:
        sbsconv.convert(clip, folder)
    assert list(folder.iterdir()) == []
    suggested = re.search(r"\(such as '(.+?)'\)", str(caught.value)).group(1)
    assert sbsconv.convert(clip, suggested, **quick).frames > 0
    assert [p.name for p in folder.iterdir()] == ["bt601_limited_range_3d.mp4"]


def test_an_error_names_its_file_once(tmp_path):
    missing = str(tmp_path / "depth.mkv")
    with pytest.raises(errors.InputError) as caught:
        sbsconv.convert(data("bt601_limited_range.mp4"), tmp_path / "out.mp4", depth=missing)
    assert str(caught.value).count(missing) == 1 and str(caught.value).startswith("no such depth file")
    # the engine's own messages already name it: not twice
    with pytest.raises(errors.InputError) as caught:
        sbsconv.probe(tmp_path)
    assert str(caught.value).count(str(tmp_path)) == 1
    assert str(errors.OptionError("plain")) == "plain"
    with pytest.raises(errors.OptionError, match="path: expected the path of a media file, got 5"):
        sbsconv.probe(5)
    with pytest.raises(errors.OptionError, match="video: expected the path of a video, got None"):
        sbsconv.preview(None)
    with pytest.raises(errors.OptionError, match="sbs_video: expected the path of the 3D video, got 1"):
        sbsconv.infill_merge(1, 2, 3)


def test_bytes_ffmpeg_only_guesses_at_are_not_a_video(tmp_path, testsrc):
    # Note [A weak guess is not a video]: these random blobs pass FFmpeg's raw H.263 probe
    # weakly (one with a picture size, one without); named .mp4 they are refused, naming both
    import random

    for seed in (37, 68):
        blob = tmp_path / f"random_{seed}.mp4"
        blob.write_bytes(random.Random(seed).randbytes(300_000))
        with pytest.raises(errors.InputError, match=r"not a valid \.mp4 file .*raw H\.263"):
            sbsconv.probe(blob)
    # a real raw H.263 stream is a video, whatever its name
    clip = testsrc("weak_guess_source.mp4", size="176x144", rate=10, seconds=0.5)
    raw = tmp_path / "stream.h263"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-c:v", "h263", "-f", "h263", str(raw)],
                   check=True, capture_output=True)
    for name in ("stream.h263", "stream.mp4"):
        path = tmp_path / name
        if path != raw:
            path.write_bytes(raw.read_bytes())
        info = sbsconv.probe(path)
        assert (info.codec, info.width, info.height) == ("h263", 176, 144)
