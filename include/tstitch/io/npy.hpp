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
#include <string_view>
#include <system_error>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/io/atomic_write.hpp"
#include "tstitch/io/mapped_file.hpp"
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

/// The element count of a shape, or nothing when it has a negative extent or the product of its
/// non-zero extents exceeds int64 (see io::detail::element_count: (0, 2^62, 4) is refused too).
[[nodiscard]] inline std::optional<std::uint64_t>
npy_element_count(std::span<const std::int64_t> shape) {
  return element_count(shape);
}

} // namespace detail

/// Writes `values` (C order, float32) with the given shape as a .npy file, atomically (see
/// write_file_atomically: a failed write leaves the old file). Throws tstitch::invalid_argument
/// when the shape does not match the value count and tstitch::runtime_error naming the path and
/// the OS reason when the file cannot be written.
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
  write_file_atomically(path, [&](AtomicWriter& out) {
    out.write(header);
    out.write(values.data(), values.size_bytes());
  });
}

/// Writes a batch (N, C, H, W) as a float32 .npy array of that shape (any batch stride), sample
/// by sample: no copy of the batch is made.
inline void write_npy(const std::filesystem::path& path, ConstView batch) {
  const Shape s = batch.shape();
  const std::vector<std::int64_t> shape{batch.batch(), s.channels, s.height, s.width};
  const std::string header = npy_header(shape);
  static_assert(std::endian::native == std::endian::little,
                "write_npy writes the host's floats as '<f4'");
  write_file_atomically(path, [&](AtomicWriter& out) {
    out.write(header);
    for (std::int64_t n = 0; n < batch.batch(); ++n)
      out.write(batch.data() + n * batch.batch_stride(),
                static_cast<std::size_t>(s.numel()) * sizeof(float));
  });
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

/// Parses .npy bytes already in memory (a fuzzer's input, an embedded resource) holding
/// little-endian float32 values in C order (what write_npy and NumPy's `np.save` of a float32
/// array write; format versions 1.0, 2.0 and 3.0). `name` stands for the path in messages.
/// Throws tstitch::runtime_error naming it and what is wrong: no .npy magic, an unknown
/// version, another dtype ('descr'), Fortran order, an unreadable shape, or data that is not the
/// shape's size (a truncated file, or bytes after the data).
[[nodiscard]] inline NpyArray parse_npy(std::span<const std::byte> bytes,
                                        const std::filesystem::path& name = "<memory>") {
  const auto* text = reinterpret_cast<const char*>(bytes.data());
  const std::uint64_t file_bytes = bytes.size();
  // Every length in the bytes is checked against their size before anything is allocated.
  if (file_bytes < 8 || std::string_view(text, 6) != "\x93NUMPY")
    detail::npy_error(name, "not a .npy file (no \\x93NUMPY magic)");
  const int major = static_cast<unsigned char>(text[6]);
  if (major < 1 || major > 3)
    detail::npy_error(name, "unsupported .npy version ", major, ".",
                      static_cast<int>(static_cast<unsigned char>(text[7])),
                      " (1.0, 2.0 and 3.0 are read)");
  // Version 1.0 gives the header length in 2 bytes, later versions in 4 (little-endian).
  const int length_bytes = major == 1 ? 2 : 4;
  const std::uint64_t header_start = 8 + static_cast<std::uint64_t>(length_bytes);
  if (file_bytes < header_start)
    detail::npy_error(name, "truncated in the header length");
  std::uint32_t header_length = 0;
  for (int i = length_bytes - 1; i >= 0; --i)
    header_length = (header_length << 8) | static_cast<unsigned char>(text[8 + i]);
  if (header_length > file_bytes - header_start)
    detail::npy_error(name, "truncated in the header (", header_length, " bytes announced, ",
                      file_bytes - header_start, " in the file)");
  const std::string dict(text + header_start, header_length);

  const std::string descr = detail::npy_header_value(name, dict, "descr");
  if (descr != "'<f4'")
    detail::npy_error(name, "dtype ", descr, " is not read; only little-endian float32 ('<f4')");
  const std::string order = detail::npy_header_value(name, dict, "fortran_order");
  if (order != "False")
    detail::npy_error(name, "fortran_order ", order, " is not read; only C order (False)");
  NpyArray array;
  array.shape = detail::npy_shape(name, detail::npy_header_value(name, dict, "shape"));
  const std::optional<std::uint64_t> elements = detail::npy_element_count(array.shape);
  if (!elements)
    detail::npy_error(name, "shape ", shape_string(array.shape),
                      " has more elements than int64 can count");
  const std::uint64_t count = *elements;
  const std::uint64_t data_bytes = file_bytes - header_start - header_length;
  // count <= INT64_MAX, so count * 4 is only formed once it is known to fit.
  if (count > data_bytes / sizeof(float) || data_bytes != count * sizeof(float))
    detail::npy_error(name, "shape ", shape_string(array.shape), " needs ", count,
                      " float32 values but the file holds ", data_bytes, " bytes of data (",
                      count > data_bytes / sizeof(float) ? "truncated" : "bytes after the data",
                      ")");
  static_assert(std::endian::native == std::endian::little,
                "read_npy reads '<f4' as the host's floats");
  array.values.resize(static_cast<std::size_t>(count));
  if (count > 0)
    std::memcpy(array.values.data(), text + header_start + header_length,
                static_cast<std::size_t>(count * sizeof(float)));
  return array;
}

/// Reads a .npy file; see parse_npy. Throws tstitch::runtime_error naming the path, also for a
/// missing file or one that is not a regular file (a FIFO is refused, not waited on).
[[nodiscard]] inline NpyArray read_npy(const std::filesystem::path& path) {
  const MappedFile file(path, LoadMode::read); // a private copy: immune to concurrent writers
  return parse_npy(file.bytes(), path);
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
