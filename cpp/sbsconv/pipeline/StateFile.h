#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <string_view>

namespace sbsconv {

using TensorMap = std::map<std::string, at::Tensor>;

// Note [State files]
// Named tensors in a small binary file of sbsconv's own, for the resume journal's stage
// states. Nothing in it executes when loaded. Format 2, little-endian:
//   "SBSCONV-STATE-2\n"                               16 bytes
//   u64 count
//   per tensor: u64 name length, name bytes, u64 dtype code (sbsconv's own, below),
//               u64 dims, dims x i64 sizes, u64 byte count, the bytes (C-contiguous)
//   u64 fnv1a64 of every byte before it
// dtype codes: 1 float32, 2 float64, 3 float16, 4 bfloat16, 5 int64, 6 int32, 7 uint8, 8 bool.
// The loader checks the whole file before it allocates anything: its size (at most 1 GiB), the
// magic, the version, the checksum, and for every tensor the bounds below, a known dtype, at
// most 8 dims, no negative size, an element count that does not overflow and a byte count that
// equals it and fits in what is left; a file that fails any check is refused with
// Error(ErrorKind::Input, "resume", "the state file is damaged: <reason>", file), never a
// crash or a huge allocation.

// Writes `tensors` (copied to the CPU, made contiguous) durably (Note [Durable files]). Throws
// Error(ErrorKind::Output) when the file cannot be written, ErrorKind::Internal for a tensor the
// format does not hold (another dtype, a name over 4096 bytes).
void save_tensors(const std::string& path, const TensorMap& tensors);
TensorMap load_tensors(const std::string& path);

// The bytes save_tensors() writes, and their reader (load_tensors() reads the file and calls
// it; the fuzzing entry point). `name_for_errors` is the file named in errors.
std::string serialize_tensors(const TensorMap& tensors);
TensorMap load_tensors_from_bytes(std::string_view bytes, const std::string& name_for_errors);

// Prefixes every key ("stabilizer." ...), and takes the entries under a prefix back out.
TensorMap with_prefix(const TensorMap& tensors, const std::string& prefix);
TensorMap under_prefix(const TensorMap& tensors, const std::string& prefix);

} // namespace sbsconv
