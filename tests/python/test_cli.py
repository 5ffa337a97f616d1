"""The sbsconv command line: output, exit codes, help."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sbsconv.samples
from sbsconv import cli

from helpers import data, ffprobe


def test_probe_prints_streams(capsys):
    assert cli.main(["probe", str(data("nasa_13013.mp4"))]) == 0
    out = capsys.readouterr().out
    assert "video #3: h264 480x270" in out
    assert "stream #1: audio aac" in out and "[eng]" in out


def test_probe_json_is_complete(capsys):
    assert cli.main(["probe", "--json", str(data("test_non_zero_start.mp4"))]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 200 and info["fps"] == "30/1" and info["num_frames"] == 12
    assert info["streams"][0]["codec"] == "h264"


def test_reencode_writes_the_output(tmp_path, capsys):
    out = tmp_path / "clip.mkv"
    assert cli.main(["reencode", str(data("bt601_limited_range.mp4")), str(out), "--duration", "0.5",
                     "--preset", "ultrafast"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert ffprobe(out, "-show_streams")["streams"][0]["codec_name"] == "h264"


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["probe", "/nonexistent/clip.mp4"], cli.EXIT_INPUT),
        (["reencode", "IN", "out.avi"], cli.EXIT_INPUT),  # the missing input is found first
        (["reencode", "SAMPLE", "out.avi"], cli.EXIT_USAGE),
        (["reencode", "SAMPLE", "/nonexistent/dir/out.mp4"], cli.EXIT_OUTPUT),
        (["reencode", "SAMPLE", "OUT", "--crf", "99"], cli.EXIT_USAGE),
        # convert's options are checked (sbsconv.ConvertOptions) before any work
        (["convert", "SAMPLE", "OUT", "--divergence", "99"], cli.EXIT_USAGE),
        (["convert", "SAMPLE", "OUT", "--bit-depth", "10", "--codec", "h264"], cli.EXIT_USAGE),
        (["convert", "SAMPLE", "OUT", "--eye-size", "huge"], cli.EXIT_USAGE),
        (["convert", "SAMPLE", "out.avi"], cli.EXIT_USAGE),
    ],
)
def test_exit_codes(tmp_path, capsys, argv, code):
    sample = str(data("bt601_limited_range.mp4"))
    argv = [a.replace("SAMPLE", sample).replace("OUT", str(tmp_path / "o.mp4"))
            .replace("IN", str(tmp_path / "missing.mp4")) for a in argv]
    argv = [str(tmp_path / a) if a == "out.avi" else a for a in argv]
    assert cli.main(argv) == code
    assert "sbsconv: error:" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as info:
        cli.main(["reencode"])
    assert info.value.code == cli.EXIT_USAGE
    with pytest.raises(SystemExit) as info:
        cli.main(["convert", "in.mp4", "out.mp4", "--layout", "side-by-side"])
    assert info.value.code == cli.EXIT_USAGE


def test_convert_help_lists_every_option_by_group(capsys):
    with pytest.raises(SystemExit):
        cli.main(["convert", "--help"])
    out = capsys.readouterr().out
    assert "3D options:" in out and "encoding options:" in out and "--eye-size EYE_SIZE" in out
    assert "--no-resume" in out and "--percentiles LOW HIGH" in out


def test_console_script_help_lists_commands():
    exe = shutil.which("sbsconv", path=str(Path(sys.executable).parent))
    assert exe, "the sbsconv console script is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "probe" in out and "reencode" in out and "Exit codes" in out


def test_bundled_sample_exists_and_is_a_video():
    path = sbsconv.samples.path()
    info = sbsconv.probe(path)
    assert (info.width, info.height, info.num_frames) == (1280, 720, 60)
    with pytest.raises(FileNotFoundError, match="available"):
        sbsconv.samples.path("nope.mp4")

