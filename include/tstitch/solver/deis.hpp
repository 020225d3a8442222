// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/multistep.hpp"

namespace tstitch {

/// Options of DEIS; the defaults are those of diffusers' DEISMultistepScheduler
/// (algorithm_type "deis", solver_type "logrho": the only variant diffusers implements). Schedule
/// options (spacing, karras sigmas, the final point) belong to the schedule.
struct DEISOptions {
  int solver_order = 2; ///< 1, 2 or 3
  /// First order at the last step and at most second order at the one before, in runs of fewer
  /// than 15 steps.
  bool lower_order_final = true;
  /// Dynamic thresholding of each data prediction before it is turned into eps (diffusers'
  /// thresholding=True); unset: off.
  std::optional<DynamicThresholding> thresholding;
  /// At a model switch: keep the previous model's outputs, or restart at first order.
  HistoryPolicy history = HistoryPolicy::keep;

  friend bool operator==(const DEISOptions&, const DEISOptions&) = default;
};

/// DEIS (Zhang & Chen 2022, "Fast Sampling of Diffusion Models with Exponential Integrator") in
/// its multistep log-rho form: diffusers' DEISMultistepScheduler on the same trajectory. With
/// rho = sigma / alpha the probability-flow ODE is d(x / alpha)/d rho = eps; a step integrates
/// the Lagrange polynomial in log rho through the noise predictions of the last 1-3 points
/// exactly over rho:
///   x_t = alpha_t (x / alpha_s + sum_j c_j eps_j),  c_j = integral_{rho_s}^{rho_t} L_j(log rho) d
///   rho.
/// First order this is DDIM. The eps stored are diffusers' (x - alpha x0) / sigma of the
/// (thresholded) data prediction.
///
/// Order at step i of n: 1 while there is no earlier output, then up to solver_order; 1 at the
/// last step and at most 2 at the one before with lower_order_final and n < 15. A step into a
/// clean point (rho_t = 0) uses the limit rho log^k rho -> 0, so it is finite at every order; a
/// step from pure noise (alpha = 0) is Euler's limit alpha' x0 + sigma' eps; nodes at rho = inf or
/// coinciding lower the order.
class DEIS {
public:
  explicit DEIS(DEISOptions options = {}) : options_(options) {
    multistep::validate("DEISOptions", options.solver_order, options.thresholding);
  }

  [[nodiscard]] const DEISOptions& options() const { return options_; }
  /// The order of the latest update.
  [[nodiscard]] int last_order() const { return last_order_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory&, std::int64_t batch, Shape shape) {
    history_.reserve(backend, options_.solver_order, batch, shape);
    if (options_.thresholding)
      thresholder_.reserve(shape.numel());
    last_order_ = 0;
  }

  /// Forgets the stored outputs under HistoryPolicy::reset: the next step is first order, exactly
  /// as a run that starts there (SampleOptions::start_step).
  void on_model_switch() {
    if (options_.history == HistoryPolicy::reset)
      history_.clear();
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& s0 = step.from();
    const TimePoint& t = step.to();
    const View eps = history_.incoming();
    if (s0.alpha == 0) { // rho = inf: Euler's limit; eps = x / sigma whatever x0 is
      last_order_ = 1;
      ConstView x0 = out.x0;
      if (options_.thresholding) {
        thresholder_.apply(backend, *options_.thresholding, out.x0, eps);
        x0 = eps;
      }
      backend.combine(x, Term{static_cast<float>(t.alpha), x0},
                      Term{static_cast<float>(t.sigma), out.eps});
      backend.copy(eps, out.eps);
      history_.push(s0);
      return;
    }
    if (options_.thresholding) { // eps of the thresholded x0: (x - alpha x0) / sigma
      thresholder_.apply(backend, *options_.thresholding, out.x0, eps);
      backend.combine(eps, Term{static_cast<float>(1.0 / s0.sigma), ConstView(x)},
                      Term{static_cast<float>(-s0.alpha / s0.sigma), ConstView(eps)});
    } else {
      backend.copy(eps, out.eps);
    }
    history_.push(s0);

    last_order_ = order_at(step);
    const std::array<double, 3> c = coefficients(last_order_, t);
    std::array<Term, 5> terms{};
    terms[0] = Term{static_cast<float>(t.alpha / s0.alpha), ConstView(x)};
    for (int j = 0; j < last_order_; ++j)
      terms[static_cast<std::size_t>(j) + 1] =
          Term{static_cast<float>(t.alpha * c[static_cast<std::size_t>(j)]), history_[j]};
    multistep::combine(backend, x, terms, last_order_ + 1);
  }

private:
  /// diffusers' order rule (see the class comment), limited to stored points whose log rho is
  /// finite and distinct from the newer ones.
  [[nodiscard]] int order_at(const SolverStep& step) const {
    const int n = step.trajectory->steps();
    const bool short_run = options_.lower_order_final && n < 15;
    if (step.step == n - 1 && short_run)
      return 1;
    int order = std::min(options_.solver_order, history_.size());
    if (step.step == n - 2 && short_run)
      order = std::min(order, 2);
    for (int k = 1; k < order; ++k) {
      const double uk = log_rho(history_.point(k));
      if (!std::isfinite(uk))
        return k;
      for (int m = 0; m < k; ++m)
        if (log_rho(history_.point(m)) == uk)
          return k;
    }
    return order;
  }

  [[nodiscard]] static double log_rho(const TimePoint& p) { return std::log(p.ve_sigma()); }

  /// c_j = integral over rho from rho_s to rho_t of L_j(log rho), L_j the Lagrange basis of the
  /// nodes v_k = log rho_k - log rho_s (v_0 = 0, the newest). With rho = rho_s e^v and
  /// L_j(v) = sum_m p_m v^m:  c_j = rho_s sum_m p_m I_m(h),  I_m(h) = integral_0^h e^v v^m dv,
  /// h = log(rho_t / rho_s). (diffusers evaluates the antiderivative rho (L - L' + L'') at both
  /// ends instead; its terms grow like 1/h^2 and cancel, which loses digits at small steps.)
  [[nodiscard]] std::array<double, 3> coefficients(int order, const TimePoint& t) const {
    std::array<double, 3> nodes{};
    for (int k = 0; k < order; ++k)
      nodes[static_cast<std::size_t>(k)] = history_.point(k).ve_sigma();
    return weights(order, nodes, t.ve_sigma());
  }

public:
  /// The weights c_j of a step from rho_nodes[0] to rho_t with the Lagrange polynomial in
  /// log rho through rho_nodes[0 .. order-1] (newest first; finite, positive and distinct), to
  /// double rounding at every step size: x_t / alpha_t = x_s / alpha_s + sum_j c_j eps_j.
  [[nodiscard]] static std::array<double, 3>
  weights(int order, const std::array<double, 3>& rho_nodes, double rho_t) {
    const double rho_s = rho_nodes[0];
    const double u0 = std::log(rho_s);
    std::array<double, 3> v{};
    for (int k = 1; k < order; ++k)
      v[static_cast<std::size_t>(k)] = std::log(rho_nodes[static_cast<std::size_t>(k)]) - u0;
    const std::array<double, 3> moment =
        exp_moments(rho_t > 0 ? std::log(rho_t) - u0 : -std::numeric_limits<double>::infinity());
    std::array<double, 3> c{};
    for (int j = 0; j < order; ++j) {
      // L_j(v) = p[0] + p[1] v + p[2] v^2, built factor by factor.
      std::array<double, 3> p{1.0, 0.0, 0.0};
      const double vj = v[static_cast<std::size_t>(j)];
      for (int k = 0; k < order; ++k) {
        if (k == j)
          continue;
        const double vk = v[static_cast<std::size_t>(k)];
        const double scale = 1.0 / (vj - vk);
        // p <- p * (v - vk) * scale
        p = {-vk * p[0] * scale, (p[0] - vk * p[1]) * scale, (p[1] - vk * p[2]) * scale};
      }
      c[static_cast<std::size_t>(j)] =
          rho_s * (p[0] * moment[0] + p[1] * moment[1] + p[2] * moment[2]);
    }
    return c;
  }

private:
  /// I_m(h) = integral_0^h e^v v^m dv for m = 0, 1, 2, accurate for every h: a power series
  /// for |h| < 1, the recurrence I_m = h^m e^h - m I_{m-1} elsewhere, and the limits
  /// -(-1)^m m! at h = -inf (a step into rho = 0).
  [[nodiscard]] static std::array<double, 3> exp_moments(double h) {
    if (h == -std::numeric_limits<double>::infinity())
      return {-1.0, 1.0, -2.0};
    if (std::abs(h) >= 1.0) {
      const double e = std::exp(h);
      const double i0 = std::expm1(h);
      const double i1 = h * e - i0;
      return {i0, i1, h * h * e - 2.0 * i1};
    }
    // I_m = sum_k h^(m+1+k) / (k! (m+1+k)); 30 terms reach double precision for |h| < 1.
    std::array<double, 3> out{};
    for (int m = 0; m < 3; ++m) {
      double power = std::pow(h, m + 1); // h^(m+1+k) / k!
      double sum = 0;
      for (int k = 0; k < 30; ++k) {
        sum += power / (m + 1 + k);
        power *= h / (k + 1);
      }
      out[static_cast<std::size_t>(m)] = sum;
    }
    return out;
  }

  DEISOptions options_;
  multistep::History history_;
  multistep::Thresholder thresholder_;
  int last_order_ = 0;
};

} // namespace tstitch
