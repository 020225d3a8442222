// SPDX-License-Identifier: Apache-2.0
#pragma once

// Shapes as the file formats state them (int64 extents): printing them in errors and counting
// their elements without overflow. Shared by the safetensors reader and the npy writer.

#include <cstdint>
#include <limits>
#include <span>
#include <string>

namespace tstitch::io {

/// Writes "[2, 3]" ("[]" for a scalar).
[[nodiscard]] inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    text += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
  return text + "]";
}

namespace detail {

/// product *= factor, unless that overflows (then false and `product` is unchanged).
constexpr bool checked_multiply(std::uint64_t& product, std::uint64_t factor) {
  if (factor != 0 && product > std::numeric_limits<std::uint64_t>::max() / factor)
    return false;
  product *= factor;
  return true;
}

} // namespace detail
} // namespace tstitch::io
