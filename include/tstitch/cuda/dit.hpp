// SPDX-License-Identifier: Apache-2.0
#pragma once

// The DiT denoiser on CUDA, declared for plain C++: a renderer's translation units include this
// header with any C++20 compiler, and link the kernels compiled once from
// src/cuda/tstitch_cuda.cu (CMake target tstitch::cuda_dit, or the user's own nvcc build).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tstitch/core/prediction.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace tstitch::cuda {

/// Device memory a model holds, in bytes.
struct MemoryReport {
  std::int64_t weights = 0;     ///< bf16 weights (and fp32 biases, tables, position embedding)
  std::int64_t activations = 0; ///< per-batch activation buffers, summed over the batches seen
  std::int64_t workspace = 0;   ///< cuBLAS workspace
  [[nodiscard]] std::int64_t total() const { return weights + activations + workspace; }
};

/// DiT (facebookresearch/DiT) on the GPU: bf16 weights and GEMM inputs, fp32 accumulation and
/// residual stream. Models the Denoiser concept over *device* views: predict() reads x and
/// writes out in device memory and returns without waiting for the GPU.
///
/// Each batch size's forward is captured once as a CUDA graph and replayed: a call costs one
/// small kernel that copies x, the timestep and the labels to where the graph reads them, the
/// graph launch, and a device-to-device copy of the output; no allocation, no host
/// synchronisation. The first call of a batch size is the exception: it allocates that batch's
/// activations, runs the forward once directly (timing the candidate GEMM algorithms of its
/// shapes, which waits for the GPU), then captures; prepare() does this ahead of time. A new
/// label vector costs one asynchronous upload at its first call. Weights are uploaded once (bf16,
/// from F32/F16/BF16 files); the host copy is not kept.
class DitModel {
public:
  using condition_type = std::vector<int>;

  /// Uploads the weights. `stream`: where the model's work runs (default: default_stream()).
  explicit DitModel(const dit::Weights& weights, std::string name = "DiT",
                    cudaStream_t stream = nullptr);
  ~DitModel();
  DitModel(DitModel&&) noexcept;
  DitModel& operator=(DitModel&&) noexcept;
  DitModel(const DitModel&) = delete;
  DitModel& operator=(const DitModel&) = delete;

  [[nodiscard]] Prediction prediction() const;
  [[nodiscard]] Shape latent_shape() const;
  [[nodiscard]] std::string model_name(std::size_t) const;
  /// The null class of classifier-free guidance, for every row.
  [[nodiscard]] condition_type unconditional(const condition_type& labels) const;
  [[nodiscard]] const dit::Config& config() const;

  /// Raw output (N, out_channels, H, W) for latents x (N, C, H, W) at ctx.point.timestep, both
  /// in device memory; labels on the host, one per row in [0, num_classes].
  void predict(ConstView x, const StepContext& ctx, const condition_type& labels, View out);

  /// Both predictions of a classifier-free-guided evaluation in ONE forward of 2N rows (x with
  /// `cond`, then x with `uncond`), as DiT's reference sampler batches them: the sampling loops
  /// call this instead of predict() twice. At small batches, where the GPU is underused, one
  /// 2N-row forward should cost much less than two N-row forwards (bench_dit_cuda measures
  /// both). Its graph is that of batch size 2N (prepare(2N) prepares it).
  void predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                      const condition_type& uncond, View out_cond, View out_uncond);

  /// Does the first-call work of batch size `batch` now (activations, GEMM algorithm timing and,
  /// with graphs on, the graph capture) and waits for it, so that a later predict() of that
  /// size neither allocates nor waits: for a renderer, at load time instead of in the first
  /// frame. Calling it again for a prepared size does nothing; set_attention() keeps the
  /// activations and timings but drops the graphs. Throws invalid_argument for batch < 1.
  void prepare(int batch);

  /// A profiling aid: launches on stream() only the GEMMs of one forward of `batch` rows (this
  /// model's own layers, activations and cuBLASLt algorithms), none of its other kernels, so that
  /// a benchmark can capture and time the floor of a forward whose other kernels were free. The
  /// activations it leaves are meaningless. Throws invalid_argument unless prepare(batch) ran.
  void launch_gemms_only(int batch);

  /// Attention implementation (default flash; reference where flash lacks the head dimension).
  void set_attention(AttentionPath path);
  [[nodiscard]] AttentionPath attention() const;
  /// Capture and replay CUDA graphs (default on). Off: every call launches its kernels directly.
  void set_graphs(bool enabled);
  [[nodiscard]] bool graphs() const;

  [[nodiscard]] MemoryReport memory() const;
  [[nodiscard]] cudaStream_t stream() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace tstitch::cuda
