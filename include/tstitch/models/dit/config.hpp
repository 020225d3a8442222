// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/models/dit/metadata.hpp"

namespace tstitch::dit {

/// a * b for sizes >= 0, saturating at INT64_MAX instead of overflowing: a forward's memory
/// estimate multiplies a config's (bounded) sizes by a batch and a thread count that are not.
inline std::int64_t saturating_mul(std::int64_t a, std::int64_t b) {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  return a != 0 && b > max / a ? max : a * b;
}

/// a + b for sizes >= 0, saturating at INT64_MAX.
inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  return b > max - a ? max : a + b;
}

/// The hyper-parameters of a DiT (Peebles & Xie 2023, facebookresearch/DiT models.py).
struct Config {
  std::int64_t input_size = 32;    ///< latent height = width
  std::int64_t patch_size = 2;     ///< p: tokens are p x p patches
  std::int64_t in_channels = 4;    ///< latent channels C
  std::int64_t hidden_size = 1152; ///< D
  std::int64_t depth = 28;         ///< number of DiT blocks
  std::int64_t num_heads = 16;
  std::int64_t mlp_ratio = 4;      ///< MLP hidden = mlp_ratio * D
  std::int64_t num_classes = 1000; ///< class labels 0..num_classes-1; num_classes is the null class
  bool learn_sigma = true;         ///< 2C output channels: eps and the variance interpolation value

  static constexpr std::int64_t frequency_embedding_size = 256;

  /// Upper bounds that validate() enforces. Far above any published DiT (DiT-XL/2 at 512x512:
  /// input 64, hidden 1152, depth 28, 16 heads, 1000 classes), yet low enough that every size
  /// derived from a config (tensor sizes, parameter counts, tokens x hidden) stays below 2^52 and
  /// so fits in int64 with room for a batch: a file's metadata cannot make them overflow.
  static constexpr std::int64_t max_input_size = std::int64_t{1} << 14;
  static constexpr std::int64_t max_patch_size = std::int64_t{1} << 8;
  static constexpr std::int64_t max_in_channels = std::int64_t{1} << 12;
  static constexpr std::int64_t max_hidden_size = std::int64_t{1} << 16;
  static constexpr std::int64_t max_depth = std::int64_t{1} << 12;
  static constexpr std::int64_t max_mlp_ratio = std::int64_t{1} << 6;
  static constexpr std::int64_t max_num_classes = std::int64_t{1} << 24;
  /// tokens x hidden_size, the values of the position embedding and of one sample's activations:
  /// 4 GiB of float32.
  static constexpr std::int64_t max_tokens_x_hidden = std::int64_t{1} << 30;
  /// Tokens per sample (64x the 1024 of DiT-XL/2 at 512x512): attention holds tokens^2 scores
  /// per head and per thread, which must stay far from overflow too.
  static constexpr std::int64_t max_tokens = std::int64_t{1} << 16;

  [[nodiscard]] std::int64_t grid() const { return input_size / patch_size; }
  [[nodiscard]] std::int64_t tokens() const { return grid() * grid(); }
  [[nodiscard]] std::int64_t head_dim() const { return hidden_size / num_heads; }
  [[nodiscard]] std::int64_t mlp_hidden() const { return mlp_ratio * hidden_size; }
  [[nodiscard]] std::int64_t out_channels() const {
    return learn_sigma ? 2 * in_channels : in_channels;
  }
  [[nodiscard]] Shape latent_shape() const { return {in_channels, input_size, input_size}; }

  /// Multiply-accumulates of one image forward (the figure papers quote as "GFLOPs"): the linear
  /// layers, patch embedding and attention products; element-wise work is not counted.
  [[nodiscard]] double macs() const {
    const double t = static_cast<double>(tokens()), d = static_cast<double>(hidden_size);
    const double patch = t * static_cast<double>(in_channels * patch_size * patch_size) * d;
    const double per_block = t * d * 3 * d   // qkv
                             + 2 * t * t * d // q k^T and attention v
                             + t * d * d     // proj
                             + 2 * t * d * static_cast<double>(mlp_hidden()) // fc1, fc2
                             + 6 * d * d;                                    // adaLN modulation
    const double final_layer =
        t * d * static_cast<double>(patch_size * patch_size * out_channels()) + 2 * d * d;
    const double embed = static_cast<double>(frequency_embedding_size) * d + d * d;
    return patch + static_cast<double>(depth) * per_block + final_layer + embed;
  }

  /// Throws tstitch::invalid_argument naming the first inconsistent or out-of-bounds field.
  void validate() const {
    auto in_range = [](std::string_view name, std::int64_t v, std::int64_t max) {
      require(v >= 1 && v <= max, detail::concat("dit config ", name), v,
              detail::concat("must be in [1, ", max, "]"));
    };
    in_range("input_size", input_size, max_input_size);
    in_range("patch_size", patch_size, max_patch_size);
    in_range("in_channels", in_channels, max_in_channels);
    in_range("hidden_size", hidden_size, max_hidden_size);
    in_range("depth", depth, max_depth);
    in_range("num_heads", num_heads, max_hidden_size);
    in_range("mlp_ratio", mlp_ratio, max_mlp_ratio);
    in_range("num_classes", num_classes, max_num_classes);
    require(input_size % patch_size == 0, "dit config input_size", input_size,
            detail::concat("must be a multiple of patch_size ", patch_size));
    require(hidden_size % num_heads == 0, "dit config hidden_size", hidden_size,
            detail::concat("must be a multiple of num_heads ", num_heads));
    require(hidden_size % 4 == 0, "dit config hidden_size", hidden_size,
            "must be a multiple of 4 (2-D sin-cos position embedding)");
    require(tokens() <= max_tokens, "dit config input_size", input_size,
            detail::concat("gives ", tokens(), " tokens (patch_size ", patch_size, "); at most ",
                           max_tokens, " are supported"));
    // Cannot overflow: tokens <= 2^16 and hidden_size <= 2^16 here.
    require(tokens() * hidden_size <= max_tokens_x_hidden, "dit config input_size", input_size,
            detail::concat("gives ", tokens(), " tokens of hidden_size ", hidden_size,
                           "; tokens x hidden_size must be at most ", max_tokens_x_hidden));
  }

  /// The published configurations "DiT-S/2" ... "DiT-XL/8" (input 32, 4 channels, 1000 classes).
  [[nodiscard]] static Config preset(std::string_view name) {
    const std::map<std::string, std::array<std::int64_t, 3>, std::less<>> sizes{
        {"S", {12, 384, 6}}, {"B", {12, 768, 12}}, {"L", {24, 1024, 16}}, {"XL", {28, 1152, 16}}};
    const auto slash = name.find('/');
    if (name.substr(0, 4) != "DiT-" || slash == std::string_view::npos)
      throw_invalid_argument("dit preset", name, "must look like DiT-S/2 (S, B, L, XL; 2, 4, 8)");
    const auto size = sizes.find(name.substr(4, slash - 4));
    const std::string_view patch = name.substr(slash + 1);
    if (size == sizes.end() || (patch != "2" && patch != "4" && patch != "8"))
      throw_invalid_argument("dit preset", name, "must look like DiT-S/2 (S, B, L, XL; 2, 4, 8)");
    Config c;
    c.depth = size->second[0];
    c.hidden_size = size->second[1];
    c.num_heads = size->second[2];
    c.patch_size = patch[0] - '0';
    return c;
  }

  /// The config as safetensors metadata strings, the keys from_metadata reads.
  [[nodiscard]] std::map<std::string, std::string> to_metadata() const {
    return {{"depth", std::to_string(depth)},
            {"hidden_size", std::to_string(hidden_size)},
            {"num_heads", std::to_string(num_heads)},
            {"patch_size", std::to_string(patch_size)},
            {"input_size", std::to_string(input_size)},
            {"in_channels", std::to_string(in_channels)},
            {"num_classes", std::to_string(num_classes)},
            {"mlp_ratio", std::to_string(mlp_ratio)},
            {"learn_sigma", learn_sigma ? "true" : "false"}};
  }

  /// Reads a config from safetensors metadata strings (as written by
  /// tools/convert_dit_checkpoint.py): depth, hidden_size, num_heads, patch_size, input_size,
  /// in_channels, num_classes, learn_sigma, mlp_ratio (optional, default 4). Integers and booleans
  /// are read in every spelling Python's writers produce (metadata.hpp: "4" or "4.0"; "true",
  /// "True" or "1"). Every error names `source`, the key and the value found.
  [[nodiscard]] static Config from_metadata(const std::map<std::string, std::string>& metadata,
                                            std::string_view source) {
    auto value = [&](const std::string& key, bool required) -> const std::string* {
      const auto found = metadata.find(key);
      if (found != metadata.end())
        return &found->second;
      if (required)
        throw invalid_argument(
            detail::concat("tstitch: ", source, ": DiT metadata lacks '", key, "'"));
      return nullptr;
    };
    auto integer = [&](const std::string& key) {
      return metadata_integer(source, key, *value(key, true));
    };
    Config c;
    c.depth = integer("depth");
    c.hidden_size = integer("hidden_size");
    c.num_heads = integer("num_heads");
    c.patch_size = integer("patch_size");
    c.input_size = integer("input_size");
    c.in_channels = integer("in_channels");
    c.num_classes = integer("num_classes");
    if (const std::string* ratio = value("mlp_ratio", false))
      c.mlp_ratio = metadata_integer(source, "mlp_ratio", *ratio);
    c.learn_sigma = metadata_bool(source, "learn_sigma", *value("learn_sigma", true));
    try {
      c.validate();
    } catch (const invalid_argument& e) { // names the field and its value; add the file
      std::string_view what = e.what();
      if (what.starts_with("tstitch: "))
        what.remove_prefix(std::string_view("tstitch: ").size());
      throw invalid_argument(detail::concat("tstitch: ", source, ": DiT metadata: ", what));
    }
    return c;
  }

  friend bool operator==(const Config&, const Config&) = default;
  friend std::ostream& operator<<(std::ostream& out, const Config& c) {
    return out << "DiT(depth " << c.depth << ", hidden " << c.hidden_size << ", heads "
               << c.num_heads << ", patch " << c.patch_size << ", input " << c.input_size << "x"
               << c.input_size << "x" << c.in_channels << ", classes " << c.num_classes
               << (c.learn_sigma ? ", learn_sigma)" : ")");
  }
};

/// Checks the arguments of a forward against a config, naming the first bad one: latents x
/// [N >= 1, C, S, S], output out [N, out_channels, S, S], one label per row in [0, num_classes]
/// (num_classes: the null class), a finite timestep. `model` names the model in the messages.
inline void check_forward(const Config& c, ConstView x, ConstView out,
                          const std::vector<int>& labels, double timestep, std::string_view model) {
  const std::int64_t n = x.batch();
  if (x.shape() != c.latent_shape() || n < 1)
    throw_invalid_argument(detail::concat(model, " input shape"), shape_string(x),
                           detail::concat("must be [N >= 1, ", c.in_channels, ", ", c.input_size,
                                          ", ", c.input_size, "] for ", c));
  if (out.batch() != n || out.shape() != Shape{c.out_channels(), c.input_size, c.input_size})
    throw_invalid_argument(detail::concat(model, " output shape"), shape_string(out),
                           detail::concat("must be [", n, ", ", c.out_channels(), ", ",
                                          c.input_size, ", ", c.input_size, "]"));
  if (static_cast<std::int64_t>(labels.size()) != n)
    throw_invalid_argument("labels.size()", labels.size(),
                           detail::concat("must equal the batch, ", n, " (one label per image)"));
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] < 0 || labels[i] > c.num_classes)
      throw_invalid_argument(
          detail::concat("labels[", i, "]"), labels[i],
          detail::concat("must be in [0, ", c.num_classes, "] (", c.num_classes, ": no class)"));
  if (!std::isfinite(timestep))
    throw_invalid_argument("timestep", timestep, "must be finite");
}

} // namespace tstitch::dit
