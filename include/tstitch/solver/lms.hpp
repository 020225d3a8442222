// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/multistep.hpp"

namespace tstitch {

/// What an LMS step does when fewer derivatives are stored than its position in the trajectory
/// allows: after a run that starts in the middle of the trajectory (SampleOptions::start_step,
/// img2img) or after a HistoryPolicy::reset at a model switch.
enum class LMSPartialHistory {
  /// diffusers' LMSDiscreteScheduler: the order comes from the step index (min(i + 1, order)),
  /// its Lagrange basis runs through the trajectory's earlier sigmas, and the basis polynomials of
  /// the missing derivatives are dropped. Such a step is not even consistent (its weights do not
  /// add up to the step length), but it is what diffusers' img2img pipelines do; the default, for
  /// parity.
  diffusers,
  /// The order is the number of stored derivatives: the method restarts at first order, as at
  /// the beginning of a trajectory.
  lower_order
};

/// Options of LMS. The defaults are diffusers' (the `order` argument of
/// LMSDiscreteScheduler.step defaults to 4). Schedule options (spacing, karras or exponential
/// sigmas) belong to the schedule.
struct LMSOptions {
  int order = 4; ///< 1 to 4: the number of derivatives the multistep formula combines
  LMSPartialHistory partial_history = LMSPartialHistory::diffusers;
  /// At a model switch: keep the previous model's derivatives, or restart (see partial_history).
  HistoryPolicy history = HistoryPolicy::keep;

  friend bool operator==(const LMSOptions&, const LMSOptions&) = default;
};

/// The linear multistep method of k-diffusion (Karras et al. 2022's `sample_lms`), diffusers'
/// LMSDiscreteScheduler: in y = x / alpha and the VE sigma s = sigma / alpha the probability-flow
/// ODE is dy/ds = eps, and a step integrates the Lagrange polynomial through the derivatives eps
/// at the last `order` sigmas exactly from s_i to s_{i+1}:
///   y_{i+1} = y_i + sum_j c_j eps_{i-j},   c_j = integral_{s_i}^{s_{i+1}} l_j(s) ds,
/// l_j the Lagrange basis of the nodes s_i, s_{i-1}, ... The order at step i is min(i + 1,
/// order). diffusers integrates with scipy's adaptive quadrature, which is exact for these
/// polynomials of degree <= 3 up to float32 rounding of its integrand; we integrate exactly in
/// double with 2-point Gauss-Legendre (exact up to degree 3).
///
/// The derivatives are the model's eps; a step from pure noise (alpha = 0, s = inf) is Euler's
/// limit x' = alpha' x0 + sigma' eps, and a node at s = inf limits the order to the finite ones.
class LMS {
public:
  static constexpr int max_order = 4;

  explicit LMS(LMSOptions options = {}) : options_(options) {
    require(options.order >= 1 && options.order <= max_order, "LMSOptions::order", options.order,
            "must be 1, 2, 3 or 4");
  }

  [[nodiscard]] const LMSOptions& options() const { return options_; }
  /// The order of the latest update's Lagrange basis (1 for the Euler limit from pure noise).
  [[nodiscard]] int last_order() const { return last_order_; }
  /// The number of derivatives the latest update used (below last_order() only with
  /// LMSPartialHistory::diffusers after a partial history).
  [[nodiscard]] int last_terms() const { return last_terms_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory&, std::int64_t batch, Shape shape) {
    history_.reserve(backend, options_.order, batch, shape);
    last_order_ = last_terms_ = 0;
  }

  /// Forgets the stored derivatives under HistoryPolicy::reset: the next step continues exactly
  /// as a run that starts there (SampleOptions::start_step).
  void on_model_switch() {
    if (options_.history == HistoryPolicy::reset)
      history_.clear();
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    backend.copy(history_.incoming(), out.eps);
    history_.push(step.from());
    const TimePoint& from = step.from();
    const TimePoint& to = step.to();
    if (from.alpha == 0) { // s = inf: Euler's limit
      last_order_ = last_terms_ = 1;
      backend.combine(x, Term{static_cast<float>(to.alpha), out.x0},
                      Term{static_cast<float>(to.sigma), out.eps});
      return;
    }
    last_order_ = order_at(step);
    last_terms_ = std::min(last_order_, history_.size());
    const std::array<double, max_order> c = coefficients(step, last_order_);

    // x' = alpha' (x / alpha + sum_j c_j eps_j)
    std::array<Term, 5> terms{};
    terms[0] = Term{static_cast<float>(to.alpha / from.alpha), ConstView(x)};
    for (int j = 0; j < last_terms_; ++j)
      terms[static_cast<std::size_t>(j) + 1] =
          Term{static_cast<float>(to.alpha * c[static_cast<std::size_t>(j)]), history_[j]};
    multistep::combine(backend, x, terms, last_terms_ + 1);
  }

  /// The weights c_j = integral of l_j over [s_i, s_{i+1}] of step i's Lagrange basis of `order`
  /// nodes s_i, s_{i-1}, ..., s_{i-order+1} (VE sigmas of the trajectory), exact in double.
  [[nodiscard]] static std::array<double, max_order> coefficients(const SolverStep& step,
                                                                  int order) {
    std::array<double, max_order> nodes{};
    for (int k = 0; k < order; ++k)
      nodes[static_cast<std::size_t>(k)] = (*step.trajectory)[step.step - k].ve_sigma();
    const double a = nodes[0];
    const double b = step.to().ve_sigma();
    // 2-point Gauss-Legendre on [a, b]: nodes mid +- half / sqrt(3), weights half each. The
    // polynomial is evaluated relative to a, where its factors are small.
    const double half = 0.5 * (b - a);
    const double offset = half / std::sqrt(3.0);
    std::array<double, max_order> c{};
    for (int j = 0; j < order; ++j) {
      double sum = 0;
      for (double u : {half - offset, half + offset}) { // u = tau - a
        double l = 1;
        for (int k = 0; k < order; ++k)
          if (k != j) {
            const double sk = nodes[static_cast<std::size_t>(k)] - a;
            const double sj = nodes[static_cast<std::size_t>(j)] - a;
            l *= (u - sk) / (sj - sk);
          }
        sum += l;
      }
      c[static_cast<std::size_t>(j)] = half * sum;
    }
    return c;
  }

private:
  /// min(i + 1, order) (diffusers), or the number of stored derivatives (lower_order), reduced
  /// so that every node is finite and distinct from the others.
  [[nodiscard]] int order_at(const SolverStep& step) const {
    int order = std::min(options_.order, step.step + 1);
    if (options_.partial_history == LMSPartialHistory::lower_order)
      order = std::min(order, history_.size());
    for (int k = 1; k < order; ++k) {
      const double sk = (*step.trajectory)[step.step - k].ve_sigma();
      if (!std::isfinite(sk))
        return k;
      for (int m = 0; m < k; ++m)
        if ((*step.trajectory)[step.step - m].ve_sigma() == sk)
          return k;
    }
    return order;
  }

  LMSOptions options_;
  multistep::History history_;
  int last_order_ = 0;
  int last_terms_ = 0;
};

} // namespace tstitch
