// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

struct HeunOptions {
  /// Clip x0 to [-r, r] before forming the derivative (diffusers' clip_sample /
  /// clip_sample_range; off by default, as in diffusers).
  std::optional<float> clip_sample;

  friend bool operator==(const HeunOptions&, const HeunOptions&) = default;
};

/// Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without churn;
/// diffusers' HeunDiscreteScheduler). In k-diffusion's coordinates y = x / alpha, s = sigma / alpha
/// with derivative d = (y - x0) / s (= eps):
///   evaluation 0 at points[i]:      d0, Euler predictor y* = y + (s_next - s) d0
///   evaluation 1 at points[i + 1]:  d1 from the model at y*, y_next = y + (s_next - s)(d0 + d1)/2
/// written back for x = alpha * y. Second order; two model evaluations per step.
///
/// Single-evaluation steps (a plain Euler step, bit-identical to tstitch::Euler):
///  - into sigma = 0. diffusers does this too: its timesteps list has 2n - 1 entries, so the
///    correction of the last step (which would divide by sigma_next = 0) never runs; k-diffusion's
///    sample_heun likewise takes an Euler step when sigma_next == 0. An n-step run into a clean
///    point therefore costs 2n - 1 evaluations, exactly as in diffusers.
///  - from alpha = 0 (pure noise of a flow schedule), where s is infinite and the correction
///    undefined: Euler's limit alpha_next x0 + sigma_next eps.
/// One Euler step among Heun steps adds an O(h^2) local error, so the global order stays 2.
///
/// The second evaluation is converted to x0 / eps at points[i + 1] (diffusers computes x0 with
/// sigma_next there too). Both evaluations carry the step's index (StepContext::step, with
/// evaluation 0 and 1), so a stitcher that routes by step serves both with the step's model.
class Heun {
public:
  explicit Heun(HeunOptions options = {}) : options_(options) {
    if (options.clip_sample)
      require(*options.clip_sample > 0, "HeunOptions::clip_sample", *options.clip_sample,
              "must be > 0");
  }

  [[nodiscard]] const HeunOptions& options() const { return options_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    evaluations_.assign(static_cast<std::size_t>(trajectory.steps()), 1);
    bool any_second = false;
    for (int i = 0; i < trajectory.steps(); ++i)
      if (!single_evaluation(trajectory[i], trajectory[i + 1])) {
        evaluations_[static_cast<std::size_t>(i)] = 2;
        any_second = true;
      }
    auto ensure = [&](AnyTensor& t) { ensure_workspace(backend, t, batch, shape); };
    if (any_second || options_.clip_sample)
      ensure(derivative_);
    if (any_second)
      ensure(predictor_);
  }

  /// 2, or 1 for a step into sigma = 0 or from alpha = 0 (see the class comment).
  [[nodiscard]] int evaluations(int step) const {
    require(step >= 0 && static_cast<std::size_t>(step) < evaluations_.size(), "step", step,
            "is not a step of the trajectory passed to Heun::begin()");
    return evaluations_[static_cast<std::size_t>(step)];
  }
  /// Evaluation 0 at points[i], evaluation 1 at points[i + 1].
  [[nodiscard]] TimePoint evaluation_point(const SolverStep& step) const {
    return step.evaluation == 0 ? step.from() : step.to();
  }
  /// Evaluation 1 sees the Euler predictor, not x.
  [[nodiscard]] ConstView evaluation_input(const SolverStep& step, ConstView x) const {
    return step.evaluation == 0 ? x : ConstView(predictor_.view());
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& t = step.from();
    const TimePoint& s = step.to();
    const float clip = options_.clip_sample.value_or(0.0f);
    if (t.alpha == 0) { // Euler's limit from pure noise; evaluations(step) is 1 here
      if (clip > 0)
        backend.map(x, ClippedLimit{static_cast<float>(s.alpha), static_cast<float>(s.sigma), clip},
                    out.x0, out.eps);
      else
        backend.combine(x, Term{static_cast<float>(s.alpha), out.x0},
                        Term{static_cast<float>(s.sigma), out.eps});
      return;
    }
    // x_next = (alpha_next / alpha) x + eps_coeff * d, eps_coeff = alpha_next (s_next - s).
    const auto x_coeff = static_cast<float>(s.alpha / t.alpha);
    const double eps_coeff = s.sigma - s.alpha * (t.sigma / t.alpha);
    const ConstView x_in = x;

    if (step.evaluation == 0) {
      const bool second = evaluations(step.step) == 2;
      // d0: the model's eps, or (x - alpha clip(x0)) / sigma when clipping. A second-order step
      // keeps it, because the sampling loop reuses its output buffers for evaluation 1.
      ConstView d0 = out.eps;
      if (clip > 0 || second) {
        const View keep = derivative_.view();
        if (clip > 0)
          backend.map(keep,
                      Derivative{static_cast<float>(t.alpha), static_cast<float>(t.sigma), clip},
                      x_in, out.x0);
        else
          backend.combine(keep, Term{1.0f, out.eps});
        d0 = keep;
      }
      if (!second) { // Euler
        backend.combine(x, Term{x_coeff, x_in}, Term{static_cast<float>(eps_coeff), d0});
        return;
      }
      backend.combine(predictor_.view(), Term{x_coeff, x_in},
                      Term{static_cast<float>(eps_coeff), d0});
      return;
    }

    // Evaluation 1, at points[i + 1] on the predictor.
    ConstView d1 = out.eps;
    if (clip > 0) {
      // The predictor buffer is not needed any more: the clipped derivative replaces it.
      const View d = predictor_.view();
      backend.map(d, Derivative{static_cast<float>(s.alpha), static_cast<float>(s.sigma), clip},
                  ConstView(predictor_.view()), out.x0);
      d1 = d;
    }
    const auto half = static_cast<float>(0.5 * eps_coeff);
    backend.combine(x, Term{x_coeff, x_in}, Term{half, ConstView(derivative_.view())},
                    Term{half, d1});
  }

private:
  [[nodiscard]] static bool single_evaluation(const TimePoint& from, const TimePoint& to) {
    return to.sigma == 0 || from.alpha == 0;
  }

  TSTITCH_HOST_DEVICE static float clamp(float v, float r) { return v < -r ? -r : (v > r ? r : v); }

public:
  // Element-wise functors passed to backend.map. Public only because nvcc cannot instantiate a
  // kernel template (cuda::Backend::map) with a private nested type; not part of the API.
  /// The ODE derivative (y - clip(x0)) / s in VP terms: (x - alpha clip(x0)) / sigma.
  struct Derivative {
    float alpha, sigma, clip;
    TSTITCH_HOST_DEVICE float operator()(float x, float x0) const {
      return (x - alpha * clamp(x0, clip)) / sigma;
    }
  };
  /// Euler's limit from alpha = 0 with a clipped x0.
  struct ClippedLimit {
    float alpha_next, sigma_next, clip;
    TSTITCH_HOST_DEVICE float operator()(float x0, float eps) const {
      return alpha_next * clamp(x0, clip) + sigma_next * eps;
    }
  };

private:
  HeunOptions options_;
  std::vector<unsigned char> evaluations_;
  AnyTensor derivative_; ///< d0 of the current step
  AnyTensor predictor_;  ///< the Euler predictor, evaluation 1's input
};

} // namespace tstitch
