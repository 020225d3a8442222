// SPDX-License-Identifier: Apache-2.0
// 4. Stitched sampling (the small model for the first fraction r of the steps, the large one for
// the rest) against the ideal speedup 1 / ((1 - r) + r c), c = small-only / large-only run time.
// With tstitch/cuda/sampling.hpp (the device sampling loop: DDIM update, guidance combine and
// noise on the device) this times whole sampling runs through DeviceSampler. Without it (a tree
// where that header is not there yet) it times the model forwards of a stitched run in the
// order the stitcher issues them, on the guidance-doubled batch, and says "forwards only".
// -DTSTITCH_BENCH_FORWARDS_ONLY forces the latter (to separate loop overhead from the models').
#if __has_include("tstitch/cuda/sampling.hpp") && !defined(TSTITCH_BENCH_FORWARDS_ONLY)
#define TSTITCH_BENCH_DEVICE_SAMPLING 1
#else
#define TSTITCH_BENCH_DEVICE_SAMPLING 0
#endif
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/stitch/policy.hpp"
#if TSTITCH_BENCH_DEVICE_SAMPLING
#include "tstitch/cuda/sampling.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/solver/ddim.hpp"
#endif

namespace bench {

StitchResult measure_stitch(DitModel& small, DitModel& large, int images, int steps, int repeats,
                            const tstitch::DiscreteSchedule& schedule) {
  StitchResult result;
  result.steps = steps;
  result.images = images;
  const cudaStream_t stream = large.stream();
  DitModel* const models[2] = {&small, &large};
#if TSTITCH_BENCH_DEVICE_SAMPLING
  constexpr double guidance_scale = 4.0;
  result.mode = "DeviceSampler, DDIM, guidance 4, check_finite off";
  tstitch::cuda::DeviceSampler sampler(stream);
  tstitch::cuda::DeviceTensor x(images, small.config().latent_shape());
  tstitch::Tensor noise(images, small.config().latent_shape());
  {
    XorShift rng(5);
    for (std::int64_t i = 0; i < noise.view().batch() * noise.view().sample_numel(); ++i)
      noise.view().data()[i] = 1.7f * rng.next();
  }
  std::vector<int> labels;
  for (int i = 0; i < images; ++i)
    labels.push_back((i * 97 + 3) % static_cast<int>(small.config().num_classes));
  tstitch::SampleOptions options;
  options.steps = steps;
  options.guidance = tstitch::Guidance::standard(guidance_scale);
  options.check_finite = false; // it would wait for the GPU at every step
  const tstitch::cuda::DeviceSolver solver = tstitch::DDIM{};
  // x is sampled in place: every run starts again from the same noise (a synchronous upload,
  // outside the timed region).
  auto prepare = [&] { tstitch::cuda::upload(x.view(), noise.view(), stream); };
  auto sample = [&](double r) {
    (void)sampler.run(models, tstitch::StepFraction::small_fraction(r), schedule, solver, x.view(),
                      labels, options);
  };
#else
  result.mode = "forwards only";
  const tstitch::Trajectory trajectory = schedule.trajectory(steps);
  const std::int64_t rows = 2 * static_cast<std::int64_t>(images);
  Batch bs = make_batch(small.config(), rows, 11, small.stream());
  Batch bl = make_batch(large.config(), rows, 11, large.stream());
  Batch* const batches[2] = {&bs, &bl};
  auto prepare = [] {};
  auto sample = [&](double r) {
    const tstitch::StepFraction rule = tstitch::StepFraction::small_fraction(r);
    for (int i = 0; i < steps; ++i) {
      tstitch::StepContext ctx;
      ctx.step = i;
      ctx.num_steps = steps;
      ctx.point = trajectory[i];
      const std::size_t j = rule.model_for(ctx, 2);
      models[j]->predict(batches[j]->x.view(), ctx, batches[j]->labels, batches[j]->out.view());
    }
  };
#endif
  const std::vector<double> fractions{0.0, 0.2, 0.4, 0.6, 1.0};
  for (double r : fractions) { // warm-up: graphs of this batch captured, workspace allocated
    prepare();
    sample(r);
  }
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  EventTimer timer;
  std::map<double, std::vector<double>> times;
  const int runs = std::max(3, repeats / 2);
  for (int k = 0; k < runs; ++k)
    for (double r : fractions) { // interleaved, so drifting clocks hit every fraction alike
      prepare();
      times[r].push_back(timer.time_ms(stream, [&] { sample(r); }));
    }
  result.large_ms = median(times[0.0]);
  result.small_ms = median(times[1.0]);
  result.c = result.small_ms / result.large_ms;
  for (double r : fractions) {
    if (r == 1.0)
      continue;
    StitchRow row;
    row.r = r;
    row.ms = median(times[r]);
    row.speedup = result.large_ms / row.ms;
    row.ideal = 1.0 / ((1.0 - r) + r * result.c);
    row.deviation = row.speedup / row.ideal - 1.0;
    result.rows.push_back(row);
  }
  return result;
}

} // namespace bench
