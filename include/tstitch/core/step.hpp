// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>

namespace tstitch {

/// One point of a noise schedule: latents there are x_t = alpha * x0 + sigma * eps.
struct TimePoint {
  double timestep = 0; ///< the model time the network is conditioned on (e.g. 0..999 for DDPM)
  double alpha = 1;    ///< signal scale
  double sigma = 0;    ///< noise scale

  /// The noise-to-signal ratio sigma / alpha: what k-diffusion and diffusers' Euler call "sigma"
  /// (a variance-exploding sigma). Infinite where alpha = 0 (pure noise on a flow schedule).
  [[nodiscard]] double ve_sigma() const {
    return alpha == 0 ? std::numeric_limits<double>::infinity() : sigma / alpha;
  }
  /// log(alpha^2 / sigma^2); +inf at sigma = 0.
  [[nodiscard]] double log_snr() const { return 2.0 * (std::log(alpha) - std::log(sigma)); }
};

/// Which of a composite denoiser's models serve an evaluation, as the sampling loop routed the
/// step: a stitcher dispatches predict() on it rather than remembering its last answer. One model
/// serves the whole batch, or (a RowStitcher) each row has its own.
struct Serving {
  /// The model serving every row; empty where no loop routed the step (a context built by hand,
  /// or one a wrapper passes on to a model inside it), and the denoiser then decides itself.
  std::optional<std::size_t> model;
  /// The model of each batch row, for a step routed per row (see stitch/row_stitcher.hpp); empty
  /// otherwise. It views the loop's workspace, valid for the step's evaluations.
  std::span<const std::size_t> rows{};
};

/// What a denoiser is told about the evaluation it is asked for.
struct StepContext {
  int step = 0;       ///< sampling step i, 0-based
  int num_steps = 0;  ///< n, the number of sampling steps of this run
  int evaluation = 0; ///< which model evaluation of step i (0, or 1 for the second stage of Heun)
  TimePoint point{};  ///< where the model is evaluated
  Serving serving{};  ///< the model(s) the loop routed step i to (set for denoisers that route)

  [[nodiscard]] double timestep() const { return point.timestep; }
  [[nodiscard]] double alpha() const { return point.alpha; }
  [[nodiscard]] double sigma() const { return point.sigma; }
};

} // namespace tstitch
