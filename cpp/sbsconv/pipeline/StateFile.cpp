#include "sbsconv/pipeline/StateFile.h"

#include <ATen/ATen.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <vector>

#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

// Tensor bytes are stored as they lie in memory (Note [State files]).
static_assert(std::endian::native == std::endian::little, "state files hold little-endian tensor bytes");

constexpr std::string_view kMagicPrefix = "SBSCONV-STATE-";
constexpr std::string_view kMagic = "SBSCONV-STATE-2\n";
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxTensors = 65536;
constexpr uint64_t kMaxNameBytes = 4096;
constexpr uint64_t kMaxDims = 8;

struct DtypeCode {
  uint64_t code;
  at::ScalarType type;
};
constexpr DtypeCode kDtypes[] = {
    {1, at::kFloat},
    {2, at::kDouble},
    {3, at::kHalf},
    {4, at::kBFloat16},
    {5, at::kLong},
    {6, at::kInt},
    {7, at::kByte},
    {8, at::kBool},
};

std::optional<at::ScalarType> dtype_of(uint64_t code) {
  for (const auto& d : kDtypes) {
    if (d.code == code) {
      return d.type;
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> code_of(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) {
      return d.code;
    }
  }
  return std::nullopt;
}

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    out += static_cast<char>((v >> (8 * i)) & 0xff);
  }
}

uint64_t get_u64(std::string_view bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  }
  return v;
}

[[noreturn]] void damaged(const std::string& reason, const std::string& file) {
  throw Error(ErrorKind::Input, "resume", "the state file is damaged: " + reason, file);
}

// Reads the body of a state file, refusing to step past its end.
class BodyReader {
 public:
  BodyReader(std::string_view bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  uint64_t u64(const char* what) {
    return get_u64(take(8, what));
  }
  std::string_view take(uint64_t n, const char* what) {
    if (n > remaining()) {
      damaged(std::string("it ends inside ") + what, file_);
    }
    const std::string_view out = bytes_.substr(position_, static_cast<size_t>(n));
    position_ += static_cast<size_t>(n);
    return out;
  }
  uint64_t remaining() const {
    return bytes_.size() - position_;
  }

 private:
  std::string_view bytes_;
  const std::string& file_;
  size_t position_ = 0;
};

// One tensor, checked, not yet allocated.
struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  std::string_view data;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  }
  return s + "]";
}

} // namespace

std::string serialize_tensors(const TensorMap& tensors) {
  SBSCONV_CHECK(tensors.size() <= kMaxTensors, Internal, "resume", "too many tensors for a state file");
  std::string out(kMagic);
  put_u64(out, tensors.size());
  for (const auto& [name, tensor] : tensors) {
    // the binding captured by name: clang before 16 cannot capture structured bindings
    auto refuse = [&, &name = name](const std::string& why) {
      throw Error(ErrorKind::Internal, "resume", "cannot save the state tensor '" + name + "': " + why);
    };
    if (!tensor.defined()) {
      refuse("it is undefined");
    }
    const auto code = code_of(tensor.scalar_type());
    if (!code) {
      refuse(std::string("its dtype ") + c10::toString(tensor.scalar_type()) + " is not one a state file holds");
    }
    if (name.size() > kMaxNameBytes) {
      refuse("its name is longer than " + std::to_string(kMaxNameBytes) + " bytes");
    }
    if (static_cast<uint64_t>(tensor.dim()) > kMaxDims) {
      refuse("it has more than " + std::to_string(kMaxDims) + " dims");
    }
    const at::Tensor t = tensor.to(at::kCPU).contiguous();
    put_u64(out, name.size());
    out += name;
    put_u64(out, *code);
    put_u64(out, static_cast<uint64_t>(t.dim()));
    for (const int64_t d : t.sizes()) {
      put_u64(out, static_cast<uint64_t>(d));
    }
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    put_u64(out, bytes);
    if (bytes > 0) {
      out.append(static_cast<const char*>(t.const_data_ptr()), static_cast<size_t>(bytes));
    }
    if (out.size() + 8 > kMaxFileBytes) {
      refuse("the state would be larger than " + std::to_string(kMaxFileBytes) + " bytes");
    }
  }
  put_u64(out, fnv1a64(out));
  return out;
}

void save_tensors(const std::string& path, const TensorMap& tensors) {
  write_file_durably(path, serialize_tensors(tensors), "resume");
}

TensorMap load_tensors_from_bytes(std::string_view bytes, const std::string& name_for_errors) {
  const std::string& file = name_for_errors;
  if (bytes.size() > kMaxFileBytes) {
    damaged("it is " + std::to_string(bytes.size()) + " bytes, more than a state file can be", file);
  }
  if (bytes.size() < kMagic.size()) {
    damaged(
        kMagic.substr(0, bytes.size()) == bytes ? "it is truncated (" + std::to_string(bytes.size()) + " bytes)"
                                                : std::string("it is not an sbsconv state file"),
        file);
  }
  if (bytes.substr(0, kMagicPrefix.size()) != kMagicPrefix) {
    damaged("it is not an sbsconv state file", file);
  }
  if (bytes.substr(0, kMagic.size()) != kMagic) {
    std::string version(bytes.substr(kMagicPrefix.size(), kMagic.size() - kMagicPrefix.size() - 1));
    for (char& c : version) {
      c = (c >= 0x21 && c <= 0x7e) ? c : '?';
    }
    damaged("format " + version + " is not the supported format 2", file);
  }
  if (bytes.size() < kMagic.size() + 16) {
    damaged("it is truncated (" + std::to_string(bytes.size()) + " bytes)", file);
  }
  const std::string_view checked = bytes.substr(0, bytes.size() - 8);
  if (fnv1a64(checked) != get_u64(bytes.substr(bytes.size() - 8))) {
    damaged("its checksum does not match (the file is truncated or altered)", file);
  }

  // Check everything before allocating anything.
  BodyReader in(checked.substr(kMagic.size()), file);
  const uint64_t count = in.u64("the tensor count");
  // Each tensor takes at least its name length, dtype, dims and byte count.
  if (count > kMaxTensors || count > in.remaining() / 32) {
    damaged("it declares " + std::to_string(count) + " tensors", file);
  }
  std::vector<Entry> entries;
  std::set<std::string> names;
  entries.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    Entry e;
    const uint64_t name_size = in.u64("a tensor name's length");
    if (name_size > kMaxNameBytes) {
      damaged("tensor " + std::to_string(i) + " has a name of " + std::to_string(name_size) + " bytes", file);
    }
    e.name = std::string(in.take(name_size, "a tensor name"));
    if (!names.insert(e.name).second) {
      damaged("the tensor '" + e.name + "' appears twice", file);
    }
    const uint64_t code = in.u64("a dtype");
    const auto type = dtype_of(code);
    if (!type) {
      damaged("the tensor '" + e.name + "' has an unknown dtype code " + std::to_string(code), file);
    }
    e.type = *type;
    const uint64_t dims = in.u64("a tensor's dims");
    if (dims > kMaxDims) {
      damaged("the tensor '" + e.name + "' has " + std::to_string(dims) + " dims", file);
    }
    // The element count, and the product of the sizes with zeros counted as one (what
    // LibTorch computes strides from), must both fit.
    int64_t product = 1;
    bool empty = false;
    for (uint64_t d = 0; d < dims; ++d) {
      const uint64_t size = in.u64("a tensor's shape");
      if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        damaged("the tensor '" + e.name + "' has a negative size", file);
      }
      e.shape.push_back(static_cast<int64_t>(size));
      empty = empty || size == 0;
      if (size > 0 && __builtin_mul_overflow(product, static_cast<int64_t>(size), &product)) {
        damaged("the tensor '" + e.name + "' has a shape whose element count overflows", file);
      }
    }
    const int64_t numel = empty ? 0 : product;
    const auto element_size = static_cast<int64_t>(c10::elementSize(e.type));
    int64_t expected = 0;
    if (__builtin_mul_overflow(numel, element_size, &expected)) {
      damaged("the tensor '" + e.name + "' has a shape whose byte count overflows", file);
    }
    const uint64_t declared = in.u64("a tensor's byte count");
    if (declared != static_cast<uint64_t>(expected)) {
      damaged(
          "the tensor '" + e.name + "' declares " + std::to_string(declared) + " bytes for shape " +
              shape_text(e.shape) + " of " + c10::toString(e.type) + " (" + std::to_string(expected) + ")",
          file);
    }
    if (declared > in.remaining()) {
      damaged("the tensor '" + e.name + "' has " + std::to_string(declared) + " bytes, more than the file holds", file);
    }
    e.data = in.take(declared, "a tensor's data");
    if (e.type == at::kBool) {
      for (const char c : e.data) {
        if (c != 0 && c != 1) {
          damaged("the bool tensor '" + e.name + "' holds a value other than 0 and 1", file);
        }
      }
    }
    entries.push_back(std::move(e));
  }
  if (in.remaining() != 0) {
    damaged(std::to_string(in.remaining()) + " bytes follow the last tensor", file);
  }

  TensorMap out;
  for (Entry& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    if (!e.data.empty()) {
      std::memcpy(t.mutable_data_ptr(), e.data.data(), e.data.size());
    }
    out.emplace(std::move(e.name), std::move(t));
  }
  return out;
}

TensorMap load_tensors(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    throw Error(ErrorKind::Input, "resume", "cannot open the state file: " + ec.message(), path);
  }
  if (size > kMaxFileBytes) {
    damaged("it is " + std::to_string(size) + " bytes, more than a state file can be", path);
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  std::ifstream f(path, std::ios::binary);
  f.read(bytes.data(), static_cast<std::streamsize>(size));
  if (!f || f.gcount() != static_cast<std::streamsize>(size)) {
    throw Error(ErrorKind::Input, "resume", "cannot read the state file", path);
  }
  return load_tensors_from_bytes(bytes, path);
}

TensorMap with_prefix(const TensorMap& tensors, const std::string& prefix) {
  TensorMap out;
  for (const auto& [k, v] : tensors) {
    out.emplace(prefix + k, v);
  }
  return out;
}

TensorMap under_prefix(const TensorMap& tensors, const std::string& prefix) {
  TensorMap out;
  for (const auto& [k, v] : tensors) {
    if (k.rfind(prefix, 0) == 0) {
      out.emplace(k.substr(prefix.size()), v);
    }
  }
  return out;
}

} // namespace sbsconv
