// SPDX-License-Identifier: Apache-2.0
// The cost of stitching itself. Denoisers here cost nothing (they leave a zero output), so every
// nanosecond measured is the sampling loop, the solver's element-wise update and the stitcher.
//   step/bare      one DDIM step with a plain denoiser
//   step/stitched  the same through TrajectoryStitcher (fraction 0.5, one switch in the run)
//   step/switching a run in which every other step switches models (worst case)
//   step/runtime   step/stitched through the run-time forms: RuntimeStitcher over DenoiserRefs,
//                  AnyPolicy, AnySchedule (what cuda::DeviceSampler and tstitch-sample use)
// Counters: allocations per run, and allocations after the end of the first step (the goal is 0).
#include <benchmark/benchmark.h>

#include "bench_support.hpp"
#include "tstitch/tstitch.hpp"

TSTITCH_BENCH_COUNT_ALLOCATIONS()

using namespace tstitch;

namespace {

using bench::allocations;
using bench::FreeDenoiser;

enum class Mode { bare, stitched, switching, runtime };

void run_steps(benchmark::State& state, Mode mode) {
  const Shape shape{4, 32, 32}; // DiT-XL/2's latent at 256x256
  const auto batch = state.range(0);
  const int steps = static_cast<int>(state.range(1));
  const bool check_finite = state.range(2) != 0;
  FreeDenoiser small{shape}, large{shape};
  // "switching": StepFraction cannot switch more than k-1 times, so alternate with a user policy.
  struct Alternate {
    std::size_t model_for(const StepContext& ctx, std::size_t) const {
      return static_cast<std::size_t>(ctx.step % 2);
    }
  };
  TrajectoryStitcher stitched(small, large, 0.5);
  TrajectoryStitcher switching(small, large, Alternate{});
  RuntimeStitcher<DenoiserRef<NoCondition>, AnyPolicy> runtime(StepFraction::small_fraction(0.5),
                                                               {small, large});
  const DiscreteSchedule schedule;
  const AnySchedule any_schedule = schedule;
  Tensor x(batch, shape);
  DDIM ddim;
  Sampler<> sampler;
  SampleOptions options;
  options.steps = steps;
  options.check_finite = check_finite;
  long after_first_step = 0, at_first_step = 0;
  options.on_step = [&](const StepRecord& r) {
    if (r.step == 0)
      at_first_step = allocations.load();
    return true;
  };
  auto run = [&] {
    switch (mode) {
    case Mode::bare:
      return sampler.run(small, schedule, ddim, x, {}, nullptr, options);
    case Mode::stitched:
      return sampler.run(stitched, schedule, ddim, x, {}, nullptr, options);
    case Mode::switching:
      return sampler.run(switching, schedule, ddim, x, {}, nullptr, options);
    case Mode::runtime:
      return sampler.run(runtime, any_schedule, ddim, x, {}, nullptr, options);
    }
    return SampleResult{};
  };
  run(); // warm-up: the sampler and solver allocate their workspace once
  const long before = allocations.load();
  long runs = 0;
  for (auto _ : state) {
    SampleResult result = run();
    after_first_step += allocations.load() - at_first_step;
    benchmark::DoNotOptimize(result);
    benchmark::DoNotOptimize(x.data());
    ++runs;
  }
  const double total_steps = static_cast<double>(runs) * steps;
  state.counters["per_step"] =
      benchmark::Counter(total_steps, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["allocs_per_run"] =
      static_cast<double>(allocations.load() - before) / static_cast<double>(runs);
  state.counters["allocs_after_step0"] =
      static_cast<double>(after_first_step) / static_cast<double>(runs);
}

void BM_step_bare(benchmark::State& s) { run_steps(s, Mode::bare); }
void BM_step_stitched(benchmark::State& s) { run_steps(s, Mode::stitched); }
void BM_step_switching(benchmark::State& s) { run_steps(s, Mode::switching); }
void BM_step_runtime(benchmark::State& s) { run_steps(s, Mode::runtime); }

// Args: batch, steps, check_finite.
#define TSTITCH_STEP_ARGS                                                                          \
  ArgNames({"batch", "steps", "check"})                                                            \
      ->Args({4, 100, 1})                                                                          \
      ->Args({4, 100, 0})                                                                          \
      ->Args({1, 100, 0})                                                                          \
      ->Unit(benchmark::kMicrosecond)

// What the stitcher adds to a step by itself: route() (the policy) and the
// dispatch of predict() to the serving model, against the same calls on the bare denoiser.
template <class D> void route_and_predict(benchmark::State& state, D& denoiser) {
  const Shape shape{4, 32, 32};
  Tensor x(1, shape), out(1, shape);
  const Trajectory trajectory = DiscreteSchedule{}.trajectory(100);
  int i = 0;
  for (auto _ : state) {
    StepContext ctx{i, 100, 0, trajectory[i]};
    const Route r = route_of(denoiser, ctx);
    ctx.serving.model = r.model;
    denoiser.predict(x, ctx, NoCondition{}, out);
    benchmark::DoNotOptimize(r);
    i = i == 99 ? 0 : i + 1;
  }
}
void BM_route_bare(benchmark::State& s) {
  FreeDenoiser model{{4, 32, 32}};
  route_and_predict(s, model);
}
void BM_route_stitched(benchmark::State& s) {
  FreeDenoiser small{{4, 32, 32}}, large{{4, 32, 32}};
  TrajectoryStitcher stitcher(small, large, 0.4);
  route_and_predict(s, stitcher);
}
void BM_route_runtime(benchmark::State& s) {
  FreeDenoiser small{{4, 32, 32}}, large{{4, 32, 32}};
  RuntimeStitcher<DenoiserRef<NoCondition>, AnyPolicy> stitcher(StepFraction::small_fraction(0.4),
                                                                {small, large});
  route_and_predict(s, stitcher);
}
BENCHMARK(BM_route_bare);
BENCHMARK(BM_route_stitched);
BENCHMARK(BM_route_runtime);

BENCHMARK(BM_step_bare)->TSTITCH_STEP_ARGS;
BENCHMARK(BM_step_stitched)->TSTITCH_STEP_ARGS;
BENCHMARK(BM_step_switching)->TSTITCH_STEP_ARGS;
BENCHMARK(BM_step_runtime)->TSTITCH_STEP_ARGS;

} // namespace

BENCHMARK_MAIN();
