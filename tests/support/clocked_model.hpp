// SPDX-License-Identifier: Apache-2.0
#pragma once

// A fake model for the latency tests: each predict advances a fake clock by its cost, and the
// prediction (gain * x) tells which model served a step.
#include <cstdint>

#include "tstitch/core/denoiser.hpp"

namespace tstitch::test {

/// Clock: any type with a `double now` (seconds).
template <class Clock> struct ClockedModel {
  using condition_type = NoCondition;
  Clock* clock;
  double cost; // seconds per predict call
  float gain;
  [[nodiscard]] Prediction prediction() const { return Prediction::epsilon; }
  [[nodiscard]] Shape latent_shape() const { return {1, 2, 2}; }
  void predict(ConstView x, const StepContext&, const NoCondition&, View out) {
    clock->now += cost;
    for (std::int64_t i = 0; i < out.numel(); ++i)
      out.data()[i] = gain * x.data()[i];
  }
};

} // namespace tstitch::test
