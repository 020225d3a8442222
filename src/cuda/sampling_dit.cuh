// SPDX-License-Identifier: Apache-2.0
#pragma once

// The out-of-line definitions of cuda/sampling.hpp (DeviceSampler, sample_stitched). Non-inline,
// so exactly ONE CUDA translation unit includes this file: src/cuda/tstitch_cuda.cu (or a
// user's own single .cu build of the kernels).
#include <memory>

#include "tstitch/cuda/device/sampling.cuh"
#include "tstitch/cuda/dit.hpp"

namespace tstitch::cuda {

namespace detail {
/// A DeviceRowStitcher's copies must run on the sampler's stream (two streams would race).
inline void check_rows_stream(const DeviceRows& rows, cudaStream_t sampler_stream) {
  if (rows.stream() != sampler_stream)
    throw_invalid_argument("stream of the row stitcher's DeviceRows",
                           static_cast<const void*>(rows.stream()),
                           tstitch::detail::concat("must be the sampler's stream ",
                                                   static_cast<const void*>(sampler_stream)));
}
} // namespace detail

DeviceSampler::DeviceSampler(cudaStream_t stream)
    : workspace_(
          std::make_unique<SamplingWorkspace>(stream != nullptr ? stream : default_stream())) {}
DeviceSampler::~DeviceSampler() = default;
DeviceSampler::DeviceSampler(DeviceSampler&&) noexcept = default;
DeviceSampler& DeviceSampler::operator=(DeviceSampler&&) noexcept = default;

SampleResult DeviceSampler::run(DeviceStitcher& stitcher, const AnySchedule& schedule,
                                const DeviceSolver& solver, View x, const std::vector<int>& labels,
                                const SampleOptions& options) {
  return sample_stitched_impl(*workspace_, stitcher, schedule, solver, x, labels, options);
}

SampleResult DeviceSampler::run(DeviceRowStitcher<RowRule>& stitcher, const AnySchedule& schedule,
                                const DeviceSolver& solver, View x, const std::vector<int>& labels,
                                const SampleOptions& options) {
  detail::check_rows_stream(stitcher.row_copier(), workspace_->backend.stream());
  return sample_stitched_impl(*workspace_, stitcher, schedule, solver, x, labels, options);
}

SampleResult DeviceSampler::run(DeviceRowStitcher<PerRow<StepFraction>>& stitcher,
                                const AnySchedule& schedule, const DeviceSolver& solver, View x,
                                const std::vector<int>& labels, const SampleOptions& options) {
  detail::check_rows_stream(stitcher.row_copier(), workspace_->backend.stream());
  return sample_stitched_impl(*workspace_, stitcher, schedule, solver, x, labels, options);
}

SampleResult DeviceSampler::run(std::span<DitModel* const> models, const AnyPolicy& rule,
                                const AnySchedule& schedule, const DeviceSolver& solver, View x,
                                const std::vector<int>& labels, const SampleOptions& options) {
  return sample_stitched_impl<DitModel>(*workspace_, models, rule, schedule, solver, x, labels,
                                        options);
}

std::int64_t DeviceSampler::allocations() const { return workspace_->backend.allocations(); }

SampleResult sample_stitched(DeviceStitcher& stitcher, const AnySchedule& schedule,
                             const DeviceSolver& solver, View x_device,
                             const std::vector<int>& labels, const SampleOptions& options) {
  DeviceSampler sampler;
  return sampler.run(stitcher, schedule, solver, x_device, labels, options);
}

SampleResult sample_stitched(std::span<DitModel* const> models, const AnyPolicy& rule,
                             const AnySchedule& schedule, const DeviceSolver& solver, View x_device,
                             const std::vector<int>& labels, const SampleOptions& options) {
  DeviceSampler sampler;
  return sampler.run(models, rule, schedule, solver, x_device, labels, options);
}

} // namespace tstitch::cuda
