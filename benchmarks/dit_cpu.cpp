// SPDX-License-Identifier: Apache-2.0
// One forward of DiT-S/2 and DiT-B/2 on the CPU (random weights, 32x32x4 latents as at 256x256,
// batch 1 and 8), float32, with each GEMM library built in (dit::Gemm: Eigen, and oneDNN when
// found). Threads: OMP_NUM_THREADS (OpenMP builds). The PyTorch and ONNX Runtime peers run the
// same configurations in tools/bench_dit_cpu.py; benchmarks/run_dit_cpu.sh runs both and prints
// the ratios.
//   guided/<model>/<form>/images:N: one classifier-free-guided evaluation of N images with the
//   trained Fashion DiTs (models/), as two N-row predicts (how the sampling loop runs it on the
//   CPU) or as one predict of 2N rows (what predict_guided does on a GPU): whether CPU models
//   gain from offering predict_guided.
//   batch_invariant/<model>/<form>/batch:N: one forward of N images batched (the default) or one
//   image at a time (CpuModel::set_batch_invariant): what the batch-invariance option costs.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tstitch/core/host_backend.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace tstitch;

namespace {

/// One forward of a batch of N (state.range(0)) images with `model`, its throughput in images/s.
void time_forward(benchmark::State& state, dit::CpuModel& model) {
  const dit::Config& config = model.config();
  const std::int64_t batch = state.range(0);
  Tensor x(batch, config.latent_shape());
  HostBackend{}.fill_normal(x, NoiseKey{2, 0, 0, 0});
  Tensor out(batch, Shape{config.out_channels(), config.input_size, config.input_size});
  std::vector<int> labels(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < labels.size(); ++i)
    labels[i] = static_cast<int>(i % static_cast<std::size_t>(config.num_classes));
  StepContext ctx;
  ctx.point.timestep = 500;
  model.predict(x, ctx, labels, out); // sizes the activation buffers, builds the primitives
  for (auto _ : state) {
    model.predict(x, ctx, labels, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_dit_forward(benchmark::State& state, const std::string& preset, dit::Gemm gemm) {
  const dit::Config config = dit::Config::preset(preset);
  dit::CpuModel model(dit::Weights::random(config, 1), preset, gemm);
  time_forward(state, model);
  const double flops = 2.0 * config.macs() * static_cast<double>(state.range(0));
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  state.counters["threads"] = threads;
  state.counters["activation_MB"] = static_cast<double>(model.activation_bytes()) / 1e6;
}

void BM_batch_invariant(benchmark::State& state, const std::string& model_name, bool invariant) {
  const bool preset = model_name.starts_with("DiT-");
  dit::CpuModel model(preset ? dit::Weights::random(dit::Config::preset(model_name), 1)
                             : dit::Weights::load(std::string(TSTITCH_MODELS_DIR) + "/" +
                                                  model_name + ".safetensors"),
                      model_name);
  model.set_batch_invariant(invariant);
  time_forward(state, model);
}

void BM_guided(benchmark::State& state, const std::string& file, bool one_batch) {
  dit::CpuModel model(
      dit::Weights::load(std::string(TSTITCH_MODELS_DIR) + "/" + file + ".safetensors"), file);
  const std::int64_t n = state.range(0);
  const Shape shape = model.latent_shape();
  const Shape out_shape{model.config().out_channels(), shape.height, shape.width};
  Tensor x(2 * n, shape), out(2 * n, out_shape); // rows [n, 2n) of x repeat rows [0, n)
  HostBackend{}.fill_normal(View(x.view()).samples(0, n), NoiseKey{3, 0, 0, 0});
  HostBackend{}.copy(View(x.view()).samples(n, n), ConstView(x.view()).samples(0, n));
  std::vector<int> cond(static_cast<std::size_t>(n)), both;
  for (std::int64_t i = 0; i < n; ++i)
    cond[static_cast<std::size_t>(i)] = static_cast<int>(i % 10);
  const std::vector<int> uncond = model.unconditional(cond);
  both = cond;
  both.insert(both.end(), uncond.begin(), uncond.end());
  StepContext ctx;
  ctx.point.timestep = 500;
  auto evaluate = [&] {
    if (one_batch) {
      model.predict(x, ctx, both, out);
    } else {
      model.predict(ConstView(x.view()).samples(0, n), ctx, cond, View(out.view()).samples(0, n));
      model.predict(ConstView(x.view()).samples(0, n), ctx, uncond, View(out.view()).samples(n, n));
    }
  };
  evaluate(); // sizes the buffers for this form
  for (auto _ : state) {
    evaluate();
    benchmark::DoNotOptimize(out.data());
  }
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
  for (const char* file : {"fashion_dit_s", "fashion_dit_l"})
    for (const bool one_batch : {false, true})
      benchmark::RegisterBenchmark(
          tstitch::detail::concat("guided/", file, one_batch ? "/one_batch" : "/two_calls").c_str(),
          [file = std::string(file), one_batch](benchmark::State& state) {
            BM_guided(state, file, one_batch);
          })
          ->ArgName("images")
          ->Arg(8)
          ->Arg(80)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  for (const char* model : {"DiT-S/2", "fashion_dit_s", "fashion_dit_l"})
    for (const bool invariant : {false, true}) {
      std::string name = model;
      std::replace(name.begin(), name.end(), '/', '_');
      auto* bench = benchmark::RegisterBenchmark(
          tstitch::detail::concat("batch_invariant/", name,
                                  invariant ? "/one_at_a_time" : "/batched")
              .c_str(),
          [model = std::string(model), invariant](benchmark::State& state) {
            BM_batch_invariant(state, model, invariant);
          });
      bench->ArgName("batch")->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
      if (!name.starts_with("DiT-")) // the small Fashion models: also a sampling-sized batch
        bench->Arg(80);
    }
  return true;
}();

} // namespace

BENCHMARK_MAIN();
