// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: safetensors bytes -> dit::Weights::from_bytes, the DiT config from the
// metadata and every tensor checked against it. The only exceptions it may throw are
// tstitch::io::format_error, tstitch::invalid_argument and tstitch::runtime_error; any other
// exception escapes, terminates the process and so counts as a finding, as do crashes, sanitizer
// reports, leaks and timeouts. Weights that load are read in full, so that a parameter whose
// view reaches past its tensor's bytes is an AddressSanitizer report.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "fuzz_check.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace {

constexpr const char* target = "dit_weights";

/// Reads every value of `p` (the sum is only there so the reads cannot be optimised away).
float read_all(const tstitch::dit::Param& p) {
  float sum = 0;
  for (std::int64_t i = 0; i < p.rows * p.cols; ++i)
    sum += p.data[i];
  return sum;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using tstitch::fuzz::expect;
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  std::optional<tstitch::dit::Weights> weights;
  try {
    weights.emplace(tstitch::dit::Weights::from_bytes(input, "fuzz-input"));
  } catch (const tstitch::runtime_error&) { // io::format_error, or tensors not fitting the config
    return 0;
  } catch (const tstitch::invalid_argument&) { // metadata that is no valid config
    return 0;
  }
  const tstitch::dit::Config& config = weights->config();
  config.validate(); // must not throw: from_bytes validated it
  const std::int64_t d = config.hidden_size;
  expect(weights->blocks.size() == static_cast<std::size_t>(config.depth), target,
         "block count != depth");
  expect(weights->class_table.rows == config.num_classes + 1 && weights->class_table.cols == d,
         target, "class table shape");
  expect(weights->pos_embed.rows == config.tokens() && weights->pos_embed.cols == d, target,
         "pos_embed shape");
  std::int64_t parameters = 0;
  volatile float sink = read_all(weights->pos_embed);
  for (const auto& [name, param] : weights->named()) {
    expect(param.data != nullptr && param.rows >= 1 && param.cols >= 1, target, "empty parameter");
    parameters += param.rows * param.cols;
    sink = sink + read_all(param);
  }
  expect(parameters == weights->parameter_count(), target, "parameter_count() != the views' sum");
  return 0;
}
