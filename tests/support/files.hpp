// SPDX-License-Identifier: Apache-2.0
#pragma once

// Whole-file reads and writes for tests that check what a writer left on disk.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tstitch::test {

/// The file's bytes ("" when it cannot be opened: the caller's comparison then fails).
inline std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Replaces the file's contents with `bytes`; throws when it cannot.
inline void write_all(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good())
    throw std::runtime_error("write_all: cannot write '" + path.string() + "'");
}

} // namespace tstitch::test
