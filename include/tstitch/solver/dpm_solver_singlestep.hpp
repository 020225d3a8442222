// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/multistep.hpp"

namespace tstitch {

/// diffusers' `algorithm_type` for the singlestep solver.
enum class DPMSolverSinglestepAlgorithm {
  dpmsolver_pp, ///< "dpmsolver++": integrates the data predictions (Lu et al. 2022b)
  dpmsolver     ///< "dpmsolver": integrates the noise predictions (Lu et al. 2022a)
};

/// Options of DPMSolverSinglestep; the defaults are those of diffusers'
/// DPMSolverSinglestepScheduler. The schedule options (karras sigmas, final_sigmas_type,
/// lambda_min_clipped) belong to the schedule.
struct DPMSolverSinglestepOptions {
  int solver_order = 2; ///< 1, 2 or 3: DPM-Solver(++) 1S (DDIM), 2S, 3S
  DPMSolverSinglestepAlgorithm algorithm = DPMSolverSinglestepAlgorithm::dpmsolver_pp;
  /// How the 2S update, and the full 3S update, weigh the differences of the outputs.
  DPMSolverType solver_type = DPMSolverType::midpoint;
  /// End the run with a shortened group and a first-order last step (diffusers' order list). As
  /// in diffusers it is forced on when solver_order does not divide the number of steps or the
  /// trajectory ends at sigma = 0 (final_sigmas_type = "zero").
  bool lower_order_final = false;
  /// Dynamic thresholding of each data prediction (dpmsolver++ only); unset: off.
  std::optional<DynamicThresholding> thresholding;
  /// At a model switch: keep the previous model's outputs (the group in progress continues), or
  /// forget them (the step after the switch is first order and starts a new group).
  HistoryPolicy history = HistoryPolicy::keep;

  friend bool operator==(const DPMSolverSinglestepOptions&,
                         const DPMSolverSinglestepOptions&) = default;
};

/// Singlestep DPM-Solver / DPM-Solver++ (Lu et al. 2022): diffusers'
/// DPMSolverSinglestepScheduler on the same trajectory.
///
/// diffusers counts every model evaluation as a step of its timestep list: a k-th order
/// singlestep update spans k consecutive points. Here, likewise, point i of the trajectory is
/// diffusers' timestep i and each step evaluates the model once. The order list (diffusers'
/// get_order_list: 1, 2, 1, 2, ... or 1, 2, 3, 1, 2, 3, ...) decides each step's order k:
///  - k = 1: the latents at point i become the group's anchor x_s; a DDIM step to point i + 1
///    (an intermediate value, the evaluation input of the next step);
///  - k = 2, 3: the update from the anchor at point i - k + 1 to point i + 1, with the k outputs
///    made since the anchor.
/// So only the points that close a group (and every point for order 1) carry k-th order values.
/// The order is lowered to the number of outputs made since the anchor (a run that starts in the
/// middle, or a history reset), and to first order where the step's lambdas would divide by 0 or
/// by infinity (diffusers gives NaN there; it never happens on its own schedules).
class DPMSolverSinglestep {
public:
  explicit DPMSolverSinglestep(DPMSolverSinglestepOptions options = {}) : options_(options) {
    multistep::validate("DPMSolverSinglestepOptions", options.solver_order, options.thresholding);
    if (options.thresholding)
      require(!noise_prediction(), "DPMSolverSinglestepOptions::algorithm", "dpmsolver",
              "thresholding needs dpmsolver++ (the data-prediction algorithm)");
  }

  [[nodiscard]] const DPMSolverSinglestepOptions& options() const { return options_; }
  /// The order of the latest update.
  [[nodiscard]] int last_order() const { return last_order_; }
  /// diffusers' order list of the trajectory passed to begin(), one entry per step.
  [[nodiscard]] const std::vector<int>& order_list() const { return order_list_; }

  /// diffusers' get_order_list for n steps and an order; lower_order_final as given.
  [[nodiscard]] static std::vector<int> order_list(int n, int order, bool lower_order_final) {
    std::vector<int> out;
    auto repeat = [&](std::initializer_list<int> group, int times) {
      for (int r = 0; r < times; ++r)
        out.insert(out.end(), group);
    };
    if (order == 1) {
      repeat({1}, n);
    } else if (!lower_order_final) { // diffusers drops a remainder; begin() never asks for one
      repeat(order == 2 ? std::initializer_list<int>{1, 2} : std::initializer_list<int>{1, 2, 3},
             n / order);
    } else if (order == 2) {
      if (n % 2 == 0) {
        repeat({1, 2}, n / 2 - 1);
        repeat({1, 1}, 1);
      } else {
        repeat({1, 2}, n / 2);
        repeat({1}, 1);
      }
    } else if (n % 3 == 0) {
      repeat({1, 2, 3}, n / 3 - 1);
      repeat({1, 2, 1}, 1);
    } else {
      repeat({1, 2, 3}, n / 3);
      if (n % 3 == 1)
        repeat({1}, 1);
      else
        repeat({1, 2}, 1);
    }
    return out;
  }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    const int n = trajectory.steps();
    const int order = options_.solver_order;
    const bool clean_end = n > 0 && trajectory[n].sigma == 0;
    // diffusers' set_timesteps turns lower_order_final on in these two cases.
    const bool lower_final = options_.lower_order_final || n % order != 0 || clean_end;
    order_list_ = order_list(n, order, lower_final);
    history_.reserve(backend, order, batch, shape);
    if (order > 1)
      ensure_workspace(backend, anchor_, batch, shape);
    if (options_.thresholding)
      thresholder_.reserve(shape.numel());
    since_anchor_ = 0;
    last_order_ = 0;
  }

  /// Under HistoryPolicy::reset, forgets the outputs: the next step is first order, exactly as in
  /// a run that starts there (SampleOptions::start_step).
  void on_model_switch() {
    if (options_.history == HistoryPolicy::reset) {
      history_.clear();
      since_anchor_ = 0;
    }
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const ConstView m = noise_prediction() ? out.eps : out.x0;
    if (options_.thresholding)
      thresholder_.apply(backend, *options_.thresholding, m, history_.incoming());
    else
      backend.copy(history_.incoming(), m);
    history_.push(step.from());
    ++since_anchor_;

    int order = std::min(
        {order_list_.at(static_cast<std::size_t>(step.step)), history_.size(), since_anchor_});
    if (order > 1 && !well_defined(order, step.to()))
      order = 1;
    last_order_ = order;
    if (order == 1) { // a new group: x is its anchor (kept only if a later step needs it)
      if (options_.solver_order > 1)
        backend.copy(anchor_.view(), ConstView(x));
      since_anchor_ = 1;
    }

    const Coefficients k = coefficients(order, step.to());
    std::array<Term, 5> terms{};
    int count = 0;
    terms[count++] =
        Term{static_cast<float>(k.anchor), order == 1 ? ConstView(x) : ConstView(anchor_.view())};
    for (int j = 0; j < order; ++j)
      terms[count++] = Term{static_cast<float>(k.m[static_cast<std::size_t>(j)]), history_[j]};
    multistep::combine(backend, x, terms, count);
  }

private:
  /// x' = anchor * x_s + sum_j m[j] * (the j-th newest output).
  struct Coefficients {
    double anchor = 1;
    std::array<double, 3> m{};
  };

  [[nodiscard]] bool noise_prediction() const {
    return options_.algorithm == DPMSolverSinglestepAlgorithm::dpmsolver;
  }

  /// Whether the order-k update has finite, non-zero step ratios.
  [[nodiscard]] bool well_defined(int order, const TimePoint& t) const {
    const double base = history_.lambda(order - 1);
    const double h = multistep::lambda(t) - base;
    if (!std::isfinite(base) || !std::isfinite(h) || h == 0)
      return false;
    for (int j = 0; j < order - 1; ++j) {
      const double hj = history_.lambda(j) - base;
      if (!std::isfinite(hj) || hj == 0)
        return false;
    }
    return order < 3 || history_.lambda(0) != history_.lambda(1);
  }

  /// diffusers' updates of each order, their differences D1 (and D2) expanded into weights of the
  /// outputs m0 (newest), m1, m2 made since the anchor.
  [[nodiscard]] Coefficients coefficients(int order, const TimePoint& t) const {
    const TimePoint& s = history_.point(order - 1); // the anchor's point
    const double h = multistep::lambda(t) - multistep::lambda(s);
    const bool heun = options_.solver_type == DPMSolverType::heun;
    Coefficients k;
    // c0: weight of D0 (the anchor's output); c1: of the first difference (D1 for order 2; D1_1
    // in the midpoint 3S, D1 in the heun 3S); c2: of D2 (heun 3S).
    double c0 = 0, c1 = 0, c2 = 0;
    if (!noise_prediction()) {
      const double phi = std::expm1(-h); // e^-h - 1
      k.anchor = t.sigma / s.sigma;
      c0 = -t.alpha * phi;
      if (order == 2)
        c1 = heun ? t.alpha * (phi / h + 1.0) : -0.5 * t.alpha * phi;
      else if (order == 3) {
        c1 = t.alpha * (phi / h + 1.0);
        c2 = -t.alpha * ((phi + h) / (h * h) - 0.5);
      }
    } else {
      const double phi = std::expm1(h); // e^h - 1
      k.anchor = t.alpha / s.alpha;
      // sigma_t (e^h - 1); into sigma = 0 (first order only) its limit alpha_t sigma_s / alpha_s,
      // which lands on alpha_t x0. diffusers refuses final_sigmas_type "zero" with dpmsolver.
      c0 = t.sigma == 0 ? -t.alpha * s.sigma / s.alpha : -t.sigma * phi;
      if (order == 2)
        c1 = heun ? -t.sigma * (phi / h - 1.0) : -0.5 * t.sigma * phi;
      else if (order == 3) {
        c1 = -t.sigma * (phi / h - 1.0);
        c2 = -t.sigma * ((phi - h) / (h * h) - 0.5);
      }
    }
    k.m[0] = c0;
    if (order == 1)
      return k;
    if (order == 2) { // D0 = m1, D1 = (m0 - m1) / r0
      const double u0 = h / (history_.lambda(0) - history_.lambda(1));
      k.m[0] = c1 * u0;
      k.m[1] = c0 - c1 * u0;
      return k;
    }
    // D0 = m2, D1_0 = (m1 - m2) / r1, D1_1 = (m0 - m2) / r0,
    // D1 = (r0 D1_0 - r1 D1_1) / (r0 - r1), D2 = 2 (D1_1 - D1_0) / (r0 - r1).
    const double r0 = (history_.lambda(0) - history_.lambda(2)) / h;
    const double r1 = (history_.lambda(1) - history_.lambda(2)) / h;
    double a0 = 0, a1 = 0; // weights of D1_0 and D1_1
    if (!heun) {
      a1 = c1;
    } else {
      const double d = r0 - r1;
      a0 = c1 * r0 / d - 2.0 * c2 / d;
      a1 = -c1 * r1 / d + 2.0 * c2 / d;
    }
    k.m[0] = a1 / r0;
    k.m[1] = a0 / r1;
    k.m[2] = c0 - a0 / r1 - a1 / r0;
    return k;
  }

  DPMSolverSinglestepOptions options_;
  multistep::History history_;
  multistep::Thresholder thresholder_;
  AnyTensor anchor_;
  std::vector<int> order_list_;
  int since_anchor_ = 0;
  int last_order_ = 0;
};

} // namespace tstitch
