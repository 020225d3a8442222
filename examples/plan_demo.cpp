// SPDX-License-Identifier: Apache-2.0
// plan_demo: the latency planner on the shipped Fashion-MNIST DiT pair (models/), on the CPU.
// It measures one guided evaluation of each model at the batch in use, plans 50 DDIM steps for a
// deadline (argv[1] in ms; default: 60% of the large model alone) and, with the shipped quality
// table, for the best FD-cls within that deadline, then runs each plan and compares the measured
// time with the predicted one; then runs the Deadline rule. A few seconds on 2 cores.
//
//     plan_demo [deadline_ms] [batch]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tstitch/io/quality_table.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/plan/deadline.hpp"
#include "tstitch/plan/planner.hpp"
#include "tstitch/tstitch.hpp"

using namespace tstitch;

namespace {

constexpr int steps = 50;
constexpr double guidance = 1.25; // the pair's recommended scale, as in fashion_demo

struct Pair {
  dit::CpuModel small, large;
};

template <class Policy>
double run_seconds(Pair& models, const Policy& policy, const Tensor& noise,
                   const std::vector<int>& labels, Sampler<>& sampler, int run_steps) {
  TrajectoryStitcher stitcher(models.small, models.large, policy);
  const std::vector<int> uncond = stitcher.unconditional(labels);
  DDIM solver(DDIMOptions{0.0, 1.0f});
  SampleOptions options;
  options.steps = run_steps;
  options.guidance = Guidance::standard(guidance);
  Tensor x = noise;
  const auto start = std::chrono::steady_clock::now();
  sampler.run(stitcher, DiscreteSchedule{}, solver, x.view(), labels, &uncond, options);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void report(const char* title, const plan::Plan& p, double measured) {
  std::printf("%s\n  small fraction %.2f (%d small + %d large steps), predicted %.1f ms (%.2fx "
              "the large model alone)",
              title, p.small_fraction(), p.small_steps, p.steps - p.small_steps,
              1e3 * p.predicted_seconds, p.speedup);
  if (p.quality)
    std::printf(", FD-cls %.2f", *p.quality);
  std::printf("\n  measured %.1f ms (%+.1f%% of predicted)\n", 1e3 * measured,
              100.0 * (measured / p.predicted_seconds - 1.0));
}

int run(int argc, char** argv) {
  const std::string dir = TSTITCH_MODELS_DIR;
  const int batch = argc > 2 ? std::atoi(argv[2]) : 4;
  require(batch >= 1 && batch <= 1024, "batch", batch, "must be in [1, 1024]");
  Pair models{dit::CpuModel(dit::Weights::load(dir + "/fashion_dit_s.safetensors"), "DiT-S"),
              dit::CpuModel(dit::Weights::load(dir + "/fashion_dit_l.safetensors"), "DiT-L")};

  std::vector<int> labels(static_cast<std::size_t>(batch));
  for (int i = 0; i < batch; ++i)
    labels[static_cast<std::size_t>(i)] = i % 10;
  Tensor noise(batch, models.large.latent_shape());
  fill_initial_noise(noise.view(), 1);

  // 1. Costs: one guided evaluation (conditional and unconditional predictions) per model.
  const Trajectory trajectory = DiscreteSchedule{}.trajectory(steps);
  StepContext ctx;
  ctx.num_steps = steps;
  ctx.point = trajectory[0];
  const std::vector<int> uncond = models.large.unconditional(labels);
  plan::MeasureOptions measure;
  measure.warmup = 3;
  measure.repeats = 9; // a few ms each: a wider median for a shared machine
  const plan::ModelCosts costs =
      plan::measure_costs(noise.view(), ctx, labels, &uncond, measure, models.small, models.large);
  std::printf("batch %d, DDIM %d steps, guidance %.2f: one evaluation costs %.2f ms (%s) and "
              "%.2f ms (%s)\n",
              batch, steps, guidance, 1e3 * costs.seconds[0], costs.names[0].c_str(),
              1e3 * costs.seconds[1], costs.names[1].c_str());

  // 2. The plan: DDIM evaluates the model once per step.
  const plan::Planner planner(costs, plan::evaluations_per_step(DDIM{}, steps));
  const double large_only = planner.at_small_steps(0).predicted_seconds;
  const double deadline = argc > 1 ? std::atof(argv[1]) / 1e3 : 0.6 * large_only;
  std::printf("large model alone: predicted %.1f ms; deadline %.1f ms\n\n", 1e3 * large_only,
              1e3 * deadline);

  Sampler<> sampler;
  (void)run_seconds(models, StepFraction::small_fraction(0.5), noise, labels, sampler, 2); // warm

  const plan::Plan fastest_fit = planner.for_deadline(deadline);
  report("deadline, fewest small-model steps:", fastest_fit,
         run_seconds(models, fastest_fit.policy(), noise, labels, sampler, steps));

  const plan::QualityTable table = plan::load_quality_table(dir + "/fashion_quality.json");
  const plan::Plan best = planner.for_deadline(deadline, table);
  report("deadline, best FD-cls of models/fashion_quality.json:", best,
         run_seconds(models, best.policy(), noise, labels, sampler, steps));

  // 3. The Deadline rule: routes each step by the time already spent, so a run that meets a
  //    slower machine mid-run still ends near its budget.
  const plan::Deadline rule(deadline, planner);
  const double ruled = run_seconds(models, rule, noise, labels, sampler, steps);
  int small_steps = 0;
  for (const std::size_t k : rule.routing())
    small_steps += k == 0 ? 1 : 0;
  std::printf("Deadline rule:\n  %d small + %d large steps, measured %.1f ms against the %.1f ms "
              "budget (last step %.2fx its predicted time)\n",
              small_steps, steps - small_steps, 1e3 * ruled, 1e3 * deadline, rule.slowdown());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tstitch::error& e) {
    std::fprintf(stderr, "plan_demo: %s\n", e.message());
    return 1;
  }
}
