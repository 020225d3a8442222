// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/multistep.hpp"

namespace tstitch {

/// diffusers' `algorithm_type`. The "++" variants integrate the data prediction, the others
/// (deprecated in diffusers, kept for its configs and for comparison) the noise prediction.
enum class DPMSolverAlgorithm {
  dpmsolver_pp,     ///< "dpmsolver++": the probability-flow ODE (Lu et al. 2022b), deterministic
  sde_dpmsolver_pp, ///< "sde-dpmsolver++": the reverse SDE; draws fresh noise at every step
  /// "dpmsolver": the probability-flow ODE in the noise prediction (Lu et al. 2022a, multistep)
  dpmsolver,
  /// "sde-dpmsolver": the reverse SDE in the noise prediction. Singular at pure noise (alpha = 0),
  /// and a step into a clean point keeps noise of SD alpha_t sigma_s / alpha_s (the limit of
  /// diffusers' formula, which refuses final_sigmas_type = "zero" for it)
  sde_dpmsolver
};

/// diffusers' `solver_type`: how a second-order step weighs the difference of the last two
/// outputs. Third-order steps ignore it, as in diffusers.
enum class DPMSolverType { midpoint, heun };

/// The third-order (3M) update.
enum class DPMSolverThirdOrder {
  /// diffusers' update, which is the reference DPM-Solver code's. Its D2 term is half the one a
  /// Taylor expansion asks for, so the method is asymptotically second order (it is still more
  /// accurate than 2M at the step counts it is used with). The default, for parity.
  diffusers,
  /// The D2 term doubled: a consistent third-order multistep method. The only third-order update
  /// offered for the SDEs: diffusers' data-prediction coefficient is not even second order, and it
  /// has no noise-prediction one (solver_order 3 fails there).
  taylor
};

/// Options of DPMSolverMultistep; the defaults are those of diffusers'
/// DPMSolverMultistepScheduler. Schedule options (karras or Lu sigmas, final_sigmas_type) belong
/// to the schedule: the solver steps along whatever trajectory it is given.
struct DPMSolverMultistepOptions {
  int solver_order = 2; ///< 1, 2 or 3 (2M, 3M)
  DPMSolverAlgorithm algorithm = DPMSolverAlgorithm::dpmsolver_pp;
  DPMSolverType solver_type = DPMSolverType::midpoint;
  /// First order at the last step and at most second order at the one before, in runs of fewer
  /// than 15 steps.
  bool lower_order_final = true;
  /// First order at the last step, whatever the number of steps.
  bool euler_at_final = false;
  /// Dynamic thresholding of each data prediction (diffusers' thresholding=True); unset: off.
  std::optional<DynamicThresholding> thresholding;
  DPMSolverThirdOrder third_order = DPMSolverThirdOrder::diffusers;
  /// At a model switch: keep the previous model's outputs, or restart at first order.
  HistoryPolicy history = HistoryPolicy::keep;

  friend bool operator==(const DPMSolverMultistepOptions&,
                         const DPMSolverMultistepOptions&) = default;
};

/// Multistep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++"), 1M, 2M and 3M, and its SDE variant:
/// diffusers' DPMSolverMultistepScheduler on the same trajectory. It steps in
/// lambda = log(alpha / sigma) with the data predictions of the last 1-3 evaluations, or, for
/// the noise-prediction algorithms ("dpmsolver", "sde-dpmsolver"), with the noise predictions
/// (thresholding then clamps the data prediction and converts it back, as diffusers does).
///
/// Order at step i of n: 1 while there is no earlier output, then up to solver_order; 1 at the
/// last step with euler_at_final or (lower_order_final and n < 15), and at most 2 at the one
/// before with lower_order_final and n < 15. A step into a clean point (sigma = 0, lambda = +inf)
/// is always first order, as diffusers forces with final_sigmas_type = "zero"; it returns the
/// data prediction. A zero-length step (diffusers' karras/Lu final step with "sigma_min") leaves x
/// as it is: diffusers' midpoint result exactly, and finite where its heun and 3M formulas give
/// 0/0. The noise-prediction ODE steps out of pure noise (alpha = 0) and into a clean point as
/// DDIM (its first-order update in the limit), where diffusers' formula gives inf/NaN or is
/// refused.
class DPMSolverMultistep {
public:
  explicit DPMSolverMultistep(DPMSolverMultistepOptions options = {}) : options_(options) {
    multistep::validate("DPMSolverMultistepOptions", options.solver_order, options.thresholding);
    if (sde() && options.solver_order == 3)
      require(options.third_order == DPMSolverThirdOrder::taylor,
              "DPMSolverMultistepOptions::third_order", "diffusers",
              "the SDE variants at solver_order 3 need DPMSolverThirdOrder::taylor (diffusers' "
              "third-order data-prediction SDE coefficient makes the method first order; it has "
              "no noise-prediction one)");
  }

  [[nodiscard]] const DPMSolverMultistepOptions& options() const { return options_; }
  /// The order of the latest update (0: a zero-length step, x unchanged).
  [[nodiscard]] int last_order() const { return last_order_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    if (sde()) // sqrt(1 - e^-2h) needs h >= 0
      for (int i = 0; i < trajectory.steps(); ++i)
        require(!(multistep::lambda(trajectory[i + 1]) < multistep::lambda(trajectory[i])),
                "DPMSolverMultistepOptions::algorithm", sde_name(),
                "cannot run a trajectory towards noise (an inversion); use an ODE algorithm");
    if (options_.algorithm == DPMSolverAlgorithm::sde_dpmsolver)
      for (int i = 0; i <= trajectory.steps(); ++i)
        if (!(trajectory[i].alpha > 0))
          throw_invalid_argument(
              "DPMSolverMultistepOptions::algorithm", "sde_dpmsolver",
              detail::concat("steps from pure noise (alpha = 0 at trajectory point ", i,
                             "), where the noise-prediction SDE is singular; use "
                             "sde_dpmsolver_pp"));
    history_.reserve(backend, options_.solver_order, batch, shape);
    if (options_.thresholding)
      thresholder_.reserve(shape.numel());
    if (options_.thresholding && noise_form())
      ensure_workspace(backend, x0_, batch, shape);
    if (sde())
      ensure_workspace(backend, noise_, batch, shape);
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
    const ConstView x0 = store(backend, s0, out, x);
    history_.push(s0);

    const double h = multistep::lambda(t) - multistep::lambda(s0);
    last_order_ = 0;
    if (h == 0)
      return;
    last_order_ = order_at(step, h);
    if (noise_form() && s0.alpha == 0) { // out of pure noise: DDIM, the limit of the update
      backend.combine(x, Term{static_cast<float>(t.alpha), x0},
                      Term{static_cast<float>(t.sigma), history_[0]});
      return;
    }

    const Coefficients k = coefficients(last_order_, h, s0, t);
    std::array<Term, 5> terms{};
    int count = 0;
    terms[count++] = Term{static_cast<float>(k.x), ConstView(x)};
    for (int j = 0; j < last_order_; ++j)
      terms[count++] = Term{static_cast<float>(k.m[static_cast<std::size_t>(j)]), history_[j]};
    if (k.noise > 0) {
      backend.fill_normal(noise_.view(), step.noise);
      terms[count++] = Term{static_cast<float>(k.noise), ConstView(noise_.view())};
    }
    multistep::combine(backend, x, terms, count);
  }

private:
  /// x' = x * x_in + sum_j m[j] * (the j-th newest output) + noise * z.
  struct Coefficients {
    double x = 1;
    std::array<double, 3> m{};
    double noise = 0;
  };

  [[nodiscard]] const char* sde_name() const {
    return options_.algorithm == DPMSolverAlgorithm::sde_dpmsolver ? "sde_dpmsolver"
                                                                   : "sde_dpmsolver_pp";
  }
  [[nodiscard]] bool sde() const {
    return options_.algorithm == DPMSolverAlgorithm::sde_dpmsolver_pp ||
           options_.algorithm == DPMSolverAlgorithm::sde_dpmsolver;
  }
  /// Integrates the noise prediction ("dpmsolver", "sde-dpmsolver").
  [[nodiscard]] bool noise_form() const {
    return options_.algorithm == DPMSolverAlgorithm::dpmsolver ||
           options_.algorithm == DPMSolverAlgorithm::sde_dpmsolver;
  }

  /// Writes the output the update integrates into the history's incoming slot: the (thresholded)
  /// data prediction, or the noise prediction - with thresholding, the one of the thresholded
  /// data prediction, eps = (x - alpha x0) / sigma, as diffusers converts it. Returns the data
  /// prediction used.
  template <class Backend>
  ConstView store(Backend& backend, const TimePoint& s, const ModelOutput& out, ConstView x) {
    if (!noise_form()) {
      if (options_.thresholding)
        thresholder_.apply(backend, *options_.thresholding, out.x0, history_.incoming());
      else
        backend.copy(history_.incoming(), out.x0);
      return history_.incoming();
    }
    if (!options_.thresholding) {
      backend.copy(history_.incoming(), out.eps);
      return out.x0;
    }
    thresholder_.apply(backend, *options_.thresholding, out.x0, x0_.view());
    backend.combine(history_.incoming(), Term{static_cast<float>(1.0 / s.sigma), x},
                    Term{static_cast<float>(-s.alpha / s.sigma), ConstView(x0_.view())});
    return x0_.view();
  }

  /// diffusers' order rule (see the class comment), limited to the outputs whose step lengths
  /// h0, h1 are finite and non-zero, so a divided difference never divides by 0.
  [[nodiscard]] int order_at(const SolverStep& step, double h) const {
    const int n = step.trajectory->steps();
    const bool short_run = options_.lower_order_final && n < 15;
    if (step.step == n - 1 && (options_.euler_at_final || short_run))
      return 1;
    if (!std::isfinite(h)) // into a clean point, or out of pure noise
      return 1;
    int order = std::min(options_.solver_order, history_.size());
    if (step.step == n - 2 && short_run)
      order = std::min(order, 2);
    for (int j = 1; j < order; ++j) {
      const double hj = history_.lambda(j - 1) - history_.lambda(j);
      if (!(std::isfinite(hj) && hj != 0))
        return j;
    }
    return order;
  }

  /// diffusers' update for this order, with its divided differences D1, D2 expanded into weights
  /// of the stored outputs m0 (newest), m1, m2.
  [[nodiscard]] Coefficients coefficients(int order, double h, const TimePoint& s0,
                                          const TimePoint& t) const {
    const double alpha = t.alpha;
    Coefficients k;
    // Weights of D0 = m0, D1 and D2.
    double c0 = 0, c1 = 0, c2 = 0;
    if (noise_form()) {
      // sigma_t (e^h - 1), and its limit alpha_t sigma_s / alpha_s into a clean point (h = +inf).
      const double e1 = std::isfinite(h) ? t.sigma * std::expm1(h) : alpha * s0.sigma / s0.alpha;
      // The SDE's noise-prediction weights are twice the ODE's (its score term is g^2, not
      // g^2 / 2), with the same integrating factor alpha_t / alpha_s.
      const double w = sde() ? 2.0 : 1.0;
      k.x = alpha / s0.alpha;
      c0 = -w * e1;
      if (order == 2 && options_.solver_type == DPMSolverType::midpoint)
        c1 = -0.5 * w * e1;
      else if (order >= 2)
        c1 = -w * t.sigma * (std::expm1(h) / h - 1.0);
      if (order == 3)
        c2 = -w * t.sigma * ((std::expm1(h) - h) / (h * h) - 0.5) *
             (sde() ? 2.0 : third_order_scale());
      if (sde()) // sigma_t sqrt(e^2h - 1); into a clean point its limit alpha_t sigma_s / alpha_s
        k.noise = std::isfinite(h) ? t.sigma * std::sqrt(std::expm1(2.0 * h)) : e1;
    } else if (!sde()) {
      const double phi1 = std::expm1(-h); // e^-h - 1
      k.x = t.sigma / s0.sigma;
      c0 = -alpha * phi1;
      if (order == 2 && options_.solver_type == DPMSolverType::midpoint)
        c1 = -0.5 * alpha * phi1;
      else if (order >= 2)
        c1 = alpha * (phi1 / h + 1.0);
      if (order == 3)
        c2 = -alpha * ((phi1 + h) / (h * h) - 0.5) * third_order_scale();
    } else {
      const double decay = std::exp(-h);
      const double gain = -std::expm1(-2.0 * h); // 1 - e^-2h
      k.x = t.sigma / s0.sigma * decay;
      k.noise = t.sigma * std::sqrt(gain);
      c0 = alpha * gain;
      if (order == 2 && options_.solver_type == DPMSolverType::midpoint)
        c1 = 0.5 * alpha * gain;
      else if (order >= 2)
        c1 = alpha * (gain / (-2.0 * h) + 1.0);
      if (order == 3) // the Taylor coefficient; see DPMSolverThirdOrder
        c2 = 2.0 * alpha * ((gain - 2.0 * h) / (4.0 * h * h) + 0.5);
    }
    k.m[0] = c0;
    if (order == 1)
      return k;
    const double h0 = history_.lambda(0) - history_.lambda(1);
    const double u0 = h / h0; // 1 / r0
    if (order == 2) {         // D1 = (m0 - m1) / r0
      k.m[0] += c1 * u0;
      k.m[1] = -c1 * u0;
      return k;
    }
    // D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1,
    // D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1).
    const double h1 = history_.lambda(1) - history_.lambda(2);
    const double u1 = h / h1;
    const double w = h0 / (h0 + h1);
    const double v = h / (h0 + h1);
    const double k0 = c1 * (1.0 + w) + c2 * v; // weight of D1_0
    const double k1 = -c1 * w - c2 * v;        // weight of D1_1
    k.m[0] += k0 * u0;
    k.m[1] = -k0 * u0 + k1 * u1;
    k.m[2] = -k1 * u1;
    return k;
  }

  [[nodiscard]] double third_order_scale() const {
    return options_.third_order == DPMSolverThirdOrder::taylor ? 2.0 : 1.0;
  }

  DPMSolverMultistepOptions options_;
  multistep::History history_;
  multistep::Thresholder thresholder_;
  AnyTensor noise_;
  AnyTensor x0_; ///< the thresholded data prediction of the noise-prediction algorithms
  int last_order_ = 0;
};

} // namespace tstitch
