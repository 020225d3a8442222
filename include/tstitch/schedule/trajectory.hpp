// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <functional>
#include <vector>

#include "tstitch/core/step.hpp"

namespace tstitch {

/// The n + 1 points of an n-step sampling run: step i evaluates the model at points[i] and moves
/// the latents to points[i + 1]; points[n] is where sampling ends (usually sigma = 0).
struct Trajectory {
  std::vector<TimePoint> points;
  /// The model-time horizon T (e.g. 1000 training timesteps), for rules stated as t / T.
  double num_train_timesteps = 0;
  /// The schedule's own maps, for solvers that evaluate the model between the points (KDPM2's
  /// log-midpoint sigma, PNDM's Runge-Kutta half steps): model time -> point, and VE sigma ->
  /// model time. The sampling loop sets both from the schedule it samples; they are empty in a
  /// trajectory built by hand, and such solvers then reject it in begin().
  std::function<TimePoint(double)> point_at = {};
  std::function<double(double)> timestep_at = {};

  [[nodiscard]] int steps() const { return static_cast<int>(points.size()) - 1; }
  [[nodiscard]] const TimePoint& operator[](int i) const {
    return points[static_cast<std::size_t>(i)];
  }
};

/// 1. A schedule maps model time t to the point (t, alpha_t, sigma_t).
template <class S>
concept maps_time_to_point = requires(const S& s, double t) {
  { s.point(t) } -> std::same_as<TimePoint>;
};

/// 2. It maps a noise-to-signal ratio sigma/alpha (a "VE sigma") back to model time.
template <class S>
concept maps_sigma_to_time = requires(const S& s, double ve_sigma) {
  { s.timestep_at(ve_sigma) } -> std::convertible_to<double>;
};

/// 3. It produces the trajectory of an n-step sampling run (and rejects n it cannot serve).
template <class S>
concept produces_trajectory = requires(const S& s, int n) {
  { s.trajectory(n) } -> std::same_as<Trajectory>;
};

/// A noise schedule: discrete DDPM schedules, flow matching, or a user's own.
template <class S>
concept NoiseSchedule = maps_time_to_point<S> && maps_sigma_to_time<S> && produces_trajectory<S>;

} // namespace tstitch
