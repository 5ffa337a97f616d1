"""The hot path makes the host wait for the device at most once per stage and batch (Note [Host
synchronisation] in cpp/sbsconv/common/DeviceSync.h), proved on the CPU: in the engine's check
mode every operation that would synchronise on a GPU (a scalar read, a data-dependent shape, a
device -> host copy) is counted, the CPU standing in for the device."""
from __future__ import annotations

import sbsconv
import pytest
import torch

from sbsconv import _core

FAST = {"input_size": 70, "progress": False, "preset": "ultrafast"}


@pytest.fixture(scope="module")
def clip(make_clip):
    """76 frames, 160x96, a cut at frame 38 (so every temporal stage resets once)."""
    return make_clip("syncs.mp4", [
        "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1.5",
        "-f", "lavfi", "-i", "mandelbrot=size=160x96:rate=25",
        "-filter_complex", "[1:v]trim=duration=1.5,setpts=PTS-STARTPTS[b];[0:v][b]concat=n=2:v=1[v]",
        "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])


@pytest.fixture(scope="module")
def tiny_depth_pro(tmp_path_factory):
    from test_depth_pro import save, tiny_reference  # a metric model with a field-of-view head

    folder = tmp_path_factory.mktemp("depth_pro_hf")
    save(tiny_reference(), folder, 128)
    return folder


def _stages(result):
    return {s["name"]: s for s in result.stages}


@pytest.mark.parametrize("settings", [
    {},  # the default path: alignment, scene cuts, the comfort statistics
    {"auto_strength": True, "smoothing": 0.3},
    {"model_kind": "metric"},
])
def test_each_stage_synchronises_at_most_once_per_batch(settings, clip, tiny_model, tiny_depth_pro, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("SBSCONV_CHECK_SYNCS", "1")
    settings = dict(settings)
    model = str(tiny_depth_pro) if settings.pop("model_kind", None) == "metric" else str(tiny_model)
    # one run in one piece (no resume segments, whose saved states add one transfer each)
    result = sbsconv.convert(clip, tmp_path / "out.mp4", model=model, resume=False, batch_size=4,
                             **settings, **FAST)
    assert result.frames == 76 and result.cuts == (38,)
    stages = _stages(result)
    assert set(stages) == {"decode", "depth", "stabilise", "stereo", "encode"}
    for name, s in stages.items():
        assert s["batches"] >= 76 // 4, (name, s)
        assert s["host_syncs"] <= s["batches"], (name, s)
    # the statistics the host needs do come over, once a batch: the cut features, the comfort
    # figures and the encoder's frames
    for name in ("decode", "stabilise", "encode"):
        assert stages[name]["host_syncs"] >= stages[name]["batches"] - 1, (name, stages[name])


def test_the_count_sees_a_scalar_read_and_a_selection():
    # the counter itself: a .item() and a masked_select on CPU tensors count in check mode,
    # the same inside a host scope do not, and to_host counts once
    counts = _core._count_host_syncs(torch.arange(10.0))
    assert counts["item"] == 1 and counts["masked_select"] >= 1
    assert counts["host_scope"] == 0 and counts["to_host"] == 1


def test_without_the_check_mode_only_the_transfers_are_counted(clip, tiny_model, tmp_path):
    result = sbsconv.convert(clip, tmp_path / "out.mp4", model=str(tiny_model), resume=False, batch_size=4,
                             **FAST)
    stages = _stages(result)
    assert stages["encode"]["host_syncs"] == stages["encode"]["batches"]
    assert stages["stereo"]["host_syncs"] == 0
