// SPDX-License-Identifier: Apache-2.0
#pragma once

// Device-resident stitched sampling, the templates (nvcc only): the workspace and
// sample_stitched_impl, the loop for any stitcher of device models (or a span of models of one
// type). Safe to include in any number of CUDA translation units; the out-of-line definitions of
// cuda/sampling.hpp are in src/cuda/sampling_dit.cuh, which exactly one translation unit
// (tstitch_cuda.cu) includes.
#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/device/backend.cuh"
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

namespace detail {

/// Whether the workspace's solver can serve a run asked for with `wanted`: same kind, same
/// options. Keeping it keeps its device workspace (copying a solver drops device workspace).
inline bool same_solver(const DeviceSolver& kept, const DeviceSolver& wanted) {
  if (kept.index() != wanted.index())
    return false;
  return std::visit(
      [&](const auto& k) {
        using S = std::remove_cvref_t<decltype(k)>;
        if constexpr (requires { k.options(); })
          return k.options() == std::get<S>(wanted).options();
        else
          return true; // no options (Euler)
      },
      kept);
}

inline void check_solver(const DeviceSolver& solver) {
  std::visit(
      [](const auto& s) {
        if constexpr (requires { s.options().thresholding; })
          if (s.options().thresholding)
            throw_invalid_argument(
                "thresholding", "set",
                "device sampling does not offer dynamic thresholding (its quantile reads every "
                "sample back to the host at every step)");
      },
      solver);
}

} // namespace detail

/// Samples x (device memory) in place with `stitcher` and the workspace's backend; see
/// DeviceSampler::run. The stitcher's models run on device views; when they have a stream()
/// member, each must be the workspace's stream (work on two streams would race without events).
template <class Stitcher>
SampleResult sample_stitched_impl(SamplingWorkspace& workspace, Stitcher& stitcher,
                                  const AnySchedule& schedule, const DeviceSolver& solver, View x,
                                  const condition_of<Stitcher>& cond,
                                  const SampleOptions& options) {
  for (std::size_t k = 0; k < stitcher.size(); ++k)
    if constexpr (requires {
                    { stitcher.model(k).stream() } -> std::convertible_to<cudaStream_t>;
                  })
      if (stitcher.model(k).stream() != workspace.backend.stream())
        throw_invalid_argument(
            tstitch::detail::concat("stream of ", stitcher.model_name(k)),
            static_cast<const void*>(stitcher.model(k).stream()),
            tstitch::detail::concat("must be the sampler's stream ",
                                    static_cast<const void*>(workspace.backend.stream())));
  detail::check_solver(solver);
  if (!workspace.solver || !detail::same_solver(*workspace.solver, solver))
    workspace.solver = solver;
  const std::optional<condition_of<Stitcher>> uncond = unconditional_of(stitcher, cond);
  return std::visit(
      [&](auto& s) {
        return workspace.sampler.run(stitcher, schedule, s, x, cond, uncond ? &*uncond : nullptr,
                                     options);
      },
      *workspace.solver);
}

/// The same over a span of device models of one type D (DitModel, or a test's own model),
/// stitched by `rule`.
template <Denoiser D>
SampleResult sample_stitched_impl(SamplingWorkspace& workspace, std::span<D* const> models,
                                  const AnyPolicy& rule, const AnySchedule& schedule,
                                  const DeviceSolver& solver, View x, const std::vector<int>& cond,
                                  const SampleOptions& options) {
  std::vector<DeviceDenoiserRef> refs;
  refs.reserve(models.size());
  for (std::size_t k = 0; k < models.size(); ++k) {
    require(models[k] != nullptr, tstitch::detail::concat("models[", k, "]"), "null",
            "must point to a model");
    refs.emplace_back(*models[k]);
  }
  DeviceStitcher stitcher(rule, std::move(refs));
  return sample_stitched_impl(workspace, stitcher, schedule, solver, x, cond, options);
}

} // namespace tstitch::cuda
