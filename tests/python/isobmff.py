"""An independent ISO-BMFF (MP4/MOV) reader for the tests: an oracle for the files sbsconv
writes (Apple ``vexu``/``hfov``, Google ``st3d``/``sv3d``) and for the chunk offsets its box
editor has to keep pointing at the right samples.

Pure Python (``struct``), written for the tests from the box layouts in ISO/IEC 14496-12 and
../shared/reference/headset-formats.md. It never reads the payload of ``mdat`` (files may be
sparse and larger than 4 GiB); every other leaf box is read whole.

The box tree is checked while it is parsed: children must exactly fill their parent's
payload and the top-level boxes must exactly tile the file. :func:`parse` raises
:class:`BoxError` on the first inconsistency, :func:`check_sizes` an ``AssertionError``
listing all of them (each with the path of the box, e.g. ``moov/trak[0]/mdia/minf``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Plain container boxes: their payload is a sequence of boxes.
CONTAINERS = frozenset({
    "moov", "trak", "mdia", "minf", "stbl", "dinf", "edts", "udta", "mvex", "moof", "traf",
    # Apple Video Extended Usage (vexu) tree
    "vexu", "eyes", "cams", "cmfy", "proj", "pack",
    # Google spherical video (sv3d/proj also holds prhd, equi or cbmp)
    "sv3d",
})

# Sample entries whose 78 bytes of VisualSampleEntry fields precede their child boxes.
VISUAL_ENTRIES = frozenset({
    "avc1", "avc2", "avc3", "avc4", "hvc1", "hev1", "hvc2", "hev2", "dvh1", "dvhe", "dva1",
    "dvav", "mp4v", "av01", "vp08", "vp09", "encv", "resv", "s263", "h263", "jpeg", "mjp2",
    "mjpa", "mjpb", "apch", "apcn", "apcs", "apco", "ap4h", "ap4x", "vvc1", "vvi1",
})
VISUAL_FIELDS = 78

# Sample entries with AudioSampleEntry fields (20 bytes after the 8 of SampleEntry for version
# 0; QuickTime's sound description version 1 adds 16 bytes and version 2 adds 36).
AUDIO_ENTRIES = frozenset({
    "mp4a", "enca", "ac-3", "ec-3", "ac-4", "Opus", "fLaC", "alac", "lpcm", "ipcm", "fpcm",
    "sowt", "twos", "samr", "sawb", "mha1", "mhm1",
})

# Leaf boxes bigger than this are not read into memory (``raw`` is then None).
MAX_LEAF_READ = 64 << 20


class BoxError(ValueError):
    """The box structure is inconsistent (a size that does not fit its parent or the file)."""


@dataclass
class Box:
    """One box.

    ``size`` is the total size including the header, as it is in the file (for a size field of
    0, "to the end of the parent/file", the extent that implies). ``header_size`` is 8, or 16
    for a 64-bit largesize (size field 1). ``payload_offset`` = ``offset + header_size``.

    ``children`` is a list for containers (plain containers, ``stsd`` and the visual/audio
    sample entries inside it) and None for leaf boxes. ``raw`` is the payload of a leaf box
    (None for ``mdat`` and for leaves over :data:`MAX_LEAF_READ`); for a container it is the
    part of the payload before the first child: b"" for plain containers, the 4-byte
    version/flags and 4-byte entry count of ``stsd``, the 78 bytes of VisualSampleEntry fields
    of a visual sample entry. A ``uuid`` box is a leaf whose ``raw`` starts with its 16-byte
    user type. ``path`` names the box from the top (``moov/trak[1]/mdia``: an index in
    brackets where siblings share the type).
    """

    type: str
    offset: int
    size: int
    header_size: int
    payload_offset: int
    children: list[Box] | None = None
    raw: bytes | None = None
    path: str = ""
    size_field: int = field(default=0, repr=False)  # the 32-bit size as written (0, 1 or size)

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def payload_size(self) -> int:
        return self.size - self.header_size

    def child(self, type_: str) -> Box | None:
        """The first child of that type, or None."""
        for c in self.children or ():
            if c.type == type_:
                return c
        return None

    def child_types(self) -> list[str]:
        return [c.type for c in self.children or ()]


# --------------------------------------------------------------------------------------------
# Sources: a file (read with seek, never mapped whole) or bytes in memory


class _FileSource:
    def __init__(self, path: str | os.PathLike):
        self._f = open(path, "rb")  # noqa: SIM115 (closed by parse)
        self.length = os.fstat(self._f.fileno()).st_size

    def read(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        data = self._f.read(n)
        if len(data) != n:
            raise BoxError(f"short read at {offset}: wanted {n} bytes, got {len(data)}")
        return data

    def close(self) -> None:
        self._f.close()


class _BytesSource:
    def __init__(self, data: bytes | bytearray | memoryview):
        self._data = bytes(data)
        self.length = len(self._data)

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.length:
            raise BoxError(f"read past the end: {offset}+{n} > {self.length}")
        return self._data[offset:offset + n]

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Parsing


def _fourcc(b: bytes) -> str:
    return b.decode("latin-1")


def _child_path(parent: str, type_: str, index: int | None) -> str:
    name = type_ if index is None else f"{type_}[{index}]"
    return f"{parent}/{name}" if parent else name


def _parse_range(src, start: int, end: int, parent_path: str, parent_type: str | None,
                 errors: list[str]) -> list[Box]:
    """The boxes that tile [start, end); inconsistencies are appended to ``errors`` (the
    range is then abandoned: what follows a bad size cannot be located)."""
    boxes: list[Box] = []
    where = parent_path or "<file>"
    pos = start
    while pos < end:
        left = end - pos
        if left < 8:
            if parent_type == "udta" and left == 4 and src.read(pos, 4) == b"\0\0\0\0":
                break  # QuickTime's optional 32-bit zero terminator of a user data list
            errors.append(f"{where}: {left} stray bytes at offset {pos} (children must exactly "
                          f"fill the payload, which ends at {end})")
            break
        size_field, type_b = struct.unpack(">I4s", src.read(pos, 8))
        type_ = _fourcc(type_b)
        path = _child_path(parent_path, type_, None)
        header = 8
        if size_field == 1:
            if left < 16:
                errors.append(f"{path}: largesize header at offset {pos} overruns {where}")
                break
            size = struct.unpack(">Q", src.read(pos + 8, 8))[0]
            header = 16
        elif size_field == 0:
            size = left
        else:
            size = size_field
        if size < header:
            errors.append(f"{path}: size {size} at offset {pos} is smaller than its "
                          f"{header}-byte header")
            break
        if size > left:
            errors.append(f"{path}: size {size} at offset {pos} runs past the end of {where} "
                          f"({pos + size} > {end})")
            break
        box = Box(type_, pos, size, header, pos + header, path=path, size_field=size_field)
        boxes.append(box)
        pos += size

    # Names: index siblings that share a type, then parse the insides.
    counts: dict[str, int] = {}
    for b in boxes:
        counts[b.type] = counts.get(b.type, 0) + 1
    seen: dict[str, int] = {}
    for b in boxes:
        if counts[b.type] > 1:
            b.path = _child_path(parent_path, b.type, seen.get(b.type, 0))
            seen[b.type] = seen.get(b.type, 0) + 1
        _parse_inside(src, b, parent_type, errors)
    return boxes


def _audio_fields(src, box: Box) -> int:
    """Bytes of AudioSampleEntry fields before the child boxes (version from QuickTime)."""
    if box.payload_size < 28:
        return box.payload_size
    version = struct.unpack(">H", src.read(box.payload_offset + 8, 2))[0]
    return {0: 28, 1: 44, 2: 64}.get(version, 28)


def _parse_inside(src, box: Box, parent_type: str | None, errors: list[str]) -> None:
    t = box.type
    preamble = None  # bytes of fields before the children; None: a leaf
    if t in CONTAINERS:
        preamble = 0
    elif t == "stsd":
        preamble = 8
    elif parent_type == "stsd" and t in VISUAL_ENTRIES:
        preamble = VISUAL_FIELDS
    elif parent_type == "stsd" and t in AUDIO_ENTRIES:
        preamble = _audio_fields(src, box)

    if preamble is None:
        if t != "mdat" and box.payload_size <= MAX_LEAF_READ:
            box.raw = src.read(box.payload_offset, box.payload_size)
        return
    if preamble > box.payload_size:
        errors.append(f"{box.path}: payload of {box.payload_size} bytes is shorter than its "
                      f"{preamble} bytes of fields")
        box.raw = src.read(box.payload_offset, box.payload_size)
        box.children = []
        return
    box.raw = src.read(box.payload_offset, preamble)
    box.children = _parse_range(src, box.payload_offset + preamble, box.end, box.path, t, errors)
    if t == "stsd":
        count = struct.unpack(">I", box.raw[4:8])[0]
        if count != len(box.children):
            errors.append(f"{box.path}: entry_count {count} but {len(box.children)} entries")


def _parse_source(src) -> tuple[list[Box], list[str]]:
    errors: list[str] = []
    try:
        boxes = _parse_range(src, 0, src.length, "", None, errors)
    finally:
        src.close()
    return boxes, errors


def _raise_on(errors: list[str]) -> None:
    if errors:
        raise BoxError("; ".join(errors))


def parse(path: str | os.PathLike) -> list[Box]:
    """The top-level boxes of a file, containers parsed recursively. Raises :class:`BoxError`
    where the sizes are inconsistent."""
    boxes, errors = _parse_source(_FileSource(path))
    _raise_on(errors)
    return boxes


def parse_bytes(data: bytes | bytearray | memoryview) -> list[Box]:
    """:func:`parse` for an in-memory buffer (offsets are offsets into ``data``)."""
    boxes, errors = _parse_source(_BytesSource(data))
    _raise_on(errors)
    return boxes


def check_sizes(source: str | os.PathLike | bytes | bytearray) -> list[Box]:
    """Checks that every container's children exactly fill its payload, that the top-level
    boxes exactly tile the file and that ``stsd``'s entry count matches its entries. Raises
    AssertionError naming the box paths; returns the parsed boxes otherwise."""
    src = _BytesSource(source) if isinstance(source, bytes | bytearray | memoryview) \
        else _FileSource(source)
    boxes, errors = _parse_source(src)
    if errors:
        raise AssertionError("inconsistent box sizes: " + "; ".join(errors))
    return boxes


# --------------------------------------------------------------------------------------------
# Navigation


def walk(boxes: Box | Iterable[Box]) -> Iterable[Box]:
    """Every box, depth first, in file order."""
    for b in _as_list(boxes):
        yield b
        if b.children:
            yield from walk(b.children)


def _as_list(boxes: Box | Iterable[Box]) -> list[Box]:
    if isinstance(boxes, Box):
        return list(boxes.children or [])
    return list(boxes)


def find(boxes: Box | Iterable[Box], path: str) -> list[Box]:
    """All boxes matching a slash-separated path of types from ``boxes`` (a list: the top
    level, or a Box: its children); an element ``*`` matches any type."""
    current = _as_list(boxes)
    parts = [p for p in path.split("/") if p]
    matches: list[Box] = []
    for i, part in enumerate(parts):
        matches = [b for b in current if part == "*" or b.type == part]
        if i < len(parts) - 1:
            current = [c for b in matches for c in (b.children or [])]
    return matches


def find_one(boxes: Box | Iterable[Box], path: str) -> Box | None:
    found = find(boxes, path)
    return found[0] if found else None


def full_box(box: Box) -> tuple[int, int, bytes]:
    """(version, flags, the payload after the 4 bytes of version and flags) of a FullBox."""
    raw = box.raw
    if raw is None or len(raw) < 4:
        raise AssertionError(f"{box.path}: not a readable FullBox")
    return raw[0], int.from_bytes(raw[1:4], "big"), raw[4:]


def handler_type(trak: Box) -> str | None:
    hdlr = find_one(trak, "mdia/hdlr")
    if hdlr is None:
        return None
    _, _, body = full_box(hdlr)
    return _fourcc(body[4:8])  # after pre_defined


def tracks(boxes: Iterable[Box]) -> list[Box]:
    return find(boxes, "moov/trak")


def track_id(trak: Box) -> int:
    tkhd = find_one(trak, "tkhd")
    if tkhd is None:
        raise AssertionError(f"{trak.path}: no tkhd")
    version, _, body = full_box(tkhd)
    at = 16 if version == 1 else 8  # creation + modification times: 64 or 32 bits each
    return struct.unpack(">I", body[at:at + 4])[0]


def sample_entries(trak: Box) -> list[Box]:
    return find(trak, "mdia/minf/stbl/stsd/*")


def video_sample_entry(boxes: Iterable[Box]) -> Box | None:
    """The first sample entry of the first track whose handler type is 'vide'."""
    for trak in tracks(boxes):
        if handler_type(trak) == "vide":
            entries = sample_entries(trak)
            return entries[0] if entries else None
    return None


def visual_size(entry: Box) -> tuple[int, int]:
    """(width, height) from a visual sample entry's fields."""
    return struct.unpack(">HH", entry.raw[24:28])


def nal_length_size(entry: Box) -> int:
    """NAL unit length-prefix size of an H.264 (avcC) or HEVC (hvcC) sample entry."""
    avcc = entry.child("avcC")
    if avcc is not None:
        return (avcc.raw[4] & 3) + 1
    hvcc = entry.child("hvcC")
    if hvcc is not None:
        return (hvcc.raw[21] & 3) + 1
    raise AssertionError(f"{entry.path}: neither avcC nor hvcC")


def config_arrays(payload: bytes, first: int) -> dict[int, list[bytes]]:
    """The NAL unit arrays of an hvcC or lhvC payload by NAL unit type (``first``: the offset of
    numOfArrays: 22 in hvcC, 5 in lhvC)."""
    arrays: dict[int, list[bytes]] = {}
    pos = first + 1
    for _ in range(payload[first]):
        kind = payload[pos] & 0x3F
        count = struct.unpack(">H", payload[pos + 1:pos + 3])[0]
        pos += 3
        for _ in range(count):
            n = struct.unpack(">H", payload[pos:pos + 2])[0]
            arrays.setdefault(kind, []).append(payload[pos + 2:pos + 2 + n])
            pos += 2 + n
    return arrays


def video_samples(path: str | os.PathLike) -> list[bytes]:
    """The first video track's samples, in decoding order."""
    boxes = parse(path)
    trak = next(t for t in tracks(boxes) if handler_type(t) == "vide")
    track = track_id(trak)
    offsets, sizes = sample_offsets(boxes)[track], sample_sizes(boxes)[track]
    return [read_sample(path, o, n) for o, n in zip(offsets, sizes, strict=True)]


def hevc_annexb(path: str | os.PathLike) -> bytes:
    """An HEVC track (one or two layers: hvcC, lhvC) as the raw byte stream an encoder writes:
    the VPS, both layers' SPS, then both layers' PPS after 4-byte start codes, then every
    sample's NAL units (4-byte lengths) after start codes."""
    entry = video_sample_entry(parse(path))
    base = config_arrays(entry.child("hvcC").raw, 22)
    lhvc = entry.child("lhvC")
    second = config_arrays(lhvc.raw, 5) if lhvc is not None else {}
    out = bytearray()
    for nal in base.get(32, []) + base.get(33, []) + second.get(33, []) + base.get(34, []) + second.get(34, []):
        out += b"\0\0\0\1" + nal
    for sample in video_samples(path):
        for n, pos in _nal_positions(sample):
            out += b"\0\0\0\1" + sample[pos:pos + n]
    return bytes(out)


def _nal_positions(sample: bytes) -> list[tuple[int, int]]:
    positions, pos = [], 0
    for n in nal_lengths(sample, 4):
        positions.append((n, pos + 4))
        pos += 4 + n
    return positions


def nal_lengths(sample: bytes, length_size: int = 4) -> list[int]:
    """Walks the length-prefixed NAL units of a sample; AssertionError unless they exactly
    fill it. Returns the NAL unit lengths (without their prefixes)."""
    lengths = []
    pos = 0
    while pos < len(sample):
        if pos + length_size > len(sample):
            raise AssertionError(f"NAL length prefix at {pos} overruns a {len(sample)}-byte sample")
        n = int.from_bytes(sample[pos:pos + length_size], "big")
        if n == 0:
            raise AssertionError(f"zero-length NAL unit at {pos}")
        pos += length_size + n
        lengths.append(n)
    if pos != len(sample):
        raise AssertionError(f"NAL units end at {pos}, the sample has {len(sample)} bytes")
    return lengths


# --------------------------------------------------------------------------------------------
# Stereo/spherical metadata


def st3d_mode(entry: Box) -> int | None:
    """Google st3d stereo_mode (0 mono, 1 top-bottom, 2 left-right, 4 right-left) or None."""
    st3d = entry.child("st3d")
    if st3d is None:
        return None
    _, _, body = full_box(st3d)
    return body[0]


def sv3d(entry: Box) -> dict | None:
    """Google sv3d: {"metadata_source": str|None, "projection": "equi"|"cbmp"|<type>|None,
    "yaw", "pitch", "roll": degrees (16.16) or None, and for equi "top", "bottom", "left",
    "right" as fractions (value / 2**32), for cbmp "layout", "padding"}; None without sv3d."""
    box = entry.child("sv3d")
    if box is None:
        return None
    out: dict = {"metadata_source": None, "projection": None, "yaw": None, "pitch": None,
                 "roll": None}
    svhd = box.child("svhd")
    if svhd is not None:
        _, _, body = full_box(svhd)
        out["metadata_source"] = body.split(b"\0", 1)[0].decode("utf-8")
    proj = box.child("proj")
    if proj is not None:
        prhd = proj.child("prhd")
        if prhd is not None:
            _, _, body = full_box(prhd)
            yaw, pitch, roll = struct.unpack(">iii", body[:12])
            out.update(yaw=yaw / 65536, pitch=pitch / 65536, roll=roll / 65536)
        for c in proj.children or []:
            if c.type == "prhd":
                continue
            out["projection"] = c.type
            if c.type == "equi":
                _, _, body = full_box(c)
                top, bottom, left, right = struct.unpack(">IIII", body[:16])
                out.update(top=top / 2**32, bottom=bottom / 2**32, left=left / 2**32,
                           right=right / 2**32)
            elif c.type == "cbmp":
                _, _, body = full_box(c)
                out["layout"], out["padding"] = struct.unpack(">II", body[:8])
            break
    return out


def _full_value(box: Box | None, fmt: str):
    if box is None:
        return None
    _, _, body = full_box(box)
    return struct.unpack(fmt, body[:struct.calcsize(fmt)])[0]


def apple(entry: Box) -> dict | None:
    """Apple vexu (and the sibling hfov): {"stri": int, "hero": int, "baseline_um": int,
    "disparity_adjustment": int (signed), "projection": four-char (vexu/proj/prji) or None,
    "packing": four-char (vexu/pack/pkin) or None, "hfov_millidegrees": int or None}; values
    whose box is absent are None. None without vexu."""
    vexu = entry.child("vexu")
    if vexu is None:
        return None
    prji = _full_value(find_one(vexu, "proj/prji"), ">4s")
    pkin = _full_value(find_one(vexu, "pack/pkin"), ">4s")
    hfov = entry.child("hfov")
    return {
        "stri": _full_value(find_one(vexu, "eyes/stri"), ">B"),
        "hero": _full_value(find_one(vexu, "eyes/hero"), ">B"),
        "baseline_um": _full_value(find_one(vexu, "eyes/cams/blin"), ">I"),
        "disparity_adjustment": _full_value(find_one(vexu, "eyes/cmfy/dadj"), ">i"),
        "projection": None if prji is None else _fourcc(prji),
        "packing": None if pkin is None else _fourcc(pkin),
        "hfov_millidegrees": None if hfov is None else struct.unpack(">I", hfov.raw[:4])[0],
    }


# --------------------------------------------------------------------------------------------
# Sample tables


def _stbl(trak: Box) -> Box:
    stbl = find_one(trak, "mdia/minf/stbl")
    if stbl is None:
        raise AssertionError(f"{trak.path}: no mdia/minf/stbl")
    return stbl


def _track_chunk_offsets(trak: Box) -> list[int]:
    stbl = _stbl(trak)
    stco, co64 = stbl.child("stco"), stbl.child("co64")
    if (stco is None) == (co64 is None):
        raise AssertionError(f"{stbl.path}: needs exactly one of stco and co64")
    box, fmt = (stco, "I") if stco is not None else (co64, "Q")
    _, _, body = full_box(box)
    count = struct.unpack(">I", body[:4])[0]
    width = struct.calcsize(fmt)
    if len(body) != 4 + count * width:
        raise AssertionError(f"{box.path}: {count} entries do not fill {len(body)} bytes")
    return list(struct.unpack(f">{count}{fmt}", body[4:]))


def _track_sample_sizes(trak: Box) -> list[int]:
    stbl = _stbl(trak)
    stsz = stbl.child("stsz")
    if stsz is not None:
        _, _, body = full_box(stsz)
        size, count = struct.unpack(">II", body[:8])
        if size:
            return [size] * count
        if len(body) != 8 + 4 * count:
            raise AssertionError(f"{stsz.path}: {count} entries do not fill {len(body)} bytes")
        return list(struct.unpack(f">{count}I", body[8:]))
    stz2 = stbl.child("stz2")
    if stz2 is None:
        raise AssertionError(f"{stbl.path}: neither stsz nor stz2")
    _, _, body = full_box(stz2)
    field_size, count = body[3], struct.unpack(">I", body[4:8])[0]
    data = body[8:]
    if field_size == 16:
        return list(struct.unpack(f">{count}H", data[:2 * count]))
    if field_size == 8:
        return list(data[:count])
    if field_size == 4:
        return [(data[i // 2] >> (4 if i % 2 == 0 else 0)) & 15 for i in range(count)]
    raise AssertionError(f"{stz2.path}: field_size {field_size}")


def _track_stsc(trak: Box) -> list[tuple[int, int, int]]:
    stsc = _stbl(trak).child("stsc")
    if stsc is None:
        raise AssertionError(f"{trak.path}: no stsc")
    _, _, body = full_box(stsc)
    count = struct.unpack(">I", body[:4])[0]
    if len(body) != 4 + 12 * count:
        raise AssertionError(f"{stsc.path}: {count} entries do not fill {len(body)} bytes")
    flat = struct.unpack(f">{3 * count}I", body[4:])
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def _per_track(boxes: Iterable[Box], fn) -> dict[int, list]:
    return {track_id(t): fn(t) for t in tracks(boxes)}


def chunk_offsets(boxes: Iterable[Box]) -> dict[int, list[int]]:
    """Chunk file offsets (stco or co64) of every track, by track_id."""
    return _per_track(boxes, _track_chunk_offsets)


def sample_sizes(boxes: Iterable[Box]) -> dict[int, list[int]]:
    """Sample sizes (stsz, or stz2) of every track, by track_id."""
    return _per_track(boxes, _track_sample_sizes)


def samples_to_chunks(boxes: Iterable[Box]) -> dict[int, list[tuple[int, int, int]]]:
    """stsc entries (first_chunk, samples_per_chunk, sample_description_index) by track_id."""
    return _per_track(boxes, _track_stsc)


def _track_sample_offsets(trak: Box) -> list[int]:
    chunks = _track_chunk_offsets(trak)
    sizes = _track_sample_sizes(trak)
    stsc = _track_stsc(trak)
    if chunks and (not stsc or stsc[0][0] != 1):
        raise AssertionError(f"{trak.path}: stsc must start at chunk 1, got {stsc[:1]}")
    offsets: list[int] = []
    sample = 0
    for i, (first, per_chunk, _) in enumerate(stsc):
        last = stsc[i + 1][0] - 1 if i + 1 < len(stsc) else len(chunks)
        if last < first - 1 or last > len(chunks):
            raise AssertionError(f"{trak.path}: stsc runs {first}..{last} outside "
                                 f"{len(chunks)} chunks")
        for chunk in range(first, last + 1):
            pos = chunks[chunk - 1]
            for _ in range(per_chunk):
                if sample >= len(sizes):
                    raise AssertionError(f"{trak.path}: stsc/stco describe more samples than "
                                         f"the {len(sizes)} of stsz")
                offsets.append(pos)
                pos += sizes[sample]
                sample += 1
    if sample != len(sizes):
        raise AssertionError(f"{trak.path}: stsc/stco describe {sample} samples, stsz "
                             f"{len(sizes)}")
    return offsets


def sample_offsets(boxes: Iterable[Box]) -> dict[int, list[int]]:
    """Each sample's file offset, by track_id, from stco/co64 + stsc + stsz. AssertionError
    where the tables disagree on the number of samples."""
    return _per_track(boxes, _track_sample_offsets)


def read_sample(path: str | os.PathLike, offset: int, size: int) -> bytes:
    """``size`` bytes of a file at ``offset`` (AssertionError if the file is shorter)."""
    with open(Path(path), "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise AssertionError(f"{path}: {size} bytes at {offset} run past the end of the file")
    return data
