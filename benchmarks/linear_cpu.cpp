// SPDX-License-Identifier: Apache-2.0
// The CPU DiT's linear layers alone, at DiT-S/2's shapes (hidden 384, 256 tokens per image, batch
// 1 and 8): dit::LinearLayers with each GEMM library built in (Eigen; oneDNN when found) and each
// epilogue the DiT uses. Weights stay hot in cache here (one layer, repeated), unlike in a whole
// forward. Threads: OMP_NUM_THREADS.
//
//   build/native/benchmarks/linear_cpu --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "tstitch/models/dit/linear.hpp"

using namespace tstitch;

namespace {

struct Layer {
  const char* name;
  std::int64_t in, out;
  dit::Epilogue::Kind epilogue;
};

void BM_linear(benchmark::State& state, Layer layer, dit::Gemm gemm) {
  const std::int64_t tokens = 256, rows = state.range(0) * tokens;
  std::vector<float> x(static_cast<std::size_t>(rows * layer.in), 0.01f),
      w(static_cast<std::size_t>(layer.out * layer.in), 0.02f),
      b(static_cast<std::size_t>(layer.out), 0.1f), y(static_cast<std::size_t>(rows * layer.out)),
      scratch(y.size()), gate(static_cast<std::size_t>(state.range(0) * 6 * layer.out), 0.5f);
  const dit::Param weight{w.data(), layer.out, layer.in}, bias{b.data(), 1, layer.out};
  dit::Epilogue epilogue{layer.epilogue};
  if (layer.epilogue == dit::Epilogue::Kind::gated_residual)
    epilogue = dit::Epilogue::gated(gate.data(), 6 * layer.out, tokens);
  dit::LinearLayers linear(gemm);
  linear.run(x.data(), rows, weight, bias, y.data(), epilogue, scratch.data());
  for (auto _ : state) {
    linear.run(x.data(), rows, weight, bias, y.data(), epilogue, scratch.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * static_cast<double>(rows * layer.in * layer.out),
                         benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  const Layer layers[] = {{"qkv", 384, 1152, dit::Epilogue::Kind::store},
                          {"proj_gated", 384, 384, dit::Epilogue::Kind::gated_residual},
                          {"fc1_gelu", 384, 1536, dit::Epilogue::Kind::gelu_tanh},
                          {"fc2_gated", 1536, 384, dit::Epilogue::Kind::gated_residual}};
  for (const Layer& layer : layers)
    for (const dit::Gemm gemm : {dit::Gemm::onednn, dit::Gemm::eigen}) {
      if (!dit::gemm_available(gemm))
        continue;
      benchmark::RegisterBenchmark(
          detail::concat("linear/", layer.name, "/", dit::to_string(gemm)).c_str(),
          [layer, gemm](benchmark::State& state) { BM_linear(state, layer, gemm); })
          ->ArgName("batch")
          ->Arg(1)
          ->Arg(8)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  return true;
}();

} // namespace

BENCHMARK_MAIN();
