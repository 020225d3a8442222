// SPDX-License-Identifier: Apache-2.0
// 1b. The seam kernel between two sublayers (residual_layernorm_modulate) at one model's shape,
// with its parameters read per warp (global) and staged per block (shared): microseconds per
// call, median of 7 blocks of 50 back-to-back launches.
#include <cstdint>
#include <string>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace bench {

SeamRow measure_seam(const std::string& shape, std::int64_t rows, int dim, cudaStream_t stream) {
  namespace k = tstitch::cuda::kernels;
  using tstitch::cuda::DeviceBuffer;
  constexpr int tokens = 256; // 32 x 32 latents, patch 2
  const int mod_ld = 6 * dim;
  DeviceBuffer<float> h(rows * dim), bias(dim), mod(rows / tokens * mod_ld);
  DeviceBuffer<std::uint16_t> y(rows * dim), out(rows * dim);
  fill_small(h, stream);
  fill_small(bias, stream);
  fill_small(mod, stream);
  fill_small(y, stream);
  auto time_us = [&](k::ParamStaging staging) {
    auto launch = [&] {
      k::residual_layernorm_modulate(h.data(), y.data(), bias.data(), mod.data(), mod_ld, 2 * dim,
                                     3 * dim, 4 * dim, out.data(), dim, tokens, dim, rows, stream,
                                     1e-6f, staging);
    };
    for (int i = 0; i < 5; ++i)
      launch();
    EventTimer timer;
    std::vector<double> blocks;
    for (int b = 0; b < 7; ++b)
      blocks.push_back(1000.0 * timer.time_ms(stream, [&] {
        for (int i = 0; i < 50; ++i)
          launch();
      }) / 50.0);
    return median(blocks);
  };
  SeamRow row{shape, rows, dim};
  row.global_us = time_us(k::ParamStaging::global);
  row.shared_us = time_us(k::ParamStaging::shared);
  return row;
}

} // namespace bench
