// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: .npy bytes -> io::parse_npy. The only exception it may throw is
// tstitch::runtime_error; any other exception escapes, terminates the process and so counts as a
// finding, as do crashes, sanitizer reports, leaks and timeouts. An array that parses must hold
// the input's last bytes as its values, and write_npy's header for it must parse back to it.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "tstitch/io/npy.hpp"

namespace {
constexpr const char* target = "npy";
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using tstitch::fuzz::expect;
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  std::optional<tstitch::io::NpyArray> array;
  try {
    array.emplace(tstitch::io::parse_npy(input, "fuzz-input"));
  } catch (const tstitch::runtime_error&) {
    return 0; // the documented refusal
  }
  const std::optional<std::uint64_t> count = tstitch::io::detail::element_count(array->shape);
  expect(count.has_value() && *count == array->values.size(), target,
         "value count != the shape's element count");
  const std::size_t value_bytes = array->values.size() * sizeof(float);
  expect(value_bytes <= size, target, "more values than input bytes");
  if (value_bytes > 0)
    expect(std::memcmp(array->values.data(), data + size - value_bytes, value_bytes) == 0, target,
           "values are not the input's data bytes");

  // The writer's header for this shape, with the same values, reads back as the same array.
  std::string header;
  try {
    header = tstitch::io::npy_header(array->shape);
  } catch (const tstitch::invalid_argument&) {
    return 0; // a shape whose header exceeds format 1.0's 65535 bytes: the writer refuses it
  }
  std::vector<std::byte> rewritten(header.size() + value_bytes);
  std::memcpy(rewritten.data(), header.data(), header.size());
  if (value_bytes > 0)
    std::memcpy(rewritten.data() + header.size(), array->values.data(), value_bytes);
  const tstitch::io::NpyArray again = tstitch::io::parse_npy(rewritten, "fuzz-rewritten");
  expect(again.shape == array->shape, target, "write_npy's header reads back another shape");
  expect(again.values.size() == array->values.size() &&
             (value_bytes == 0 ||
              std::memcmp(again.values.data(), array->values.data(), value_bytes) == 0),
         target, "write_npy's bytes read back other values");
  return 0;
}
