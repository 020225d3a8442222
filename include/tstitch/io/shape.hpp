// SPDX-License-Identifier: Apache-2.0
#pragma once

// Shapes as the file formats state them (int64 extents): printing them in errors and counting
// their elements without overflow. Shared by the safetensors reader and the npy reader and writer.

#include <cstdint>
#include <limits>
#include <optional>
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

/// The element count of `shape`, or nothing when an extent is negative or the product of the
/// non-zero extents exceeds int64. A 0 extent does not excuse the others: [0, 2^62, 4] is
/// refused, because code that multiplies extents in another order (or without the 0) would
/// overflow, which for int64 is undefined behaviour.
[[nodiscard]] constexpr std::optional<std::uint64_t>
element_count(std::span<const std::int64_t> shape) {
  constexpr auto int64_max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t nonzero_product = 1;
  bool empty = false;
  for (const std::int64_t extent : shape) {
    if (extent < 0)
      return std::nullopt;
    if (extent == 0)
      empty = true;
    else if (!checked_multiply(nonzero_product, static_cast<std::uint64_t>(extent)) ||
             nonzero_product > int64_max)
      return std::nullopt;
  }
  return empty ? 0 : nonzero_product;
}

} // namespace detail
} // namespace tstitch::io
