// SPDX-License-Identifier: Apache-2.0
// sample() with whichever solver a std::variant holds (the device-sampling tests name their
// solvers as cuda::DeviceSolver, a variant, and run the host loop as the reference).
#pragma once

#include <variant>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/sample.hpp"

namespace tstitch::testing {

/// Samples x on the host with a fresh copy of the solver `solvers` holds (solvers keep state).
template <Denoiser D, NoiseSchedule S, class... Solvers>
SampleResult sample_with(D& denoiser, const S& schedule, const std::variant<Solvers...>& solvers,
                         View x, const condition_of<D>& cond, const SampleOptions& options) {
  return std::visit(
      [&](const auto& held) {
        auto solver = held;
        return sample(denoiser, schedule, solver, x, cond, options);
      },
      solvers);
}

} // namespace tstitch::testing
