// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <system_error>
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

namespace detail {

/// The element count of a shape of non-negative extents, or nothing when it exceeds what int64
/// can count (an unchecked product can wrap around to any count). A shape with a 0 is empty
/// whatever its other extents.
[[nodiscard]] inline std::optional<std::uint64_t>
npy_element_count(std::span<const std::int64_t> shape) {
  if (std::ranges::find(shape, 0) != shape.end())
    return 0;
  std::uint64_t count = 1;
  for (const std::int64_t extent : shape)
    if (!checked_multiply(count, static_cast<std::uint64_t>(extent)) ||
        count > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return std::nullopt;
  return count;
}

} // namespace detail

/// Writes `values` (C order, float32) with the given shape as a .npy file. Throws
/// tstitch::invalid_argument when the shape does not match the value count and
/// tstitch::runtime_error naming the path when the file cannot be written.
inline void write_npy(const std::filesystem::path& path, std::span<const float> values,
                      std::span<const std::int64_t> shape) {
  const std::string header = npy_header(shape); // rejects negative extents
  const std::optional<std::uint64_t> count = detail::npy_element_count(shape);
  if (!count)
    throw_invalid_argument("npy shape", shape_string(shape),
                           "has more elements than int64 can count");
  if (*count != values.size())
    throw_invalid_argument(
        "npy value count", values.size(),
        tstitch::detail::concat("must equal the product of the shape, ", *count));
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

/// A float32 array read from a .npy file: its shape and its values in C order.
struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

namespace detail {

template <class... Parts>
[[noreturn]] void npy_error(const std::filesystem::path& path, const Parts&... parts) {
  throw runtime_error(tstitch::detail::concat("tstitch: '", path.string(), "': ", parts...));
}

[[nodiscard]] inline std::string trim_spaces(const std::string& text) {
  const std::size_t first = text.find_first_not_of(' ');
  return first == std::string::npos ? std::string()
                                    : text.substr(first, text.find_last_not_of(' ') - first + 1);
}

/// The value of `key` in a .npy header dictionary: the text after "'key':" up to the next ',' or
/// '}' outside parentheses, trimmed ("'<f4'", "False", "(2, 3)").
[[nodiscard]] inline std::string npy_header_value(const std::filesystem::path& path,
                                                  const std::string& dict, const std::string& key) {
  const std::string quoted = "'" + key + "':";
  const std::size_t at = dict.find(quoted);
  if (at == std::string::npos)
    npy_error(path, "the header has no ", quoted, " entry");
  std::size_t end = at + quoted.size();
  for (int depth = 0; end < dict.size() && (depth > 0 || (dict[end] != ',' && dict[end] != '}'));
       ++end)
    depth += dict[end] == '(' ? 1 : dict[end] == ')' ? -1 : 0;
  return trim_spaces(dict.substr(at + quoted.size(), end - at - quoted.size()));
}

/// "(2, 3)", "(5,)" or "()" as extents.
[[nodiscard]] inline std::vector<std::int64_t> npy_shape(const std::filesystem::path& path,
                                                         const std::string& tuple) {
  if (tuple.size() < 2 || tuple.front() != '(' || tuple.back() != ')')
    npy_error(path, "shape ", tuple, " is not a tuple");
  const std::string inside = tuple.substr(1, tuple.size() - 2);
  std::vector<std::int64_t> shape;
  if (trim_spaces(inside).empty())
    return shape; // "()": a scalar
  std::vector<std::string> items{""};
  for (const char c : inside) {
    if (c == ',')
      items.emplace_back();
    else
      items.back().push_back(c);
  }
  if (items.size() > 1 && trim_spaces(items.back()).empty())
    items.pop_back(); // the trailing comma of "(5,)"
  for (const std::string& raw : items) {
    const std::string item = trim_spaces(raw);
    std::int64_t extent = -1;
    const auto [end, error] = std::from_chars(item.data(), item.data() + item.size(), extent);
    if (item.empty() || error != std::errc() || end != item.data() + item.size() || extent < 0)
      npy_error(path, "shape ", tuple, ": '", item, "' is not an extent");
    shape.push_back(extent);
  }
  return shape;
}

} // namespace detail

/// Reads a .npy file of little-endian float32 values in C order (what write_npy and NumPy's
/// `np.save` of a float32 array write; format versions 1.0, 2.0 and 3.0). Throws
/// tstitch::runtime_error naming the path and what is wrong: a missing file, no .npy magic, an
/// unknown version, another dtype ('descr'), Fortran order, an unreadable shape, or data that is
/// not the shape's size (a truncated file, or bytes after the data).
[[nodiscard]] inline NpyArray read_npy(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    detail::npy_error(path, "cannot open for reading");
  // Every length in the file is checked against its size before anything is allocated.
  std::error_code size_error;
  const std::uintmax_t file_bytes = std::filesystem::file_size(path, size_error);
  if (size_error)
    detail::npy_error(path, "cannot tell its size (", size_error.message(), ")");
  std::string preamble(8, '\0');
  if (!in.read(preamble.data(), 8) || preamble.compare(0, 6, "\x93NUMPY") != 0)
    detail::npy_error(path, "not a .npy file (no \\x93NUMPY magic)");
  const int major = static_cast<unsigned char>(preamble[6]);
  if (major < 1 || major > 3)
    detail::npy_error(path, "unsupported .npy version ", major, ".",
                      static_cast<int>(static_cast<unsigned char>(preamble[7])),
                      " (1.0, 2.0 and 3.0 are read)");
  // Version 1.0 gives the header length in 2 bytes, later versions in 4 (little-endian).
  const int length_bytes = major == 1 ? 2 : 4;
  unsigned char length_field[4] = {};
  if (!in.read(reinterpret_cast<char*>(length_field), length_bytes))
    detail::npy_error(path, "truncated in the header length");
  std::uint32_t header_length = 0;
  for (int i = length_bytes - 1; i >= 0; --i)
    header_length = (header_length << 8) | length_field[i];
  const std::uintmax_t header_start = 8 + static_cast<std::uintmax_t>(length_bytes);
  if (header_length > file_bytes - header_start)
    detail::npy_error(path, "truncated in the header (", header_length, " bytes announced, ",
                      file_bytes - header_start, " in the file)");
  std::string dict(header_length, '\0');
  if (!in.read(dict.data(), static_cast<std::streamsize>(header_length)))
    detail::npy_error(path, "reading the header failed");

  const std::string descr = detail::npy_header_value(path, dict, "descr");
  if (descr != "'<f4'")
    detail::npy_error(path, "dtype ", descr, " is not read; only little-endian float32 ('<f4')");
  const std::string order = detail::npy_header_value(path, dict, "fortran_order");
  if (order != "False")
    detail::npy_error(path, "fortran_order ", order, " is not read; only C order (False)");
  NpyArray array;
  array.shape = detail::npy_shape(path, detail::npy_header_value(path, dict, "shape"));
  const std::optional<std::uint64_t> elements = detail::npy_element_count(array.shape);
  if (!elements)
    detail::npy_error(path, "shape ", shape_string(array.shape),
                      " has more elements than int64 can count");
  const std::uint64_t count = *elements;
  const std::uint64_t data_bytes = file_bytes - header_start - header_length;
  // count <= INT64_MAX, so count * 4 is only formed once it is known to fit.
  if (count > data_bytes / sizeof(float) || data_bytes != count * sizeof(float))
    detail::npy_error(path, "shape ", shape_string(array.shape), " needs ", count,
                      " float32 values but the file holds ", data_bytes, " bytes of data (",
                      count > data_bytes / sizeof(float) ? "truncated" : "bytes after the data",
                      ")");
  static_assert(std::endian::native == std::endian::little,
                "read_npy reads '<f4' as the host's floats");
  array.values.resize(static_cast<std::size_t>(count));
  if (!in.read(reinterpret_cast<char*>(array.values.data()),
               static_cast<std::streamsize>(count * sizeof(float))))
    detail::npy_error(path, "reading the data failed");
  return array;
}

/// Reads a 4-D float32 .npy array (N, C, H, W), as write_npy(path, batch) writes, into a Tensor.
/// Throws tstitch::runtime_error as read_npy does, and when the array is not 4-D.
[[nodiscard]] inline Tensor read_npy_batch(const std::filesystem::path& path) {
  NpyArray array = read_npy(path);
  if (array.shape.size() != 4)
    detail::npy_error(path, "shape ", shape_string(array.shape), " is not a batch (N, C, H, W)");
  Tensor batch(array.shape[0], Shape{array.shape[1], array.shape[2], array.shape[3]});
  std::copy(array.values.begin(), array.values.end(), batch.data());
  return batch;
}

} // namespace tstitch::io
