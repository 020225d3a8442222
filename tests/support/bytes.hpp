// SPDX-License-Identifier: Apache-2.0
#pragma once

// Building binary file contents in tests (safetensors and .npy readers).
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>

namespace tstitch::test {

/// The floats' bytes as the host stores them (little-endian on every platform tstitch targets).
inline std::string float_bytes(std::initializer_list<float> values) {
  std::string bytes;
  for (const float v : values) {
    char raw[4];
    std::memcpy(raw, &v, 4);
    bytes.append(raw, 4);
  }
  return bytes;
}

/// n as 8 little-endian bytes (a safetensors header's length prefix).
inline std::string le64(std::uint64_t n) {
  std::string bytes;
  for (int i = 0; i < 8; ++i)
    bytes += static_cast<char>((n >> (8 * i)) & 0xFFu);
  return bytes;
}

/// A safetensors file: the header's length, `header`, then `data`.
inline std::string st_file(std::string_view header, std::string_view data = {}) {
  return le64(header.size()) + std::string(header) + std::string(data);
}

} // namespace tstitch::test
