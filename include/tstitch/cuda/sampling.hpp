// SPDX-License-Identifier: Apache-2.0
#pragma once

// Stitched sampling with the latents on the GPU, declared for plain C++: a renderer's translation
// units call sample_stitched / DeviceSampler with any C++20 compiler; the definitions (kernels,
// the sampling loop on cuda::Backend) are compiled once in tstitch/cuda/tstitch_cuda.cu.
//
// While sampling, nothing is copied between host and device and nothing waits for the GPU:
// models and solver updates are enqueued on one stream. Two documented exceptions:
//   - SampleOptions::check_finite (on by default) reads one integer back per step and so waits
//     for the GPU at every step; turn it off for speed once a pipeline is known to be sound.
//   - SampleOptions::on_preview receives the x0 estimate as a view of DEVICE memory, valid during
//     the call; download it (cuda::download, which waits) if the host needs the values.
// StepRecord::seconds is host time to enqueue a step, not GPU time, unless check_finite waits.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/stitch/policy.hpp"

namespace tstitch::cuda {

class DitModel;

/// The solvers device sampling offers: those DiT is sampled with. Any options except
/// DPMSolverMultistepOptions::thresholding (its per-sample quantile would read every step back to
/// the host) are accepted, e.g. DDIM{{.eta = 1.0}} draws its noise on the device.
using DeviceSolver = std::variant<DDIM, DDPM, DPMSolverMultistep>;

/// A stitch over a number of models of one type known only at run time (BasicStitcher fixes the
/// count at compile time). Model 0 serves first; the policy picks the model of each step. Holds
/// pointers: the models must outlive it. A Denoiser, like BasicStitcher, and plain C++.
template <Denoiser D, StitchPolicy Policy = StepFraction> class RuntimeStitcher {
public:
  using condition_type = condition_of<D>;

  RuntimeStitcher(Policy policy, std::vector<D*> models)
      : policy_(std::move(policy)), models_(std::move(models)) {
    require(!models_.empty(), "number of models", models_.size(), "must be at least 1");
    for (std::size_t k = 0; k < models_.size(); ++k)
      require(models_[k] != nullptr, detail::concat("models[", k, "]"), "null",
              "must point to a model");
    if constexpr (requires { policy_.check(models_.size()); })
      policy_.check(models_.size());
    const Shape shape = models_[0]->latent_shape();
    for (std::size_t k = 1; k < models_.size(); ++k)
      if (models_[k]->latent_shape() != shape)
        throw invalid_argument(detail::concat(
            "tstitch: stitched models disagree on latent shape: ", model_name(0), " has ", shape,
            ", ", model_name(k), " has ", models_[k]->latent_shape()));
  }

  [[nodiscard]] std::size_t size() const { return models_.size(); }
  [[nodiscard]] D& model(std::size_t k) const { return *models_.at(k); }

  /// The common prediction type (throws when the models differ: use route(ctx) then).
  [[nodiscard]] Prediction prediction() const {
    const Prediction first = models_[0]->prediction();
    for (std::size_t k = 1; k < models_.size(); ++k)
      if (models_[k]->prediction() != first)
        throw invalid_argument(detail::concat(
            "tstitch: stitched models predict different things (", model_name(0), ": ", first, ", ",
            model_name(k), ": ", models_[k]->prediction(), "); ask route(ctx) per step"));
    return first;
  }
  [[nodiscard]] Shape latent_shape() const { return models_[0]->latent_shape(); }
  [[nodiscard]] std::int64_t output_channels() const {
    std::int64_t channels = 0;
    for (const D* m : models_)
      channels = std::max(channels, raw_output_channels(*m));
    return channels;
  }
  [[nodiscard]] condition_type unconditional(const condition_type& c) const requires
      requires(const D& m) {
    { m.unconditional(c) } -> std::convertible_to<condition_type>;
  }
  { return models_[0]->unconditional(c); }

  /// Runs the model route() chose for ctx.step (every evaluation of a step goes to it); a step
  /// route() has not seen in this run (another step count) asks the policy.
  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    const bool routed = serving_ && routed_step_ == ctx.step && routed_steps_ == ctx.num_steps;
    const std::size_t k = routed ? *serving_ : model_index(ctx);
    models_[k]->predict(x, ctx, c, out);
  }

  /// Called by the sampling loop once per step, in order.
  [[nodiscard]] Route route(const StepContext& ctx) {
    const std::size_t k = model_index(ctx);
    serving_ = k;
    routed_step_ = ctx.step;
    routed_steps_ = ctx.num_steps;
    return Route{k, models_[k]->prediction(), std::nullopt};
  }

  [[nodiscard]] std::size_t model_index(const StepContext& ctx) const {
    const auto k = static_cast<std::size_t>(policy_.model_for(ctx, models_.size()));
    if (k >= models_.size())
      throw invalid_argument(detail::concat("tstitch: stitch policy chose model ", k, " at step ",
                                            ctx.step, "; there are ", models_.size(), " models"));
    return k;
  }
  [[nodiscard]] std::string model_name(std::size_t k) const {
    return k < models_.size() ? model_name_of(*models_[k], k) : "model " + std::to_string(k);
  }

private:
  Policy policy_;
  std::vector<D*> models_;
  std::optional<std::size_t> serving_;
  int routed_step_ = -1;
  int routed_steps_ = 0;
};

struct SamplingWorkspace; // cuda/sampling.cuh: the backend, the loop's buffers, the solver

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
  /// models[k] serves the steps `rule` gives model k; labels: one class per row, on the host.
  /// Guidance (options.guidance) uses DitModel::unconditional, the null class.
  SampleResult run(std::span<DitModel* const> models, const StepFraction& rule,
                   const DiscreteSchedule& schedule, const DeviceSolver& solver, View x,
                   const std::vector<int>& labels, const SampleOptions& options);

  /// Device buffers allocated by this sampler's backend so far (a check that reuse works).
  [[nodiscard]] std::int64_t allocations() const;

private:
  std::unique_ptr<SamplingWorkspace> workspace_;
};

/// One-shot form of DeviceSampler::run (allocates its workspace on every call).
SampleResult sample_stitched(std::span<DitModel* const> models, const StepFraction& rule,
                             const DiscreteSchedule& schedule, const DeviceSolver& solver,
                             View x_device, const std::vector<int>& labels,
                             const SampleOptions& options);

} // namespace tstitch::cuda
