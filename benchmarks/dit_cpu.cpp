// SPDX-License-Identifier: Apache-2.0
// One forward of DiT-S/2 and DiT-B/2 on the CPU (random weights, 32x32x4 latents as at 256x256,
// batch 1 and 8), float32, with each GEMM library built in (dit::Gemm: Eigen, and oneDNN when
// found). Threads: OMP_NUM_THREADS (OpenMP builds). The PyTorch and ONNX Runtime peers run the
// same configurations in tools/bench_dit_cpu.py; benchmarks/run_dit_cpu.sh runs both and prints
// the ratios.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>

#include "tstitch/core/host_backend.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace tstitch;

namespace {

void BM_dit_forward(benchmark::State& state, const std::string& preset, dit::Gemm gemm) {
  const dit::Config config = dit::Config::preset(preset);
  dit::CpuModel model(dit::Weights::random(config, 1), preset, gemm);
  const std::int64_t batch = state.range(0);
  Tensor x(batch, config.latent_shape());
  HostBackend{}.fill_normal(x, NoiseKey{2, 0, 0, 0});
  Tensor out(batch, Shape{config.out_channels(), config.input_size, config.input_size});
  const std::vector<int> labels(static_cast<std::size_t>(batch), 207);
  StepContext ctx;
  ctx.point.timestep = 500;
  model.predict(x, ctx, labels, out); // sizes the activation buffers, builds the primitives
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

// Names: dit_forward/<model>/<gemm>/batch:<n>, e.g. dit_forward/DiT-S_2/onednn/batch:8.
const bool registered = [] {
  for (const char* preset : {"DiT-S/2", "DiT-B/2"})
    for (const dit::Gemm gemm : {dit::Gemm::onednn, dit::Gemm::eigen}) {
      if (!dit::gemm_available(gemm))
        continue;
      std::string model = preset;
      std::replace(model.begin(), model.end(), '/', '_');
      benchmark::RegisterBenchmark(
          tstitch::detail::concat("dit_forward/", model, "/", dit::to_string(gemm)).c_str(),
          [preset = std::string(preset), gemm](benchmark::State& state) {
            BM_dit_forward(state, preset, gemm);
          })
          ->ArgName("batch")
          ->Arg(1)
          ->Arg(8)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  return true;
}();

} // namespace

BENCHMARK_MAIN();
