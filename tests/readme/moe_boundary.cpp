// SPDX-License-Identifier: Apache-2.0
// The README's two-expert (Wan 2.2 style) example, compiled and run with stand-in experts.
#include <cstdio>

#include "tstitch/tstitch.hpp"

int main() {
  using namespace tstitch;
  auto expert = [] {
    return make_denoiser(Prediction::flow, Shape{4, 8, 8},
                         [](ConstView, const StepContext&, const NoCondition&, View out) {
                           HostBackend{}.fill(out, 0.0f);
                         });
  };
  auto high_noise_expert = expert();
  auto low_noise_expert = expert();
  Tensor x(1, Shape{4, 8, 8});
  const NoCondition cond;
  // clang-format off
  // README snippet begin
  // diffusers: boundary_ratio = 0.875 in the pipeline's config; sd.cpp: --moe-boundary 0.875.
  // The high-noise expert serves every step with t >= 0.875 * num_train_timesteps.
  FlowMatchScheduleOptions flow;
  flow.shift = 12.0;                                 // the scheduler config's shift
  FlowMatchSchedule schedule(flow);
  TrajectoryStitcher stitcher(high_noise_expert, low_noise_expert,
                              TimestepThreshold(0.875 * 1000));
  SampleOptions options;
  options.steps = 40;
  Euler solver;                                      // FlowMatchEulerDiscreteScheduler
  SampleResult result = sample(stitcher, schedule, solver, x, cond, options);
  // README snippet end
  // clang-format on
  std::size_t high = 0;
  for (const StepRecord& r : result.records)
    high += r.model == 0;
  std::printf("high-noise expert: %zu of %zu steps\n", high, result.records.size());
}
