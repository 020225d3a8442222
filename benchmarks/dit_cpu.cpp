// SPDX-License-Identifier: Apache-2.0
// One forward of DiT-S/2 and DiT-B/2 on the CPU (random weights, 32x32x4 latents as at 256x256,
// batch 1 and 8), float32. Threads: OMP_NUM_THREADS (OpenMP builds). The PyTorch and ONNX Runtime
// peers run the same configurations in tools/bench_dit_cpu.py; benchmarks/run_dit_cpu.sh runs both
// and prints the ratios.
#include <benchmark/benchmark.h>

#include <string>

#include "tstitch/core/host_backend.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace tstitch;

namespace {

void BM_dit_forward(benchmark::State& state, const std::string& preset) {
  const dit::Config config = dit::Config::preset(preset);
  dit::CpuModel model(dit::Weights::random(config, 1));
  const std::int64_t batch = state.range(0);
  Tensor x(batch, config.latent_shape());
  HostBackend{}.fill_normal(x, NoiseKey{2, 0, 0, 0});
  Tensor out(batch, Shape{config.out_channels(), config.input_size, config.input_size});
  const std::vector<int> labels(static_cast<std::size_t>(batch), 207);
  StepContext ctx;
  ctx.point.timestep = 500;
  model.predict(x, ctx, labels, out); // sizes the activation buffers
  for (auto _ : state) {
    model.predict(x, ctx, labels, out);
    benchmark::DoNotOptimize(out.data());
  }
  const double flops = 2.0 * config.macs() * static_cast<double>(batch);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  state.counters["threads"] = threads;
  state.counters["activation_MB"] = static_cast<double>(model.activation_bytes()) / 1e6;
}

BENCHMARK_CAPTURE(BM_dit_forward, DiT_S_2, std::string("DiT-S/2"))
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_dit_forward, DiT_B_2, std::string("DiT-B/2"))
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

} // namespace

BENCHMARK_MAIN();
