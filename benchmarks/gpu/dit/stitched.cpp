// SPDX-License-Identifier: Apache-2.0
// 4. Stitched sampling (the small model for the first fraction r of the steps, the large one for
// the rest) against the ideal speedup 1 / ((1 - r) + r c), c = small-only / large-only run time.
// With tstitch/cuda/sampling.hpp (the device sampling loop: DDIM update, guidance combine and
// noise on the device) this times whole sampling runs through DeviceSampler. Without it (a tree
// where that header is not there yet) it times the model forwards of a stitched run in the
// order the stitcher issues them, on the guidance-doubled batch, and says "forwards only".
// -DTSTITCH_BENCH_FORWARDS_ONLY forces the latter (to separate loop overhead from the models').
// With DeviceSampler it also times one guided evaluation of each model on its own and asks
// tstitch::plan::Planner for each run's time from those costs: the planner's prediction error on
// the GPU (its bar: within 5% at DiT-S/2 -> XL/2, 1 and 8 images).
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
#include "tstitch/plan/planner.hpp"
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
  // The planner's costs: one guided evaluation of each model (both predictions, 2 x images rows,
  // as the sampler makes them), warmed up, then the median of interleaved repeats.
  std::vector<double> eval_ms(2);
  {
    const tstitch::Trajectory trajectory = schedule.trajectory(steps);
    tstitch::StepContext ctx;
    ctx.num_steps = steps;
    ctx.point = trajectory[0];
    const std::vector<int> null_labels = small.unconditional(labels);
    tstitch::cuda::DeviceTensor out_cond(
        images,
        {small.config().out_channels(), small.config().input_size, small.config().input_size});
    tstitch::cuda::DeviceTensor out_uncond(images, out_cond.shape());
    tstitch::cuda::upload(x.view(), noise.view(), stream);
    auto evaluate = [&](DitModel& m) {
      m.predict_guided(x.view(), ctx, labels, null_labels, out_cond.view(), out_uncond.view());
    };
    EventTimer eval_timer;
    std::vector<double> times_of[2];
    for (int k = 0; k < 3; ++k)
      for (DitModel* m : models)
        evaluate(*m);
    TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
    for (int k = 0; k < std::max(5, repeats); ++k)
      for (int j = 0; j < 2; ++j)
        times_of[j].push_back(
            eval_timer.time_ms(models[j]->stream(), [&] { evaluate(*models[j]); }));
    for (int j = 0; j < 2; ++j)
      eval_ms[static_cast<std::size_t>(j)] = median(times_of[j]);
  }
  result.small_eval_ms = eval_ms[0];
  result.large_eval_ms = eval_ms[1];
  // DDIM: one evaluation per step; the costs are in ms, so are its predictions.
  const tstitch::plan::Planner planner(eval_ms, steps);
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
#if TSTITCH_BENCH_DEVICE_SAMPLING
    row.predicted_ms = planner.predicted_seconds(tstitch::StepFraction::small_fraction(r));
    row.prediction_error = row.ms / row.predicted_ms - 1.0;
#endif
    result.rows.push_back(row);
  }
  return result;
}

} // namespace bench
