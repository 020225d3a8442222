// SPDX-License-Identifier: Apache-2.0
// Writes the fuzzers' seed corpora with tstitch's own writers (write_safetensors, write_npy,
// dit::Weights::save), so that the seeds are valid files of the format the readers are meant to
// accept, and stay so when the writers change. Usage: tstitch_fuzz_seeds <output directory>;
// it fills <dir>/safetensors, <dir>/npy and <dir>/dit_weights (each file a few KB at most).
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tstitch/core/tensor.hpp"
#include "tstitch/io/npy.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace {

namespace fs = std::filesystem;
using tstitch::io::DType;
using tstitch::io::TensorData;

std::vector<float> ramp(std::size_t count) {
  std::vector<float> values(count);
  for (std::size_t i = 0; i < count; ++i)
    values[i] = 0.25f * static_cast<float>(i) - 1.0f;
  return values;
}

void safetensors_seeds(const fs::path& dir) {
  using tstitch::io::write_safetensors;
  const std::vector<float> six = ramp(6);
  write_safetensors(dir / "f32.safetensors",
                    std::vector<TensorData>{tstitch::io::f32_tensor("w", {2, 3}, six)},
                    {{"format", "pt"}});
  write_safetensors(dir / "f16_bf16.safetensors",
                    std::vector<TensorData>{tstitch::io::f16_tensor("h", {3, 2}, six),
                                            tstitch::io::bf16_tensor("b", {6}, six),
                                            tstitch::io::f32_tensor("s", {}, ramp(1)),
                                            tstitch::io::f32_tensor("e", {0, 4}, {})});
  write_safetensors(dir / "empty.safetensors", std::vector<TensorData>{});
  // Every dtype of the spec once, 8 elements each (whole bytes for the 4- and 6-bit formats).
  std::vector<TensorData> all;
  for (const auto& entry : tstitch::io::detail::dtype_table) {
    const std::size_t bytes = 8 * entry.bits / 8;
    std::vector<std::byte> raw(bytes);
    for (std::size_t i = 0; i < bytes; ++i)
      raw[i] = static_cast<std::byte>(i * 37 + entry.bits);
    all.push_back({"t_" + std::string(entry.name), entry.dtype, {2, 4}, std::move(raw)});
  }
  write_safetensors(dir / "every_dtype.safetensors", all, {{"note", "one tensor per dtype"}});
}

void npy_seeds(const fs::path& dir) {
  using tstitch::io::write_npy;
  const std::vector<float> values = ramp(8);
  write_npy(dir / "vector.npy", std::span<const float>(values.data(), 5),
            std::vector<std::int64_t>{5});
  write_npy(dir / "matrix.npy", std::span<const float>(values.data(), 6),
            std::vector<std::int64_t>{2, 3});
  write_npy(dir / "scalar.npy", std::span<const float>(values.data(), 1),
            std::vector<std::int64_t>{});
  write_npy(dir / "empty.npy", std::span<const float>(), std::vector<std::int64_t>{0, 4});
  tstitch::Tensor batch(2, tstitch::Shape{1, 2, 2});
  for (std::int64_t i = 0; i < 8; ++i)
    batch.data()[i] = values[static_cast<std::size_t>(i)];
  write_npy(dir / "batch.npy", batch.view());
}

/// The smallest DiTs: t_embedder's first layer alone is hidden x 256 values, so hidden 4.
tstitch::dit::Config tiny_config(bool learn_sigma, std::int64_t depth) {
  tstitch::dit::Config c;
  c.input_size = 2;
  c.patch_size = 1;
  c.in_channels = 1;
  c.hidden_size = 4;
  c.depth = depth;
  c.num_heads = 2;
  c.mlp_ratio = 1;
  c.num_classes = 2;
  c.learn_sigma = learn_sigma;
  return c;
}

void dit_seeds(const fs::path& dir) {
  using tstitch::dit::Weights;
  Weights::random(tiny_config(false, 1), 1).save(dir / "dit_f32.safetensors");
  // F16 tensors, two blocks, learn_sigma, and the optional pos_embed: the other paths of load().
  const tstitch::dit::Config config = tiny_config(true, 2);
  const Weights weights = Weights::random(config, 2);
  std::vector<TensorData> tensors;
  for (const auto& [name, param] : weights.named()) {
    const std::vector<float> values(param.data, param.data + param.rows * param.cols);
    std::vector<std::int64_t> shape{param.rows, param.cols};
    if (name == "x_embedder.proj.weight")
      shape = {param.rows, config.in_channels, config.patch_size, config.patch_size};
    else if (param.rows == 1)
      shape = {param.cols};
    tensors.push_back(tstitch::io::f16_tensor(name, shape, values));
  }
  const tstitch::dit::Param pos = weights.pos_embed;
  tensors.push_back(
      tstitch::io::f32_tensor("pos_embed", {1, pos.rows, pos.cols},
                              std::vector<float>(pos.data, pos.data + pos.rows * pos.cols)));
  tstitch::io::write_safetensors(dir / "dit_f16_pos_embed.safetensors", tensors,
                                 config.to_metadata());
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <output directory>\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    for (const char* name : {"safetensors", "npy", "dit_weights"})
      fs::create_directories(out / name);
    safetensors_seeds(out / "safetensors");
    npy_seeds(out / "npy");
    dit_seeds(out / "dit_weights");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tstitch_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
