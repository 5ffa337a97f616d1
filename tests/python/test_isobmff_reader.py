"""The tests' own ISO-BMFF reader (isobmff.py), checked against Apple's spatial sample, files
the ffmpeg command line writes, ffprobe's packet positions and boxes built here by hand."""

from __future__ import annotations

import re
import shutil
import struct

import isobmff
import pytest
from helpers import data, ffprobe

APPLE = "apple_spatial_160x120.mp4"
STSD = "moov/trak/mdia/minf/stbl/stsd"


# --------------------------------------------------------------------------------------------
# Boxes built by hand


def box(type_: str, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), type_.encode("latin-1")) + payload


def full(type_: str, payload: bytes = b"", version: int = 0, flags: int = 0) -> bytes:
    return box(type_, bytes([version]) + flags.to_bytes(3, "big") + payload)


def visual_entry(type_: str, width: int, height: int, children: bytes) -> bytes:
    fields = (b"\0" * 6 + struct.pack(">H", 1) + b"\0" * 16 + struct.pack(">HH", width, height)
              + b"\0" * 50)
    assert len(fields) == 78
    return box(type_, fields + children)


def audio_entry(children: bytes) -> bytes:
    fields = b"\0" * 6 + struct.pack(">H", 1) + b"\0" * 8 + struct.pack(">HHHHI", 2, 16, 0, 0,
                                                                       48000 << 16)
    assert len(fields) == 28
    return box("mp4a", fields + children)


def track(track_id: int, handler: bytes, entry: bytes, chunks: bytes, stsc, sizes,
          tkhd_version: int = 0) -> bytes:
    times = b"\0" * (16 if tkhd_version == 1 else 8)
    tkhd_rest = b"\0" * (80 if tkhd_version == 1 else 68)  # reserved, duration ... height
    tkhd = full("tkhd", times + struct.pack(">I", track_id) + tkhd_rest, tkhd_version, 3)
    hdlr = full("hdlr", b"\0" * 4 + handler + b"\0" * 12 + b"handler\0")
    stsd = full("stsd", struct.pack(">I", 1) + entry)
    stsc_box = full("stsc", struct.pack(">I", len(stsc)) + b"".join(struct.pack(">III", *e)
                                                                     for e in stsc))
    stsz = full("stsz", struct.pack(">II", 0, len(sizes)) + struct.pack(f">{len(sizes)}I", *sizes))
    stbl = box("stbl", stsd + box("stts", b"\0" * 8) + stsc_box + stsz + chunks)
    minf = box("minf", box("dinf", full("dref", struct.pack(">I", 0))) + stbl)
    return box("trak", tkhd + box("mdia", hdlr + minf))


def stco(offsets) -> bytes:
    return full("stco", struct.pack(f">I{len(offsets)}I", len(offsets), *offsets))


def co64(offsets) -> bytes:
    return full("co64", struct.pack(f">I{len(offsets)}Q", len(offsets), *offsets))


FTYP = box("ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")


# --------------------------------------------------------------------------------------------
# Checks shared by the real files


def assert_samples_are_nal_units(path, boxes) -> int:
    """Every video sample, read at its computed offset, is length-prefixed NAL units that
    exactly fill its stsz size. Returns the number of samples."""
    entry = isobmff.video_sample_entry(boxes)
    video = next(isobmff.track_id(t) for t in isobmff.tracks(boxes)
                 if isobmff.handler_type(t) == "vide")
    length_size = isobmff.nal_length_size(entry)
    offsets = isobmff.sample_offsets(boxes)[video]
    sizes = isobmff.sample_sizes(boxes)[video]
    assert len(offsets) == len(sizes) > 0
    for offset, size in zip(offsets, sizes, strict=True):
        isobmff.nal_lengths(isobmff.read_sample(path, offset, size), length_size)
    return len(offsets)


def assert_samples_inside_mdat(boxes) -> None:
    mdats = [b for b in boxes if b.type == "mdat"]
    sizes = isobmff.sample_sizes(boxes)
    for tid, offsets in isobmff.sample_offsets(boxes).items():
        for offset, size in zip(offsets, sizes[tid], strict=True):
            assert any(m.payload_offset <= offset and offset + size <= m.end for m in mdats), \
                (tid, offset, size)


def assert_matches_ffprobe(path, boxes) -> None:
    """Each (offset, size) of every track equals a packet's (pos, size) as ffprobe reads it."""
    packets = ffprobe(path, "-show_entries", "packet=pos,size")["packets"]
    theirs = sorted((int(p["pos"]), int(p["size"])) for p in packets)
    sizes = isobmff.sample_sizes(boxes)
    ours = sorted((o, s) for tid, offsets in isobmff.sample_offsets(boxes).items()
                  for o, s in zip(offsets, sizes[tid], strict=True))
    assert ours == theirs


# --------------------------------------------------------------------------------------------
# Apple's spatial video sample


def test_apple_sample_tree():
    path = data(APPLE)
    boxes = isobmff.parse(path)
    assert [b.type for b in boxes] == ["ftyp", "mdat", "moov"]
    assert boxes[-1].end == path.stat().st_size
    mdat = boxes[1]
    assert (mdat.header_size, mdat.size_field, mdat.raw) == (16, 1, None)  # a 64-bit largesize
    assert mdat.payload_offset == 0x2C
    isobmff.check_sizes(path)

    entry = isobmff.video_sample_entry(boxes)
    assert entry.type == "hvc1"
    assert entry.path == f"{STSD}/hvc1"
    assert entry.child_types() == ["hvcC", "lhvC", "fiel", "chrm", "vexu", "hfov"]
    assert isobmff.visual_size(entry) == (160, 120)
    assert [b.type for b in isobmff.find(entry, "vexu/eyes/*")] == ["stri", "hero", "cams",
                                                                     "cmfy"]
    assert isobmff.apple(entry) == {
        "stri": 3, "hero": 1, "baseline_um": 19240, "disparity_adjustment": 200,
        "projection": None, "packing": None, "hfov_millidegrees": 63400,
    }
    assert isobmff.st3d_mode(entry) is None
    assert isobmff.sv3d(entry) is None


def test_find_paths_and_wildcards():
    boxes = isobmff.parse(data(APPLE))
    assert [b.type for b in isobmff.find(boxes, STSD)] == ["stsd"]
    assert [b.type for b in isobmff.find(boxes, "moov/*/mdia/*/stbl/stsd/*")] == ["hvc1"]
    assert [b.type for b in isobmff.find(boxes, "moov/*")] == ["mvhd", "trak"]
    blin = isobmff.find(boxes, f"{STSD}/hvc1/vexu/eyes/cams/blin")
    assert len(blin) == 1
    assert isobmff.full_box(blin[0]) == (0, 0, struct.pack(">I", 19240))
    assert isobmff.find(boxes, "moov/trak/nope") == []
    assert isobmff.find(boxes, f"{STSD}/hvc1/hfov")[0].raw == struct.pack(">I", 63400)


def test_apple_sample_offsets():
    path = data(APPLE)
    boxes = isobmff.parse(path)
    assert isobmff.chunk_offsets(boxes) == {1: [0x2C]}
    assert isobmff.samples_to_chunks(boxes) == {1: [(1, 10, 1)]}
    offsets = isobmff.sample_offsets(boxes)[1]
    sizes = isobmff.sample_sizes(boxes)[1]
    assert len(offsets) == len(sizes) == 10
    assert offsets[0] == 44
    # one chunk: the samples lie back to back
    assert [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)] == sizes[:-1]
    assert offsets[-1] + sizes[-1] == boxes[1].end  # the samples fill mdat
    assert assert_samples_are_nal_units(path, boxes) == 10
    assert_matches_ffprobe(path, boxes)


# --------------------------------------------------------------------------------------------
# Files the ffmpeg command line writes


@pytest.mark.parametrize("faststart", [True, False], ids=["faststart", "moov_last"])
def test_ffmpeg_mp4_sample_offsets(testsrc, faststart):
    extra = ["-movflags", "+faststart"] if faststart else []
    path = testsrc(f"isobmff_{'fast' if faststart else 'plain'}.mp4", size="128x64", rate=10,
                   seconds=1.0, audio=True, extra=extra)
    boxes = isobmff.check_sizes(path)
    types = [b.type for b in boxes]
    assert (types.index("moov") < types.index("mdat")) == faststart
    entry = isobmff.video_sample_entry(boxes)
    assert entry.type == "avc1"
    assert "avcC" in entry.child_types()
    assert isobmff.visual_size(entry) == (128, 64)
    assert len(isobmff.tracks(boxes)) == 2  # video and audio: interleaved chunks
    assert assert_samples_are_nal_units(path, boxes) == 10
    assert_samples_inside_mdat(boxes)
    assert_matches_ffprobe(path, boxes)


def test_stale_chunk_offsets_are_caught(testsrc, tmp_path):
    """A box inserted before mdat without moving stco breaks the sample walk; moving the chunk
    offsets by the inserted size repairs it."""
    src = testsrc("isobmff_fast.mp4", size="128x64", rate=10, seconds=1.0, audio=True,
                  extra=["-movflags", "+faststart"])
    boxes = isobmff.parse(src)
    mdat = next(b for b in boxes if b.type == "mdat")
    blob = src.read_bytes()
    pad = box("free", b"\0" * 8)
    moved = bytearray(blob[:mdat.offset] + pad + blob[mdat.offset:])
    stale = tmp_path / "stale.mp4"
    stale.write_bytes(moved)
    stale_boxes = isobmff.check_sizes(stale)  # the sizes alone are still fine
    with pytest.raises(AssertionError):
        assert_samples_are_nal_units(stale, stale_boxes)

    for stco_box in isobmff.find(boxes, "moov/trak/mdia/minf/stbl/stco"):
        count = struct.unpack(">I", stco_box.raw[4:8])[0]
        for i in range(count):
            at = stco_box.payload_offset + 8 + 4 * i  # moov is before the insertion
            value = struct.unpack_from(">I", moved, at)[0]
            struct.pack_into(">I", moved, at, value + len(pad))
    fixed = tmp_path / "fixed.mp4"
    fixed.write_bytes(moved)
    fixed_boxes = isobmff.check_sizes(fixed)
    assert assert_samples_are_nal_units(fixed, fixed_boxes) == 10
    assert_matches_ffprobe(fixed, fixed_boxes)


@pytest.mark.parametrize(("stereo_mode", "st3d"), [("left_right", 2), ("top_bottom", 1)])
def test_ffmpeg_st3d(make_clip, stereo_mode, st3d):
    """FFmpeg 5.1's MP4 muxer writes st3d from stream side data only (the stereo_mode metadata
    given straight to an MP4 output is not turned into it); Matroska's StereoMode becomes that
    side data when demuxed, so a remux carries it into st3d."""
    mkv = make_clip(f"isobmff_{stereo_mode}.mkv", [
        "-f", "lavfi", "-i", "testsrc2=size=128x64:rate=10:duration=0.5", "-c:v", "libx264",
        "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-metadata:s:v", f"stereo_mode={stereo_mode}"])
    path = make_clip(f"isobmff_{stereo_mode}.mp4", ["-i", str(mkv), "-c", "copy",
                                                    "-strict", "unofficial"])
    boxes = isobmff.check_sizes(path)
    entry = isobmff.video_sample_entry(boxes)
    assert "st3d" in entry.child_types()
    assert isobmff.st3d_mode(entry) == st3d
    assert isobmff.full_box(entry.child("st3d"))[:2] == (0, 0)
    assert isobmff.sv3d(entry) is None
    assert isobmff.apple(entry) is None
    side = ffprobe(path, "-show_streams", "-select_streams", "v:0")["streams"][0]["side_data_list"]
    kind = {"left_right": "side by side", "top_bottom": "top and bottom"}[stereo_mode]
    assert any(s.get("type") == kind for s in side)
    assert_samples_are_nal_units(path, boxes)


# --------------------------------------------------------------------------------------------
# Boxes built by hand: st3d, sv3d, APMP vexu, co64, largesize, size 0


def spherical_movie() -> bytes:
    sv3d = box("sv3d", full("svhd", b"sbsconv tests\0") + box("proj", (
        full("prhd", struct.pack(">iii", int(90.5 * 65536), -10 * 65536, 0))
        + full("equi", struct.pack(">IIII", 0, 0, 0x40000000, 0x40000000)))))
    vexu = box("vexu", box("eyes", full("stri", b"\x03") + full("hero", b"\x02")
                           + box("cams", full("blin", struct.pack(">I", 63000)))
                           + box("cmfy", full("dadj", struct.pack(">i", -150))))
               + box("proj", full("prji", b"hequ")) + box("pack", full("pkin", b"side")))
    entry = visual_entry("hvc1", 3840, 1920, box("st3d", b"\0\0\0\0\x02") + sv3d + vexu
                         + box("hfov", struct.pack(">I", 180000)))
    audio = track(1, b"soun", audio_entry(box("esds", b"\0" * 12)), stco([100]), [(1, 1, 1)],
                  [7])
    video = track(2, b"vide", entry, stco([107]), [(1, 2, 1)], [5, 6])
    return FTYP + box("moov", box("mvhd", b"\0" * 100) + audio + video)


def test_st3d_sv3d_and_apmp_from_bytes():
    blob = spherical_movie()
    isobmff.check_sizes(blob)
    boxes = isobmff.parse_bytes(blob)
    assert isobmff.handler_type(isobmff.tracks(boxes)[0]) == "soun"
    assert isobmff.find(boxes, f"{STSD}/mp4a/esds")  # audio entries are walked too
    entry = isobmff.video_sample_entry(boxes)  # the second track: the first is audio
    assert entry.type == "hvc1"
    assert isobmff.visual_size(entry) == (3840, 1920)
    assert entry.child_types() == ["st3d", "sv3d", "vexu", "hfov"]
    assert isobmff.st3d_mode(entry) == 2
    assert isobmff.sv3d(entry) == {
        "metadata_source": "sbsconv tests", "projection": "equi",
        "yaw": 90.5, "pitch": -10.0, "roll": 0.0,
        "top": 0.0, "bottom": 0.0, "left": 0.25, "right": 0.25,
    }
    assert isobmff.apple(entry) == {
        "stri": 3, "hero": 2, "baseline_um": 63000, "disparity_adjustment": -150,
        "projection": "hequ", "packing": "side", "hfov_millidegrees": 180000,
    }
    assert isobmff.sample_offsets(boxes) == {1: [100], 2: [107, 112]}


def test_sv3d_cubemap_and_missing_parts():
    sv3d = box("sv3d", box("proj", full("cbmp", struct.pack(">II", 0, 16))))
    vexu = box("vexu", box("eyes", full("stri", b"\x0b")))
    entry = visual_entry("avc1", 64, 32, sv3d + vexu)
    blob = box("moov", track(3, b"vide", entry, stco([]), [], []))
    boxes = isobmff.parse_bytes(blob)
    entry = isobmff.video_sample_entry(boxes)
    assert isobmff.sv3d(entry) == {"metadata_source": None, "projection": "cbmp", "yaw": None,
                                   "pitch": None, "roll": None, "layout": 0, "padding": 16}
    assert isobmff.apple(entry) == {
        "stri": 11, "hero": None, "baseline_um": None, "disparity_adjustment": None,
        "projection": None, "packing": None, "hfov_millidegrees": None,
    }
    assert isobmff.st3d_mode(entry) is None
    assert isobmff.sample_offsets(boxes) == {3: []}


def test_co64_offsets_are_64_bit():
    high = [2**32 + 100, 2**33 + 7, 2**40 + 1]
    entry = visual_entry("avc1", 16, 16, box("avcC", b"\x01\x64\x00\x0a\xff\xe0\x00"))
    video = track(7, b"vide", entry, co64(high), [(1, 2, 1), (3, 1, 1)], [10, 20, 30, 40, 50],
                  tkhd_version=1)
    other = track(2, b"soun", audio_entry(b""), stco([40]), [(1, 1, 1)], [9])
    blob = FTYP + box("moov", box("mvhd", b"\0" * 100) + other + video)
    isobmff.check_sizes(blob)
    boxes = isobmff.parse_bytes(blob)
    assert isobmff.find(boxes, "moov/trak/mdia/minf/stbl/co64")[0].payload_size == 8 + 3 * 8
    assert isobmff.chunk_offsets(boxes) == {2: [40], 7: high}
    assert isobmff.samples_to_chunks(boxes) == {2: [(1, 1, 1)], 7: [(1, 2, 1), (3, 1, 1)]}
    assert isobmff.sample_sizes(boxes) == {2: [9], 7: [10, 20, 30, 40, 50]}
    assert isobmff.sample_offsets(boxes) == {
        2: [40],
        7: [2**32 + 100, 2**32 + 110, 2**33 + 7, 2**33 + 37, 2**40 + 1],
    }
    assert isobmff.nal_length_size(isobmff.video_sample_entry(boxes)) == 4


def test_sample_tables_that_disagree_are_caught():
    entry = visual_entry("avc1", 16, 16, b"")
    too_many = box("moov", track(1, b"vide", entry, stco([0, 10]), [(1, 2, 1)], [1, 2, 3]))
    with pytest.raises(AssertionError, match="describe more samples"):
        isobmff.sample_offsets(isobmff.parse_bytes(too_many))
    too_few = box("moov", track(1, b"vide", entry, stco([0]), [(1, 2, 1)], [1, 2, 3]))
    with pytest.raises(AssertionError, match="describe 2 samples, stsz 3"):
        isobmff.sample_offsets(isobmff.parse_bytes(too_few))


def test_largesize_and_size_zero_top_level_boxes():
    payload = b"x" * 24
    large = struct.pack(">I4sQ", 1, b"free", 16 + len(payload)) + payload
    to_end = struct.pack(">I4s", 0, b"mdat") + b"y" * 40
    blob = FTYP + large + box("moov", box("mvhd", b"\0" * 100)) + to_end
    boxes = isobmff.check_sizes(blob)
    assert [b.type for b in boxes] == ["ftyp", "free", "moov", "mdat"]
    free, mdat = boxes[1], boxes[3]
    assert (free.header_size, free.size, free.size_field, free.raw) == (16, 40, 1, payload)
    assert free.payload_offset == len(FTYP) + 16
    assert (mdat.header_size, mdat.size, mdat.size_field, mdat.raw) == (8, 48, 0, None)
    assert mdat.end == len(blob)


def test_sparse_file_over_4_gib(tmp_path):
    """A 5 GiB mdat (a sparse file) with a largesize header, moov after it and co64 offsets
    past 4 GiB: parsing reads neither the mdat payload nor anything but the boxes."""
    path = tmp_path / "big.mp4"
    mdat_size = 16 + 5 * 2**30
    samples = [b"\0\0\0\x03\x65\x88\x80", b"\0\0\0\x02\x41\x9a\0\0\0\x01\x01"]
    first = len(FTYP) + 16 + 2**32 + 12345
    offsets = [first, first + len(samples[0])]
    entry = visual_entry("avc1", 16, 16, box("avcC", b"\x01\x64\x00\x0a\xff\xe0\x00"))
    moov = box("moov", box("mvhd", b"\0" * 100) + track(
        1, b"vide", entry, co64([first]), [(1, 2, 1)], [len(s) for s in samples]))
    with open(path, "wb") as f:
        f.write(FTYP + struct.pack(">I4sQ", 1, b"mdat", mdat_size))
        f.seek(first)
        f.write(b"".join(samples))
        f.seek(len(FTYP) + mdat_size)
        f.write(moov)
    assert path.stat().st_size == len(FTYP) + mdat_size + len(moov)
    boxes = isobmff.check_sizes(path)
    assert [b.type for b in boxes] == ["ftyp", "mdat", "moov"]
    assert (boxes[1].size, boxes[1].raw) == (mdat_size, None)
    assert boxes[2].offset == len(FTYP) + mdat_size
    assert isobmff.sample_offsets(boxes) == {1: offsets}
    assert_samples_inside_mdat(boxes)
    for offset, sample in zip(offsets, samples, strict=True):
        assert isobmff.read_sample(path, offset, len(sample)) == sample
    assert assert_samples_are_nal_units(path, boxes) == 2


# --------------------------------------------------------------------------------------------
# Corrupted sizes


@pytest.mark.parametrize(("target", "delta", "message"), [
    ("moov", 8, "moov: size"),
    ("mdat", 1, "<file>"),  # the 64-bit largesize
    (f"{STSD}/hvc1/hfov", 4, "hvc1/hfov: size 16"),
    (f"{STSD}/hvc1/vexu/eyes/cams/blin", -4, "vexu/eyes/cams: 4 stray bytes"),
    (f"{STSD}/hvc1/vexu", -1, "hvc1/vexu"),
    (STSD, 8, "stbl/stsd"),
    ("ftyp", -24, "ftyp: size 4 at offset 0 is smaller"),
])
def test_check_sizes_catches_a_corrupted_size(tmp_path, target, delta, message):
    src = data(APPLE)
    boxes = isobmff.parse(src)
    victim = isobmff.find(boxes, target)[0]
    blob = bytearray(src.read_bytes())
    if victim.header_size == 16:
        struct.pack_into(">Q", blob, victim.offset + 8, victim.size + delta)
    else:
        struct.pack_into(">I", blob, victim.offset, victim.size + delta)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(blob)
    with pytest.raises(AssertionError, match=re.escape(message)):
        isobmff.check_sizes(bad)
    with pytest.raises(isobmff.BoxError):
        isobmff.parse(bad)
    # the untouched copy passes
    good = tmp_path / "good.mp4"
    shutil.copyfile(src, good)
    isobmff.check_sizes(good)


def test_check_sizes_catches_stray_bytes_and_entry_counts():
    moov = box("moov", box("mvhd", b"\0" * 100))
    with pytest.raises(AssertionError, match=r"<file>: 3 stray bytes"):
        isobmff.check_sizes(FTYP + moov + b"abc")
    with pytest.raises(AssertionError, match=r"size 4 at offset \d+ is smaller"):
        isobmff.check_sizes(FTYP + struct.pack(">I4s", 4, b"free"))
    entry = visual_entry("avc1", 16, 16, b"")
    two = box("moov", track(1, b"vide", entry, stco([]), [], []))
    two = two.replace(b"stsd\0\0\0\0\0\0\0\x01", b"stsd\0\0\0\0\0\0\0\x02")
    with pytest.raises(AssertionError, match="stsd: entry_count 2 but 1 entries"):
        isobmff.check_sizes(two)
    # QuickTime's 32-bit zero terminator ends a udta list; other containers have no such thing
    isobmff.check_sizes(box("moov", box("udta", box("name", b"x") + b"\0\0\0\0")))
    with pytest.raises(AssertionError, match="moov/edts: 4 stray bytes"):
        isobmff.check_sizes(box("moov", box("edts", box("elst", b"\0" * 8) + b"\0\0\0\0")))
