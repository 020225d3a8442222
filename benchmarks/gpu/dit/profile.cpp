// SPDX-License-Identifier: Apache-2.0
// --profile MODEL:IMAGES: one forward of MODEL at IMAGES images (2 x IMAGES rows), graphs off so
// that a profiler sees each kernel, after two warm-up forwards (algorithm choice, buffers),
// between cudaProfilerStart and cudaProfilerStop: for `ncu --profile-from-start off`.
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "dit/options.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/models/dit/weights.hpp"
#include "tstitch/schedule/discrete.hpp"

namespace bench {

int profile_one(const std::string& spec) {
  const std::size_t colon = spec.find(':');
  if (colon == std::string::npos)
    throw std::invalid_argument("--profile: '" + spec + "' is not MODEL:IMAGES (e.g. XL/2:64)");
  std::string m = spec.substr(0, colon);
  if (m.starts_with("DiT-"))
    m = m.substr(4);
  const int images = positive_int(spec.substr(colon + 1), "--profile images");
  const tstitch::dit::Config cfg = tstitch::dit::Config::preset("DiT-" + m);
  DitModel model(tstitch::dit::Weights::random(cfg, 2026), "DiT-" + m);
  model.set_graphs(false);
  const std::int64_t rows = 2 * static_cast<std::int64_t>(images);
  Batch b = make_batch(cfg, rows, 7, model.stream());
  const tstitch::DiscreteSchedule schedule;
  const tstitch::Trajectory trajectory = schedule.trajectory(50);
  for (int i = 0; i < 2; ++i)
    model.predict(b.x.view(), context(trajectory, i), b.labels, b.out.view());
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  TSTITCH_CUDA_CHECK(cudaProfilerStart());
  model.predict(b.x.view(), context(trajectory, 2), b.labels, b.out.view());
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  TSTITCH_CUDA_CHECK(cudaProfilerStop());
  std::printf("profiled one forward of DiT-%s at %d images (%lld rows)\n", m.c_str(), images,
              static_cast<long long>(rows));
  return 0;
}

} // namespace bench
