#include "sbsconv/media/IsoBmff.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <vector>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr const char* kStage = "stereo metadata";
constexpr uint64_t kMaxMoovBytes = uint64_t{256} << 20;
constexpr size_t kCopyChunk = size_t{1} << 20;
// A visual sample entry's fields before its child boxes (ISO/IEC 14496-12 VisualSampleEntry).
constexpr size_t kVisualEntryFields = 78;

uint32_t get32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

uint64_t get64(const std::string& s, size_t at) {
  return (uint64_t{get32(s, at)} << 32) | get32(s, at + 4);
}

std::string be64(uint64_t v) {
  return be32(static_cast<uint32_t>(v >> 32)) + be32(static_cast<uint32_t>(v & 0xFFFFFFFFu));
}

// A box of the moov, parsed as far as the edit needs: containers hold children after an
// optional prefix (stsd's version/flags and count, a visual sample entry's fields); leaves
// keep their payload as it is.
struct Node {
  std::string type;
  std::string prefix;
  std::vector<Node> children;
  bool container = false;
};

[[noreturn]] void damaged(const std::string& path, const std::string& why) {
  throw Error(ErrorKind::Output, kStage, "cannot edit the file's boxes: " + why, path);
}

// The boxes of buf[begin, end).
std::vector<Node> parse_boxes(const std::string& buf, size_t begin, size_t end, const std::string& path) {
  std::vector<Node> out;
  size_t at = begin;
  while (at < end) {
    if (end - at < 8) {
      damaged(path, "a box header is cut off");
    }
    uint64_t size = get32(buf, at);
    size_t header = 8;
    if (size == 1) {
      if (end - at < 16) {
        damaged(path, "a box header is cut off");
      }
      size = get64(buf, at + 8);
      header = 16;
    } else if (size == 0) {
      size = end - at;
    }
    if (size < header || size > end - at) {
      damaged(path, "a box's size runs past its parent");
    }
    Node node;
    node.type = buf.substr(at + 4, 4);
    static const std::set<std::string> containers = {"trak", "mdia", "minf", "stbl", "moov"};
    if (containers.count(node.type) != 0) {
      node.container = true;
      node.children = parse_boxes(buf, at + header, at + size, path);
    } else {
      node.prefix = buf.substr(at + header, size - header);
    }
    out.push_back(std::move(node));
    at += size;
  }
  return out;
}

std::string serialize(const Node& node) {
  std::string payload = node.prefix;
  for (const Node& child : node.children) {
    payload += serialize(child);
  }
  const uint64_t size = payload.size() + 8;
  if (size > std::numeric_limits<uint32_t>::max()) {
    return be32(1) + node.type + be64(payload.size() + 16) + payload;
  }
  return be32(static_cast<uint32_t>(size)) + node.type + payload;
}

Node* child(Node& parent, const std::string& type) {
  for (Node& c : parent.children) {
    if (c.type == type) {
      return &c;
    }
  }
  return nullptr;
}

const Node* child(const Node& parent, const std::string& type) {
  return child(const_cast<Node&>(parent), type);
}

// The handler type of a trak (mdia/hdlr: version/flags, pre_defined, then handler_type).
std::string handler_of(const Node& trak) {
  const Node* mdia = child(trak, "mdia");
  const Node* hdlr = mdia ? child(*mdia, "hdlr") : nullptr;
  return hdlr && hdlr->prefix.size() >= 12 ? hdlr->prefix.substr(8, 4) : "";
}

Node* video_stbl(Node& moov) {
  for (Node& trak : moov.children) {
    if (trak.type != "trak" || handler_of(trak) != "vide") {
      continue;
    }
    Node* mdia = child(trak, "mdia");
    Node* minf = mdia ? child(*mdia, "minf") : nullptr;
    Node* stbl = minf ? child(*minf, "stbl") : nullptr;
    if (stbl != nullptr) {
      return stbl;
    }
  }
  return nullptr;
}

// Splits a video stsd leaf into its first sample entry's fields and children; the rest of the
// stsd (other entries) stays as it is after that entry.
struct SampleEntry {
  std::string stsd_head; // version/flags + entry count
  std::string type;
  std::string fields; // the 78 bytes of a visual sample entry
  std::vector<Node> children;
  std::string rest; // further entries
};

SampleEntry split_stsd(const Node& stsd, const std::string& path) {
  const std::string& p = stsd.prefix;
  if (p.size() < 16) {
    damaged(path, "the sample description is empty");
  }
  SampleEntry e;
  e.stsd_head = p.substr(0, 8);
  const uint64_t size = get32(p, 8);
  if (size < 8 + kVisualEntryFields || size > p.size() - 8) {
    damaged(path, "the video sample entry has an impossible size");
  }
  e.type = p.substr(12, 4);
  e.fields = p.substr(16, kVisualEntryFields);
  // children: plain boxes; their own contents stay raw
  std::string inner = p.substr(16 + kVisualEntryFields, size - 8 - kVisualEntryFields);
  size_t at = 0;
  while (at < inner.size()) {
    if (inner.size() - at < 8) {
      damaged(path, "a box in the sample entry is cut off");
    }
    const uint32_t s = get32(inner, at);
    if (s < 8 || s > inner.size() - at) {
      damaged(path, "a box in the sample entry has an impossible size");
    }
    Node c;
    c.type = inner.substr(at + 4, 4);
    c.prefix = inner.substr(at + 8, s - 8);
    e.children.push_back(std::move(c));
    at += s;
  }
  e.rest = p.substr(8 + size);
  return e;
}

std::string join_stsd(const SampleEntry& e) {
  std::string entry = e.fields;
  for (const Node& c : e.children) {
    entry += serialize(c);
  }
  return e.stsd_head + be32(static_cast<uint32_t>(entry.size() + 8)) + e.type + entry + e.rest;
}

// Reads the top-level boxes of a file: (type, offset, size).
struct TopBox {
  std::string type;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t header = 8;
  bool to_end = false; // size field 0: the box runs to the end of the file, so it stays last
};

struct File {
  std::FILE* f = nullptr;
  ~File() {
    if (f != nullptr) {
      std::fclose(f);
    }
  }
};

std::vector<TopBox> scan_top(std::FILE* f, uint64_t file_size, const std::string& path) {
  std::vector<TopBox> boxes;
  uint64_t at = 0;
  while (at < file_size) {
    unsigned char h[16];
    if (file_size - at < 8 || fseeko(f, static_cast<off_t>(at), SEEK_SET) != 0 || std::fread(h, 1, 8, f) != 8) {
      damaged(path, "the file ends inside a box header");
    }
    TopBox b;
    b.offset = at;
    b.type.assign(reinterpret_cast<char*>(h) + 4, 4);
    b.size = (uint64_t{h[0]} << 24) | (uint64_t{h[1]} << 16) | (uint64_t{h[2]} << 8) | h[3];
    if (b.size == 1) {
      if (std::fread(h + 8, 1, 8, f) != 8) {
        damaged(path, "the file ends inside a box header");
      }
      b.size = 0;
      for (int i = 8; i < 16; ++i) {
        b.size = (b.size << 8) | h[i];
      }
      b.header = 16;
    } else if (b.size == 0) {
      b.size = file_size - at;
      b.to_end = true;
    }
    if (b.size < b.header || b.size > file_size - at) {
      damaged(path, "a top-level box runs past the end of the file");
    }
    boxes.push_back(b);
    at += b.size;
  }
  return boxes;
}

std::string read_range(std::FILE* f, uint64_t offset, uint64_t size, const std::string& path) {
  std::string out(static_cast<size_t>(size), '\0');
  if (fseeko(f, static_cast<off_t>(offset), SEEK_SET) != 0 || std::fread(out.data(), 1, out.size(), f) != out.size()) {
    damaged(path, "cannot read the moov box");
  }
  return out;
}

uint64_t file_size_of(std::FILE* f) {
  fseeko(f, 0, SEEK_END);
  return static_cast<uint64_t>(ftello(f));
}

// The chunk-offset boxes (stco, co64) of every track.
std::vector<Node*> chunk_offset_boxes(Node& moov) {
  std::vector<Node*> out;
  for (Node& trak : moov.children) {
    Node* mdia = trak.type == "trak" ? child(trak, "mdia") : nullptr;
    Node* minf = mdia ? child(*mdia, "minf") : nullptr;
    Node* stbl = minf ? child(*minf, "stbl") : nullptr;
    if (stbl == nullptr) {
      continue;
    }
    for (Node& c : stbl->children) {
      if (c.type == "stco" || c.type == "co64") {
        out.push_back(&c);
      }
    }
  }
  return out;
}

std::vector<uint64_t> offsets_of(const Node& box, const std::string& path) {
  const bool wide = box.type == "co64";
  if (box.prefix.size() < 8) {
    damaged(path, "a chunk offset table is cut off");
  }
  const uint64_t count = get32(box.prefix, 4);
  if (box.prefix.size() < 8 + count * (wide ? 8 : 4)) {
    damaged(path, "a chunk offset table is cut off");
  }
  std::vector<uint64_t> v(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    v[i] = wide ? get64(box.prefix, 8 + 8 * i) : get32(box.prefix, 8 + 4 * i);
  }
  return v;
}

void set_offsets(Node& box, const std::vector<uint64_t>& v, bool wide) {
  std::string p = box.prefix.substr(0, 4) + be32(static_cast<uint32_t>(v.size()));
  for (uint64_t o : v) {
    p += wide ? be64(o) : be32(static_cast<uint32_t>(o));
  }
  box.type = wide ? "co64" : "stco";
  box.prefix = std::move(p);
}

// Reads and parses the moov of an ISO-BMFF file; nullopt when the file has none.
struct Moov {
  std::vector<TopBox> top;
  size_t index = 0; // of the moov in `top`
  Node node;
};

std::optional<Moov> read_moov(std::FILE* f, const std::string& path) {
  const uint64_t size = file_size_of(f);
  Moov m;
  m.top = scan_top(f, size, path);
  for (size_t i = 0; i < m.top.size(); ++i) {
    if (m.top[i].type != "moov") {
      continue;
    }
    const TopBox& b = m.top[i];
    if (b.size > kMaxMoovBytes) {
      damaged(path, "the moov box is larger than 256 MiB");
    }
    const std::string bytes = read_range(f, b.offset, b.size, path);
    m.index = i;
    m.node.type = "moov";
    m.node.container = true;
    m.node.children = parse_boxes(bytes, b.header, bytes.size(), path);
    return m;
  }
  return std::nullopt;
}

} // namespace

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  s[0] = static_cast<char>(v >> 24);
  s[1] = static_cast<char>((v >> 16) & 0xFF);
  s[2] = static_cast<char>((v >> 8) & 0xFF);
  s[3] = static_cast<char>(v & 0xFF);
  return s;
}

std::string make_box(const std::string& type, const std::string& payload) {
  SBSCONV_CHECK(type.size() == 4, Internal, kStage, "a box type has four characters");
  return be32(static_cast<uint32_t>(payload.size() + 8)) + type + payload;
}

std::string make_full_box(const std::string& type, uint8_t version, uint32_t flags, const std::string& payload) {
  std::string head = be32(flags & 0xFFFFFFu);
  head[0] = static_cast<char>(version);
  return make_box(type, head + payload);
}

std::string apple_stereo_boxes(const AppleStereo& a) {
  SBSCONV_CHECK(a.packing.empty() || a.packing.size() == 4, Option, kStage, "the view packing is a four-character code");
  SBSCONV_CHECK(a.projection.empty() || a.projection.size() == 4, Option, kStage, "the projection is a four-character code");
  const std::string eyes = make_box(
      "eyes",
      make_full_box("stri", 0, 0, std::string(1, '\x03')) + // left and right eye present
          make_full_box("hero", 0, 0, std::string(1, '\x01')) + // the left eye
          make_box("cams", make_full_box("blin", 0, 0, be32(a.baseline_um))) +
          make_box("cmfy", make_full_box("dadj", 0, 0, be32(static_cast<uint32_t>(a.disparity_adjustment)))));
  std::string vexu = eyes;
  if (!a.projection.empty()) {
    vexu += make_box("proj", make_full_box("prji", 0, 0, a.projection));
  }
  if (!a.packing.empty()) {
    vexu += make_box("pack", make_full_box("pkin", 0, 0, a.packing));
  }
  std::string out = make_box("vexu", vexu);
  if (a.hfov_degrees) {
    SBSCONV_CHECK(
        std::isfinite(*a.hfov_degrees) && *a.hfov_degrees > 0 && *a.hfov_degrees < 360, Option, kStage,
        "the field of view must be within 0..360 degrees");
    out += make_box("hfov", be32(static_cast<uint32_t>(std::lround(*a.hfov_degrees * 1000.0))));
  }
  return out;
}

namespace {

// The edited moov (Note [Editing ISO-BMFF files]), the order the top-level boxes are written
// in (indices into layout.top) and where each lands.
struct EditedMoov {
  Moov layout;
  std::string moov;
  std::vector<size_t> order;
};

// Where each top-level box starts in the output, written in `order` with the moov `moov_size`
// bytes long.
std::vector<uint64_t> new_offsets(const Moov& m, const std::vector<size_t>& order, uint64_t moov_size) {
  std::vector<uint64_t> at(m.top.size());
  uint64_t pos = 0;
  for (size_t i : order) {
    at[i] = pos;
    pos += i == m.index ? moov_size : m.top[i].size;
  }
  return at;
}

// A file offset of the input as an offset of the output: inside the same top-level box.
uint64_t relocate(const Moov& m, const std::vector<uint64_t>& at, uint64_t offset, const std::string& path) {
  for (size_t i = 0; i < m.top.size(); ++i) {
    const TopBox& b = m.top[i];
    if (i != m.index && offset >= b.offset && offset - b.offset < b.size) {
      return offset - b.offset + at[i];
    }
  }
  damaged(path, "a chunk offset points outside the media data");
}

EditedMoov edit_moov(std::FILE* file, const std::string& in, const std::string& boxes, bool moov_first) {
  std::optional<Moov> found = read_moov(file, in);
  if (!found) {
    damaged(in, "it has no moov box");
  }
  EditedMoov result{std::move(*found), {}, {}};
  Moov& m = result.layout;
  Node* stbl = video_stbl(m.node);
  Node* stsd = stbl ? child(*stbl, "stsd") : nullptr;
  if (stsd == nullptr) {
    damaged(in, "it has no video track");
  }
  SampleEntry entry = split_stsd(*stsd, in);
  for (size_t at = 0; at < boxes.size();) {
    SBSCONV_CHECK(boxes.size() - at >= 8, Internal, kStage, "a box to add is cut off");
    const uint32_t s = get32(boxes, at);
    SBSCONV_CHECK(s >= 8 && s <= boxes.size() - at, Internal, kStage, "a box to add has an impossible size");
    Node c;
    c.type = boxes.substr(at + 4, 4);
    c.prefix = boxes.substr(at + 8, s - 8);
    entry.children.push_back(std::move(c));
    at += s;
  }
  stsd->prefix = join_stsd(entry);

  // The output's box order: as in the input, or (moov_first) the moov right after the ftyp,
  // where players find it before the media data.
  // (A box whose size field says "to the end of the file" stays where it is, last.)
  auto leads = [&](size_t i) { return i != m.index && m.top[i].type == "ftyp" && !m.top[i].to_end; };
  for (size_t i = 0; i < m.top.size(); ++i) {
    if (!moov_first || leads(i)) {
      result.order.push_back(i);
    }
  }
  if (moov_first) {
    result.order.push_back(m.index);
    for (size_t i = 0; i < m.top.size(); ++i) {
      if (i != m.index && !leads(i)) {
        result.order.push_back(i);
      }
    }
  }

  // Every chunk offset moves with the box its chunk lies in; 32-bit tables whose offsets would
  // overflow become co64, which grows the moov and so moves the boxes after it again.
  std::vector<Node*> tables = chunk_offset_boxes(m.node);
  std::vector<std::vector<uint64_t>> original;
  for (Node* t : tables) {
    original.push_back(offsets_of(*t, in));
  }
  std::vector<bool> wide(tables.size());
  for (size_t i = 0; i < tables.size(); ++i) {
    wide[i] = tables[i]->type == "co64";
  }
  std::vector<uint64_t> at;
  for (int round = 0; round < 8; ++round) {
    for (size_t i = 0; i < tables.size(); ++i) {
      set_offsets(*tables[i], original[i], wide[i]); // sizes only depend on the widths
    }
    at = new_offsets(m, result.order, serialize(m.node).size());
    bool changed = false;
    for (size_t i = 0; i < tables.size(); ++i) {
      for (size_t k = 0; k < original[i].size() && !wide[i]; ++k) {
        if (relocate(m, at, original[i][k], in) > std::numeric_limits<uint32_t>::max()) {
          wide[i] = true;
          changed = true;
        }
      }
    }
    if (!changed) {
      break;
    }
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    std::vector<uint64_t> moved = original[i];
    for (uint64_t& o : moved) {
      o = relocate(m, at, o, in);
    }
    set_offsets(*tables[i], moved, wide[i]);
  }
  result.moov = serialize(m.node);
  SBSCONV_CHECK(
      new_offsets(m, result.order, result.moov.size()) == at, Internal, kStage, "the moov's size changed while editing");
  return result;
}

} // namespace

std::string edited_moov(const std::string& in, const std::string& boxes, bool moov_first) {
  File src;
  src.f = std::fopen(in.c_str(), "rb");
  if (src.f == nullptr) {
    throw Error(ErrorKind::Output, kStage, "cannot open the file to add its stereo boxes", in);
  }
  return edit_moov(src.f, in, boxes, moov_first).moov;
}

std::string google_stereo_boxes(int st3d_mode, bool vr180) {
  std::string out;
  if (st3d_mode > 0) {
    out += make_full_box("st3d", 0, 0, std::string(1, static_cast<char>(st3d_mode)));
  }
  if (vr180) {
    const std::string header = make_full_box("svhd", 0, 0, std::string("sbsconv") + '\0');
    const std::string pose = make_full_box("prhd", 0, 0, be32(0) + be32(0) + be32(0));
    const std::string bounds = make_full_box("equi", 0, 0, be32(0) + be32(0) + be32(0x40000000u) + be32(0x40000000u));
    out += make_box("sv3d", header + make_box("proj", pose + bounds));
  }
  return out;
}

void copy_with_sample_entry_boxes(
    const std::string& in,
    const std::string& out,
    const std::string& boxes,
    const std::atomic<bool>* cancel,
    bool moov_first) {
  File src;
  src.f = std::fopen(in.c_str(), "rb");
  if (src.f == nullptr) {
    throw Error(ErrorKind::Output, kStage, "cannot open the file to add its stereo boxes", in);
  }
  EditedMoov edited = edit_moov(src.f, in, boxes, moov_first);
  const Moov& m = edited.layout;
  const std::string& moov = edited.moov;

  File dst;
  dst.f = std::fopen(out.c_str(), "wb");
  if (dst.f == nullptr) {
    throw Error(ErrorKind::Output, kStage, "cannot create the file", out);
  }
  std::vector<char> buffer(kCopyChunk);
  for (size_t i : edited.order) {
    if (i == m.index) {
      if (std::fwrite(moov.data(), 1, moov.size(), dst.f) != moov.size()) {
        throw Error(ErrorKind::Output, kStage, "cannot write the file (disk full?)", out);
      }
      continue;
    }
    const TopBox& b = m.top[i];
    if (fseeko(src.f, static_cast<off_t>(b.offset), SEEK_SET) != 0) {
      damaged(in, "cannot seek in the file");
    }
    for (uint64_t left = b.size; left > 0;) {
      if (cancel != nullptr && cancel->load()) {
        throw Error(ErrorKind::Cancelled, kStage, "cancelled", out);
      }
      const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
      if (std::fread(buffer.data(), 1, n, src.f) != n) {
        damaged(in, "the file ends early");
      }
      if (std::fwrite(buffer.data(), 1, n, dst.f) != n) {
        throw Error(ErrorKind::Output, kStage, "cannot write the file (disk full?)", out);
      }
      left -= n;
    }
  }
  if (std::fflush(dst.f) != 0) {
    throw Error(ErrorKind::Output, kStage, "cannot write the file (disk full?)", out);
  }
}

StereoBoxes read_stereo_boxes(const std::string& path) {
  StereoBoxes s;
  File f;
  f.f = std::fopen(path.c_str(), "rb");
  if (f.f == nullptr) {
    return s;
  }
  std::optional<Moov> m;
  try {
    m = read_moov(f.f, path);
  } catch (const Error&) {
    return s; // not ISO-BMFF (or damaged): nothing to report
  }
  if (!m) {
    return s;
  }
  Node* stbl = video_stbl(m->node);
  Node* stsd = stbl ? child(*stbl, "stsd") : nullptr;
  if (stsd == nullptr) {
    return s;
  }
  SampleEntry e;
  try {
    e = split_stsd(*stsd, path);
  } catch (const Error&) {
    return s;
  }
  s.found = true;
  s.sample_entry = e.type;
  auto full_payload = [](const std::string& p) { return p.size() >= 4 ? p.substr(4) : std::string(); };
  auto inner = [&](const std::string& payload) {
    try {
      return parse_boxes(payload, 0, payload.size(), path);
    } catch (const Error&) {
      return std::vector<Node>{};
    }
  };
  for (const Node& c : e.children) {
    if (c.type == "lhvC") {
      s.second_layer = true;
    } else if (c.type == "st3d") {
      const std::string v = full_payload(c.prefix);
      if (!v.empty()) {
        s.st3d = static_cast<unsigned char>(v[0]);
      }
    } else if (c.type == "sv3d") {
      for (const Node& sv : inner(c.prefix)) {
        if (sv.type != "proj") {
          continue;
        }
        for (const Node& p : inner(sv.prefix)) {
          if (p.type == "equi") {
            s.spherical = "equirectangular";
            const std::string v = full_payload(p.prefix);
            if (v.size() >= 16) {
              s.equi_top = get32(v, 0) / 4294967296.0;
              s.equi_bottom = get32(v, 4) / 4294967296.0;
              s.equi_left = get32(v, 8) / 4294967296.0;
              s.equi_right = get32(v, 12) / 4294967296.0;
            }
          } else if (p.type == "cbmp") {
            s.spherical = "cubemap";
          }
        }
      }
    } else if (c.type == "hfov" && c.prefix.size() >= 4) {
      s.hfov_millidegrees = get32(c.prefix, 0);
    } else if (c.type == "vexu") {
      s.vexu = true;
      for (const Node& v : inner(c.prefix)) {
        if (v.type == "eyes") {
          for (const Node& y : inner(v.prefix)) {
            const std::string p = full_payload(y.prefix);
            if (y.type == "stri" && !p.empty()) {
              s.stri = static_cast<unsigned char>(p[0]);
            } else if (y.type == "hero" && !p.empty()) {
              s.hero = static_cast<unsigned char>(p[0]);
            } else if (y.type == "cams" || y.type == "cmfy") {
              for (const Node& z : inner(y.prefix)) {
                const std::string q = full_payload(z.prefix);
                if (z.type == "blin" && q.size() >= 4) {
                  s.baseline_um = get32(q, 0);
                } else if (z.type == "dadj" && q.size() >= 4) {
                  s.disparity_adjustment = static_cast<int32_t>(get32(q, 0));
                }
              }
            }
          }
        } else if (v.type == "proj" || v.type == "pack") {
          for (const Node& y : inner(v.prefix)) {
            const std::string p = full_payload(y.prefix);
            if (y.type == "prji" && p.size() >= 4) {
              s.projection = p.substr(0, 4);
            } else if (y.type == "pkin" && p.size() >= 4) {
              s.packing = p.substr(0, 4);
            }
          }
        }
      }
    }
  }
  return s;
}

} // namespace sbsconv
