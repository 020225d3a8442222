// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

namespace detail {

/// The step plan and arithmetic shared by KDPM2 and KDPM2Ancestral (k-diffusion's sample_dpm_2 is
/// sample_dpm_2_ancestral at eta = 0, and both classes take the same code path there, so the two
/// agree bit for bit). In y = x / alpha, s = sigma / alpha coordinates, with d = (y - x0) / s
/// (= eps), step i from s to s_next:
///   s_up   = min(s_next, eta * sqrt(s_next^2 (s^2 - s_next^2) / s^2))   (0 without noise)
///   s_down = sqrt(s_next^2 - s_up^2)                                    (s_next without noise)
///   s_mid  = exp(lerp(log s, log s_down, 1/2)), the log-midpoint
///   evaluation 0 at points[i]:  d0, predictor y_mid = y + (s_mid - s) d0
///   evaluation 1 at s_mid:      d1 from the model at y_mid, y_next = y + (s_down - s) d1 + s_up z
/// written back for x = alpha * y.
class KDPM2Steps {
public:
  explicit KDPM2Steps(double eta) : eta_(eta) {}

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape,
             const char* solver) {
    const auto n = static_cast<std::size_t>(trajectory.steps());
    plans_.assign(n, Plan{});
    bool any_second = false;
    for (std::size_t i = 0; i < n; ++i) {
      Plan& plan = plans_[i];
      const TimePoint& t = trajectory[static_cast<int>(i)];
      const TimePoint& s = trajectory[static_cast<int>(i) + 1];
      const double s_next = s.ve_sigma();
      if (eta_ > 0 && s.sigma > 0) {
        if (t.alpha == 0) {
          plan.s_up = std::min(s_next, eta_ * s_next);
        } else {
          const double s_from = t.ve_sigma();
          const double ratio = s_next * s_next * (s_from * s_from - s_next * s_next) /
                               (s_from * s_from); // k-diffusion's order of operations
          plan.s_up = std::min(s_next, eta_ * std::sqrt(std::max(0.0, ratio)));
        }
      }
      // Without noise s_down is s_next itself (not sqrt(s_next^2)), so eta = 0 is plain KDPM2.
      plan.s_down = plan.s_up == 0
                        ? s_next
                        : std::sqrt(std::max(0.0, s_next * s_next - plan.s_up * plan.s_up));
      // One Euler evaluation into s_down = 0 (diffusers' and k-diffusion's last step; also an
      // ancestral step with eta capped at s_up = s_next) and from alpha = 0, where s is infinite.
      if (plan.s_down == 0 || s.sigma == 0 || t.alpha == 0)
        continue;
      plan.evaluations = 2;
      any_second = true;
      const double s_from = t.ve_sigma();
      const double log_s = std::log(s_from);
      const double s_mid = std::exp(log_s + 0.5 * (std::log(plan.s_down) - log_s));
      plan.mid_ve_sigma = s_mid;
    }
    if (any_second) {
      const std::string why = detail::concat("is needed by ", solver,
                                             " for its log-midpoint evaluations (sample() sets it; "
                                             "set it on a hand-built trajectory)");
      require(static_cast<bool>(trajectory.timestep_at), "Trajectory::timestep_at", "empty", why);
      require(static_cast<bool>(trajectory.point_at), "Trajectory::point_at", "empty", why);
      for (Plan& plan : plans_) {
        if (plan.evaluations != 2)
          continue;
        // The model is told the schedule's own time for s_mid (diffusers' timesteps_interpol);
        // the latents sit at s_mid exactly, with the schedule's signal scale at that time (VP:
        // 1 / sqrt(1 + s^2) up to its interpolation; flow: 1 - t; VE: 1).
        const double time = trajectory.timestep_at(plan.mid_ve_sigma);
        const double alpha = trajectory.point_at(time).alpha;
        plan.midpoint = TimePoint{time, alpha, alpha * plan.mid_ve_sigma};
      }
    }
    auto ensure = [&](AnyTensor& t) { ensure_workspace(backend, t, batch, shape); };
    if (any_second)
      ensure(predictor_);
    if (eta_ > 0)
      ensure(noise_);
  }

  [[nodiscard]] int evaluations(int step, const char* solver) const {
    if (step < 0 || static_cast<std::size_t>(step) >= plans_.size()) // no string on the hot path
      throw_invalid_argument(
          "step", step,
          detail::concat("is not a step of the trajectory passed to ", solver, "::begin()"));
    return plans_[static_cast<std::size_t>(step)].evaluations;
  }

  [[nodiscard]] TimePoint evaluation_point(const SolverStep& step) const {
    return step.evaluation == 0 ? step.from()
                                : plans_[static_cast<std::size_t>(step.step)].midpoint;
  }

  [[nodiscard]] ConstView evaluation_input(const SolverStep& step, ConstView x) const {
    return step.evaluation == 0 ? x : ConstView(predictor_.view());
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const Plan& plan = plans_[static_cast<std::size_t>(step.step)];
    const TimePoint& t = step.from();
    const TimePoint& s = step.to();
    const ConstView x_in = x;
    if (step.evaluation == 0 && plan.evaluations == 2) {
      // y_mid = y + (s_mid - s) d0, as x_mid = alpha_mid y_mid; x is kept for evaluation 1.
      const TimePoint& m = plan.midpoint;
      backend.combine(predictor_.view(), Term{static_cast<float>(m.alpha / t.alpha), x_in},
                      Term{static_cast<float>(m.sigma - m.alpha * (t.sigma / t.alpha)), out.eps});
      return;
    }
    // The step's end: the Euler step with d0 (single evaluation) or the midpoint slope d1.
    // alpha_next * s_down; without noise sigma_next itself, which keeps the single-evaluation
    // step bit-identical to tstitch::Euler.
    const double alpha_s_down = plan.s_up == 0 ? s.sigma : s.alpha * plan.s_down;
    const auto noise_coeff = static_cast<float>(s.alpha * plan.s_up);
    if (noise_coeff > 0)
      backend.fill_normal(noise_.view(), step.noise);
    const ConstView z = noise_coeff > 0 ? ConstView(noise_.view()) : ConstView{};
    if (t.alpha == 0) { // the limit from pure noise: alpha_next (x0 + s_down eps + s_up z)
      const auto x0_coeff = static_cast<float>(s.alpha);
      const auto eps_coeff = static_cast<float>(alpha_s_down);
      if (noise_coeff > 0)
        backend.combine(x, Term{x0_coeff, out.x0}, Term{eps_coeff, out.eps}, Term{noise_coeff, z});
      else
        backend.combine(x, Term{x0_coeff, out.x0}, Term{eps_coeff, out.eps});
      return;
    }
    const auto x_coeff = static_cast<float>(s.alpha / t.alpha);
    const auto eps_coeff = static_cast<float>(alpha_s_down - s.alpha * (t.sigma / t.alpha));
    if (noise_coeff > 0)
      backend.combine(x, Term{x_coeff, x_in}, Term{eps_coeff, out.eps}, Term{noise_coeff, z});
    else
      backend.combine(x, Term{x_coeff, x_in}, Term{eps_coeff, out.eps});
  }

private:
  struct Plan {
    int evaluations = 1;
    double s_up = 0, s_down = 0; ///< VE sigmas of the fresh noise and of the deterministic part
    double mid_ve_sigma = 0;     ///< s_mid
    TimePoint midpoint{};        ///< evaluation 1's point
  };

  double eta_;
  std::vector<Plan> plans_;
  AnyTensor predictor_; ///< y_mid as latents at the midpoint: evaluation 1's input
  AnyTensor noise_;
};

} // namespace detail

/// DPM-Solver-2 in Karras et al.'s form (k-diffusion's sample_dpm_2; diffusers'
/// KDPM2DiscreteScheduler): a midpoint method in log sigma on the probability-flow ODE. Each step
/// evaluates the model at points[i], takes an Euler half step to the log-midpoint
/// s_mid = sqrt(s s_next) (VE sigmas s = sigma / alpha), evaluates the model there and takes the
/// whole step with that midpoint slope:
///   y_mid = y + (s_mid - s) d0,   y_next = y + (s_next - s) d1,   y = x / alpha, d = eps.
/// Second order; two model evaluations per step.
///
/// The midpoint evaluation is told the model time trajectory.timestep_at(s_mid) (diffusers'
/// timesteps_interpol: sigma_to_t of the interpolated sigma, not rounded) while its latents sit
/// at s_mid exactly, with the signal scale of trajectory.point_at at that time. begin() needs
/// both maps; sample() sets them from the schedule.
///
/// Single-evaluation steps (a plain Euler step, bit-identical to tstitch::Euler):
///  - into sigma = 0: diffusers' timestep list has 2n - 1 entries and k-diffusion steps with
///    Euler when sigma_next == 0, so an n-step run into a clean point costs 2n - 1 evaluations;
///  - from alpha = 0 (pure noise of a flow schedule), where s is infinite: Euler's limit
///    alpha_next x0 + sigma_next eps.
///
/// No history is carried from step to step, so a model switch needs no policy; both evaluations
/// of a step carry the step's index (StepContext::step), so a stitcher that routes by step serves
/// both with the step's model.
class KDPM2 {
public:
  KDPM2() = default;

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    steps_.begin(backend, trajectory, batch, shape, "KDPM2");
  }
  /// 2, or 1 for a step into sigma = 0 or from alpha = 0.
  [[nodiscard]] int evaluations(int step) const { return steps_.evaluations(step, "KDPM2"); }
  /// Evaluation 0 at points[i], evaluation 1 at the log-midpoint.
  [[nodiscard]] TimePoint evaluation_point(const SolverStep& step) const {
    return steps_.evaluation_point(step);
  }
  /// Evaluation 1 sees the Euler half step, not x.
  [[nodiscard]] ConstView evaluation_input(const SolverStep& step, ConstView x) const {
    return steps_.evaluation_input(step, x);
  }
  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    steps_.update(backend, step, out, x);
  }

private:
  detail::KDPM2Steps steps_{0.0};
};

struct KDPM2AncestralOptions {
  /// Scales the fresh noise of each step (k-diffusion's eta): 1 is diffusers'
  /// KDPM2AncestralDiscreteScheduler (which has no eta), 0 is KDPM2 bit for bit. Must be finite and
  /// >= 0; above 1, sigma_up is capped at sigma_next as in k-diffusion, and a step whose s_down
  /// becomes 0 is a single Euler evaluation.
  double eta = 1.0;

  friend bool operator==(const KDPM2AncestralOptions&, const KDPM2AncestralOptions&) = default;
};

/// Ancestral DPM-Solver-2 (k-diffusion's sample_dpm_2_ancestral; diffusers'
/// KDPM2AncestralDiscreteScheduler is eta = 1). Each step splits s_next into s_down and fresh
/// noise s_up as Euler ancestral does (see EulerAncestral), takes KDPM2's midpoint step to s_down
/// (midpoint s_mid = sqrt(s s_down)) and adds s_up z, z drawn from step.noise:
///   y_mid = y + (s_mid - s) d0,   y_next = y + (s_down - s) d1 + s_up z.
/// Steps into sigma = 0 are single Euler evaluations without noise (2n - 1 evaluations in all, as
/// in diffusers); from alpha = 0 the limit alpha_next (x0 + s_down eps + s_up z), s_up =
/// min(1, eta) s_next, is taken in one evaluation.
class KDPM2Ancestral {
public:
  explicit KDPM2Ancestral(KDPM2AncestralOptions options = {})
      : options_(options), steps_(options.eta) {
    require(std::isfinite(options.eta) && options.eta >= 0, "KDPM2AncestralOptions::eta",
            options.eta, "must be finite and >= 0");
  }

  [[nodiscard]] const KDPM2AncestralOptions& options() const { return options_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    require_towards_data(trajectory, "KDPM2Ancestral");
    steps_.begin(backend, trajectory, batch, shape, "KDPM2Ancestral");
  }
  /// 2, or 1 for a step into sigma = 0, from alpha = 0 or with s_down = 0 (eta > 1).
  [[nodiscard]] int evaluations(int step) const {
    return steps_.evaluations(step, "KDPM2Ancestral");
  }
  /// Evaluation 0 at points[i], evaluation 1 at the log-midpoint of s and s_down.
  [[nodiscard]] TimePoint evaluation_point(const SolverStep& step) const {
    return steps_.evaluation_point(step);
  }
  [[nodiscard]] ConstView evaluation_input(const SolverStep& step, ConstView x) const {
    return steps_.evaluation_input(step, x);
  }
  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    steps_.update(backend, step, out, x);
  }

private:
  KDPM2AncestralOptions options_;
  detail::KDPM2Steps steps_;
};

} // namespace tstitch
