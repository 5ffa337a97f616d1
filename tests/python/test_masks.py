"""Subject-mask products (python/sbsconv/masks.py): export_mask() with its defaults, stable over
time on a still subject, afresh at scene cuts, read back and checked against its video, and
bad input refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch

import hubcache
import sbsconv
from sbsconv.errors import InputError, OptionError


@pytest.fixture(scope="module")
def u2netp(tmp_path_factory):
    path = tmp_path_factory.mktemp("masks") / "u2netp.pth"
    torch.save(hubcache.u2net_reference(small=True, seed=4).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def still_noisy(make_clip):
    """A still picture with fresh sensor noise on every frame: 20 frames, 96x64."""
    return make_clip("still_noisy.mp4", [
        "-f", "lavfi", "-i", "smptebars=size=96x64:rate=20:duration=1", "-vf", "noise=alls=14:allf=t",
        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p"])


def test_export_mask_with_its_defaults_reaches_the_registry_model(offline_hub, testsrc, tmp_path):
    clip = testsrc("mask_src.mp4", size="96x64", rate=10, seconds=0.6)
    out = tmp_path / "clip_mask.mkv"
    result = sbsconv.export_mask(clip, out)  # model u2netp from the hub cache, as a user's
    assert result.model == "u2netp" and result.frames == 6 and result.path == str(out)
    side = json.loads((tmp_path / "clip_mask.mkv.json").read_text())
    assert side["product"] == "mask" and side["model"] == "u2netp" and side["license"] == "Apache-2.0"
    masks = sbsconv.read_masks(out, clip)
    assert masks.shape == (6, 1, 64, 96) and 0 <= float(masks.min()) and float(masks.max()) <= 1
    assert float(masks.std()) > 0
    # lossless 8-bit grey: what the sidecar says, and every value one of 256 steps
    assert side["format"] == "gray8" and side["encoding"]["type"] == "linear8"
    info = sbsconv.media.probe(out)
    assert info.pix_fmt == "gray" and info.bit_depth == 8 and info.codec == "ffv1"
    assert torch.equal(masks * 255, (masks * 255).round())


def test_the_default_output_name_sits_beside_the_video(u2netp, testsrc, tmp_path):
    clip = testsrc("mask_default_name.mp4", size="64x48", rate=10, seconds=0.3)
    local = tmp_path / "v.mp4"
    local.write_bytes(clip.read_bytes())
    result = sbsconv.export_mask(local, model=u2netp)
    assert result.path == str(tmp_path / "v_mask.mkv") and (tmp_path / "v_mask.mkv.json").is_file()


def test_masks_are_stable_on_a_still_subject(u2netp, still_noisy, tmp_path):
    flicker = {}
    for smoothing in (0.0, 0.6):
        out = tmp_path / f"m{smoothing}.mkv"
        sbsconv.export_mask(still_noisy, out, model=u2netp, smoothing=smoothing, input_size=64)
        masks = sbsconv.read_masks(out, still_noisy)
        flicker[smoothing] = float((masks[1:] - masks[:-1]).abs().mean())
    assert flicker[0.0] > 0  # the noise moves the raw masks
    assert flicker[0.6] < 0.6 * flicker[0.0]


def test_a_scene_cut_starts_the_masks_afresh(u2netp, cut_clip, tmp_path):
    smooth = sbsconv.export_mask(cut_clip, tmp_path / "s.mkv", model=u2netp, smoothing=0.9, input_size=64)
    raw = sbsconv.export_mask(cut_clip, tmp_path / "r.mkv", model=u2netp, smoothing=0.0, input_size=64)
    assert smooth.cuts == (38,) and raw.cuts == (38,)
    a, b = sbsconv.read_masks(smooth.path), sbsconv.read_masks(raw.path)
    # the first frame of the new shot carries nothing of the old one
    assert torch.allclose(a[38], b[38], atol=1e-4) and torch.allclose(a[0], b[0], atol=1e-4)
    assert not torch.allclose(a[39], b[39], atol=1e-3)  # and smoothing works within the shot


def test_a_mask_file_of_another_size_or_length_is_refused(u2netp, testsrc, tmp_path, tiny_model):
    clip = testsrc("mask_a.mp4", size="64x48", rate=10, seconds=0.5)
    other_size = testsrc("mask_b.mp4", size="80x48", rate=10, seconds=0.5)
    longer = testsrc("mask_c.mp4", size="64x48", rate=10, seconds=1.0)
    other_rate = testsrc("mask_d.mp4", size="64x48", rate=25, seconds=0.2)
    mask = sbsconv.export_mask(clip, tmp_path / "a.mkv", model=u2netp).path
    assert sbsconv.read_masks(mask, clip).shape[0] == 5
    with pytest.raises(InputError, match="64x48, the video 80x48"):
        sbsconv.read_masks(mask, other_size)
    with pytest.raises(InputError, match="5 frames, the video 10"):
        sbsconv.read_masks(mask, longer)
    with pytest.raises(InputError, match="frames/s"):
        sbsconv.read_masks(mask, other_rate)
    with pytest.raises(InputError, match="not a mask file"):
        depth = sbsconv.export_depth(clip, tmp_path / "d.mkv", model=str(tiny_model), progress=False)
        sbsconv.read_masks(depth.path)


def test_bad_input_writes_nothing(u2netp, testsrc, tmp_path, tiny_model):
    clip = testsrc("mask_bad.mp4", size="64x48", rate=10, seconds=0.3)
    with pytest.raises(OptionError, match=".mkv"):
        sbsconv.export_mask(clip, tmp_path / "m.mp4", model=u2netp)
    with pytest.raises(OptionError, match="smoothing"):
        sbsconv.export_mask(clip, tmp_path / "m.mkv", model=u2netp, smoothing=1.5)
    with pytest.raises(OptionError, match="not subject masks"):
        sbsconv.export_mask(clip, tmp_path / "m.mkv", model=tiny_model)
    with pytest.raises(sbsconv.errors.InputNotFoundError):
        sbsconv.export_mask(tmp_path / "missing.mp4", tmp_path / "m.mkv", model=u2netp)
    assert not list(tmp_path.glob("m.*"))
