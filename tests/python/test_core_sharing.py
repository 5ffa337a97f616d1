"""The stages' share of the CPU (Note [Sharing the cores] and Note [Encoder preset on the CPU]
in cpp/sbsconv/pipeline/Engine.cpp)."""
from __future__ import annotations

import logging
import re
import threading

import torch

import sbsconv
from helpers import data

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
    assert result.encoder_preset in ("fast", "faster", "veryfast", "superfast")
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
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # a thread started later
    worker.start()
    worker.join()
    assert seen == [before]
