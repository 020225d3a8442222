// SPDX-License-Identifier: Apache-2.0
#pragma once

// Building binary file contents in tests (safetensors and .npy readers).
#include <cstring>
#include <initializer_list>
#include <string>

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

} // namespace tstitch::test
