// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/multistep.hpp"

namespace tstitch {

/// UniPC's B(h) (diffusers' `solver_type`): B(h) = h ("bh1", the paper's choice for few steps
/// and unconditional models) or e^h - 1 ("bh2", for guided sampling; diffusers' default).
enum class UniPCVariant { bh1, bh2 };

/// Options of UniPC; the defaults are those of diffusers' UniPCMultistepScheduler. diffusers'
/// solver_p (another scheduler as the predictor) is UniPCWithPredictor.
struct UniPCOptions {
  int solver_order = 2; ///< p of UniP-p: 1, 2 or 3
  UniPCVariant solver_type = UniPCVariant::bh2;
  /// Integrate the data prediction (true, diffusers' default) or the noise prediction (false:
  /// B(h) and the phi functions are then taken at +h, and the latents scale by alpha_t/alpha_s).
  bool predict_x0 = true;
  /// Lower the predictor's order near the end: at step i of n it is at most n - i.
  bool lower_order_final = true;
  /// Steps i whose *following* corrector is skipped: the corrector that runs at step i + 1 and
  /// refines the result of step i (diffusers' indexing).
  std::vector<int> disable_corrector{};
  /// Dynamic thresholding of each data prediction (diffusers' thresholding=True); unset: off.
  /// Only with predict_x0 (diffusers ignores it in the noise-prediction form; tstitch refuses).
  std::optional<DynamicThresholding> thresholding;
  /// At a model switch: keep the previous model's outputs, or restart at first order.
  HistoryPolicy history = HistoryPolicy::keep;

  friend bool operator==(const UniPCOptions&, const UniPCOptions&) = default;
};

template <class Predictor> class UniPCWithPredictor;

/// UniPC (Zhao et al. 2023): diffusers' UniPCMultistepScheduler on the same trajectory. Step i
/// first corrects the latents at point i with the new model output (UniC, using the latents
/// before the previous predictor and that predictor's order), then predicts point i + 1 (UniP).
/// One model evaluation per step; the corrector raises the order of UniP-p to p + 1.
///
/// Predictor order at step i of n: min(solver_order, number of stored outputs), and at most
/// n - i with lower_order_final. A step into a clean point (sigma = 0, lambda = +inf) is always
/// first order and returns the data prediction: what diffusers computes with its default
/// lower_order_final (without it diffusers' higher orders divide by the infinite step there, and
/// bh1 multiplies B(h) = -inf by a zero residual, giving NaN). A zero-length step (diffusers'
/// karras final step with "sigma_min") leaves x as it is, as diffusers does. With predict_x0 =
/// false, a step into a clean point or out of pure noise (alpha = 0) is DDIM, the limit of the
/// first-order update (diffusers gives 0 * inf = NaN there).
///
/// HistoryPolicy::reset forgets the stored outputs *and* the latents kept for the corrector: the
/// step after a switch runs no corrector (which would mix the two models' outputs) and a
/// first-order predictor, exactly as a run that starts there (SampleOptions::start_step).
/// HistoryPolicy::keep runs the corrector across the switch.
class UniPC {
public:
  explicit UniPC(UniPCOptions options = {}) : options_(std::move(options)) {
    multistep::validate("UniPCOptions", options_.solver_order, options_.thresholding);
    require(options_.predict_x0 || !options_.thresholding, "UniPCOptions::predict_x0", "false",
            "with thresholding: dynamic thresholding clamps data predictions, and diffusers "
            "ignores it in the noise-prediction form; unset thresholding or set predict_x0");
    for (std::size_t k = 0; k < options_.disable_corrector.size(); ++k)
      require(options_.disable_corrector[k] >= 0,
              detail::concat("UniPCOptions::disable_corrector[", k, "]"),
              options_.disable_corrector[k], "must be a step index (>= 0)");
  }

  [[nodiscard]] const UniPCOptions& options() const { return options_; }
  /// The predictor order of the latest update (0: a zero-length step, x unchanged).
  [[nodiscard]] int last_order() const { return last_order_; }
  /// The order of the corrector the latest update ran (0: none).
  [[nodiscard]] int last_corrector_order() const { return last_corrector_order_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory&, std::int64_t batch, Shape shape) {
    // One slot more than the order: the corrector reads the new output next to all
    // solver_order earlier ones before the new one displaces the oldest.
    history_.reserve(backend, options_.solver_order + 1, batch, shape);
    if (options_.thresholding)
      thresholder_.reserve(shape.numel());
    ensure_workspace(backend, last_sample_, batch, shape);
    has_last_sample_ = false;
    last_order_ = 0;
    last_corrector_order_ = 0;
  }

  void on_model_switch() {
    if (options_.history == HistoryPolicy::reset) {
      history_.clear();
      has_last_sample_ = false;
    }
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const double h = correct_and_store(backend, step, out, x);
    if (h != 0)
      predict(backend, step.from(), step.to(), h, out.x0, x);
  }

private:
  template <class> friend class UniPCWithPredictor;

  /// The first half of a step: stores the new output, corrects x (the previous predictor's
  /// result) with it, keeps the corrected x for the next corrector and sets last_order() to this
  /// step's predictor order. Returns the step's length h in lambda.
  template <class Backend>
  double correct_and_store(Backend& backend, const SolverStep& step, const ModelOutput& out,
                           View x) {
    const View model_t = history_.incoming();
    if (!options_.predict_x0)
      backend.copy(model_t, out.eps);
    else if (options_.thresholding)
      thresholder_.apply(backend, *options_.thresholding, out.x0, model_t);
    else
      backend.copy(model_t, out.x0);

    last_corrector_order_ = 0;
    if (has_last_sample_ && !corrector_disabled(step.step - 1))
      correct(backend, step.from(), ConstView(model_t), x);
    history_.push(step.from());

    const double h = multistep::lambda(step.to()) - multistep::lambda(step.from());
    last_order_ = h == 0 ? 0 : predictor_order(step, h);
    backend.copy(last_sample_.view(), ConstView(x));
    has_last_sample_ = true;
    return h;
  }

  [[nodiscard]] bool corrector_disabled(int step) const {
    const auto& d = options_.disable_corrector;
    return std::find(d.begin(), d.end(), step) != d.end();
  }

  [[nodiscard]] int predictor_order(const SolverStep& step, double h) const {
    if (!std::isfinite(h)) // into a clean point, or out of pure noise
      return 1;
    int order = options_.solver_order;
    if (options_.lower_order_final)
      order = std::min(order, step.trajectory->steps() - step.step);
    order = std::min(order, history_.size());
    return usable_order(order, h);
  }

  /// The largest order <= `order` whose nodes r_j = (lambda_j - lambda_0) / h over the history
  /// entries j = 1, 2 are finite, non-zero and distinct: a singular or infinite node would leak
  /// NaN into the step through unused or divided coefficients. (Only a trajectory with repeated
  /// or infinite lambdas before its last step has such nodes.)
  [[nodiscard]] int usable_order(int order, double h) const {
    double previous = 0;
    for (int j = 1; j < order; ++j) {
      const double r = (history_.lambda(j) - history_.lambda(0)) / h;
      if (!(std::isfinite(r) && r != 0 && r != previous))
        return j;
      previous = r;
    }
    return order;
  }

  /// The weights of UniPC: B(h), h*phi_1 = e^hh - 1 with hh = -h, the nodes r_1..r_{k-1}, 1 and
  /// the right-hand side b_p = h*phi_{p+1}(hh) * (p+1)! / B(h) of its order conditions.
  struct Weights {
    double b_h = 0;
    double h_phi_1 = 0;
    std::array<double, 3> r{};
    std::array<double, 3> b{};
  };

  [[nodiscard]] Weights weights(int order, double h) const {
    Weights wt;
    const double hh = options_.predict_x0 ? -h : h;
    wt.h_phi_1 = std::expm1(hh);
    wt.b_h = options_.solver_type == UniPCVariant::bh1 ? hh : std::expm1(hh);
    for (int j = 1; j < order; ++j)
      wt.r[static_cast<std::size_t>(j - 1)] = (history_.lambda(j) - history_.lambda(0)) / h;
    wt.r[static_cast<std::size_t>(order - 1)] = 1.0;
    double h_phi_k = wt.h_phi_1 / hh - 1.0;
    double factorial = 1.0;
    for (int p = 1; p <= order; ++p) {
      wt.b[static_cast<std::size_t>(p - 1)] = h_phi_k * factorial / wt.b_h;
      factorial *= p + 1;
      h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    return wt;
  }

  /// rho solving sum_q r_q^p rho_q = b_p for p < k (the Vandermonde system of the order
  /// conditions).
  [[nodiscard]] static std::array<double, 3> rhos(const Weights& wt, int k) {
    std::array<std::array<double, 3>, 3> vandermonde{};
    for (int p = 0; p < k; ++p)
      for (int q = 0; q < k; ++q)
        vandermonde[static_cast<std::size_t>(p)][static_cast<std::size_t>(q)] =
            std::pow(wt.r[static_cast<std::size_t>(q)], p);
    return multistep::solve(vandermonde, wt.b, static_cast<std::size_t>(k));
  }

  /// The factor of x and the one of the outputs' terms: (sigma_t / sigma_s, alpha_t) for data
  /// predictions, (alpha_t / alpha_s, sigma_t) for noise predictions.
  [[nodiscard]] std::pair<double, double> scales(const TimePoint& s0, const TimePoint& t) const {
    if (options_.predict_x0)
      return {t.sigma / s0.sigma, t.alpha};
    return {t.alpha / s0.alpha, t.sigma};
  }

  /// UniP-k from s0 (history entry 0) to t, in place:
  /// x' = (sigma_t/sigma_s0) x - alpha_t h_phi_1 m0 - alpha_t B(h) sum_j rho_j (m_j - m0) / r_j,
  /// and with noise predictions the same with alpha and sigma swapped (h_phi_1, B(h) at +h).
  template <class Backend>
  void predict(Backend& backend, const TimePoint& s0, const TimePoint& t, double h, ConstView x0,
               View x) {
    const int k = last_order_;
    if (!options_.predict_x0 && !std::isfinite(h)) {
      // Into a clean point or out of pure noise: DDIM, the limit of UniP-1 (k is 1 here).
      backend.combine(x, Term{static_cast<float>(t.alpha), x0},
                      Term{static_cast<float>(t.sigma), history_[0]});
      return;
    }
    const Weights wt = weights(k, h);
    std::array<double, 3> rho{};
    if (k == 2)
      rho[0] = 0.5; // diffusers' simplification for order 2
    else if (k == 3)
      rho = rhos(wt, 2); // the first k - 1 order conditions on the first k - 1 nodes
    const auto [x_scale, a] = scales(s0, t);
    std::array<Term, 5> terms{};
    terms[0] = Term{static_cast<float>(x_scale), ConstView(x)};
    double m0 = -a * wt.h_phi_1;
    for (int j = 1; j < k; ++j) {
      const double c =
          a * wt.b_h * rho[static_cast<std::size_t>(j - 1)] / wt.r[static_cast<std::size_t>(j - 1)];
      m0 += c;
      terms[static_cast<std::size_t>(1 + j)] = Term{static_cast<float>(-c), history_[j]};
    }
    terms[1] = Term{static_cast<float>(m0), history_[0]};
    multistep::combine(backend, x, terms, k + 1);
  }

  /// UniC at point t (this step's start): replaces x, the predictor's result, by
  /// (sigma_t/sigma_s0) x_last - alpha_t h_phi_1 m0
  ///   - alpha_t B(h) (sum_j rho_j (m_j - m0) / r_j + rho_k (model_t - m0)),
  /// where s0 is the previous step's start, m0.. the outputs stored before this step and k the
  /// previous predictor's order (with noise predictions alpha and sigma swap, as in predict()).
  template <class Backend>
  void correct(Backend& backend, const TimePoint& t, ConstView model_t, View x) {
    const TimePoint& s0 = history_.point(0);
    const double h = multistep::lambda(t) - multistep::lambda(s0);
    if (!(std::isfinite(h) && h != 0))
      return;
    const int k = usable_order(std::min(last_order_, history_.size()), h);
    if (k < 1)
      return;
    const Weights wt = weights(k, h);
    std::array<double, 3> rho{};
    if (k == 1)
      rho[0] = 0.5; // diffusers' simplification for order 1
    else
      rho = rhos(wt, k);
    const auto [x_scale, a] = scales(s0, t);
    const double scale = a * wt.b_h;
    std::array<Term, 5> terms{};
    terms[0] = Term{static_cast<float>(x_scale), ConstView(last_sample_.view())};
    double m0 = -a * wt.h_phi_1 + scale * rho[static_cast<std::size_t>(k - 1)];
    for (int j = 1; j < k; ++j) {
      const double c =
          scale * rho[static_cast<std::size_t>(j - 1)] / wt.r[static_cast<std::size_t>(j - 1)];
      m0 += c;
      terms[static_cast<std::size_t>(1 + j)] = Term{static_cast<float>(-c), history_[j]};
    }
    terms[1] = Term{static_cast<float>(m0), history_[0]};
    terms[static_cast<std::size_t>(k + 1)] =
        Term{static_cast<float>(-scale * rho[static_cast<std::size_t>(k - 1)]), model_t};
    multistep::combine(backend, x, terms, k + 2);
    last_corrector_order_ = k;
  }

  UniPCOptions options_;
  multistep::History history_;
  multistep::Thresholder thresholder_;
  AnyTensor last_sample_;
  bool has_last_sample_ = false;
  int last_order_ = 0;
  int last_corrector_order_ = 0;
};

/// UniC on top of another solver: diffusers' UniPCMultistepScheduler(solver_p=...), "solver_p +
/// UniC". Each step first corrects the latents with UniC exactly as UniPC does (its outputs,
/// saved latents and orders, from `options`), then advances them with `Predictor` instead of
/// UniP. The predictor keeps its own history and options (its HistoryPolicy included) and must
/// evaluate the model once per step (checked in begin()).
///
/// As in diffusers, the predictor is handed the model output as if it had been made at the
/// corrected latents: x0 and eps are converted again from the same raw output with the corrected
/// x (x0 += d(x0)/dx * (x_corrected - x), eps likewise; the raw output is passed unchanged).
/// The corrector's order follows UniPC's predictor-order rule (solver_order, lower_order_final),
/// whatever order the predictor used.
template <class Predictor> class UniPCWithPredictor {
public:
  UniPCWithPredictor(UniPCOptions options, Predictor predictor)
      : unipc_(std::move(options)), predictor_(std::move(predictor)) {}

  [[nodiscard]] const UniPCOptions& options() const { return unipc_.options(); }
  [[nodiscard]] const Predictor& predictor() const { return predictor_; }
  /// The order UniP would have used at the latest step: the next corrector's order.
  [[nodiscard]] int last_order() const { return unipc_.last_order(); }
  /// The order of the corrector the latest update ran (0: none).
  [[nodiscard]] int last_corrector_order() const { return unipc_.last_corrector_order(); }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    unipc_.begin(backend, trajectory, batch, shape);
    predictor_.begin(backend, trajectory, batch, shape);
    for (int i = 0; i < trajectory.steps(); ++i)
      require(evaluations_of(predictor_, i) == 1, "UniPCWithPredictor predictor evaluations",
              evaluations_of(predictor_, i),
              detail::concat("at step ", i,
                             ": the predictor must evaluate the model once per "
                             "step, as UniPC does"));
    ensure_workspace(backend, uncorrected_, batch, shape);
    ensure_workspace(backend, x0_, batch, shape);
    ensure_workspace(backend, eps_, batch, shape);
  }

  /// Applies UniPC's history policy to the corrector, and the predictor's own to the predictor.
  void on_model_switch() {
    unipc_.on_model_switch();
    if constexpr (requires { predictor_.on_model_switch(); })
      predictor_.on_model_switch();
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    backend.copy(uncorrected_.view(), ConstView(x));
    (void)unipc_.correct_and_store(backend, step, out, x);
    if (unipc_.last_corrector_order() == 0) {
      predictor_.update(backend, step, out, x);
      return;
    }
    const TimePoint& s = step.from();
    const PredictionConversion c = conversion(out.prediction, s.alpha, s.sigma);
    backend.combine(x0_.view(), Term{1.0f, out.x0}, Term{static_cast<float>(c.x0_from_x), x},
                    Term{static_cast<float>(-c.x0_from_x), ConstView(uncorrected_.view())});
    backend.combine(eps_.view(), Term{1.0f, out.eps}, Term{static_cast<float>(c.eps_from_x), x},
                    Term{static_cast<float>(-c.eps_from_x), ConstView(uncorrected_.view())});
    predictor_.update(backend, step, ModelOutput{x0_.view(), eps_.view(), out.raw, out.prediction},
                      x);
  }

private:
  UniPC unipc_;
  Predictor predictor_;
  AnyTensor uncorrected_, x0_, eps_;
};

} // namespace tstitch
