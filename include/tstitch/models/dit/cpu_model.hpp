// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/models/dit/attention.hpp"
#include "tstitch/models/dit/deterministic.hpp"
#include "tstitch/models/dit/linear.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace tstitch::dit {

/// DiT on the CPU in float32: the reference the CUDA backend is tested against, and a Denoiser in
/// its own right (prediction epsilon_learned_sigma, or epsilon without learn_sigma; condition: one
/// class label per batch row, num_classes meaning "no class" for guidance). The linear layers
/// (linear.hpp) and attention (attention.hpp) in oneDNN or Eigen (`Gemm`, gemm.hpp); the row
/// operations (LayerNorm, embeddings) in Eigen.
///
/// Activation buffers are allocated once per batch size and reused, so sampling allocates nothing
/// per step. Build with OpenMP (-fopenmp) to use several cores: the GEMMs, the attention loop over
/// (sample, head) and the row operations then run in parallel.
///
/// Its output has the same bits at any thread count and wherever its buffers are allocated. It
/// depends on the batch, though: the GEMM libraries block rows by the row count, so an image's
/// output changes in the last bits with the batch it is in, unless `set_batch_invariant(true)`.
class CpuModel {
public:
  using condition_type = std::vector<int>;
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Vector = Eigen::Matrix<float, 1, Eigen::Dynamic, Eigen::RowMajor>;

  /// `gemm` picks the library of the linear layers and attention; both give the same model to
  /// float32 rounding.
  explicit CpuModel(Weights weights, std::string name = "DiT", Gemm gemm = default_gemm())
      : weights_(std::move(weights)), name_(std::move(name)), linear_(gemm), attention_(gemm) {}

  [[nodiscard]] Prediction prediction() const {
    return config().learn_sigma ? Prediction::epsilon_learned_sigma : Prediction::epsilon;
  }
  [[nodiscard]] Shape latent_shape() const { return config().latent_shape(); }
  [[nodiscard]] std::string model_name(std::size_t) const { return name_; }
  /// The null class of classifier-free guidance, for every row.
  [[nodiscard]] condition_type unconditional(const condition_type& labels) const {
    return condition_type(labels.size(), static_cast<int>(config().num_classes));
  }
  [[nodiscard]] const Config& config() const { return weights_.config(); }
  [[nodiscard]] const Weights& weights() const { return weights_; }
  [[nodiscard]] Gemm gemm() const { return linear_.gemm(); }

  /// Whether each image's forward runs alone (one image's rows at a time), so that an image's
  /// output has the same bits in any batch, at any position: for renderers that must reproduce an
  /// image whatever else was generated with it. Off by default; costs the batching (measured in
  /// benchmarks/README.md).
  void set_batch_invariant(bool invariant) { batch_invariant_ = invariant; }
  [[nodiscard]] bool batch_invariant() const { return batch_invariant_; }

  /// Bytes of activation buffers currently allocated (they grow with the largest batch seen).
  [[nodiscard]] std::int64_t activation_bytes() const {
    return static_cast<std::int64_t>(sizeof(float)) *
               (tokens_.size() + h_.size() + qkv_.size() + attn_.size() + mlp_.size() +
                out_.size() + cond_.size() + silu_.size() + mod_.size() + patches_.size() +
                freq_.size() + temb_.size()) +
           attention_.scratch_bytes();
  }

  /// Writes the raw output (N, out_channels, H, W) for latents x (N, C, H, W) at model time
  /// ctx.point.timestep and labels (one per row, in [0, num_classes]).
  void predict(ConstView x, const StepContext& ctx, const condition_type& labels, View out) {
    check_forward(config(), x, out, labels, ctx.point.timestep, "DiT");
    const auto t = static_cast<float>(ctx.point.timestep);
    if (!batch_invariant_) {
      forward(x, t, labels, out);
      return;
    }
    for (std::int64_t n = 0; n < x.batch(); ++n)
      forward(x.samples(n, 1), t, std::span(labels).subspan(static_cast<std::size_t>(n), 1),
              out.samples(n, 1));
  }

private:
  using ConstMap = Eigen::Map<const Matrix>;
  using Map = Eigen::Map<Matrix>;
  using ConstVectorMap = Eigen::Map<const Vector>;

  static ConstMap matrix(const Param& p) { return ConstMap(p.data, p.rows, p.cols); }
  static ConstVectorMap vector(const Param& p) { return ConstVectorMap(p.data, p.cols); }

  static void resize(AlignedBuffer<float>& buffer, std::int64_t size) {
    if (static_cast<std::int64_t>(buffer.size()) < size)
      buffer.resize(static_cast<std::size_t>(size));
  }

  void forward(ConstView x, float t, std::span<const int> labels, View out) {
    const std::int64_t n = x.batch();
    reserve(n);
    embed_condition(t, labels);
    embed_patches(x);
    for (const BlockWeights& block : weights_.blocks)
      run_block(block, n);
    final_layer(n);
    unpatchify(out);
  }

  void reserve(std::int64_t n) {
    const Config& c = config();
    const std::int64_t rows = n * c.tokens(), d = c.hidden_size;
    resize(tokens_, rows * d);
    resize(h_, rows * d);
    resize(qkv_, rows * 3 * d);
    resize(attn_, rows * d);
    resize(mlp_, rows * c.mlp_hidden());
    resize(out_, rows * c.patch_size * c.patch_size * c.out_channels());
    resize(patches_, rows * c.in_channels * c.patch_size * c.patch_size);
    resize(cond_, n * d);
    resize(silu_, n * d);
    resize(mod_, n * 6 * d);
    resize(freq_, n * Config::frequency_embedding_size);
    resize(temb_, n * d);
  }

  /// y = x W^T + b for the first `rows` rows.
  void linear(const float* x, std::int64_t rows, const Param& weight, const Param& bias, float* y) {
    linear_.run(x, rows, weight, bias, y, Epilogue{});
  }

  /// c = t_embedder(t) + y_embedder(labels): the conditioning vector of every row (N, D).
  void embed_condition(float t, std::span<const int> labels) {
    const Config& c = config();
    const std::int64_t n = static_cast<std::int64_t>(labels.size()), d = c.hidden_size;
    const std::int64_t half = Config::frequency_embedding_size / 2;
    // Sinusoidal timestep features [cos(t f_k), sin(t f_k)], f_k = exp(-ln(10000) k / half), in
    // float32 as the reference computes them.
    const auto log_period = static_cast<float>(-std::log(10000.0));
    for (std::int64_t k = 0; k < half; ++k) {
      const float f = std::exp(log_period * static_cast<float>(k) / static_cast<float>(half));
      const float arg = t * f;
      for (std::int64_t row = 0; row < n; ++row) {
        freq_[static_cast<std::size_t>(row * 2 * half + k)] = std::cos(arg);
        freq_[static_cast<std::size_t>(row * 2 * half + half + k)] = std::sin(arg);
      }
    }
    linear(freq_.data(), n, weights_.t_fc1_weight, weights_.t_fc1_bias, temb_.data());
    Map hidden(temb_.data(), n, d);
    hidden = hidden.unaryExpr([](float v) { return silu(v); });
    linear(temb_.data(), n, weights_.t_fc2_weight, weights_.t_fc2_bias, cond_.data());
    Map cond(cond_.data(), n, d);
    const ConstMap table = matrix(weights_.class_table);
    for (std::int64_t row = 0; row < n; ++row)
      cond.row(row) += table.row(labels[static_cast<std::size_t>(row)]);
    Map(silu_.data(), n, d) = cond.unaryExpr([](float v) { return silu(v); });
  }

  /// Tokens (N*T, D) = patches x W^T + b + pos_embed: the stride-p convolution as a GEMM.
  void embed_patches(ConstView x) {
    const Config& c = config();
    const std::int64_t p = c.patch_size, g = c.grid(), t = c.tokens(), d = c.hidden_size;
    const std::int64_t patch_len = c.in_channels * p * p;
    for (std::int64_t n = 0; n < x.batch(); ++n)
      for (std::int64_t gy = 0; gy < g; ++gy)
        for (std::int64_t gx = 0; gx < g; ++gx) {
          float* patch = &patches_[static_cast<std::size_t>(((n * g + gy) * g + gx) * patch_len)];
          for (std::int64_t ch = 0; ch < c.in_channels; ++ch) // kernel order (C, p, p)
            for (std::int64_t i = 0; i < p; ++i)
              for (std::int64_t j = 0; j < p; ++j)
                *patch++ = x.at(n, ch, gy * p + i, gx * p + j);
        }
    const std::int64_t rows = x.batch() * t;
    linear(patches_.data(), rows, weights_.patch_weight, weights_.patch_bias, tokens_.data());
    Map tokens(tokens_.data(), rows, d);
    const ConstMap pos = matrix(weights_.pos_embed);
    for (std::int64_t n = 0; n < x.batch(); ++n)
      tokens.middleRows(n * t, t) += pos;
  }

  /// h = LayerNorm(x) * (1 + scale) + shift, per sample's shift/scale rows (eps 1e-6, no affine).
  void modulated_norm(std::int64_t n, const float* shift, const float* scale,
                      std::int64_t mod_stride) {
    const Config& c = config();
    const std::int64_t t = c.tokens(), d = c.hidden_size;
#ifdef _OPENMP
#pragma omp parallel for
#endif
    for (std::int64_t row = 0; row < n * t; ++row) {
      // float32 with Eigen's vectorised (multi-accumulator) sums, as PyTorch's LayerNorm; two
      // passes, so the variance is of centred values.
      using Row = Eigen::Array<float, 1, Eigen::Dynamic>;
      const Eigen::Map<const Row> in(&tokens_[static_cast<std::size_t>(row * d)], d);
      const Eigen::Map<const Row> sh(shift + (row / t) * mod_stride, d);
      const Eigen::Map<const Row> sc(scale + (row / t) * mod_stride, d);
      const float mean = in.mean();
      const float variance = (in - mean).square().mean();
      const float inv = 1.0f / std::sqrt(variance + 1e-6f);
      Eigen::Map<Row>(&h_[static_cast<std::size_t>(row * d)], d) =
          (in - mean) * inv * (1.0f + sc) + sh;
    }
  }

  void run_block(const BlockWeights& b, std::int64_t n) {
    const Config& c = config();
    const std::int64_t t = c.tokens(), d = c.hidden_size, rows = n * t;
    // adaLN modulation (N, 6D): shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
    linear(silu_.data(), n, b.ada_weight, b.ada_bias, mod_.data());
    const float* mod = mod_.data();
    const std::int64_t stride = 6 * d;

    modulated_norm(n, mod, mod + d, stride);
    linear(h_.data(), rows, b.qkv_weight, b.qkv_bias, qkv_.data()); // (N*T, 3D)
    attention_.run(qkv_.data(), n, t, c.num_heads, c.head_dim(), attn_.data());
    // tokens += gate_msa * proj(attn); h_ is free again and is the Eigen path's scratch.
    linear_.run(attn_.data(), rows, b.proj_weight, b.proj_bias, tokens_.data(),
                Epilogue::gated(mod + 2 * d, stride, t), h_.data());

    modulated_norm(n, mod + 3 * d, mod + 4 * d, stride);
    linear_.run(h_.data(), rows, b.fc1_weight, b.fc1_bias, mlp_.data(),
                Epilogue{Epilogue::Kind::gelu_tanh}); // (N*T, 4D)
    linear_.run(mlp_.data(), rows, b.fc2_weight, b.fc2_bias, tokens_.data(),
                Epilogue::gated(mod + 5 * d, stride, t), h_.data());
  }

  /// The final adaLN layer and linear projection to (N*T, p*p*out_channels).
  void final_layer(std::int64_t n) {
    const Config& c = config();
    const std::int64_t d = c.hidden_size;
    linear(silu_.data(), n, weights_.final_ada_weight, weights_.final_ada_bias, mod_.data());
    modulated_norm(n, mod_.data(), mod_.data() + d, 2 * d); // shift, scale
    linear(h_.data(), n * c.tokens(), weights_.final_weight, weights_.final_bias, out_.data());
  }

  /// Token (r, c) holds its p x p patch as [i][j][channel]; scatter back to (N, C', H, W).
  void unpatchify(View out) const {
    const Config& c = config();
    const std::int64_t p = c.patch_size, g = c.grid(), co = c.out_channels();
    for (std::int64_t n = 0; n < out.batch(); ++n)
      for (std::int64_t gy = 0; gy < g; ++gy)
        for (std::int64_t gx = 0; gx < g; ++gx) {
          const float* token =
              &out_[static_cast<std::size_t>(((n * g + gy) * g + gx) * p * p * co)];
          for (std::int64_t i = 0; i < p; ++i)
            for (std::int64_t j = 0; j < p; ++j)
              for (std::int64_t ch = 0; ch < co; ++ch)
                out.at(n, ch, gy * p + i, gx * p + j) = token[(i * p + j) * co + ch];
        }
  }

  static float silu(float v) { return v / (1.0f + std::exp(-v)); }

  Weights weights_;
  std::string name_;
  bool batch_invariant_ = false;
  LinearLayers linear_;
  SelfAttention attention_;
  // Aligned, so that the bits of the output do not depend on the allocator (deterministic.hpp).
  AlignedBuffer<float> tokens_, h_, qkv_, attn_, mlp_, out_, cond_, silu_, mod_, patches_, freq_,
      temb_;
};

} // namespace tstitch::dit
