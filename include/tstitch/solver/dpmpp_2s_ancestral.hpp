// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

/// Where DPMPP2SAncestral evaluates the model the second time in a step.
enum class DPMPP2SSecondEvaluation {
  /// At the midpoint in lambda between sigma and sigma_down, through the schedule's own maps
  /// (k-diffusion's sample_dpmpp_2s_ancestral). The default.
  midpoint,
  /// At the step's next point, on latents made for the midpoint: stable-diffusion.cpp's
  /// "dpm++2s_a", which passes sigmas[i + 1] to the model there. Offered for parity with it only;
  /// the method is then first order.
  next_point
};

struct DPMPP2SAncestralOptions {
  /// Scales the fresh noise of each step (k-diffusion's eta): 1 is k-diffusion's default and
  /// stable-diffusion.cpp's only value, 0 the deterministic DPM-Solver++(2S). Finite, >= 0;
  /// sigma_up is capped at sigma_next.
  double eta = 1.0;
  /// k-diffusion's s_noise: scales the noise added, not the split of the step. Finite, >= 0.
  double s_noise = 1.0;
  DPMPP2SSecondEvaluation second_evaluation = DPMPP2SSecondEvaluation::midpoint;

  friend bool operator==(const DPMPP2SAncestralOptions&, const DPMPP2SAncestralOptions&) = default;
};

/// Ancestral sampling with DPM-Solver++(2S) steps (Lu et al. 2022b; k-diffusion's
/// sample_dpmpp_2s_ancestral, stable-diffusion.cpp's "dpm++2s_a"). In k-diffusion's coordinates
/// y = x / alpha, s = sigma / alpha, each step splits s_next as Euler ancestral does,
///   s_up = min(s_next, eta sqrt(s_next^2 (s^2 - s_next^2) / s^2)),  s_down = sqrt(s_next^2 -
///   s_up^2),
/// and integrates the probability-flow ODE from s to s_down with the second-order singlestep
/// DPM-Solver++ (r = 1/2): with h = log(s / s_down),
///   evaluation 0 at points[i]:   y_mid = e^(-h/2) y - (e^(-h/2) - 1) x0,
///   evaluation 1 at s_mid = s e^(-h/2):  y_next = e^-h y - (e^-h - 1) x0(y_mid) + s_noise s_up z,
/// written back for x = alpha y at each point. The midpoint is mapped to model time by the
/// trajectory's timestep_at and to its point by point_at, so the model sees latents x = alpha_mid
/// y_mid at its own point.
///
/// Single-evaluation steps: where s_down = 0 (every step into sigma = 0, and eta large enough
/// that all of s_next is fresh noise) k-diffusion's Euler step, y = x0 (+ s_up z); from alpha = 0
/// (flow pure noise, s infinite) the first-order limit y_next = x0 + s_down eps + s_up z. With
/// eta = 0 the method is the deterministic DPM-Solver++(2S), second order.
class DPMPP2SAncestral {
public:
  explicit DPMPP2SAncestral(DPMPP2SAncestralOptions options = {}) : options_(options) {
    require(std::isfinite(options.eta) && options.eta >= 0, "DPMPP2SAncestralOptions::eta",
            options.eta, "must be finite and >= 0");
    require(std::isfinite(options.s_noise) && options.s_noise >= 0,
            "DPMPP2SAncestralOptions::s_noise", options.s_noise, "must be finite and >= 0");
  }

  [[nodiscard]] const DPMPP2SAncestralOptions& options() const { return options_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    require_towards_data(trajectory, "DPMPP2SAncestral");
    const int n = trajectory.steps();
    evaluations_.assign(static_cast<std::size_t>(std::max(n, 0)), 1);
    bool any_second = false, any_noise = false;
    for (int i = 0; i < n; ++i) {
      const Split split = split_of(trajectory[i], trajectory[i + 1]);
      if (split.s_up > 0)
        any_noise = true;
      if (trajectory[i].alpha != 0 && split.s_down > 0) {
        evaluations_[static_cast<std::size_t>(i)] = 2;
        any_second = true;
      }
    }
    if (any_second && options_.second_evaluation == DPMPP2SSecondEvaluation::midpoint)
      require(static_cast<bool>(trajectory.point_at) && static_cast<bool>(trajectory.timestep_at),
              "trajectory", "without point_at / timestep_at",
              "DPMPP2SAncestral evaluates the model at midpoints: sample with the schedule (the "
              "sampling loop sets both maps) or set them");
    if (any_second)
      ensure_workspace(backend, predictor_, batch, shape);
    if (any_noise && options_.s_noise > 0)
      ensure_workspace(backend, noise_, batch, shape);
  }

  /// 2, or 1 where s_down = 0 or alpha = 0 at the start (see the class comment).
  [[nodiscard]] int evaluations(int step) const {
    require(step >= 0 && static_cast<std::size_t>(step) < evaluations_.size(), "step", step,
            "is not a step of the trajectory passed to DPMPP2SAncestral::begin()");
    return evaluations_[static_cast<std::size_t>(step)];
  }
  /// Evaluation 0 at points[i]; evaluation 1 at the midpoint (or points[i + 1], see
  /// DPMPP2SSecondEvaluation), known once evaluation 0 has been applied.
  [[nodiscard]] TimePoint evaluation_point(const SolverStep& step) const {
    return step.evaluation == 0 ? step.from() : middle_;
  }
  /// Evaluation 1 sees y_mid, not x.
  [[nodiscard]] ConstView evaluation_input(const SolverStep& step, ConstView x) const {
    return step.evaluation == 0 ? x : ConstView(predictor_.view());
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& from = step.from();
    const TimePoint& to = step.to();
    const Split split = split_of(from, to);
    const auto noise_coeff = static_cast<float>(to.alpha * options_.s_noise * split.s_up);
    const ConstView x_in = x;
    auto add_noise = [&] {
      if (noise_coeff > 0) {
        backend.fill_normal(noise_.view(), step.noise);
        backend.combine(x, Term{1.0f, ConstView(x)}, Term{noise_coeff, ConstView(noise_.view())});
      }
    };

    if (evaluations(step.step) == 1) {
      if (from.alpha == 0) // y_next = x0 + s_down eps (+ noise): x = sigma eps here
        backend.combine(x, Term{static_cast<float>(to.alpha), out.x0},
                        Term{static_cast<float>(to.alpha * split.s_down), out.eps});
      else // s_down = 0: y_next = x0 (+ noise)
        backend.combine(x, Term{static_cast<float>(to.alpha), out.x0});
      add_noise();
      return;
    }

    const double s = from.ve_sigma();
    const double h = std::log(s) - std::log(split.s_down);
    if (step.evaluation == 0) {
      const double s_mid = s * std::exp(-0.5 * h);
      middle_ = options_.second_evaluation == DPMPP2SSecondEvaluation::midpoint
                    ? trajectory_point(*step.trajectory, s_mid)
                    : to;
      const double a = middle_.alpha;
      backend.combine(predictor_.view(),
                      Term{static_cast<float>(a / from.alpha * std::exp(-0.5 * h)), x_in},
                      Term{static_cast<float>(-a * std::expm1(-0.5 * h)), out.x0});
      return;
    }
    // Evaluation 1: x0 at the midpoint.
    backend.combine(x, Term{static_cast<float>(to.alpha / from.alpha * std::exp(-h)), x_in},
                    Term{static_cast<float>(-to.alpha * std::expm1(-h)), out.x0});
    add_noise();
  }

private:
  struct Split {
    double s_up = 0, s_down = 0;
  };

  /// k-diffusion's get_ancestral_step in VE sigmas (s_up = 0 into sigma = 0: no noise is added
  /// there, as in k-diffusion).
  [[nodiscard]] Split split_of(const TimePoint& from, const TimePoint& to) const {
    const double s_next = to.ve_sigma();
    Split split{0, s_next};
    if (options_.eta == 0 || to.sigma == 0)
      return split;
    if (from.alpha == 0) {
      split.s_up = std::min(s_next, options_.eta * s_next);
    } else {
      const double s = from.ve_sigma();
      const double ratio = s_next * s_next * (s * s - s_next * s_next) / (s * s);
      split.s_up = std::min(s_next, options_.eta * std::sqrt(std::max(0.0, ratio)));
    }
    split.s_down = std::sqrt(std::max(0.0, s_next * s_next - split.s_up * split.s_up));
    return split;
  }

  /// The schedule's point at VE sigma `ve_sigma`: its model time and signal scale, with sigma
  /// pinned to alpha * ve_sigma so the latents and the model's x0 conversion agree exactly (the
  /// point at that time may sit slightly off ve_sigma: point() and timestep_at() interpolate
  /// differently between training timesteps), as KDPM2 does.
  [[nodiscard]] static TimePoint trajectory_point(const Trajectory& trajectory, double ve_sigma) {
    const double time = trajectory.timestep_at(ve_sigma);
    const double alpha = trajectory.point_at(time).alpha;
    return TimePoint{time, alpha, alpha * ve_sigma};
  }

  DPMPP2SAncestralOptions options_;
  std::vector<unsigned char> evaluations_;
  TimePoint middle_{};
  AnyTensor predictor_; ///< y_mid at the midpoint's scale: evaluation 1's input
  AnyTensor noise_;
};

} // namespace tstitch
