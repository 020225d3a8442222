// SPDX-License-Identifier: Apache-2.0
#pragma once

// tstitch-sample --rng: where the noise comes from. philox (the default) is tstitch's own
// counter-based noise: image i gets the same noise in any batch and on either device. torch-cpu
// and torch-cuda reproduce a PyTorch generator seeded with --seed (torch.Generator("cpu") or
// torch.Generator("cuda") .manual_seed(seed)): each batch's x_T and then each stochastic step's
// noise are one torch.randn of the whole batch, in the order a diffusers pipeline draws them.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "tstitch/core/noise_source.hpp"

namespace tstitch_sample {

/// Adds --rng to the app, storing the name in `rng`.
inline void add_rng_option(CLI::App& app, std::string& rng) {
  app.add_option("--rng", rng,
                 "noise generator: philox (tstitch's; image i gets the same noise in any batch), "
                 "torch-cpu or torch-cuda (PyTorch's generator seeded with --seed, drawn per "
                 "batch in diffusers' order, as torch.randn on that device gives it)")
      ->capture_default_str();
}

/// The noise source --rng names for a run with `seed` on `device` ("cpu" or "cuda").
inline tstitch::NoiseSource noise_source(const std::string& rng, std::uint64_t seed,
                                         const std::string& device) {
  if (rng == "philox")
    return tstitch::NoiseSource::philox();
  if (rng != "torch-cpu" && rng != "torch-cuda")
    throw std::invalid_argument("--rng = '" + rng + "': must be philox, torch-cpu or torch-cuda");
  if (device != "cpu")
    throw std::invalid_argument(
        "--rng = '" + rng + "': PyTorch's generators are reproduced on the host sampler only; " +
        "--device " + device + " draws its noise with philox on the GPU (use --device cpu)");
  return rng == "torch-cpu" ? tstitch::NoiseSource::torch_cpu(seed)
                            : tstitch::NoiseSource::torch_cuda(seed);
}

} // namespace tstitch_sample
