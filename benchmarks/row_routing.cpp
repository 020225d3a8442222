// SPDX-License-Identifier: Apache-2.0
// Per-sample routing (RowStitcher) and the latency planner, on the CPU.
//   rows/free/{uniform,mixed}/guided:G  one DDIM step of 8 latents of DiT-S/2's shape [4, 32, 32]
//       through a RowStitcher whose two models cost nothing: every row on one model (no copies)
//       against half the rows on each (gather each model's rows, scatter its outputs back). The
//       difference is the gather/scatter cost; compare it with rows/dit_s2/step.
//   rows/dit_s2/step/guided:G  one DiT-S/2 evaluation of the same 8 latents (random weights;
//       guided: both predictions, 16 rows), the step those copies would serve.
//   rows/fashion/{mixed_12,separate_3x4}  the shipped pair, 20 guided DDIM steps: one batch of
//       12 samples at small-model fractions 0.0, 0.4 and 0.8 (4 each, RowStitcher) against three
//       batches of 4, one per fraction (TrajectoryStitcher). items/s is samples per second.
//   plan_error/fraction:F/cpu:C  the planner's predicted time (costs from plan::measure_costs,
//       warm-up 3, median of 9) against the measured time of 50 guided DDIM steps at small
//       fraction F/10, batch 4; counters predicted_ms and error_pct (median measured / predicted
//       - 1). C = 0: wall-clock time; C = 1: the process's CPU time for both the costs and the
//       runs, which other jobs' load on a shared machine does not inflate.
// Run with OMP_NUM_THREADS=1 on a shared machine: CPU times then measure the work alone.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <ctime>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/plan/measure.hpp"
#include "tstitch/plan/planner.hpp"
#include "tstitch/tstitch.hpp"

TSTITCH_BENCH_COUNT_ALLOCATIONS()

using namespace tstitch;

namespace {

constexpr double fashion_guidance = 1.25; // the shipped pair's recommended scale

/// Costs nothing, as bench::FreeDenoiser, with class labels (a RowStitcher gathers them per row).
struct FreeLabelled {
  using condition_type = std::vector<int>;
  Shape shape;
  [[nodiscard]] Prediction prediction() const { return Prediction::epsilon; }
  [[nodiscard]] Shape latent_shape() const { return shape; }
  [[nodiscard]] condition_type unconditional(const condition_type& c) const {
    return condition_type(c.size(), 1000);
  }
  void predict(ConstView, const StepContext&, const condition_type&, View) const {}
};

using Rows = RowStitcher<DenoiserRef<std::vector<int>>, PerRow<StepFraction>>;

void BM_free_step(benchmark::State& state, bool mixed) {
  const Shape shape{4, 32, 32};
  constexpr int batch = 8, steps = 10;
  const bool guided = state.range(0) != 0;
  FreeLabelled small{shape}, large{shape};
  // mixed: rows 0-3 on the small model for every step, rows 4-7 on the large one.
  std::vector<double> fractions(batch, 0.0);
  if (mixed)
    std::fill(fractions.begin(), fractions.begin() + batch / 2, 1.0);
  Rows rows(row_fractions(fractions), {small, large});
  const std::vector<int> labels(batch, 3);
  const std::vector<int> uncond = small.unconditional(labels);
  Tensor x(batch, shape);
  Sampler<> sampler;
  DDIM ddim;
  SampleOptions options;
  options.steps = steps;
  options.check_finite = false;
  options.guidance = Guidance::standard(guided ? 2.0 : 1.0);
  const auto run = [&] {
    return sampler.run(rows, DiscreteSchedule{}, ddim, x.view(), labels, guided ? &uncond : nullptr,
                       options);
  };
  run(); // the stitcher's sub-batch buffers and the solver's workspace, once
  for (auto _ : state) {
    SampleResult r = run();
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(x.data());
  }
  state.counters["per_step"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * steps,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_dit_s2_step(benchmark::State& state) {
  const bool guided = state.range(0) != 0;
  constexpr int batch = 8;
  dit::CpuModel model(dit::Weights::random(dit::Config::preset("DiT-S/2"), 1), "DiT-S/2");
  Tensor x(batch, model.latent_shape());
  fill_initial_noise(x.view(), 1);
  const std::vector<int> labels(batch, 3);
  const std::vector<int> uncond = model.unconditional(labels);
  const Shape out_shape{raw_output_channels(model), x.shape().height, x.shape().width};
  Tensor out(batch, out_shape), out_uncond(batch, out_shape);
  StepContext ctx;
  ctx.num_steps = 50;
  ctx.point = DiscreteSchedule{}.trajectory(50)[0];
  const auto once = [&] {
    if (guided)
      predict_guided_of(model, x.view(), ctx, labels, uncond, out.view(), out_uncond.view());
    else
      model.predict(x.view(), ctx, labels, out.view());
  };
  once();
  for (auto _ : state) {
    once();
    benchmark::DoNotOptimize(out.data());
  }
}

struct FashionPair {
  dit::CpuModel small{
      dit::Weights::load(std::string(TSTITCH_MODELS_DIR) + "/fashion_dit_s.safetensors"), "DiT-S"};
  dit::CpuModel large{
      dit::Weights::load(std::string(TSTITCH_MODELS_DIR) + "/fashion_dit_l.safetensors"), "DiT-L"};
};

FashionPair& fashion() {
  static FashionPair pair;
  return pair;
}

/// One stitched, guided DDIM run of `labels.size()` samples of the shipped pair.
template <class Stitcher>
void run_fashion(Stitcher& stitcher, const std::vector<int>& labels, int steps, Sampler<>& sampler,
                 std::uint32_t first_sample = 0) {
  Tensor x(static_cast<std::int64_t>(labels.size()), fashion().small.latent_shape());
  fill_initial_noise(x.view(), 1, first_sample);
  const std::vector<int> uncond = fashion().small.unconditional(labels);
  DDIM ddim(DDIMOptions{0.0, 1.0f});
  SampleOptions options;
  options.steps = steps;
  options.guidance = Guidance::standard(fashion_guidance);
  sampler.run(stitcher, DiscreteSchedule{}, ddim, x.view(), labels, &uncond, options);
  benchmark::DoNotOptimize(x.data());
}

constexpr int mixed_steps = 20;
const std::vector<double> mixed_fractions{0.0, 0.4, 0.8};

void BM_fashion_mixed(benchmark::State& state) {
  std::vector<double> fractions;
  std::vector<int> labels;
  for (const double f : mixed_fractions)
    for (int i = 0; i < 4; ++i) {
      fractions.push_back(f);
      labels.push_back(static_cast<int>(labels.size()) % 10);
    }
  Rows rows(row_fractions(fractions), {fashion().small, fashion().large});
  Sampler<> sampler;
  run_fashion(rows, labels, 2, sampler); // warm-up
  for (auto _ : state)
    run_fashion(rows, labels, mixed_steps, sampler);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(labels.size()));
}

void BM_fashion_separate(benchmark::State& state) {
  Sampler<> sampler;
  std::vector<TrajectoryStitcher<dit::CpuModel, dit::CpuModel, StepFraction>> runs;
  std::vector<std::vector<int>> labels(mixed_fractions.size());
  for (std::size_t j = 0; j < mixed_fractions.size(); ++j) {
    runs.emplace_back(fashion().small, fashion().large,
                      StepFraction::small_fraction(mixed_fractions[j]));
    for (int i = 0; i < 4; ++i)
      labels[j].push_back(static_cast<int>(4 * j + static_cast<std::size_t>(i)) % 10);
  }
  run_fashion(runs[1], labels[1], 2, sampler); // warm-up
  for (auto _ : state)
    for (std::size_t j = 0; j < runs.size(); ++j)
      run_fashion(runs[j], labels[j], mixed_steps, sampler, static_cast<std::uint32_t>(4 * j));
  state.SetItemsProcessed(state.iterations() * 12);
}

double process_cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void BM_plan_error(benchmark::State& state) {
  constexpr int steps = 50, batch = 4;
  const double fraction = static_cast<double>(state.range(0)) / 10.0;
  const plan::Clock clock =
      state.range(1) != 0 ? plan::Clock(process_cpu_seconds) : plan::Clock(plan::steady_seconds);
  std::vector<int> labels;
  for (int i = 0; i < batch; ++i)
    labels.push_back(i);
  Tensor x(batch, fashion().small.latent_shape());
  fill_initial_noise(x.view(), 1);
  const std::vector<int> uncond = fashion().small.unconditional(labels);
  StepContext ctx;
  ctx.num_steps = steps;
  ctx.point = DiscreteSchedule{}.trajectory(steps)[0];
  plan::MeasureOptions measure;
  measure.warmup = 3;
  measure.repeats = 9;
  measure.clock = clock;
  const plan::ModelCosts costs = plan::measure_costs(x.view(), ctx, labels, &uncond, measure,
                                                     fashion().small, fashion().large);
  const plan::Planner planner(costs, plan::evaluations_per_step(DDIM{}, steps));
  const StepFraction policy = StepFraction::small_fraction(fraction);
  const double predicted = planner.predicted_seconds(policy);
  TrajectoryStitcher stitcher(fashion().small, fashion().large, policy);
  Sampler<> sampler;
  run_fashion(stitcher, labels, 2, sampler); // warm-up
  std::vector<double> measured;
  for (auto _ : state) {
    const double start = clock();
    run_fashion(stitcher, labels, steps, sampler);
    measured.push_back(clock() - start);
  }
  std::nth_element(measured.begin(),
                   measured.begin() + static_cast<std::ptrdiff_t>(measured.size() / 2),
                   measured.end());
  state.counters["predicted_ms"] = 1e3 * predicted;
  state.counters["error_pct"] = 100.0 * (measured[measured.size() / 2] / predicted - 1.0);
}

} // namespace

BENCHMARK_CAPTURE(BM_free_step, uniform, false)->ArgName("guided")->Arg(0)->Arg(1);
BENCHMARK_CAPTURE(BM_free_step, mixed, true)->ArgName("guided")->Arg(0)->Arg(1);
BENCHMARK(BM_dit_s2_step)
    ->ArgName("guided")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();
// items/s per CPU second (the process's): what the batching saves, whatever the machine's load.
BENCHMARK(BM_fashion_mixed)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
BENCHMARK(BM_fashion_separate)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
BENCHMARK(BM_plan_error)
    ->ArgNames({"fraction", "cpu"})
    ->ArgsProduct({{0, 2, 4, 6, 8, 10}, {0, 1}})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
