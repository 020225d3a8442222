// SPDX-License-Identifier: Apache-2.0
// 2. The DiT forward of one model at one batch (each batch doubled for classifier-free guidance),
// graphs on: time, TFLOP/s with FLOPs = 2 x Config::macs() x forward batch, fraction of the GEMM
// peak; the first call's cost; at 1 and 8 images also one guided evaluation as two N-row
// predicts against one predict_guided (2N rows in one forward).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace bench {

ForwardRow measure_forward(DitModel& model, const std::string& name, int images, int repeats,
                           const tstitch::Trajectory& trajectory, double peak_tflops) {
  ForwardRow row;
  row.model = name;
  row.images = images;
  row.rows = 2 * static_cast<std::int64_t>(images);
  const tstitch::dit::Config& cfg = model.config();
  Batch b = make_batch(cfg, row.rows, static_cast<std::uint64_t>(images), model.stream());
  const cudaStream_t stream = model.stream();
  int call = 0;
  auto predict = [&] {
    model.predict(b.x.view(), context(trajectory, call++), b.labels, b.out.view());
  };
  // Warm-up: the first call captures the graph (timed on the host only, as first_call_ms), the
  // next ones settle clocks.
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto first_start = std::chrono::steady_clock::now();
  predict();
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  row.first_call_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first_start)
          .count();
  for (int i = 0; i < 2; ++i)
    predict();
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  EventTimer timer;
  const double single = timer.time_ms(stream, predict);
  // Blocks of about 5 ms: long against event resolution and launch jitter, short enough that
  // a repeat of the slowest configuration stays one call.
  row.calls_per_repeat =
      std::clamp(static_cast<int>(std::ceil(5.0 / std::max(single, 1e-3))), 1, 50);
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r)
    times.push_back(timer.time_ms(stream, [&] {
      for (int k = 0; k < row.calls_per_repeat; ++k)
        predict();
    }) / row.calls_per_repeat);
  row.ms = median(times);
  row.tflops = 2.0 * cfg.macs() * static_cast<double>(row.rows) / (row.ms * 1e9);
  row.fraction_of_peak = row.tflops / peak_tflops;

  if (images <= 8) { // where the GPU is underused and one 2N batch should beat two N batches
    const tstitch::View x = b.x.view();
    const tstitch::ConstView x_half = tstitch::ConstView(x).samples(0, images);
    const tstitch::View out_cond = tstitch::View(b.out.view()).samples(0, images);
    const tstitch::View out_uncond = tstitch::View(b.out.view()).samples(images, images);
    const std::vector<int> cond(b.labels.begin(), b.labels.begin() + images);
    const std::vector<int> uncond(b.labels.begin() + images, b.labels.end());
    auto two_calls = [&] {
      const tstitch::StepContext ctx = context(trajectory, call++);
      model.predict(x_half, ctx, cond, out_cond);
      model.predict(x_half, ctx, uncond, out_uncond);
    };
    auto guided = [&] {
      model.predict_guided(x_half, context(trajectory, call++), cond, uncond, out_cond, out_uncond);
    };
    for (int i = 0; i < 3; ++i) { // the N-row graph's capture, then clocks
      two_calls();
      guided();
    }
    TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<double> two, one;
    for (int r = 0; r < repeats; ++r) { // interleaved, so drifting clocks hit both
      two.push_back(timer.time_ms(stream, [&] {
        for (int k = 0; k < row.calls_per_repeat; ++k)
          two_calls();
      }) / row.calls_per_repeat);
      one.push_back(timer.time_ms(stream, [&] {
        for (int k = 0; k < row.calls_per_repeat; ++k)
          guided();
      }) / row.calls_per_repeat);
    }
    row.two_calls_ms = median(two);
    row.guided_ms = median(one);
  }
  return row;
}

} // namespace bench
