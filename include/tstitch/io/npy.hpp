// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/io/shape.hpp"

namespace tstitch::io {

/// The header of a NumPy format 1.0 file holding little-endian float32 values in C order:
/// magic "\x93NUMPY", version 1.0, a 2-byte little-endian header length, then the dictionary
/// padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes (what
/// NumPy itself writes, so the data can be memory-mapped aligned).
[[nodiscard]] inline std::string npy_header(std::span<const std::int64_t> shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0)
      throw_invalid_argument(tstitch::detail::concat("npy shape[", i, "]"), shape[i],
                             "must be >= 0");
    dict += std::to_string(shape[i]);
    // A one-element tuple needs its comma: "(5,)".
    if (i + 1 < shape.size() || shape.size() == 1)
      dict += shape.size() == 1 ? "," : ", ";
  }
  dict += "), }";
  constexpr std::size_t preamble = 10; // magic (6) + version (2) + header length (2)
  const std::size_t unpadded = preamble + dict.size() + 1; // + '\n'
  const std::size_t total = (unpadded + 63) / 64 * 64;
  dict.append(total - unpadded, ' ');
  dict += '\n';
  const std::size_t length = dict.size();
  if (length > 0xFFFF)
    throw_invalid_argument("npy header length", length, "exceeds format 1.0's 65535 bytes");
  std::string header = "\x93NUMPY";
  header += '\x01';
  header += '\x00';
  header += static_cast<char>(length & 0xFF);
  header += static_cast<char>(length >> 8);
  return header + dict;
}

/// Writes `values` (C order, float32) with the given shape as a .npy file. Throws
/// tstitch::invalid_argument when the shape does not match the value count and
/// tstitch::runtime_error naming the path when the file cannot be written.
inline void write_npy(const std::filesystem::path& path, std::span<const float> values,
                      std::span<const std::int64_t> shape) {
  const std::string header = npy_header(shape); // rejects negative extents
  // The element count, checked: an unchecked product can wrap around to the value count. A
  // shape with a 0 is empty whatever its other extents.
  const bool empty = std::ranges::find(shape, 0) != shape.end();
  std::uint64_t count = empty ? 0 : 1;
  for (const std::int64_t extent : shape)
    if (!empty && (!detail::checked_multiply(count, static_cast<std::uint64_t>(extent)) ||
                   count > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())))
      throw_invalid_argument("npy shape", shape_string(shape),
                             "has more elements than int64 can count");
  if (count != values.size())
    throw_invalid_argument("npy value count", values.size(),
                           tstitch::detail::concat("must equal the product of the shape, ", count));
  static_assert(std::endian::native == std::endian::little,
                "write_npy writes the host's floats as '<f4'");
  std::ofstream out(path, std::ios::binary);
  if (!out)
    throw runtime_error(
        tstitch::detail::concat("tstitch: cannot open '", path.string(), "' for writing"));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size_bytes()));
  out.close();
  if (!out)
    throw runtime_error(tstitch::detail::concat("tstitch: writing '", path.string(), "' failed"));
}

/// Writes a batch (N, C, H, W) as a float32 .npy array of that shape (any batch stride).
inline void write_npy(const std::filesystem::path& path, ConstView batch) {
  const Shape s = batch.shape();
  const std::vector<std::int64_t> shape{batch.batch(), s.channels, s.height, s.width};
  std::vector<float> values(static_cast<std::size_t>(batch.numel()));
  for (std::int64_t n = 0; n < batch.batch(); ++n)
    std::memcpy(values.data() + n * s.numel(), batch.data() + n * batch.batch_stride(),
                static_cast<std::size_t>(s.numel()) * sizeof(float));
  write_npy(path, values, shape);
}

} // namespace tstitch::io
