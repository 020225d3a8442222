// SPDX-License-Identifier: Apache-2.0
// 2b. The forward's GEMMs alone: what a forward would cost if every other kernel were free.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "tstitch/cuda/device/gemm.cuh"
#include "tstitch/cuda/runtime.hpp"

namespace bench {

/// The GEMMs over all rows of one forward, with its shapes and epilogues, through cuda::Blas's
/// cuBLASLt path: the patch embedding (without the model's folded bias column), each block's
/// qkv (+ bias), proj, fc1 (+ bias, GELU) and fc2, and the final layer (+ bias, fp32 out), on
/// weights of their own per block (as the model's, so L2 holds what it would hold), captured as
/// one CUDA graph and replayed. Left out: the three conditioning GEMMs on one row per sample
/// (timestep MLP, adaLN modulations). This Blas times its own candidate algorithms, so it may
/// pick others than the model did. How long a forward would take if every other kernel
/// (attention, the LayerNorms, the residuals, conditioning) were free: a lower bound for any
/// design that keeps these cuBLASLt GEMMs. Milliseconds, median over `repeats` blocks.
double measure_gemms_alone(const tstitch::dit::Config& c, int images, int repeats,
                           cudaStream_t stream) {
  using tstitch::cuda::Blas;
  using tstitch::cuda::DeviceBuffer;
  using tstitch::cuda::GemmEpilogue;
  using Bits = DeviceBuffer<std::uint16_t>;
  const auto d = static_cast<int>(c.hidden_size);
  const auto mlp = static_cast<int>(c.mlp_hidden());
  const auto patch_k = static_cast<int>(c.in_channels * c.patch_size * c.patch_size);
  const auto final_n = static_cast<int>(c.out_channels() * c.patch_size * c.patch_size);
  const std::int64_t rows = 2 * static_cast<std::int64_t>(images) * c.tokens(); // guidance
  struct BlockWeights {
    Bits qkv, qkv_bias, proj, fc1, fc1_bias, fc2;
  };
  std::vector<BlockWeights> blocks;
  for (std::int64_t i = 0; i < c.depth; ++i)
    blocks.push_back({Bits(3 * d * std::int64_t{d}), Bits(3 * d), Bits(d * std::int64_t{d}),
                      Bits(mlp * std::int64_t{d}), Bits(mlp), Bits(d * std::int64_t{mlp})});
  Bits patch_w(d * std::int64_t{patch_k}), final_w(final_n * std::int64_t{d});
  DeviceBuffer<float> final_bias(final_n), final_out(rows * final_n), embedded(rows * d);
  Bits patches(rows * patch_k), a(rows * d), qkv(rows * 3 * d), attn(rows * d), y(rows * d),
      hidden(rows * mlp);
  // Small non-zero values everywhere, as in measure_seam; no output feeds a later GEMM.
  // (Constant operands may draw less power than random ones: if anything, this flatters the
  // floor.)
  const auto fill = [&](auto& buffer) { fill_small(buffer, stream); };
  for (BlockWeights& b : blocks)
    for (Bits* w : {&b.qkv, &b.qkv_bias, &b.proj, &b.fc1, &b.fc1_bias, &b.fc2})
      fill(*w);
  fill(patch_w);
  fill(final_w);
  fill(final_bias);
  fill(patches);
  fill(a);
  fill(attn);
  Blas blas(stream);
  const auto forward = [&] {
    blas.linear(patches.data(), patch_k, patch_w.data(), patch_k, embedded.data(), CUDA_R_32F, d,
                rows, d, patch_k, GemmEpilogue::none, nullptr);
    for (const BlockWeights& b : blocks) {
      blas.linear(a.data(), d, b.qkv.data(), d, qkv.data(), CUDA_R_16BF, 3 * d, rows, 3 * d, d,
                  GemmEpilogue::bias, b.qkv_bias.data());
      blas.linear(attn.data(), d, b.proj.data(), d, y.data(), CUDA_R_16BF, d, rows, d, d,
                  GemmEpilogue::none, nullptr);
      blas.linear(a.data(), d, b.fc1.data(), d, hidden.data(), CUDA_R_16BF, mlp, rows, mlp, d,
                  GemmEpilogue::bias_gelu, b.fc1_bias.data());
      blas.linear(hidden.data(), mlp, b.fc2.data(), mlp, y.data(), CUDA_R_16BF, d, rows, d, mlp,
                  GemmEpilogue::none, nullptr);
    }
    blas.linear(a.data(), d, final_w.data(), d, final_out.data(), CUDA_R_32F, final_n, rows,
                final_n, d, GemmEpilogue::bias, final_bias.data());
  };
  forward(); // times the candidate algorithms of each shape (not allowed under capture)
  const Graph graph = Graph::capture(stream, forward);
  for (int i = 0; i < 3; ++i)
    graph.launch(stream);
  EventTimer timer;
  constexpr int calls = 10;
  std::vector<double> per_call;
  for (int r = 0; r < repeats; ++r)
    per_call.push_back(timer.time_ms(stream, [&] {
      for (int i = 0; i < calls; ++i)
        graph.launch(stream);
    }) / calls);
  return median(per_call);
}

} // namespace bench
