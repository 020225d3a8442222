// SPDX-License-Identifier: Apache-2.0
// 5. Per-sample routing on the GPU (DeviceRowStitcher), DiT-S/2 and DiT-XL/2:
//   copies: what a step whose rows are split between two models adds to a uniform one. 8 latents
//     of [4, 32, 32], 4 rows per model: gather each model's rows into its sub-batch, scatter its
//     output back (kernels::gather_rows / scatter_rows, as DeviceRows does), against one guided
//     DiT-S/2 evaluation of the 8 rows, the step those copies serve. The goal: under 1%.
//   mixed batch: one DDIM-50 batch of 12 samples (guidance 4) at small-model fractions 0.0, 0.4
//     and 0.8, 4 each (DeviceRowStitcher<PerRow<StepFraction>>), against three batches of 4, one
//     per fraction (DeviceSampler with StepFraction): the samples per second of each.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/cuda/sampling.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/row_policy.hpp"

namespace bench {

namespace {

tstitch::Tensor noise_of(std::int64_t images, tstitch::Shape shape, std::uint32_t seed) {
  tstitch::Tensor noise(images, shape);
  XorShift rng(seed);
  for (std::int64_t i = 0; i < noise.numel(); ++i)
    noise.view().data()[i] = 1.7f * rng.next();
  return noise;
}

std::vector<int> labels_of(int images, std::int64_t classes) {
  std::vector<int> labels;
  for (int i = 0; i < images; ++i)
    labels.push_back((i * 97 + 3) % static_cast<int>(classes));
  return labels;
}

} // namespace

RowRoutingResult measure_row_routing(DitModel& small, DitModel& large, int steps, int repeats,
                                     const tstitch::DiscreteSchedule& schedule) {
  RowRoutingResult result;
  result.steps = steps;
  const cudaStream_t stream = large.stream();
  const tstitch::Shape shape = small.config().latent_shape();
  EventTimer timer;

  // The copies of one split step, and the DiT-S/2 step they serve.
  {
    constexpr int rows = 8, half = rows / 2;
    tstitch::cuda::DeviceTensor batch(rows, shape), sub(half, shape);
    tstitch::cuda::upload(batch.view(), noise_of(rows, shape, 7).view(), stream);
    const std::vector<std::int64_t> first{0, 1, 2, 3}, second{4, 5, 6, 7};
    auto copies = [&] {
      for (const auto* part : {&first, &second}) {
        tstitch::cuda::kernels::gather_rows(batch.view(), *part, sub.view(), stream);
        tstitch::cuda::kernels::scatter_rows(sub.view(), *part, batch.view(), stream);
      }
    };
    constexpr int calls = 50; // per timed sample: one copy pass is a few microseconds
    copies();
    std::vector<double> copy_ms;
    for (int k = 0; k < std::max(5, repeats); ++k)
      copy_ms.push_back(timer.time_ms(stream, [&] {
        for (int c = 0; c < calls; ++c)
          copies();
      }) / calls);
    result.copies_us = 1e3 * median(copy_ms);

    const tstitch::Trajectory trajectory = schedule.trajectory(steps);
    tstitch::StepContext ctx;
    ctx.num_steps = steps;
    ctx.point = trajectory[0];
    const std::vector<int> labels = labels_of(rows, small.config().num_classes);
    const std::vector<int> null_labels = small.unconditional(labels);
    const tstitch::Shape out_shape{small.config().out_channels(), small.config().input_size,
                                   small.config().input_size};
    tstitch::cuda::DeviceTensor out_cond(rows, out_shape), out_uncond(rows, out_shape);
    auto evaluate = [&] {
      small.predict_guided(batch.view(), ctx, labels, null_labels, out_cond.view(),
                           out_uncond.view());
    };
    for (int k = 0; k < 3; ++k)
      evaluate();
    std::vector<double> eval_ms;
    for (int k = 0; k < std::max(5, repeats); ++k)
      eval_ms.push_back(timer.time_ms(small.stream(), evaluate));
    result.small_step_us = 1e3 * median(eval_ms);
    result.copies_share = result.copies_us / result.small_step_us;
  }

  // One mixed batch of 12 against three batches of 4.
  {
    constexpr int per_fraction = 4;
    const std::vector<double> fractions{0.0, 0.4, 0.8};
    const int images = per_fraction * static_cast<int>(fractions.size());
    std::vector<double> row_fractions;
    for (double f : fractions)
      row_fractions.insert(row_fractions.end(), per_fraction, f);
    const std::vector<int> labels = labels_of(images, small.config().num_classes);
    const tstitch::Tensor noise = noise_of(images, shape, 5);

    tstitch::SampleOptions options;
    options.steps = steps;
    options.guidance = tstitch::Guidance::standard(4.0);
    options.check_finite = false; // it would wait for the GPU at every step
    const tstitch::cuda::DeviceSolver solver = tstitch::DDIM{};
    tstitch::cuda::DeviceSampler sampler(stream);
    tstitch::cuda::DeviceRowStitcher<tstitch::PerRow<tstitch::StepFraction>> mixed(
        tstitch::row_fractions(row_fractions), {small, large}, tstitch::cuda::DeviceRows(stream));
    DitModel* const models[2] = {&small, &large};

    tstitch::cuda::DeviceTensor x(images, shape);
    std::vector<tstitch::cuda::DeviceTensor> parts; // the same samples as x's, 4 per fraction
    for (std::size_t i = 0; i < fractions.size(); ++i)
      parts.emplace_back(per_fraction, shape);
    auto run_mixed = [&] { (void)sampler.run(mixed, schedule, solver, x.view(), labels, options); };
    auto run_separate = [&] {
      for (std::size_t i = 0; i < fractions.size(); ++i) {
        const std::vector<int> part_labels(labels.begin() + per_fraction * i,
                                           labels.begin() + per_fraction * (i + 1));
        (void)sampler.run(models, tstitch::StepFraction::small_fraction(fractions[i]), schedule,
                          solver, parts[i].view(), part_labels, options);
      }
    };
    // x and the parts are sampled in place: each run starts again from the same noise
    // (synchronous uploads, outside the timed region).
    auto prepare = [&] {
      tstitch::cuda::upload(x.view(), noise.view(), stream);
      for (std::size_t i = 0; i < parts.size(); ++i)
        tstitch::cuda::upload(
            parts[i].view(),
            tstitch::ConstView(noise.view())
                .samples(static_cast<std::int64_t>(per_fraction * i), per_fraction),
            stream);
    };
    prepare();
    run_mixed(); // warm-up: graphs of every sub-batch size captured, buffers allocated
    prepare();
    run_separate();
    TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> mixed_ms, separate_ms;
    for (int k = 0; k < std::max(3, repeats / 2); ++k) { // interleaved
      prepare();
      mixed_ms.push_back(timer.time_ms(stream, run_mixed));
      prepare();
      separate_ms.push_back(timer.time_ms(stream, run_separate));
    }
    result.images = images;
    result.mixed_ms = median(mixed_ms);
    result.separate_ms = median(separate_ms);
    result.gain = result.separate_ms / result.mixed_ms;
  }
  return result;
}

} // namespace bench
