// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/models/dit/config.hpp"

namespace tstitch::dit {

/// A float32 row-major matrix [rows, cols] (a vector has rows = 1), owned elsewhere.
struct Param {
  const float* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

struct BlockWeights {
  Param qkv_weight, qkv_bias;   // [3D, D], [3D]
  Param proj_weight, proj_bias; // [D, D], [D]
  Param fc1_weight, fc1_bias;   // [4D, D], [4D]
  Param fc2_weight, fc2_bias;   // [D, 4D], [D]
  Param ada_weight, ada_bias;   // [6D, D], [6D]
};

/// The fixed 2-D sin-cos position embedding of DiT (from MAE), [tokens, D], computed in double
/// and stored as float32 as the reference does. Token m = (row r, column c) of the patch grid gets
/// [sin(c w), cos(c w), sin(r w), cos(r w)] with w_k = 10000^(-k / (D/4)), k < D/4.
[[nodiscard]] inline std::vector<float> sincos_position_embedding(std::int64_t hidden,
                                                                  std::int64_t grid) {
  // Checked before multiplying: grid and hidden may come from a file's metadata.
  constexpr std::int64_t max_values = Config::max_tokens_x_hidden;
  require(hidden >= 0 && hidden <= max_values, "position embedding hidden size", hidden,
          detail::concat("must be in [0, ", max_values, "]"));
  require(grid >= 0 && (grid == 0 || hidden == 0 || grid <= max_values / grid / hidden),
          "position embedding grid", grid,
          detail::concat("with hidden size ", hidden, " must give at most ", max_values,
                         " values (grid x grid x hidden)"));
  const std::int64_t quarter = hidden / 4;
  std::vector<float> table(static_cast<std::size_t>(grid * grid * hidden));
  for (std::int64_t r = 0; r < grid; ++r)
    for (std::int64_t c = 0; c < grid; ++c) {
      float* row = &table[static_cast<std::size_t>((r * grid + c) * hidden)];
      for (std::int64_t k = 0; k < quarter; ++k) {
        const double omega =
            1.0 / std::pow(10000.0, static_cast<double>(k) / static_cast<double>(quarter));
        const double along_width = static_cast<double>(c) * omega;
        const double along_height = static_cast<double>(r) * omega;
        row[k] = static_cast<float>(std::sin(along_width));
        row[quarter + k] = static_cast<float>(std::cos(along_width));
        row[2 * quarter + k] = static_cast<float>(std::sin(along_height));
        row[3 * quarter + k] = static_cast<float>(std::cos(along_height));
      }
    }
  return table;
}

/// The weights of a DiT, under the tensor names of the official checkpoints
/// (facebookresearch/DiT): `x_embedder.proj.weight`, `t_embedder.mlp.0.weight`,
/// `y_embedder.embedding_table.weight`, `blocks.{i}.attn.qkv.weight`, ...,
/// `final_layer.linear.weight`. F32 tensors of a file are used in place (memory-mapped, or in
/// the one buffer LoadMode::read reads the file into; not copied per tensor); F16 and BF16 tensors
/// are converted once. `pos_embed` may be absent (it is recomputed).
///
/// Mapped weights (the default) are only as stable as the file: see io::LoadMode. Truncating the
/// file during a run kills the process with SIGBUS, rewriting it in place changes the weights
/// under the run (check_unchanged() tells afterwards). LoadMode::read is immune to both.
class Weights {
public:
  /// Loads a file written by tools/convert_dit_checkpoint.py; the config comes from its metadata.
  [[nodiscard]] static Weights load(const std::filesystem::path& path,
                                    io::LoadMode mode = io::LoadMode::mmap) {
    io::SafetensorsFile file(path, mode);
    const Config config = Config::from_metadata(file.metadata(), path.string());
    return Weights(std::move(file), config);
  }

  /// Loads a file and checks it against an expected config (tensor shapes must agree with it).
  [[nodiscard]] static Weights load(const std::filesystem::path& path, const Config& config,
                                    io::LoadMode mode = io::LoadMode::mmap) {
    config.validate();
    return Weights(io::SafetensorsFile(path, mode), config);
  }

  /// Loads safetensors bytes already in memory (weights embedded in an application's resources,
  /// a fuzzer's input) as load() loads a file: the config comes from the metadata and every
  /// tensor is checked against it. F32 tensors are used in place, so the bytes
  /// must outlive the weights and stay unchanged. `name` stands for the path in error messages.
  /// Throws tstitch::io::format_error (not safetensors), tstitch::invalid_argument (metadata that
  /// is not a valid config) or tstitch::runtime_error (tensors that do not match the config).
  [[nodiscard]] static Weights from_bytes(std::span<const std::byte> bytes,
                                          const std::string& name = "<memory>") {
    io::SafetensorsFile file = io::SafetensorsFile::from_bytes(bytes, name);
    const Config config = Config::from_metadata(file.metadata(), name);
    return Weights(std::move(file), config);
  }

  /// Loads bytes in memory and checks them against an expected config, as load(path, config).
  [[nodiscard]] static Weights from_bytes(std::span<const std::byte> bytes, const Config& config,
                                          const std::string& name = "<memory>") {
    config.validate();
    return Weights(io::SafetensorsFile::from_bytes(bytes, name), config);
  }

  /// Throws tstitch::runtime_error "tstitch: model file changed during the run: <path> (...)"
  /// if the file these weights came from was rewritten or replaced since load(). Call it at the
  /// end of a run, before writing results. Does nothing for random() weights.
  void check_unchanged() const { stamp().check_unchanged("model file"); }
  /// The file as it was at load() (an empty path for random() weights): a copy to check later,
  /// e.g. after the weights were moved into a model or uploaded to a device.
  [[nodiscard]] io::FileStamp stamp() const { return file_ ? file_->stamp() : io::FileStamp{}; }

  /// Random weights (uniform in [-scale, scale], seeded) for benchmarks and tests: every tensor,
  /// including those DiT's initialisation zeroes, is non-zero.
  [[nodiscard]] static Weights random(const Config& config, std::uint64_t seed,
                                      float scale = 0.05f) {
    config.validate();
    Weights w(config);
    std::uint32_t stream = 0;
    w.assign_all([&](const std::string&, std::int64_t rows, std::int64_t cols) {
      w.parameters_ += rows * cols;
      w.copied_ += rows * cols;
      std::vector<float>& values = w.owned_.emplace_back(static_cast<std::size_t>(rows * cols));
      fill_normal(values.data(), values.size(), NoiseKey{seed, stream++, 0, 7});
      for (float& v : values)
        v = std::fmax(-scale, std::fmin(scale, v * scale * 0.5f));
      return Param{values.data(), rows, cols};
    });
    return w;
  }

  [[nodiscard]] const Config& config() const { return config_; }
  /// Every tensor by its official name, with its [rows, cols] view (pos_embed not included).
  [[nodiscard]] const std::vector<std::pair<std::string, Param>>& named() const { return named_; }
  /// Parameters held in memory of their own (converted from F16/BF16, unaligned, or random)
  /// rather than read in place from the file's mapping.
  [[nodiscard]] std::int64_t copied_parameters() const { return copied_; }

  /// Writes the weights as an F32 safetensors file with the official names and the config as
  /// metadata, the format load() reads (and tools/convert_dit_checkpoint.py writes).
  void save(const std::filesystem::path& path) const {
    std::vector<io::TensorData> tensors;
    for (const auto& [name, param] : named_) {
      std::vector<std::int64_t> shape = official_shape(name, param.rows, param.cols);
      tensors.push_back(io::f32_tensor(
          name, shape,
          std::span<const float>(param.data, static_cast<std::size_t>(param.rows * param.cols))));
    }
    std::map<std::string, std::string> metadata = config_.to_metadata();
    metadata["format"] = "tstitch-dit";
    io::write_safetensors(path, tensors, metadata);
  }
  /// Number of parameters (the fixed position embedding not included).
  [[nodiscard]] std::int64_t parameter_count() const { return parameters_; }

  Param patch_weight, patch_bias; // [D, C*p*p] (the conv kernel, flattened), [D]
  Param pos_embed;                // [T, D]
  Param t_fc1_weight, t_fc1_bias; // [D, 256], [D]
  Param t_fc2_weight, t_fc2_bias; // [D, D], [D]
  Param class_table;              // [num_classes + 1, D]; the last row is the null class
  std::vector<BlockWeights> blocks;
  Param final_ada_weight, final_ada_bias; // [2D, D], [2D]
  Param final_weight, final_bias;         // [p*p*out_channels, D], [p*p*out_channels]

private:
  explicit Weights(Config config) : config_(config) {}

  Weights(io::SafetensorsFile file, const Config& config)
      : config_(config), file_(std::move(file)) {
    const io::SafetensorsFile& f = *file_;
    std::set<std::string> expected;
    assign_all([&](const std::string& name, std::int64_t rows, std::int64_t cols) {
      expected.insert(name);
      return from_file(f, name, rows, cols);
    });
    if (f.contains("pos_embed")) {
      expected.insert("pos_embed");
      f.expect("pos_embed", {1, config.tokens(), config.hidden_size});
      // Fixed, not learned: like random(), parameter_count() and copied_parameters() omit it.
      pos_embed = from_file(f, "pos_embed", config.tokens(), config.hidden_size, false);
    }
    for (const std::string& name : f.names())
      if (!expected.contains(name))
        throw runtime_error(detail::concat("tstitch: ", f.path().string(), ": tensor '", name,
                                           "': unexpected in a DiT checkpoint for ", config));
  }

  /// Calls get(name, rows, cols) for every tensor the model needs and stores the result.
  template <class GetTensor> void assign_all(GetTensor&& get_tensor) {
    auto get = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
      const Param p = get_tensor(name, rows, cols);
      named_.emplace_back(name, p);
      return p;
    };
    const Config& c = config_;
    const std::int64_t d = c.hidden_size, patch_in = c.in_channels * c.patch_size * c.patch_size;
    patch_weight = get("x_embedder.proj.weight", d, patch_in);
    patch_bias = get("x_embedder.proj.bias", 1, d);
    t_fc1_weight = get("t_embedder.mlp.0.weight", d, Config::frequency_embedding_size);
    t_fc1_bias = get("t_embedder.mlp.0.bias", 1, d);
    t_fc2_weight = get("t_embedder.mlp.2.weight", d, d);
    t_fc2_bias = get("t_embedder.mlp.2.bias", 1, d);
    class_table = get("y_embedder.embedding_table.weight", c.num_classes + 1, d);
    blocks.resize(static_cast<std::size_t>(c.depth));
    for (std::int64_t i = 0; i < c.depth; ++i) {
      const std::string p = "blocks." + std::to_string(i) + ".";
      BlockWeights& b = blocks[static_cast<std::size_t>(i)];
      b.qkv_weight = get(p + "attn.qkv.weight", 3 * d, d);
      b.qkv_bias = get(p + "attn.qkv.bias", 1, 3 * d);
      b.proj_weight = get(p + "attn.proj.weight", d, d);
      b.proj_bias = get(p + "attn.proj.bias", 1, d);
      b.fc1_weight = get(p + "mlp.fc1.weight", c.mlp_hidden(), d);
      b.fc1_bias = get(p + "mlp.fc1.bias", 1, c.mlp_hidden());
      b.fc2_weight = get(p + "mlp.fc2.weight", d, c.mlp_hidden());
      b.fc2_bias = get(p + "mlp.fc2.bias", 1, d);
      b.ada_weight = get(p + "adaLN_modulation.1.weight", 6 * d, d);
      b.ada_bias = get(p + "adaLN_modulation.1.bias", 1, 6 * d);
    }
    const std::int64_t out = c.patch_size * c.patch_size * c.out_channels();
    final_ada_weight = get("final_layer.adaLN_modulation.1.weight", 2 * d, d);
    final_ada_bias = get("final_layer.adaLN_modulation.1.bias", 1, 2 * d);
    final_weight = get("final_layer.linear.weight", out, d);
    final_bias = get("final_layer.linear.bias", 1, out);
    // The position embedding is fixed, not learned; a file may carry it (checked) or not.
    std::vector<float>& table = owned_.emplace_back(sincos_position_embedding(d, c.grid()));
    pos_embed = Param{table.data(), c.tokens(), d};
  }

  /// The tensor `name` as a [rows, cols] matrix; its file shape must be the official one.
  /// `parameter`: whether parameter_count() and copied_parameters() count it.
  Param from_file(const io::SafetensorsFile& f, const std::string& name, std::int64_t rows,
                  std::int64_t cols, bool parameter = true) {
    const io::TensorInfo& info = f.info(name);
    f.expect(name, official_shape(name, rows, cols));
    const std::int64_t counted = parameter ? rows * cols : 0;
    parameters_ += counted;
    if (info.dtype == io::DType::F32 &&
        reinterpret_cast<std::uintptr_t>(info.bytes.data()) % alignof(float) == 0)
      return Param{f.f32(name).data(), rows, cols}; // mapped, not copied
    copied_ += counted;
    std::vector<float>& values = owned_.emplace_back(f.read_f32(name));
    return Param{values.data(), rows, cols};
  }

  /// The shape a tensor has in the official checkpoints, for its [rows, cols] view here.
  [[nodiscard]] std::vector<std::int64_t> official_shape(const std::string& name, std::int64_t rows,
                                                         std::int64_t cols) const {
    if (name == "x_embedder.proj.weight") // a conv kernel [D, C, p, p]
      return {rows, config_.in_channels, config_.patch_size, config_.patch_size};
    if (name == "pos_embed")
      return {1, rows, cols};
    if (rows == 1) // biases are vectors
      return {cols};
    return {rows, cols};
  }

  Config config_;
  std::optional<io::SafetensorsFile> file_; // keeps the mapping alive
  std::vector<std::vector<float>> owned_;   // converted or generated tensors
  std::vector<std::pair<std::string, Param>> named_;
  std::int64_t parameters_ = 0;
  std::int64_t copied_ = 0;
};

} // namespace tstitch::dit
