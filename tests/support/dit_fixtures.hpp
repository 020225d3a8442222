// SPDX-License-Identifier: Apache-2.0
// What the CPU DiT tests share: a tiny configuration, the GEMM libraries built in, and one
// forward on seeded noise.
#pragma once

#include <cstdint>
#include <vector>

#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

namespace tstitch::testing {

/// DiT with 8 x 8 latents of 4 channels, patch 2 (16 tokens), hidden 64, 4 heads, 2 blocks.
inline dit::Config tiny_dit_config() {
  dit::Config c;
  c.input_size = 8;
  c.patch_size = 2;
  c.in_channels = 4;
  c.hidden_size = 64;
  c.depth = 2;
  c.num_heads = 4;
  c.num_classes = 10;
  c.learn_sigma = true;
  return c;
}

inline std::vector<dit::Gemm> available_gemms() {
  std::vector<dit::Gemm> gemms{dit::Gemm::eigen};
  if (dit::gemm_available(dit::Gemm::onednn))
    gemms.push_back(dit::Gemm::onednn);
  return gemms;
}

/// The model's output at time t for a batch of standard normal latents from noise streams (5,
/// first_sample + row): image k of a batch gets the same input as image k alone with
/// first_sample = k.
inline Tensor dit_forward(dit::CpuModel& model, std::int64_t batch, double t,
                          const std::vector<int>& labels, std::uint32_t first_sample = 0) {
  const dit::Config& c = model.config();
  Tensor x(batch, c.latent_shape());
  HostBackend{}.fill_normal(x, NoiseKey{5, first_sample, 0, 0});
  Tensor out(batch, Shape{c.out_channels(), c.input_size, c.input_size});
  StepContext ctx;
  ctx.point.timestep = t;
  model.predict(x, ctx, labels, out);
  return out;
}

} // namespace tstitch::testing
