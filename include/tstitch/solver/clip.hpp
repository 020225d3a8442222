// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "tstitch/core/config.hpp"

namespace tstitch {

/// diffusers' clip_sample: x0 clamped to [-range, range]; range <= 0 leaves it as it is.
[[nodiscard]] TSTITCH_HOST_DEVICE inline float clip_sample(float x0, float range) {
  return range > 0 ? (x0 < -range ? -range : (x0 > range ? range : x0)) : x0;
}

/// The update most solvers end with, element-wise and optionally clipping x0:
///   x0_coeff * clip(x0) + other_coeff * other [+ noise_coeff * z]
/// (DDIM: other = eps; DDPM's posterior mean and LCM: other = x_t), evaluated left to right.
struct ClippedCombination {
  float x0_coeff, other_coeff, noise_coeff, clip;
  TSTITCH_HOST_DEVICE float operator()(float x0, float other) const {
    return x0_coeff * clip_sample(x0, clip) + other_coeff * other;
  }
  TSTITCH_HOST_DEVICE float operator()(float x0, float other, float z) const {
    return x0_coeff * clip_sample(x0, clip) + other_coeff * other + noise_coeff * z;
  }
};

} // namespace tstitch
