// SPDX-License-Identifier: Apache-2.0
#pragma once

// Device-resident stitched sampling, the templates (nvcc only): the workspace and
// sample_stitched_impl<D>, the loop for any denoiser type D over device views. Safe to include in
// any number of CUDA translation units; the out-of-line definitions of cuda/sampling.hpp for
// DitModel are in cuda/sampling_dit.cuh, which exactly one translation unit (tstitch_cuda.cu)
// includes.
#include <cstdint>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/backend.cuh"
#include "tstitch/cuda/sampling.hpp"
#include "tstitch/sample.hpp"

namespace tstitch::cuda {

/// What a DeviceSampler keeps between runs: the backend (its stream), the loop with its model
/// output buffers, and the solver with its device workspace (noise, multistep history).
struct SamplingWorkspace {
  explicit SamplingWorkspace(cudaStream_t stream) : backend(stream), sampler(backend) {}

  Backend backend; // shares its state (allocation count) with the sampler's copy
  Sampler<Backend> sampler;
  std::optional<DeviceSolver> solver;
};

namespace sampling_detail {

inline bool same_options(const DDIM& a, const DDIM& b) {
  return a.options().eta == b.options().eta && a.options().clip_sample == b.options().clip_sample;
}
inline bool same_options(const DDPM& a, const DDPM& b) {
  return a.options().variance == b.options().variance &&
         a.options().clip_sample == b.options().clip_sample;
}
inline bool same_options(const DPMSolverMultistep& a, const DPMSolverMultistep& b) {
  const DPMSolverMultistepOptions& x = a.options();
  const DPMSolverMultistepOptions& y = b.options();
  return x.solver_order == y.solver_order && x.algorithm == y.algorithm &&
         x.solver_type == y.solver_type && x.lower_order_final == y.lower_order_final &&
         x.euler_at_final == y.euler_at_final && x.third_order == y.third_order &&
         x.history == y.history && !x.thresholding && !y.thresholding;
}

/// Whether the workspace's solver can serve a run asked for with `wanted`: same kind, same
/// options. Keeping it keeps its device workspace (copying a solver drops device workspace).
inline bool same_solver(const DeviceSolver& kept, const DeviceSolver& wanted) {
  if (kept.index() != wanted.index())
    return false;
  return std::visit(
      [&](const auto& k) {
        return same_options(k, std::get<std::remove_cvref_t<decltype(k)>>(wanted));
      },
      kept);
}

inline void check_solver(const DeviceSolver& solver) {
  if (const auto* dpm = std::get_if<DPMSolverMultistep>(&solver);
      dpm && dpm->options().thresholding)
    throw_invalid_argument("DPMSolverMultistepOptions::thresholding", "set",
                           "device sampling does not offer dynamic thresholding (its quantile "
                           "reads every sample back to the host at every step)");
}

} // namespace sampling_detail

/// Samples x (device memory) in place with `models` stitched by `rule` and the workspace's
/// backend; see DeviceSampler::run. D models the Denoiser concept over device views; when it has
/// a stream() member, every model must run on the workspace's stream (work on two streams would
/// race without events).
template <Denoiser D>
SampleResult sample_stitched_impl(SamplingWorkspace& workspace, std::span<D* const> models,
                                  const StepFraction& rule, const DiscreteSchedule& schedule,
                                  const DeviceSolver& solver, View x, const condition_of<D>& cond,
                                  const SampleOptions& options) {
  RuntimeStitcher<D> stitcher(rule, std::vector<D*>(models.begin(), models.end()));
  if constexpr (requires(const D& m) {
                  { m.stream() } -> std::convertible_to<cudaStream_t>;
                }) {
    for (std::size_t k = 0; k < stitcher.size(); ++k)
      if (stitcher.model(k).stream() != workspace.backend.stream())
        throw_invalid_argument(
            detail::concat("stream of ", stitcher.model_name(k)),
            static_cast<const void*>(stitcher.model(k).stream()),
            detail::concat("must be the sampler's stream ",
                           static_cast<const void*>(workspace.backend.stream())));
  }
  sampling_detail::check_solver(solver);
  if (!workspace.solver || !sampling_detail::same_solver(*workspace.solver, solver))
    workspace.solver = solver;
  const std::optional<condition_of<D>> uncond = unconditional_of(stitcher, cond);
  return std::visit(
      [&](auto& s) {
        return workspace.sampler.run(stitcher, schedule, s, x, cond, uncond ? &*uncond : nullptr,
                                     options);
      },
      *workspace.solver);
}

} // namespace tstitch::cuda
