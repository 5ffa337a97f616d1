#include "sbsconv/pipeline/StateFile.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr char kMagic[] = "SBSCONV-STATE-1\n";

void write_u64(std::ofstream& f, uint64_t v) {
  f.write(reinterpret_cast<const char*>(&v), sizeof(v));
}

uint64_t read_u64(std::ifstream& f, const std::string& path) {
  uint64_t v = 0;
  f.read(reinterpret_cast<char*>(&v), sizeof(v));
  if (!f) {
    throw Error(ErrorKind::Input, "resume", "the state file is truncated", path);
  }
  return v;
}

} // namespace

void save_tensors(const std::string& path, const TensorMap& tensors) {
  const std::filesystem::path final_path(path);
  std::filesystem::path temp = final_path;
  temp += ".part";
  {
    std::ofstream f(temp, std::ios::binary);
    f.write(kMagic, sizeof(kMagic) - 1);
    write_u64(f, tensors.size());
    for (const auto& [name, tensor] : tensors) {
      at::Tensor t = tensor.to(at::kCPU).contiguous();
      write_u64(f, name.size());
      f.write(name.data(), static_cast<std::streamsize>(name.size()));
      write_u64(f, static_cast<uint64_t>(t.scalar_type()));
      write_u64(f, static_cast<uint64_t>(t.dim()));
      for (int64_t d : t.sizes()) {
        write_u64(f, static_cast<uint64_t>(d));
      }
      const uint64_t bytes = t.numel() * t.element_size();
      write_u64(f, bytes);
      f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(bytes));
    }
    if (!f) {
      throw Error(ErrorKind::Output, "resume", "cannot write the state file", path);
    }
  }
  std::error_code ec;
  std::filesystem::rename(temp, final_path, ec);
  if (ec) {
    throw Error(ErrorKind::Output, "resume", "cannot write the state file: " + ec.message(), path);
  }
}

TensorMap load_tensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    throw Error(ErrorKind::Input, "resume", "cannot open the state file", path);
  }
  char magic[sizeof(kMagic) - 1];
  f.read(magic, sizeof(magic));
  if (!f || std::memcmp(magic, kMagic, sizeof(magic)) != 0) {
    throw Error(ErrorKind::Input, "resume", "not an sbsconv state file", path);
  }
  TensorMap out;
  const uint64_t count = read_u64(f, path);
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t name_size = read_u64(f, path);
    if (name_size > 4096) {
      throw Error(ErrorKind::Input, "resume", "the state file is damaged", path);
    }
    std::string name(name_size, '\0');
    f.read(name.data(), static_cast<std::streamsize>(name_size));
    const auto dtype = static_cast<at::ScalarType>(read_u64(f, path));
    const uint64_t dims = read_u64(f, path);
    if (dims > 16) {
      throw Error(ErrorKind::Input, "resume", "the state file is damaged", path);
    }
    std::vector<int64_t> shape;
    for (uint64_t d = 0; d < dims; ++d) {
      shape.push_back(static_cast<int64_t>(read_u64(f, path)));
    }
    const uint64_t bytes = read_u64(f, path);
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
    if (bytes != static_cast<uint64_t>(t.numel() * t.element_size())) {
      throw Error(ErrorKind::Input, "resume", "the state file is damaged", path);
    }
    f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes));
    if (!f) {
      throw Error(ErrorKind::Input, "resume", "the state file is truncated", path);
    }
    out.emplace(std::move(name), std::move(t));
  }
  return out;
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
