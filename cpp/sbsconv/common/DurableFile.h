#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sbsconv {

// Note [Durable files]
// A file that a later run trusts (the resume journal, a stage-state file, a finished
// segment, the output itself) is written under a temporary name in the same folder, flushed
// to the disk (fsync), renamed over its final name, and the folder is flushed too, so that a
// crash or power loss at any instant leaves either the old file or the complete new one under
// the final name, never a torn one. Everything here throws sbsconv::Error (ErrorKind::Output,
// with the stage given) naming the file and the system's reason.

// Flushes a written file's data and size to the disk.
void sync_file(const std::string& path, const char* stage);
// Flushes a folder's entries (a rename or a new file in it) to the disk.
void sync_folder(const std::string& folder, const char* stage);
// fsync(from), rename(from, to), fsync(the folder of `to`).
void durable_rename(const std::string& from, const std::string& to, const char* stage);
// Writes `bytes` to `path` as the note above describes (temporary "<path>.part").
void write_file_durably(const std::string& path, std::string_view bytes, const char* stage);

// A 64-bit FNV-1a checksum, for verifying small files written by sbsconv itself.
uint64_t fnv1a64(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ULL);

} // namespace sbsconv
