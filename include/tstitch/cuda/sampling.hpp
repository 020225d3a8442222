// SPDX-License-Identifier: Apache-2.0
#pragma once

// Stitched sampling with the latents on the GPU, declared for plain C++: a renderer's translation
// units call sample_stitched / DeviceSampler with any C++20 compiler; the definitions (kernels,
// the sampling loop on cuda::Backend) are compiled once in src/cuda/tstitch_cuda.cu.
//
// While sampling, nothing is copied between host and device and nothing waits for the GPU:
// models and solver updates are enqueued on one stream. Two documented exceptions:
//   - SampleOptions::check_finite (on by default) reads one integer back per step and so waits
//     for the GPU at every step; turn it off for speed once a pipeline is known to be sound.
//   - SampleOptions::on_preview receives the x0 estimate as a view of DEVICE memory, valid during
//     the call; download it (cuda::download, which waits) if the host needs the values.
// StepRecord::seconds is host time to enqueue a step, not GPU time, unless check_finite waits.
#include <cuda_runtime_api.h>

#include <concepts>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <variant>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/any_schedule.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/any_solver.hpp"
#include "tstitch/stitch/denoiser_ref.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/row_policy.hpp"
#include "tstitch/stitch/row_stitcher.hpp"
#include "tstitch/stitch/stitcher.hpp"

namespace tstitch::cuda {

class DitModel;

/// The solvers device sampling offers: every solver of tstitch (AnySolver, the one list the
/// command line and the config loader share), with any options except dynamic thresholding (its
/// per-sample quantile would read every step back to the host). Stochastic ones draw their noise
/// on the device, the same Philox noise as on the host, e.g. DDIM{{.eta = 1.0}}. LCM, TCD, IPNDM
/// and CMStochasticIterative step along their own schedules (LCMSchedule, ...).
using DeviceSolver = AnySolver;

/// A model that runs on the GPU, as one type: a DenoiserRef (non-owning) to a denoiser over
/// *device* views whose condition is one integer per row, together with the stream its predict()
/// enqueues work on. cuda::DitModel is one; your own engine (TensorRT, ONNX Runtime's CUDA
/// provider, hand-written kernels) is another when it has the Denoiser members and
///   cudaStream_t stream() const        the stream predict() enqueues on (device sampling checks
///                                      that it is the sampler's)
///   std::vector<int> unconditional(const std::vector<int>&) const   optional, for guidance
/// Its condition is a class label per row for class-conditional models; for others, any index
/// the engine maps to conditioning it holds (e.g. a prompt embedding uploaded once). predict()
/// reads x and writes out in device memory and must not wait for the GPU.
class DeviceDenoiserRef : public DenoiserRef<std::vector<int>> {
public:
  template <Denoiser D>
  requires(!std::derived_from<std::remove_cvref_t<D>, DenoiserRef<std::vector<int>>> &&
           std::same_as<condition_of<D>, std::vector<int>> &&
           requires(const D& m) {
             { m.stream() } -> std::convertible_to<cudaStream_t>;
           }) DeviceDenoiserRef(D& model) // NOLINT: implicit, like DenoiserRef
      : DenoiserRef<std::vector<int>>(model), model_(&model),
        stream_of_(
            [](const void* m) -> cudaStream_t { return static_cast<const D*>(m)->stream(); }) {}

  /// The stream the model enqueues on now (asked of the model at each call: an engine may move).
  [[nodiscard]] cudaStream_t stream() const { return stream_of_(model_); }

private:
  const void* model_;
  cudaStream_t (*stream_of_)(const void*);
};

/// The stitcher of device sampling: any number of device models of any types, any stitch policy
/// (AnyPolicy holds StepFraction, PaperTimestep, the thresholds or your own), with names,
/// per-model guidance scales and a switch observer (see RuntimeStitcher):
///     cuda::DeviceStitcher stitcher(PaperTimestep(0.4), {dit_s, dit_xl});
///     stitcher.set_names({"DiT-S/2", "DiT-XL/2"}).on_switch([](const SwitchEvent& e) {...});
using DeviceStitcher = RuntimeStitcher<DeviceDenoiserRef, AnyPolicy>;

/// A RowStitcher's Rows on the GPU: sub-batch buffers in device memory (grown once to the full
/// batch, then reused), rows moved by kernels::gather_rows / scatter_rows on `stream`, which
/// must be the sampler's (DeviceSampler::run checks). Nothing is uploaded and nothing waits.
class DeviceRows {
public:
  using buffer_type = DeviceTensor;

  /// nullptr: default_stream(), where DeviceSampler and DitModel run by default.
  explicit DeviceRows(cudaStream_t stream = nullptr)
      : stream_(stream != nullptr ? stream : default_stream()) {}

  [[nodiscard]] cudaStream_t stream() const { return stream_; }

  static void ensure(DeviceTensor& t, std::int64_t batch, Shape shape) {
    if (t.batch() < batch || t.shape() != shape)
      t = DeviceTensor(batch, shape);
  }
  static View view(DeviceTensor& t) { return t.view(); }
  void gather(ConstView src, std::span<const std::int64_t> rows, View dst) const {
    kernels::gather_rows(src, rows, dst, stream_);
  }
  void scatter(ConstView src, std::span<const std::int64_t> rows, View dst) const {
    kernels::scatter_rows(src, rows, dst, stream_);
  }

private:
  cudaStream_t stream_;
};

/// Per-sample stitching of device models: each batch row follows its own routing (see
/// RowStitcher), with the sub-batches on the GPU. DeviceSampler::run takes it with a RowRule or
/// with per-row step policies (row_fractions):
///     cuda::DeviceRowStitcher<PerRow<StepFraction>> s(row_fractions({0, 0.4, 0.8}),
///                                                     {dit_s, dit_xl});
template <class Policy = RowRule>
using DeviceRowStitcher = RowStitcher<DeviceDenoiserRef, Policy, DeviceRows>;

struct SamplingWorkspace; // cuda/device/sampling.cuh: the backend, the loop's buffers, the solver

/// Stitched DiT sampling on the device with a reusable workspace: the first run for a batch and
/// solver allocates the loop's and the solver's device buffers, later runs with the same batch,
/// shape and solver options allocate nothing (the models' own buffers are theirs to reuse).
class DeviceSampler {
public:
  /// Work runs on `stream` (nullptr: default_stream(), where DitModel runs by default). Every
  /// model must run on the same stream, which run() checks.
  explicit DeviceSampler(cudaStream_t stream = nullptr);
  ~DeviceSampler();
  DeviceSampler(DeviceSampler&&) noexcept;
  DeviceSampler& operator=(DeviceSampler&&) noexcept;
  DeviceSampler(const DeviceSampler&) = delete;
  DeviceSampler& operator=(const DeviceSampler&) = delete;

  /// Samples x (device memory, (N, C, H, W)) in place: x_T on entry, the sample on return (the
  /// work is enqueued; it has finished when the stream has, or at once with check_finite).
  /// The stitcher's models serve the steps its policy gives them; labels: one condition per row,
  /// on the host. Guidance (options.guidance) uses model 0's unconditional(labels). Every model
  /// must enqueue on the sampler's stream.
  SampleResult run(DeviceStitcher& stitcher, const AnySchedule& schedule,
                   const DeviceSolver& solver, View x, const std::vector<int>& labels,
                   const SampleOptions& options);

  /// The same with each row routed on its own (see DeviceRowStitcher); its DeviceRows must copy
  /// on the sampler's stream. The solver's history must be kept (HistoryPolicy::keep).
  SampleResult run(DeviceRowStitcher<RowRule>& stitcher, const AnySchedule& schedule,
                   const DeviceSolver& solver, View x, const std::vector<int>& labels,
                   const SampleOptions& options);
  SampleResult run(DeviceRowStitcher<PerRow<StepFraction>>& stitcher, const AnySchedule& schedule,
                   const DeviceSolver& solver, View x, const std::vector<int>& labels,
                   const SampleOptions& options);

  /// The same for DiT models: models[k] serves the steps `rule` gives model k (e.g.
  /// StepFraction::small_fraction(0.4) or PaperTimestep(0.4)); guidance uses the null class.
  SampleResult run(std::span<DitModel* const> models, const AnyPolicy& rule,
                   const AnySchedule& schedule, const DeviceSolver& solver, View x,
                   const std::vector<int>& labels, const SampleOptions& options);

  /// Device buffers allocated by this sampler's backend so far (a check that reuse works).
  [[nodiscard]] std::int64_t allocations() const;

private:
  std::unique_ptr<SamplingWorkspace> workspace_;
};

/// One-shot forms of DeviceSampler::run (they allocate a workspace on every call).
SampleResult sample_stitched(DeviceStitcher& stitcher, const AnySchedule& schedule,
                             const DeviceSolver& solver, View x_device,
                             const std::vector<int>& labels, const SampleOptions& options);
SampleResult sample_stitched(std::span<DitModel* const> models, const AnyPolicy& rule,
                             const AnySchedule& schedule, const DeviceSolver& solver, View x_device,
                             const std::vector<int>& labels, const SampleOptions& options);

} // namespace tstitch::cuda
