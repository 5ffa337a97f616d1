"""The stages' share of the CPU (Note [Sharing the cores] and Note [Encoder preset chosen to keep
pace] in cpp/sbsconv/pipeline/EngineImpl.h)."""
from __future__ import annotations

import logging
import re
import sys
import threading
from pathlib import Path

import pytest
import torch

import sbsconv
from helpers import data
from sbsconv import plan
from sbsconv._native import _core

# x264 writes its settings into the stream (an SEI message); subme tells the presets apart.
SUBME = {"medium": 7, "fast": 6, "faster": 4, "veryfast": 2, "superfast": 1, "slow": 8}
OPTIONS = {"progress": False, "crf": 20, "resume": False, "device": "cpu", "input_size": 140, "duration": 1.0}


def x264_subme(path) -> int:
    with open(path, "rb") as f:
        found = re.search(rb"subme=(\d+)", f.read())
    assert found, "no x264 settings in the stream"
    return int(found.group(1))


def test_the_engine_picks_a_cheaper_x264_preset_when_the_encoder_would_set_the_pace(tiny_model, tmp_path, caplog):
    # A tiny model at input 140: the encoder's work per frame dwarfs the model's.
    with caplog.at_level(logging.INFO, logger="sbsconv"):
        result = sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), tmp_path / "auto.mp4", model=str(tiny_model),
                                 precision="fp32", **OPTIONS)
    assert result.encoder == "libx264"
    assert result.encoder_preset in ("fast", "faster", "veryfast")  # never below the floor
    assert result.encoder_preset_reason.startswith(f"libx264 preset {result.encoder_preset}: ")
    assert x264_subme(result.output) == SUBME[result.encoder_preset]
    assert any(f"libx264 preset {result.encoder_preset}: the model takes" in r.getMessage() for r in caplog.records)


def test_a_preset_the_caller_names_is_kept(tiny_model, tmp_path):
    result = sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), tmp_path / "slow.mp4", model=str(tiny_model),
                             preset="slow", precision="fp32", **OPTIONS)
    assert result.encoder_preset == "slow"
    assert x264_subme(result.output) == SUBME["slow"]


def test_the_stages_share_the_cores_and_the_callers_thread_count_survives(tiny_model, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # as if the machine had four cores
    try:
        result = sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), tmp_path / "out.mp4", model=str(tiny_model),
                                 precision="fp32", preset="ultrafast", **OPTIONS)
        threads = {s["name"]: s["threads"] for s in result.stages}
        assert threads == {"decode": 1, "depth": 4, "stabilise": 1, "stereo": 1, "encode": 1}
        # once the model was done the stereo stage rendered the window's last frames on all
        # of them (the others kept their share)
        after = {s["name"]: s["threads_after_model"] for s in result.stages}
        assert after == {"decode": 0, "depth": 0, "stabilise": 0, "stereo": 4, "encode": 0}
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # a thread started later
    worker.start()
    worker.join()
    assert seen == [before]


# x265 writes its settings into the stream too: (ref, subme, rd) tell its presets apart.
X265_SETTINGS = {"medium": (3, 2, 3), "fast": (3, 2, 2), "faster": (2, 2, 2), "veryfast": (2, 1, 2)}


def x265_settings(path) -> tuple[int, int, int]:
    with open(path, "rb") as f:
        raw = f.read()
    found = [re.search(rb" %s=(\d+) " % key, raw) for key in (b"ref", b"subme", b"rd")]
    assert all(found), "no x265 settings in the stream"
    return tuple(int(m.group(1)) for m in found)


def test_hevc_gets_a_libx265_preset_chosen_the_same_way(tiny_model, tmp_path, caplog):
    # the preset left alone with HEVC: the engine chooses libx265's, and the stream has it
    with caplog.at_level(logging.INFO, logger="sbsconv"):
        result = sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), tmp_path / "auto.mkv", model=str(tiny_model),
                                 precision="fp32", codec="hevc", **OPTIONS)
    assert result.encoder == "libx265"
    assert result.encoder_preset in X265_SETTINGS
    assert x265_settings(result.output) == X265_SETTINGS[result.encoder_preset]
    assert any(f"libx265 preset {result.encoder_preset}: the model takes" in r.getMessage() for r in caplog.records)


def test_on_the_cpu_the_encoder_keeps_within_five_percent_of_the_models_core_time():
    choose = _core.choose_encoder_preset
    # 720p side by side beside Depth-Anything-V2-Small at 518 on two cores (0.75 s a frame on
    # two threads): medium (0.14 core-seconds) would take 9 % of the model's time; veryfast 4 %
    preset, reason, keeps, instances = choose("libx264", 2560, 720, 0.75, 2, True, 2)
    assert (preset, keeps, instances) == ("veryfast", True, 1)
    assert "(4.0 % of the model's)" in reason
    # a slower model leaves room for a slower preset: the slowest within 5 %
    assert choose("libx264", 2560, 720, 1.2, 2, True, 2)[0] == "fast"
    assert choose("libx264", 2560, 720, 3.0, 2, True, 2)[0] == "medium"
    # a model so fast that even veryfast takes more: veryfast, the floor, and why
    floor, reason, keeps, _ = choose("libx264", 2560, 720, 0.1, 2, True, 2)
    assert (floor, keeps) == ("veryfast", False) and "the encoder sets the pace" in reason


def test_with_a_gpu_the_slowest_preset_that_outpaces_the_model_is_chosen():
    choose = _core.choose_encoder_preset
    # 1080p full side by side, the encoder on 16 cores, one stream (one instance keeps about six
    # of them busy): a slow model leaves time for medium
    preset, reason, keeps, instances = choose("libx264", 3840, 1080, 1 / 15.0, 1, False, 16)
    assert (preset, keeps, instances) == ("medium", True, 1) and "runs at 15.0 frames/s" in reason
    # a faster model: a faster preset, the slowest that still keeps pace
    faster, _, keeps, _ = choose("libx264", 3840, 1080, 1 / 25.0, 1, False, 16)
    assert keeps and ["medium", "fast", "faster", "veryfast"].index(faster) > 0
    # 657 frames/s (DA-V2 Small on an H100): nothing keeps pace; veryfast, the floor, and why
    floor, reason, keeps, _ = choose("libx264", 3840, 1080, 1 / 657.0, 1, False, 16)
    assert (floor, keeps) == ("veryfast", False) and "the encoder sets the pace" in reason
    # smaller frames keep pace with more
    assert choose("libx264", 1920, 1080, 1 / 25.0, 1, False, 16)[0] == "medium"
    # libx265 costs more than libx264 at the same pace
    order = ["medium", "fast", "faster", "veryfast"]
    assert order.index(choose("libx265", 3840, 1080, 1 / 15.0, 1, False, 16)[0]) > order.index(preset)
    # an encoder sbsconv does not choose for: nothing
    assert choose("h264_nvenc", 3840, 1080, 1 / 20.0, 1, False, 16)[0] == ""


def test_a_split_conversion_chooses_one_preset_for_every_part_by_the_same_rule(tiny_model):
    base = sbsconv.ConvertOptions(model=str(tiny_model), precision="fp32", input_size=140, device="cpu")
    settled, reason = plan.settle_split_options(str(data("Tokyo-Walk_rgb.mp4")), base)
    assert settled.preset in ("medium", "fast", "faster", "veryfast")
    assert reason.startswith(f"libx264 preset {settled.preset}: ")
    hevc, reason = plan.settle_split_options(str(data("Tokyo-Walk_rgb.mp4")), base.replace(codec="hevc"))
    assert hevc.preset in X265_SETTINGS and reason.startswith(f"libx265 preset {hevc.preset}: ")
    named, reason = plan.settle_split_options(str(data("Tokyo-Walk_rgb.mp4")), base.replace(preset="slow"))
    assert named.preset == "slow" and reason == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread names from /proc (Linux)")
def test_each_stage_runs_on_a_thread_named_for_it(tiny_model, tmp_path):
    # top -H, perf and gdb show which stage a thread is (the threads a stage starts inherit it)
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for comm in Path("/proc/self/task").glob("*/comm"):
                try:
                    seen.add(comm.read_text().strip())
                except OSError:  # a thread that ended meanwhile
                    pass
            done.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), tmp_path / "out.mp4", model=str(tiny_model), **OPTIONS)
    finally:
        done.set()
        watcher.join()
    assert {"sbs-decode", "sbs-depth", "sbs-stabilise", "sbs-stereo", "sbs-encode"} <= seen, seen
