"""Headset formats (issue 15): Apple's stereo boxes (apple-3d, and vexu on every MP4/MOV
frame-packed layout), VR180 with Google's spherical metadata, the box editor that adds boxes
after muxing (sizes, chunk offsets, co64), headset names, and probe's report. Files are checked
with the independent reader in tests/python/isobmff.py."""

from __future__ import annotations

import os
import struct
import subprocess

import pytest
import torch

import isobmff
import sbsconv
from sbsconv import media
from sbsconv._native import _core
from sbsconv.errors import OptionError
from helpers import data

CLIP = "bt601_limited_range.mp4"  # 320x240, 30 fps


def _frames(path) -> torch.Tensor:
    return torch.cat([b.data for b in media.read_frames(path, batch_size=64)])


def _entry(path):
    boxes = isobmff.parse(path)
    isobmff.check_sizes(path)
    return boxes, isobmff.video_sample_entry(boxes)


def _samples_fill(path) -> None:
    """Every video sample's chunk offset still points at whole length-prefixed NAL units."""
    boxes, entry = _entry(path)
    size = isobmff.nal_length_size(entry)
    for track, offsets in isobmff.sample_offsets(boxes).items():
        sizes = isobmff.sample_sizes(boxes)[track]
        trak = next(t for t in isobmff.tracks(boxes) if isobmff.track_id(t) == track)
        if isobmff.handler_type(trak) != "vide":
            continue
        for offset, n in zip(offsets, sizes, strict=True):
            isobmff.nal_lengths(isobmff.read_sample(path, offset, n), size)


# ---- Apple Vision Pro ---------------------------------------------------------------------------


def test_apple_3d_is_side_by_side_hevc_with_apples_boxes(tmp_path, tiny_model):
    out = tmp_path / "clip.mov"
    result = sbsconv.convert(data(CLIP), out, model=str(tiny_model), layout="apple-3d", duration=0.5,
                             ipd_mm=64.0, divergence=3.0, convergence=0.4, fov_degrees=70.0, progress=False)
    assert (result.width, result.height) == (640, 240) and result.encoder == "libx265"
    boxes, entry = _entry(out)
    types = [b.type for b in boxes]
    assert types.index("moov") < types.index("mdat")  # faststart, made by the box edit itself
    assert entry.type == "hvc1"
    assert entry.child_types()[-2:] == ["vexu", "hfov"]
    assert isobmff.apple(entry) == {"stri": 3, "hero": 1, "baseline_um": 64000,
                                    "disparity_adjustment": round(3.0 / 100 * 0.4 * 10000),
                                    "projection": "rect", "packing": "side", "hfov_millidegrees": 70000}
    assert isobmff.st3d_mode(entry) == 2  # Quest and YouTube read st3d
    _samples_fill(out)
    info = sbsconv.probe(out)
    assert info.stereo["apple"]["packing"] == "side" and info.stereo["apple"]["hfov_degrees"] == 70.0
    assert info.stereo["layout"] == "side-by-side"
    assert _frames(out).shape == (15, 3, 240, 640)  # FFmpeg still decodes it


def test_apple_3d_needs_mp4_or_mov(tmp_path, tiny_model):
    with pytest.raises(OptionError, match="MP4/MOV"):
        sbsconv.convert(data(CLIP), tmp_path / "x.mkv", model=str(tiny_model), layout="apple-3d", progress=False)


@pytest.mark.parametrize(("layout", "packing", "st3d"), [
    ("full-sbs", "side", 2), ("half-sbs", "side", 2), ("full-tb", "over", 1), ("half-tb", "over", 1)])
def test_frame_packed_mp4_carries_apple_and_google_tags(tmp_path, tiny_model, layout, packing, st3d):
    out = tmp_path / "clip.mp4"
    sbsconv.convert(data(CLIP), out, model=str(tiny_model), layout=layout, duration=0.3, progress=False)
    _, entry = _entry(out)
    assert entry.type == "avc1"
    assert isobmff.st3d_mode(entry) == st3d
    apple = isobmff.apple(entry)
    assert apple["packing"] == packing and apple["projection"] == "rect" and apple["stri"] == 3
    assert apple["hfov_millidegrees"] == 60000  # the relative model states none: the default
    _samples_fill(out)


def test_apple_metadata_can_be_left_out_and_mkv_has_none(tmp_path, tiny_model):
    plain = tmp_path / "plain.mp4"
    sbsconv.convert(data(CLIP), plain, model=str(tiny_model), apple_metadata=False, duration=0.3, progress=False)
    _, entry = _entry(plain)
    assert isobmff.apple(entry) is None and isobmff.st3d_mode(entry) == 2
    mkv = tmp_path / "clip.mkv"
    sbsconv.convert(data(CLIP), mkv, model=str(tiny_model), duration=0.3, progress=False)
    assert sbsconv.probe(mkv).stereo == {"layout": "side-by-side", "spherical": "", "apple": None, "mv_hevc": False}


def test_cross_eyed_and_anaglyph_have_no_stereo_tags(tmp_path, tiny_model):
    for layout in ("cross-eyed", "anaglyph"):
        out = tmp_path / f"{layout}.mp4"
        sbsconv.convert(data(CLIP), out, model=str(tiny_model), layout=layout, duration=0.2, progress=False)
        _, entry = _entry(out)
        assert isobmff.apple(entry) is None and isobmff.st3d_mode(entry) is None
        assert sbsconv.probe(out).stereo["layout"] == ""


def test_resumed_runs_get_the_boxes_at_assembly(tmp_path, tiny_model):
    out = tmp_path / "clip.mov"
    sbsconv.convert(data(CLIP), out, model=str(tiny_model), layout="apple-3d", resume=True, segment_seconds=0.5,
                    duration=1.5, progress=False)
    _, entry = _entry(out)
    assert isobmff.apple(entry)["packing"] == "side"
    _samples_fill(out)
    assert _frames(out).shape[0] == 45


def test_the_apple_sample_reads_as_apple_wrote_it():
    info = sbsconv.probe(data("apple_spatial_160x120.mp4"))
    assert info.stereo["mv_hevc"] is True
    assert info.stereo["apple"] == {"stri": 3, "hero": "left", "baseline_um": 19240, "disparity_adjustment": 200,
                                    "projection": None, "packing": None, "hfov_degrees": 63.4}
    out = subprocess.run(["sbsconv", "probe", str(data("apple_spatial_160x120.mp4"))], capture_output=True,
                         text=True)
    assert "MV-HEVC" in out.stdout and "baseline_um=19240" in out.stdout


# ---- the box editor -------------------------------------------------------------------------------


APPLE = _core.AppleStereo(packing="side", projection="rect", baseline_um=63000, disparity_adjustment=-120,
                          hfov_degrees=55.5)


@pytest.mark.parametrize(("faststart", "moov_first"), [(True, False), (False, False), (False, True)],
                         ids=["moov-first", "moov-last", "moov-last-moved-first"])
def test_box_insertion_keeps_every_sample_where_it_was(tmp_path, testsrc, faststart, moov_first):
    src = testsrc(f"editor_{faststart}.mp4", size="160x120", rate=25, seconds=1.0, audio=True,
                  extra=["-movflags", "+faststart"] if faststart else [])
    out = tmp_path / "edited.mp4"
    _core.copy_with_sample_entry_boxes(str(src), str(out), _core.apple_stereo_boxes(APPLE), moov_first=moov_first)
    before, after = isobmff.parse(src), isobmff.parse(out)
    isobmff.check_sizes(out)
    types = [b.type for b in after]
    assert (types.index("moov") < types.index("mdat")) == (faststart or moov_first)
    assert types[0] == "ftyp" and sorted(types) == sorted(b.type for b in before)
    entry = isobmff.video_sample_entry(after)
    assert isobmff.apple(entry) == {"stri": 3, "hero": 1, "baseline_um": 63000, "disparity_adjustment": -120,
                                    "projection": "rect", "packing": "side", "hfov_millidegrees": 55500}
    # the chunks move with the mdat they lie in
    shift = isobmff.find_one(after, "mdat").offset - isobmff.find_one(before, "mdat").offset
    if faststart:  # the moov grew in front of the media data
        assert shift == os.path.getsize(out) - os.path.getsize(src)
    elif moov_first:  # the whole moov now stands in front of it
        assert shift == isobmff.find_one(after, "moov").size
    else:
        assert shift == 0
    moved = {t: [o + shift for o in offsets] for t, offsets in isobmff.chunk_offsets(before).items()}
    assert isobmff.chunk_offsets(after) == moved  # audio's offsets too
    for track, offsets in isobmff.sample_offsets(after).items():  # the same bytes at the new places
        for old, new, n in zip(isobmff.sample_offsets(before)[track], offsets, isobmff.sample_sizes(after)[track],
                               strict=True):
            assert isobmff.read_sample(src, old, n) == isobmff.read_sample(out, new, n)
    assert torch.equal(_frames(src), _frames(out))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", str(out)], capture_output=True, text=True)
    assert probe.returncode == 0 and "codec_type=audio" in probe.stdout


def test_offsets_past_4_gib_become_co64(tmp_path):
    # A sparse file: ftyp, a moov whose stco points just below 4 GiB, an mdat reaching past it.
    # Growing the moov moves those chunks beyond what 32 bits hold: the table becomes co64.
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload) + 8) + kind + payload

    def full(kind: bytes, payload: bytes) -> bytes:
        return box(kind, b"\0\0\0\0" + payload)

    entry = box(b"avc1", bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HH", 64, 48) + bytes(50)
                + box(b"avcC", bytes([1, 66, 0, 30, 0xFF, 0xE0, 0])))
    stsd = full(b"stsd", struct.pack(">I", 1) + entry)
    near = 2 ** 32 - 100
    stco = full(b"stco", struct.pack(">III", 2, 4096, near))
    stbl = box(b"stbl", stsd + full(b"stsz", struct.pack(">II", 16, 2)) + stco
               + full(b"stsc", struct.pack(">IIII", 1, 1, 1, 1)))
    hdlr = full(b"hdlr", bytes(4) + b"vide" + bytes(12) + b"\0")
    tkhd = full(b"tkhd", bytes(8) + struct.pack(">I", 1) + bytes(68))
    moov = box(b"moov", box(b"trak", tkhd + box(b"mdia", hdlr + box(b"minf", stbl))))
    ftyp = box(b"ftyp", b"isom" + bytes(4))
    path = tmp_path / "big.mp4"
    total = 2 ** 32 + 4096
    with open(path, "wb") as f:
        f.write(ftyp + moov)
        f.write(struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", total - len(ftyp) - len(moov)))
        f.truncate(total)
    new_moov = _core.edited_moov(str(path), _core.apple_stereo_boxes(APPLE))
    boxes = isobmff.parse_bytes(ftyp + new_moov)
    stbl_box = isobmff.find_one(boxes, "moov/trak/mdia/minf/stbl")
    assert stbl_box.child("stco") is None and stbl_box.child("co64") is not None
    grown = len(new_moov) - len(moov)
    assert isobmff.chunk_offsets(boxes)[1] == [4096 + grown, near + grown]
    assert near + grown > 2 ** 32
    assert isobmff.apple(isobmff.video_sample_entry(boxes))["hfov_millidegrees"] == 55500


def test_a_file_without_a_video_track_is_refused(tmp_path):
    out = tmp_path / "tone.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.2", str(out)], check=True)
    with pytest.raises(sbsconv.errors.OutputError, match="no video track"):
        _core.copy_with_sample_entry_boxes(str(out), str(tmp_path / "x.mp4"), _core.apple_stereo_boxes(APPLE))
    assert not (tmp_path / "x.mp4").exists() or os.path.getsize(tmp_path / "x.mp4") == 0


# ---- VR180 ---------------------------------------------------------------------------------------


def test_vr180_has_square_half_equirectangular_eyes_and_spherical_metadata(tmp_path, tiny_model):
    out = tmp_path / "clip.mp4"
    result = sbsconv.convert(data(CLIP), out, model=str(tiny_model), layout="vr180", eye_size=(400, 400),
                             fov_degrees=90.0, headset_suffix=True, duration=0.3, progress=False)
    assert result.output.endswith("clip_180_LR.mp4")
    assert (result.width, result.height) == (800, 400)
    _, entry = _entry(result.output)
    assert isobmff.st3d_mode(entry) == 2
    sv3d = isobmff.sv3d(entry)
    assert sv3d["projection"] == "equi" and sv3d["left"] == sv3d["right"] == 0.25 and sv3d["top"] == 0
    assert isobmff.apple(entry)["projection"] == "hequ" and isobmff.apple(entry)["hfov_millidegrees"] == 180000
    assert sbsconv.probe(result.output).stereo["spherical"] == "equirectangular 180"
    frame = _frames(result.output)[0].float()
    # a 90-degree view covers the middle half of each 180-degree eye: black beyond 45 degrees
    for eye in (frame[:, :, :400], frame[:, :, 400:]):
        assert eye[:, 200, 200].sum() > 0  # the centre shows the picture
        assert eye[:, 200, 5:95].abs().max() < 20 and eye[:, 200, 305:395].abs().max() < 20
        assert eye[:, 5:40, 200].abs().max() < 20  # above the picture's top


def test_vr180_top_bottom_and_mkv(tmp_path, tiny_model):
    out = tmp_path / "clip.mkv"
    result = sbsconv.convert(data(CLIP), out, model=str(tiny_model), layout="vr180-tb", eye_size=(256, 256),
                             duration=0.2, progress=False)
    assert (result.width, result.height) == (256, 512)
    stereo = sbsconv.probe(out).stereo
    assert stereo["layout"] == "top-bottom" and stereo["spherical"] == "equirectangular 180"


def test_vr180_default_canvas_keeps_the_centre_resolution():
    assert _core.vr180_default_canvas(240, 320, 90.0) == 504
    assert _core.vr180_default_canvas(720, 1280, 60.0) == 2880


def test_headset_names():
    from sbsconv.conversion import output_name

    assert output_name("a.mp4", "half-sbs") == "a_3dh.mp4"
    assert output_name("a.mp4", "half-tb") == "a_3dv.mp4"
    assert output_name("a.mp4", "vr180") == "a_180_LR.mp4"
    assert output_name("a.mp4", "vr180-tb") == "a_180_TB.mp4"
    assert output_name("a_180_LR.mp4", "vr180") == "a_180_LR.mp4"


@pytest.mark.parametrize(("layout", "shape"), [("apple-3d", (3, 256, 512)), ("vr180", (3, 256, 512)),
                                               ("vr180-tb", (3, 512, 256))])
def test_previews_show_the_headset_layouts(tiny_model, layout, shape):
    p = sbsconv.preview(data(CLIP), at=[0.5], model=str(tiny_model), layout=layout, eye_size=(256, 256))
    panel = next(panel for panel in p.rows[0] if panel.title == layout)
    assert tuple(panel.image.shape) == shape
    if layout.startswith("vr180"):  # a 60-degree view in a 180-degree canvas: black at the sides
        assert panel.image[:, 128, :20].max() < 20


def test_apple_3d_carries_audio_and_subtitles(tmp_path, tiny_model):
    out = tmp_path / "nasa.mp4"
    result = sbsconv.convert(data("nasa_13013.mp4"), out, model=str(tiny_model), layout="apple-3d", duration=1.0,
                             progress=False)
    info = sbsconv.probe(out)
    assert [s.type for s in info.streams].count("audio") == 2 and info.has_subtitles
    assert info.stereo["apple"]["packing"] == "side" and result.frames == info.num_frames == 30
    _samples_fill(out)
