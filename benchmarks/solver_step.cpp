// SPDX-License-Identifier: Apache-2.0
// Per-step cost of each solver with a denoiser that costs nothing: the loop's prediction conversion
// plus the solver's element-wise update. Argument 0: DiT-XL/2's latent at batch 4, [4, 4, 32, 32];
// peer, in the same run, one element-wise pass x = a x + b y over the same tensors (memory
// bandwidth), so each solver's cost reads as "passes". Argument 1: a one-element latent, where
// bandwidth vanishes and per_step is the fixed overhead of a step (loop, solver bookkeeping,
// coefficients). Counter allocs_after_step0 must be 0.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"
#include "tstitch/tstitch.hpp"

TSTITCH_BENCH_COUNT_ALLOCATIONS()

using namespace tstitch;

namespace {

const Shape latent{4, 32, 32};
constexpr int batch = 4;
constexpr int steps = 50;

/// The latent of argument 0 (DiT-XL/2's, batch 4) or 1 (one element, batch 1).
Shape shape_of(const benchmark::State& state) {
  return state.range(0) == 0 ? latent : Shape{1, 1, 1};
}
std::int64_t batch_of(const benchmark::State& state) { return state.range(0) == 0 ? batch : 1; }

template <class SolverT, class Schedule = DiscreteSchedule>
void solver_steps(benchmark::State& state, SolverT solver,
                  Prediction prediction = Prediction::epsilon, const Schedule& schedule = {}) {
  bench::FreeDenoiser model{shape_of(state), prediction};
  Tensor x(batch_of(state), shape_of(state));
  Sampler<> sampler;
  SampleOptions options;
  options.steps = steps;
  options.check_finite = false;
  long at_step0 = 0, after_step0 = 0, runs = 0;
  options.on_step = [&](const StepRecord& r) {
    if (r.step == 0)
      at_step0 = bench::allocations.load();
    return true;
  };
  sampler.run(model, schedule, solver, x, {}, nullptr, options); // allocate the workspace
  for (auto _ : state) {
    HostBackend{}.fill(x, 0.5f); // keep the latents finite and bounded
    sampler.run(model, schedule, solver, x, {}, nullptr, options);
    after_step0 += bench::allocations.load() - at_step0;
    ++runs;
  }
  // Reported as seconds per step (a rate, inverted).
  state.counters["per_step"] = benchmark::Counter(
      static_cast<double>(runs) * steps, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["allocs_after_step0"] =
      static_cast<double>(after_step0) / static_cast<double>(runs);
}

void BM_pass_combine(benchmark::State& state) { // the memory-bandwidth peer
  Tensor x(batch, latent), y(batch, latent);
  const HostBackend backend;
  for (auto _ : state) {
    backend.combine(x, Term{0.5f, x}, Term{0.25f, y});
    benchmark::DoNotOptimize(x.data());
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * 12);
}
BENCHMARK(BM_pass_combine)->Unit(benchmark::kMicrosecond);

// What a stochastic step spends on noise: one latent's worth of Gaussians through fill_normal
// (AVX2 + FMA where the CPU has them), and, as its peer, the scalar code it runs otherwise (with
// the FMA dispatch on x86-64 builds without -mfma, as fill_normal did before the AVX2 path).
void noise(benchmark::State& state, void (*fill)(float*, std::size_t, const NoiseKey&)) {
  Tensor x(batch, latent);
  const auto count = static_cast<std::size_t>(x.numel());
  std::uint32_t step = 0;
  for (auto _ : state) {
    fill(x.data(), count, NoiseKey{2024, 0, step++, stream_solver});
    benchmark::DoNotOptimize(x.data());
  }
  // Seconds per value (a rate, inverted).
  state.counters["per_value"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * static_cast<double>(count),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
void scalar_fill(float* dst, std::size_t count, const NoiseKey& key) {
  detail::fill_normal_scalar(dst, count, key);
}
void BM_noise_scalar(benchmark::State& s) { noise(s, scalar_fill); }
void BM_noise_fill_normal(benchmark::State& s) { noise(s, fill_normal); }
BENCHMARK(BM_noise_scalar)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_noise_fill_normal)->Unit(benchmark::kMicrosecond);

void BM_DDIM(benchmark::State& s) { solver_steps(s, DDIM{}); }
void BM_DDIM_eta1(benchmark::State& s) { solver_steps(s, DDIM{DDIMOptions{1.0, {}}}); }
void BM_DDIM_v(benchmark::State& s) { solver_steps(s, DDIM{}, Prediction::v); }
void BM_DDPM(benchmark::State& s) { solver_steps(s, DDPM{}); }
void BM_DDPM_learned_range(benchmark::State& s) {
  solver_steps(s, DDPM{DDPMOptions{DDPMVariance::learned_range, {}}},
               Prediction::epsilon_learned_sigma);
}
void BM_Euler(benchmark::State& s) { solver_steps(s, Euler{}); }
void BM_EulerAncestral(benchmark::State& s) { solver_steps(s, EulerAncestral{}); }
void BM_Heun(benchmark::State& s) { solver_steps(s, Heun{}); }
void BM_DPMSolverPP_2M(benchmark::State& s) { solver_steps(s, DPMSolverMultistep{}); }
void BM_DPMSolverPP_3M(benchmark::State& s) {
  DPMSolverMultistepOptions o;
  o.solver_order = 3;
  solver_steps(s, DPMSolverMultistep{o});
}
void BM_DPMSolverPP_2M_SDE(benchmark::State& s) {
  DPMSolverMultistepOptions o;
  o.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
  solver_steps(s, DPMSolverMultistep{o});
}
void BM_UniPC_2(benchmark::State& s) { solver_steps(s, UniPC{}); }
void BM_UniPC_3(benchmark::State& s) {
  UniPCOptions o;
  o.solver_order = 3;
  solver_steps(s, UniPC{o});
}
void BM_LCM(benchmark::State& s) { solver_steps(s, LCM{}); }
void BM_PNDM_PRK(benchmark::State& s) { solver_steps(s, PNDM{}); }
void BM_PNDM_PLMS(benchmark::State& s) {
  PNDMOptions o;
  o.skip_prk_steps = true;
  solver_steps(s, PNDM{o});
}
void BM_IPNDM(benchmark::State& s) { solver_steps(s, IPNDM{}, Prediction::v, IPNDMSchedule{}); }
void BM_LMS(benchmark::State& s) { solver_steps(s, LMS{}); }
void BM_DEIS_2(benchmark::State& s) { solver_steps(s, DEIS{}); }
void BM_DEIS_3(benchmark::State& s) {
  DEISOptions o;
  o.solver_order = 3;
  solver_steps(s, DEIS{o});
}
void BM_DPMSolverSinglestep_2(benchmark::State& s) { solver_steps(s, DPMSolverSinglestep{}); }
void BM_DPMSolverSinglestep_3(benchmark::State& s) {
  DPMSolverSinglestepOptions o;
  o.solver_order = 3;
  solver_steps(s, DPMSolverSinglestep{o});
}
void BM_DPMPP2SAncestral(benchmark::State& s) { solver_steps(s, DPMPP2SAncestral{}); }
void BM_KDPM2(benchmark::State& s) { solver_steps(s, KDPM2{}); }
void BM_KDPM2Ancestral(benchmark::State& s) { solver_steps(s, KDPM2Ancestral{}); }
void BM_TCD(benchmark::State& s) { solver_steps(s, TCD{}, Prediction::epsilon, TCDSchedule{}); }
void BM_CMStochasticIterative(benchmark::State& s) {
  CMKarrasScheduleOptions grid; // a training grid of at least the 50 steps run here
  grid.num_train_timesteps = 1000;
  solver_steps(s, CMStochasticIterative{}, Prediction::sample, CMKarrasSchedule{grid});
}
BENCHMARK(BM_DDIM)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DDIM_eta1)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DDIM_v)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DDPM)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DDPM_learned_range)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Euler)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EulerAncestral)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Heun)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DPMSolverPP_2M)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DPMSolverPP_3M)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DPMSolverPP_2M_SDE)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UniPC_2)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UniPC_3)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LCM)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PNDM_PRK)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PNDM_PLMS)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_IPNDM)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LMS)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DEIS_2)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DEIS_3)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DPMSolverSinglestep_2)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DPMSolverSinglestep_3)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DPMPP2SAncestral)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KDPM2)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KDPM2Ancestral)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TCD)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CMStochasticIterative)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

} // namespace

BENCHMARK_MAIN();
