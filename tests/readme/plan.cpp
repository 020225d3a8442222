// SPDX-License-Identifier: Apache-2.0
// The README's latency-planning example, compiled and run in the source tree (models/ holds the
// shipped pair and its quality table).
#include <cstdio>
#include <vector>

#include "tstitch/io/quality_table.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

int main() {
  using namespace tstitch;
  dit::CpuModel small(dit::Weights::load("models/fashion_dit_s.safetensors"), "DiT-S");
  dit::CpuModel large(dit::Weights::load("models/fashion_dit_l.safetensors"), "DiT-L");
  Tensor x(4, small.latent_shape());
  fill_initial_noise(x, /*seed=*/42);
  std::vector<int> labels = {0, 1, 7, 9};
  // clang-format off
  // README snippet begin
  // Measure one guided evaluation of each model on the batch in use (warm-up, then a median).
  std::vector<int> uncond = large.unconditional(labels);
  StepContext ctx{.point = DiscreteSchedule{}.trajectory(50)[0]};
  plan::ModelCosts costs = plan::measure_costs(x, ctx, labels, &uncond, {}, small, large);
  plan::Planner planner(costs, plan::evaluations_per_step(DDIM{}, 50));  // Heun: 2 per step
  double small_only = planner.at_small_steps(50).predicted_seconds;
  double budget = 0.5 * (small_only + planner.at_small_steps(0).predicted_seconds);  // halfway
  plan::Plan fast = planner.for_deadline(budget);      // fewest small steps that fit (or for_speedup)
  plan::Plan best = planner.for_deadline(budget,       // the best FD-cls that fits
                                         plan::load_quality_table("models/fashion_quality.json"));
  TrajectoryStitcher stitcher(small, large, best.policy());  // exactly best.small_steps small steps
  // Or hold the budget while running: routes by elapsed time and adapts to a slower machine.
  TrajectoryStitcher timed(small, large, plan::Deadline(budget, planner));
  // README snippet end
  // clang-format on
  std::printf("planned: %d and %d of 50 small steps, %.2fx and %.2fx faster than large alone\n",
              fast.small_steps, best.small_steps, fast.speedup, best.speedup);
  // Both plans keep to the budget; the best-quality one cannot use fewer small steps.
  return fast.predicted_seconds <= budget && best.predicted_seconds <= budget &&
                 fast.small_steps <= best.small_steps
             ? 0
             : 1;
}
