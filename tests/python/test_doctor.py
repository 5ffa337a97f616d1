"""`sbsconv doctor` (issue 16): what this machine will run, tried for real; and the Hugging Face
hub found unreachable once, quickly, with the command that fetches a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

import sbsconv
from sbsconv import diagnostics as doctor_module


def test_doctor_reports_devices_versions_encoders_and_choices():
    report = sbsconv.doctor(hub=False)
    by_name = {c.name: c for c in report.checks}
    assert by_name["cpu"].status == "ok"
    assert by_name["libx264"].status == "ok" and by_name["libx264"].detail == "encodes"
    assert by_name["ffmpeg"].detail.startswith(sbsconv._core.ffmpeg_info()["ffmpeg"])
    if not torch.cuda.is_available():
        assert by_name["cuda"].status == "unavailable"
        assert by_name["h264_nvenc"].status == "unavailable" and by_name["h264_nvenc"].detail  # with the reason
        assert report.choices["device"].startswith("cpu") and report.choices["encoder"].startswith("libx264")
    assert report.ok
    text = str(report)
    assert "convert() would use:" in text and "libx264" in text
    assert "<table>" in report._repr_html_() and "libx264" in report._repr_html_()


def test_a_failing_encoder_fails_the_report_when_asked_for(monkeypatch):
    # a hardware-encoder failure, simulated: the encoder asked for does not open
    real = doctor_module._try_encoder
    monkeypatch.setattr(doctor_module, "_try_encoder",
                        lambda name, codec: "simulated: cannot open the device" if name == "libx265" else real(name, codec))
    report = sbsconv.doctor(encoder="software", codec="hevc", hub=False)
    assert not report.ok
    failed = [c for c in report.checks if c.status == "fail"]
    assert [c.name for c in failed][:1] == ["libx265"] and "simulated" in failed[0].detail
    if not torch.cuda.is_available():
        assert report.choices["encoder"].startswith("none")  # nothing encodes HEVC here then


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device makes --device cuda work")
def test_command_line_exits_non_zero_when_the_device_asked_for_is_missing():
    out = subprocess.run([sys.executable, "-m", "sbsconv.cli", "doctor", "--device", "cuda", "--no-hub"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "FAIL cuda" in out.stdout
    out = subprocess.run([sys.executable, "-m", "sbsconv.cli", "doctor", "--no-hub"], capture_output=True, text=True)
    assert out.returncode == 0 and "everything asked for can work" in out.stdout


def test_an_unreachable_hub_is_found_once_and_quickly(tmp_path):
    script = (
        "import sbsconv, sbsconv.models as m\n"
        "from sbsconv.errors import ModelError\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        m.load('depth-anything-v2-small')\n"
        "    except ModelError as e:\n"
        "        print('ERR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on port 9
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    seconds = time.perf_counter() - t0
    assert out.stdout.count("ERR") == 2 and "`hf download depth-anything/Depth-Anything-V2-Small" in out.stdout
    assert "huggingface-cli" not in out.stdout
    assert out.stderr.count("cannot be reached") == 1  # said once, not per attempt
    assert seconds < 60  # no rounds of retries (huggingface_hub's took about 23 s per file)


def test_doctor_names_the_mv_hevc_encoder_or_why_there_is_none(tmp_path, monkeypatch):
    name = "x265 MV-HEVC (layout='spatial')"
    monkeypatch.setenv("SBSCONV_X265", str(tmp_path / "missing-x265"))
    check = {c.name: c for c in sbsconv.doctor(hub=False).checks}[name]
    assert check.status == "unavailable" and "not an executable file" in check.detail and "apple-3d" in check.detail
    tool = tmp_path / "x265"
    tool.write_text("#!/bin/sh\necho 'x265 [info]: HEVC encoder version 4.1+test'\necho '--multiview-config'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("SBSCONV_X265", str(tool))
    report = sbsconv.doctor(hub=False)
    check = {c.name: c for c in report.checks}[name]
    assert check.status == "ok" and check.detail == f"{tool} (x265 [info]: HEVC encoder version 4.1+test)"
