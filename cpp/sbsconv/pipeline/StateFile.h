#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace sbsconv {

using TensorMap = std::map<std::string, at::Tensor>;

// Saves named tensors in a small binary file of sbsconv's own (names, dtypes, shapes, raw
// bytes; written under a temporary name and renamed), for the resume journal's stage states.
// Nothing in it executes when loaded.
void save_tensors(const std::string& path, const TensorMap& tensors);
TensorMap load_tensors(const std::string& path);

// Prefixes every key ("stabilizer." ...), and takes the entries under a prefix back out.
TensorMap with_prefix(const TensorMap& tensors, const std::string& prefix);
TensorMap under_prefix(const TensorMap& tensors, const std::string& prefix);

} // namespace sbsconv
