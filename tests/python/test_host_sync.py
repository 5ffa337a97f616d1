"""The hot path makes the host wait for the device at most once per stage and batch (Note [Host
synchronisation] in cpp/sbsconv/common/DeviceSync.h), proved on the CPU: in the engine's check
mode every operation that would synchronise on a GPU (a scalar read, a data-dependent shape, a
device -> host copy) is counted, the CPU standing in for the device."""
from __future__ import annotations

from pathlib import Path

import sbsconv
import pytest
import torch

from sbsconv import _core

FAST = {"input_size": 70, "progress": False, "preset": "ultrafast"}


@pytest.fixture(scope="module")
def clip(cut_clip) -> Path:
    """76 frames, 160x96, a cut at frame 38 (conftest's cut_clip)."""
    return cut_clip


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
    {"model_kind": "video"},
])
def test_each_stage_synchronises_at_most_once_per_batch(settings, clip, tiny_model, tiny_depth_pro, tiny_vda,
                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("SBSCONV_CHECK_SYNCS", "1")
    settings = dict(settings)
    kind = settings.pop("model_kind", None)
    model = str({"metric": tiny_depth_pro, "video": tiny_vda}.get(kind, tiny_model))
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
    assert result.batch_size == 4
    assert stages["encode"]["host_syncs"] == stages["encode"]["batches"]
    assert stages["stereo"]["host_syncs"] == 0


# ---- on a CUDA device: the same bound, counted for real, and the streams' ordering ------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", ["tiny_model", "tiny_vda"])
def test_cuda_conversion_synchronises_at_most_once_per_stage_and_batch(family, request, tmp_path, monkeypatch):
    from helpers import data

    monkeypatch.setenv("SBSCONV_CHECK_SYNCS", "1")
    model = str(request.getfixturevalue(family))
    result = sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), tmp_path / "cuda.mp4", model=model, device="cuda",
                             resume=False, batch_size=4, duration=2.0, **FAST)
    for name, s in _stages(result).items():
        assert s["batches"] >= 7 and s["host_syncs"] <= s["batches"], (name, s)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_stages_on_their_own_streams_give_the_cpu_result(tiny_model, tmp_path):
    # Each stage works on its own stream; a missing wait at a hand-over would let a stage read
    # a batch before it is written, which shows as frames unlike the CPU run's.
    from helpers import data, psnr, to_hwc
    from sbsconv import media

    clip = data("Tokyo-Walk_rgb.mp4")
    common = dict(model=str(tiny_model), resume=False, batch_size=4, duration=2.0, crf=0, hwaccel="none",
                  precision="fp32", **FAST)
    cpu = sbsconv.convert(clip, tmp_path / "cpu.mp4", device="cpu", **common)
    gpu = sbsconv.convert(clip, tmp_path / "gpu.mp4", device="cuda", encoder="software", **common)
    assert gpu.frames == cpu.frames
    a = torch.cat([b.data for b in media.read_frames(cpu.output)])
    b = torch.cat([b.data for b in media.read_frames(gpu.output)])
    worst = min(psnr(to_hwc(a[i:i + 1]), to_hwc(b[i:i + 1])) for i in range(len(a)))
    assert worst >= 35


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batch_size_is_chosen_from_free_memory(tiny_model, tmp_path, caplog):
    from helpers import data
    from sbsconv import models

    model = models.load(str(tiny_model), device="cuda")
    batch, reason = model.fitting_batch(720, 1280)
    assert 1 <= batch <= 32 and "GiB free on cuda" in reason
    assert model.fitting_batch(720, 1280, limit=3)[0] <= 3
    with caplog.at_level("INFO", logger="sbsconv"):
        result = sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), tmp_path / "auto.mp4", model=str(tiny_model),
                                 device="cuda", resume=False, duration=1.0, **FAST)
    assert result.batch_size >= 1 and any("GiB free" in r.getMessage() for r in caplog.records)
