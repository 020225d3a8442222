// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <ostream>
#include <string_view>

#include "tstitch/core/config.hpp"

namespace tstitch {

/// What a denoiser's raw output means, for latents x_t = alpha * x0 + sigma * eps.
enum class Prediction : std::uint8_t {
  epsilon,               ///< the noise eps
  v,                     ///< v = alpha * eps - sigma * x0 (Salimans & Ho)
  sample,                ///< the clean sample x0
  flow,                  ///< rectified-flow velocity u = eps - x0
  epsilon_learned_sigma, ///< 2C channels: eps, then the variance interpolation value (DiT, iDDPM)
};

[[nodiscard]] constexpr std::string_view to_string(Prediction p) {
  switch (p) {
  case Prediction::epsilon:
    return "epsilon";
  case Prediction::v:
    return "v";
  case Prediction::sample:
    return "sample";
  case Prediction::flow:
    return "flow";
  case Prediction::epsilon_learned_sigma:
    return "epsilon_learned_sigma";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& out, Prediction p) { return out << to_string(p); }

/// Channels of the raw output for latents with `latent_channels` channels.
[[nodiscard]] constexpr std::int64_t output_channels(Prediction p, std::int64_t latent_channels) {
  return p == Prediction::epsilon_learned_sigma ? 2 * latent_channels : latent_channels;
}

/// x0 and eps as linear functions of (x_t, m), m being the raw prediction:
///   x0  = x0_from_x  * x_t + x0_from_m  * m
///   eps = eps_from_x * x_t + eps_from_m * m
/// Every prediction type is linear in (x_t, m) for fixed (alpha, sigma), so converting is two
/// linear combinations whatever the backend. The formulas hold for any schedule, not only
/// variance-preserving ones (v and flow divide by alpha^2 + sigma^2 and alpha + sigma, both 1 on
/// their native schedules).
struct PredictionConversion {
  double x0_from_x, x0_from_m, eps_from_x, eps_from_m;
};

[[nodiscard]] TSTITCH_HOST_DEVICE constexpr PredictionConversion
conversion(Prediction p, double alpha, double sigma) {
  switch (p) {
  case Prediction::epsilon:
  case Prediction::epsilon_learned_sigma:
    return {1.0 / alpha, -sigma / alpha, 0.0, 1.0};
  case Prediction::v: {
    const double norm = alpha * alpha + sigma * sigma;
    return {alpha / norm, -sigma / norm, sigma / norm, alpha / norm};
  }
  case Prediction::sample:
    return {0.0, 1.0, 1.0 / sigma, -alpha / sigma};
  case Prediction::flow: {
    const double norm = alpha + sigma;
    return {1.0 / norm, -sigma / norm, 1.0 / norm, alpha / norm};
  }
  }
  return {0.0, 0.0, 0.0, 0.0};
}

} // namespace tstitch
