// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: safetensors bytes -> SafetensorsFile::from_bytes, then every accessor of
// every tensor. The only exception the parser may throw is tstitch::io::format_error; any other
// exception escapes, terminates the process and so counts as a finding, as do crashes, sanitizer
// reports, leaks and timeouts. A file that parses must keep the promises of its accessors.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "tstitch/io/safetensors.hpp"

namespace {

constexpr const char* target = "safetensors";

void check_tensor(const tstitch::io::SafetensorsFile& file, const std::string& name,
                  std::span<const std::byte> input) {
  using tstitch::fuzz::expect;
  using tstitch::io::DType;
  const tstitch::io::TensorInfo& info = file.info(name);
  // The reader refused every shape whose element count numel() would refuse, so no throw here.
  const std::int64_t numel = info.numel();
  const std::uint64_t bits =
      static_cast<std::uint64_t>(numel) * tstitch::io::dtype_bits(info.dtype);
  expect(info.bytes.size() == bits / 8, target, "tensor bytes do not match shape and dtype");
  expect(info.end - info.begin == info.bytes.size(), target, "tensor bytes != data_offsets range");
  if (!info.bytes.empty())
    expect(info.bytes.data() >= input.data() &&
               info.bytes.data() + info.bytes.size() <= input.data() + input.size(),
           target, "tensor bytes outside the input");
  if (info.dtype == DType::F32 || info.dtype == DType::F16 || info.dtype == DType::BF16) {
    const std::vector<float> values = file.read_f32(name);
    expect(values.size() == static_cast<std::size_t>(numel), target, "read_f32 size != numel");
  }
  if (info.dtype == DType::F32) {
    const bool aligned = reinterpret_cast<std::uintptr_t>(info.bytes.data()) % alignof(float) == 0;
    try {
      const std::span<const float> view = file.f32(name);
      expect(view.size() == static_cast<std::size_t>(numel), target, "f32() size != numel");
      expect(aligned || info.bytes.empty(), target, "f32() viewed unaligned data");
      if (!view.empty()) {
        float first = 0;
        std::memcpy(&first, info.bytes.data(), sizeof first);
        expect(std::memcmp(&first, view.data(), sizeof first) == 0, target, "f32() view differs");
      }
    } catch (const tstitch::runtime_error&) {
      expect(!aligned, target, "f32() refused aligned data");
    }
  }
  const std::vector<std::int64_t> shape = info.shape;
  (void)file.expect(name, shape); // its own shape always matches
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  std::optional<tstitch::io::SafetensorsFile> file;
  try {
    file.emplace(tstitch::io::SafetensorsFile::from_bytes(input, "fuzz-input"));
  } catch (const tstitch::io::format_error&) {
    return 0; // the documented refusal
  }
  const std::vector<std::string> names = file->names();
  tstitch::fuzz::expect(names.size() == file->size(), target, "names() size != size()");
  for (const std::string& name : names)
    check_tensor(*file, name, input);
  // Decoded JSON strings are never longer than their escaped text in the input.
  for (const auto& [key, value] : file->metadata())
    tstitch::fuzz::expect(key.size() + value.size() <= size, target,
                          "metadata longer than the input");
  return 0;
}
