// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: safetensors bytes -> dit::Weights::from_bytes, the DiT config from the
// metadata and every tensor checked against it. The only exceptions it may throw are
// tstitch::io::format_error, tstitch::invalid_argument and tstitch::runtime_error; any other
// exception escapes, terminates the process and so counts as a finding, as do crashes, sanitizer
// reports, leaks and timeouts. Weights that load are read in full, so that a parameter whose
// view reaches past its tensor's bytes is an AddressSanitizer report.
//
// Byte-level mutations seldom get past the safetensors layer to the DiT's own checks, so half of
// the mutations are structure-aware (LLVMFuzzerCustomMutator below): they parse the input, change
// a config value, a shape, a dtype or a tensor name, or write a fresh valid DiT of a random small
// config, and write the file back with a consistent header.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

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

using tstitch::io::DType;

struct Tensor {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

/// Safetensors bytes for `tensors` in order, with `metadata`; nothing if larger than `max_size`.
std::optional<std::vector<std::uint8_t>>
serialise(const std::vector<Tensor>& tensors, const std::map<std::string, std::string>& metadata,
          std::size_t max_size) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    header[t.name] = {{"dtype", std::string(tstitch::io::dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) { // a name that is not UTF-8
    return std::nullopt;
  }
  const std::uint64_t length = text.size();
  if (8 + length + offset > max_size)
    return std::nullopt;
  std::vector<std::uint8_t> out(8 + length);
  std::memcpy(out.data(), &length, 8);
  std::memcpy(out.data() + 8, text.data(), length);
  for (const Tensor& t : tensors)
    out.insert(out.end(), reinterpret_cast<const std::uint8_t*>(t.bytes.data()),
               reinterpret_cast<const std::uint8_t*>(t.bytes.data()) + t.bytes.size());
  return out;
}

/// `count` elements of `dtype` as bytes, small values (F32, F16 or BF16; 0x3c00 is 1.0 in F16).
std::vector<std::byte> values(DType dtype, std::int64_t count, std::minstd_rand& rng) {
  const std::size_t size = dtype == DType::F32 ? 4 : 2;
  std::vector<std::byte> bytes(static_cast<std::size_t>(count) * size);
  for (std::byte& b : bytes)
    b = static_cast<std::byte>(rng() % 4 == 0 ? 0x3c : rng());
  return bytes;
}

/// The element count of a shape, or -1 beyond 2^20 (the mutator only writes data it can hold).
std::int64_t numel(const std::vector<std::int64_t>& shape) {
  constexpr std::int64_t limit = std::int64_t{1} << 20;
  std::int64_t n = 1;
  for (const std::int64_t e : shape) {
    if (e < 0 || (e > 0 && n > limit / e))
      return -1;
    n *= e;
  }
  return n;
}

/// A valid DiT file of a random small config (F32 or F16), as load() expects it.
void fresh_dit(std::vector<Tensor>& tensors, std::map<std::string, std::string>& metadata,
               std::minstd_rand& rng) {
  tstitch::dit::Config c;
  c.patch_size = 1 + static_cast<std::int64_t>(rng() % 2);
  c.input_size = c.patch_size * (1 + static_cast<std::int64_t>(rng() % 3));
  c.in_channels = 1 + static_cast<std::int64_t>(rng() % 2);
  c.hidden_size = 4;
  c.num_heads =
      1 + static_cast<std::int64_t>(rng() % 2) * (1 + static_cast<std::int64_t>(rng() % 2) * 2);
  c.depth = 1 + static_cast<std::int64_t>(rng() % 2);
  c.mlp_ratio = 1 + static_cast<std::int64_t>(rng() % 2);
  c.num_classes = 1 + static_cast<std::int64_t>(rng() % 3);
  c.learn_sigma = rng() % 2 == 0;
  const tstitch::dit::Weights w = tstitch::dit::Weights::random(c, rng());
  const DType dtype = rng() % 2 == 0 ? DType::F16 : DType::F32;
  tensors.clear();
  for (const auto& [name, p] : w.named()) {
    std::vector<std::int64_t> shape{p.rows, p.cols};
    if (name == "x_embedder.proj.weight")
      shape = {p.rows, c.in_channels, c.patch_size, c.patch_size};
    else if (p.rows == 1)
      shape = {p.cols};
    tensors.push_back({name, dtype, shape, values(dtype, p.rows * p.cols, rng)});
  }
  metadata = c.to_metadata();
}

/// One structure-aware edit of a parsed DiT file.
void edit(std::vector<Tensor>& tensors, std::map<std::string, std::string>& metadata,
          std::minstd_rand& rng) {
  static const char* const keys[] = {"depth",       "hidden_size", "num_heads",
                                     "patch_size",  "input_size",  "in_channels",
                                     "num_classes", "mlp_ratio",   "learn_sigma"};
  static const char* const texts[] = {
      "0",     "1",     "2",    "3",     "4",  "8",  "-1", "true",
      "false", "65536", "1024", "16384", " 2", "2x", "",   "99999999999999999999"};
  const auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  switch (rng() % 6) {
  case 0: // a config value
    metadata[keys[pick(std::size(keys))]] = texts[pick(std::size(texts))];
    return;
  case 1: // a config key dropped
    metadata.erase(keys[pick(std::size(keys))]);
    return;
  case 2: { // one extent of one tensor, its data resized to match
    if (tensors.empty())
      return;
    Tensor& t = tensors[pick(tensors.size())];
    if (t.shape.empty() || (t.dtype != DType::F32 && t.dtype != DType::F16))
      return;
    std::int64_t& extent = t.shape[pick(t.shape.size())];
    const std::int64_t options[] = {0, 1, 2, 3, 4, 5, 8, extent + 1, extent - 1, extent * 2};
    extent = std::clamp<std::int64_t>(options[pick(std::size(options))], 0, 1 << 20);
    if (const std::int64_t n = numel(t.shape); n >= 0 && n <= 4096)
      t.bytes = values(t.dtype, n, rng); // else the old data stays: a size mismatch
    return;
  }
  case 3: { // a dtype: F32 <-> F16/BF16, data re-sized
    if (tensors.empty())
      return;
    Tensor& t = tensors[pick(tensors.size())];
    const std::int64_t n = numel(t.shape);
    if (n < 0 || n > 4096)
      return;
    const DType dtypes[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::U8};
    t.dtype = dtypes[pick(std::size(dtypes))];
    const std::size_t bits = tstitch::io::dtype_bits(t.dtype);
    t.bytes.assign(static_cast<std::size_t>(n) * bits / 8, std::byte{0x3c});
    return;
  }
  case 4: { // a tensor dropped, or renamed to another block's
    if (tensors.empty())
      return;
    const std::size_t i = pick(tensors.size());
    if (rng() % 2 == 0) {
      tensors.erase(tensors.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (tensors[i].name.rfind("blocks.", 0) == 0) {
      const std::size_t dot = tensors[i].name.find('.', 7);
      if (dot != std::string::npos)
        tensors[i].name = "blocks." + std::to_string(rng() % 4) + tensors[i].name.substr(dot);
    }
    return;
  }
  default:
    fresh_dit(tensors, metadata, rng);
  }
}

} // namespace

extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned int seed) {
  std::minstd_rand rng(seed);
  if (rng() % 2 == 0)
    return LLVMFuzzerMutate(data, size, max_size);
  std::vector<Tensor> tensors;
  std::map<std::string, std::string> metadata;
  try {
    const auto file = tstitch::io::SafetensorsFile::from_bytes(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size));
    metadata = file.metadata();
    for (const std::string& name : file.names()) {
      const tstitch::io::TensorInfo& info = file.info(name);
      tensors.push_back({name, info.dtype, info.shape,
                         std::vector<std::byte>(info.bytes.begin(), info.bytes.end())});
    }
    edit(tensors, metadata, rng);
  } catch (const tstitch::io::format_error&) {
    fresh_dit(tensors, metadata, rng); // not safetensors: start again from a valid DiT
  }
  const std::optional<std::vector<std::uint8_t>> out = serialise(tensors, metadata, max_size);
  if (!out)
    return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, out->data(), out->size());
  return out->size();
}

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
