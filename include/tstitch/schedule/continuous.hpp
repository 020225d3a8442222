// SPDX-License-Identifier: Apache-2.0
#pragma once

// ContinuousSchedule: a noise schedule given as a function of continuous model time, for users
// with their own schedules (log-SNR-linear, EDM-style, cosine VP) and for tests that need exactly
// known step sizes (uniform in t) and an exact clean end (sigma = 0).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// A schedule t -> (alpha(t), sigma(t)) over the model-time interval from t_start (the noisy end)
/// to t_end (the clean end); t_start may be above or below t_end.
///
/// The user's function returns a TimePoint; its alpha and sigma are used and its timestep field is
/// replaced by t (the schedule, not the function, owns model time). The noise-to-signal ratio
/// sigma / alpha must be monotonic over the interval and larger at t_start: timestep_at inverts it
/// by bisection.
class ContinuousSchedule {
public:
  using Function = std::function<TimePoint(double)>;

  /// Where cosine() starts by default: the end time of DPM-Solver's cosine VP schedule. There
  /// alpha = 0.0085 and log(alpha^2 / sigma^2) = -9.5, near DDPM's linear schedule's -10.1.
  static constexpr double cosine_t_max = 0.9946;

  /// `horizon` is the model-time scale T reported in Trajectory::num_train_timesteps (for rules
  /// stated as t / T); 0 picks max(|t_start|, |t_end|).
  ContinuousSchedule(Function function, double t_start, double t_end, double horizon = 0.0)
      : function_(std::move(function)), t_start_(t_start), t_end_(t_end), horizon_(horizon) {
    require(static_cast<bool>(function_), "function", "empty", "must be callable");
    require(std::isfinite(t_start_), "t_start", t_start_, "must be finite");
    require(std::isfinite(t_end_), "t_end", t_end_, "must be finite");
    require(t_start_ != t_end_, "t_end", t_end_, "must differ from t_start");
    require(horizon_ >= 0 && std::isfinite(horizon_), "horizon", horizon_,
            "must be finite and non-negative (0: max(|t_start|, |t_end|))");
    if (horizon_ == 0)
      horizon_ = std::max(std::fabs(t_start_), std::fabs(t_end_));
    // The noisy end must be noisier; checking here catches swapped ends before any sampling.
    const double noisy = point(t_start_).ve_sigma();
    const double clean = point(t_end_).ve_sigma();
    require(noisy > clean, "t_start", t_start_,
            detail::concat("must be the noisy end: sigma/alpha there (", noisy,
                           ") must exceed that at t_end (", clean, ")"));
  }

  /// Variance-preserving cosine schedule (Nichol & Dhariwal): alpha = cos(pi/2 t),
  /// sigma = sin(pi/2 t), t from t_start down to t_end within [0, 1]. alpha is evaluated as
  /// sin(pi/2 (1 - t)) so that both ends are exact: t = 0 gives sigma = 0, t = 1 alpha = 0.
  /// The default t_start, cosine_t_max, keeps alpha > 0: at t = 1 an epsilon model's
  /// x0 = (x - sigma eps) / alpha is 0/0 under every solver. t_start = 1 (pure noise) suits models
  /// that predict x0, v or flow.
  [[nodiscard]] static ContinuousSchedule cosine(double t_start = cosine_t_max,
                                                 double t_end = 0.0) {
    require(t_start >= 0 && t_start <= 1, "t_start", t_start, "must lie in [0, 1]");
    require(t_end >= 0 && t_end <= 1, "t_end", t_end, "must lie in [0, 1]");
    constexpr double half_pi = 1.5707963267948966;
    return ContinuousSchedule(
        [](double t) {
          return TimePoint{t, std::sin(half_pi * (1.0 - t)), std::sin(half_pi * t)};
        },
        t_start, t_end, 1.0);
  }

  /// The rectified-flow line alpha = 1 - t, sigma = t, from t_start down to t_end within [0, 1]
  /// (defaults: the whole line, from pure noise at t = 1 to the exact clean end at t = 0).
  [[nodiscard]] static ContinuousSchedule linear_flow(double t_start = 1.0, double t_end = 0.0) {
    require(t_start >= 0 && t_start <= 1, "t_start", t_start, "must lie in [0, 1]");
    require(t_end >= 0 && t_end <= 1, "t_end", t_end, "must lie in [0, 1]");
    return ContinuousSchedule(
        [](double t) {
          return TimePoint{t, 1.0 - t, t};
        },
        t_start, t_end, 1.0);
  }

  // ---- NoiseSchedule -------------------------------------------------------------------------

  /// The user's point at t, which must lie between t_start and t_end (inclusive). Throws if the
  /// function returns a negative or non-finite alpha or sigma.
  [[nodiscard]] TimePoint point(double t) const {
    require(t >= lower() && t <= upper(), "t", t,
            detail::concat("must lie between t_start (", t_start_, ") and t_end (", t_end_, ")"));
    TimePoint p = function_(t);
    p.timestep = t;
    require(p.alpha >= 0 && std::isfinite(p.alpha), "alpha(t)", p.alpha,
            detail::concat("must be finite and non-negative (at t = ", t, ")"));
    require(p.sigma >= 0 && std::isfinite(p.sigma), "sigma(t)", p.sigma,
            detail::concat("must be finite and non-negative (at t = ", t, ")"));
    return p;
  }

  /// The model time whose sigma / alpha equals ve_sigma, by bisection between t_end and t_start
  /// down to adjacent doubles. ve_sigma must lie within the values at the two ends.
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    require(ve_sigma >= 0, "ve_sigma", ve_sigma, "must be non-negative (and not NaN)");
    double clean_t = t_end_;
    double noisy_t = t_start_;
    const double clean = point(clean_t).ve_sigma();
    const double noisy = point(noisy_t).ve_sigma();
    require(ve_sigma >= clean && ve_sigma <= noisy, "ve_sigma", ve_sigma,
            detail::concat("is not bracketed by the schedule's range [", clean, ", ", noisy, "]"));
    if (ve_sigma == clean)
      return clean_t;
    if (ve_sigma == noisy)
      return noisy_t;
    // Invariant: ve(clean_t) < ve_sigma < ve(noisy_t). Stops when the midpoint is one of the ends
    // (at most ~2100 halvings from any finite interval).
    for (;;) {
      const double mid = clean_t + (noisy_t - clean_t) / 2;
      if (mid == clean_t || mid == noisy_t)
        break;
      const double v = point(mid).ve_sigma();
      if (v == ve_sigma)
        return mid;
      (v < ve_sigma ? clean_t : noisy_t) = mid;
    }
    // The closer of the two adjacent bracketing times.
    const double to_clean = ve_sigma - point(clean_t).ve_sigma();
    const double to_noisy = point(noisy_t).ve_sigma() - ve_sigma;
    return to_clean <= to_noisy ? clean_t : noisy_t;
  }

  /// n + 1 points uniformly spaced in t from t_start to t_end, both ends exact.
  [[nodiscard]] Trajectory trajectory(int n) const {
    require(n >= 1, "num_steps", n, "must be at least 1");
    Trajectory traj;
    traj.num_train_timesteps = horizon_;
    traj.points.reserve(static_cast<std::size_t>(n) + 1);
    const double span = t_end_ - t_start_;
    for (int i = 0; i < n; ++i)
      traj.points.push_back(point(t_start_ + span * (static_cast<double>(i) / n)));
    traj.points.push_back(point(t_end_));
    return traj;
  }

  // ---- accessors -----------------------------------------------------------------------------

  [[nodiscard]] double t_start() const { return t_start_; }
  [[nodiscard]] double t_end() const { return t_end_; }
  [[nodiscard]] double horizon() const { return horizon_; }

private:
  [[nodiscard]] double lower() const { return std::min(t_start_, t_end_); }
  [[nodiscard]] double upper() const { return std::max(t_start_, t_end_); }

  Function function_;
  double t_start_;
  double t_end_;
  double horizon_;
};

static_assert(NoiseSchedule<ContinuousSchedule>);

} // namespace tstitch
