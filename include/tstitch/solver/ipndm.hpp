// SPDX-License-Identifier: Apache-2.0
#pragma once

// iPNDM (Zhang & Chen 2022, "Fast Sampling of Diffusion Models with Exponential Integrator"):
// diffusers' IPNDMScheduler, a 4-step Adams-Bashforth method on the noise prediction with DDIM's
// transfer, and the schedule it samples on, which diffusers builds inside the scheduler.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <optional>
#include <utility>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/schedule/trajectory.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/multistep.hpp"

namespace tstitch {

/// The schedule of diffusers' IPNDMScheduler (the angle schedule of audio diffusion models such
/// as Dance Diffusion): model time t in [0, 1] with alpha = cos(pi t / 2), sigma = sin(pi t / 2).
/// An n-step run visits sigma_i = sin(pi s_i / 2)^2 for s = linspace(1, 0, n + 1) (diffusers calls
/// these sigmas "betas"), alpha_i = sqrt(1 - sigma_i^2), t_i = atan2(sigma_i, alpha_i) * 2 / pi:
/// the first point is pure noise (alpha = 0), the last clean. With `trained_betas` the user gives
/// the n + 1 sigmas of the run instead (diffusers' trained_betas), and only that n is served.
///
/// Every table is computed in float32 the way torch does on the CPU, since the points enter the
/// update directly (diffusers never rounds them to a training table).
class IPNDMSchedule {
public:
  IPNDMSchedule() = default;

  /// diffusers' trained_betas: the sigmas of the n + 1 points of an n-step run, each in [0, 1].
  explicit IPNDMSchedule(std::vector<double> trained_betas) : trained_(std::move(trained_betas)) {
    require(trained_->size() >= 2, "trained_betas.size()", trained_->size(),
            "needs at least 2 values (the n + 1 points of an n-step run)");
    for (std::size_t i = 0; i < trained_->size(); ++i)
      require((*trained_)[i] >= 0 && (*trained_)[i] <= 1, detail::concat("trained_betas[", i, "]"),
              (*trained_)[i], "must lie in [0, 1]");
  }

  [[nodiscard]] TimePoint point(double t) const {
    require(t >= 0 && t <= 1, "t", t, "must lie in [0, 1]");
    return {t, std::cos(std::numbers::pi / 2 * t), std::sin(std::numbers::pi / 2 * t)};
  }

  [[nodiscard]] double timestep_at(double ve_sigma) const {
    require(ve_sigma >= 0, "ve_sigma", ve_sigma, "must be non-negative (and not NaN)");
    return std::atan(ve_sigma) * 2 / std::numbers::pi;
  }

  [[nodiscard]] Trajectory trajectory(int n) const {
    require(n >= 1, "num_steps", n, "must be at least 1");
    if (trained_)
      require(static_cast<std::size_t>(n) + 1 == trained_->size(), "num_steps", n,
              detail::concat("must be trained_betas.size() - 1 = ", trained_->size() - 1));
    Trajectory traj;
    traj.num_train_timesteps = 1.0;
    for (int i = 0; i <= n; ++i) {
      const float sigma = trained_ ? static_cast<float>((*trained_)[static_cast<std::size_t>(i)])
                                   : angle_sigma(n, i);
      const float alpha = std::sqrt(1.0f - sigma * sigma);
      traj.points.push_back(TimePoint{static_cast<double>(timestep(sigma, alpha)), alpha, sigma});
    }
    // diffusers drops the last timestep and ends at (alpha, sigma) = (1, 0) only through its
    // tables; the final point is never evaluated, and carries t = 0 like every clean end.
    traj.points.back().timestep = 0;
    return traj;
  }

private:
  /// float32 sin(pi s_i / 2)^2 with s = torch.linspace(1, 0, n + 1) in float32 (torch fills the
  /// first half forwards from 1, the second half backwards from 0).
  [[nodiscard]] static float angle_sigma(int n, int i) {
    const float step = (0.0f - 1.0f) / static_cast<float>(n);
    const int count = n + 1;
    const float s = i < count / 2 ? 1.0f + step * static_cast<float>(i)
                                  : 0.0f - step * static_cast<float>(count - i - 1);
    const float angle = s * static_cast<float>(std::numbers::pi) / 2.0f;
    const auto root = static_cast<float>(std::sin(static_cast<double>(angle)));
    return root * root;
  }

  /// float32 atan2(sigma, alpha) / pi * 2.
  [[nodiscard]] static float timestep(float sigma, float alpha) {
    const auto angle =
        static_cast<float>(std::atan2(static_cast<double>(sigma), static_cast<double>(alpha)));
    return angle / static_cast<float>(std::numbers::pi) * 2.0f;
  }

  std::optional<std::vector<double>> trained_;
};

static_assert(NoiseSchedule<IPNDMSchedule>);

struct IPNDMOptions {
  /// At a model switch: keep the previous model's noise predictions, or restart at first order.
  HistoryPolicy history = HistoryPolicy::keep;

  friend bool operator==(const IPNDMOptions&, const IPNDMOptions&) = default;
};

/// diffusers' IPNDMScheduler on any trajectory: the step's noise prediction joins the history,
/// e = the Adams-Bashforth combination of the newest k = min(size, 4) predictions (1; 3/2, -1/2;
/// (23, -16, 5) / 12; (55, -59, 37, -9) / 24), and
///   x0' = (x - sigma e) / max(alpha, 1e-8),   x_next = alpha_next x0' + sigma_next e
/// in float32 in diffusers' order. From pure noise (alpha = 0, the schedule's first point) the
/// first step's e is x itself and x0' is exactly 0; diffusers' 1e-8 guard is kept for the
/// degenerate case of a history reaching such a point (its own test does that).
///
/// diffusers forms e = sigma x + alpha m from the raw output m, i.e. it assumes a v-prediction
/// model on a variance-preserving schedule (then e is the noise prediction); tstitch takes the
/// noise prediction of whatever the model predicts.
class IPNDM {
public:
  explicit IPNDM(IPNDMOptions options = {}) : options_(options) {}

  [[nodiscard]] const IPNDMOptions& options() const { return options_; }
  /// The Adams-Bashforth order of the latest step (0 before any).
  [[nodiscard]] int last_order() const { return last_order_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory&, std::int64_t batch, Shape shape) {
    history_.reserve(backend, 4, batch, shape);
    ensure_workspace(backend, combined_, batch, shape);
    last_order_ = 0;
  }

  void on_model_switch() {
    if (options_.history == HistoryPolicy::reset)
      history_.clear();
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    // At pure noise (alpha = 0) only a v or x0 model gives a usable eps; an epsilon model's x0
    // there would be divided by alpha.
    if (step.from().alpha == 0 && (out.prediction == Prediction::epsilon ||
                                   out.prediction == Prediction::epsilon_learned_sigma))
      throw_invalid_argument("model prediction", to_string(out.prediction),
                             "IPNDM starts at pure noise (alpha = 0), where it needs a v- or "
                             "sample-prediction model (diffusers' IPNDM reads the output as v)");
    backend.copy(history_.incoming(), out.eps);
    history_.push(step.from());
    const int k = history_.size();
    static constexpr std::array<std::array<float, 4>, 4> ab{
        {{1.0f, 0, 0, 0},
         {1.5f, -0.5f, 0, 0},
         {23.0f / 12, -16.0f / 12, 5.0f / 12, 0},
         {55.0f / 24, -59.0f / 24, 37.0f / 24, -9.0f / 24}}};
    const auto& w = ab[static_cast<std::size_t>(k - 1)];
    ConstView e = history_[0];
    if (k > 1) {
      const View c = combined_.view();
      std::array<Term, 5> terms{};
      for (int j = 0; j < k; ++j)
        terms[static_cast<std::size_t>(j)] = Term{w[static_cast<std::size_t>(j)], history_[j]};
      multistep::combine(backend, c, terms, k);
      e = c;
    }
    const TimePoint& from = step.from();
    const TimePoint& to = step.to();
    backend.map(x,
                Transfer{std::max(static_cast<float>(from.alpha), 1e-8f),
                         static_cast<float>(from.sigma), static_cast<float>(to.alpha),
                         static_cast<float>(to.sigma)},
                ConstView(x), e);
    last_order_ = k;
  }

  // Element-wise functor passed to backend.map. Public only because nvcc cannot instantiate a
  // kernel template (cuda::Backend::map) with a private nested type; not part of the API.
  /// diffusers' _get_prev_sample, in its float32 order.
  struct Transfer {
    float alpha, sigma, next_alpha, next_sigma;
    TSTITCH_HOST_DEVICE float operator()(float x, float e) const {
      const float x0 = (x - sigma * e) / alpha;
      return next_alpha * x0 + e * next_sigma;
    }
  };

private:
  IPNDMOptions options_;
  multistep::History history_; ///< diffusers' ets (the newest 4), newest first
  AnyTensor combined_;         ///< the Adams-Bashforth combination e
  int last_order_ = 0;
};

} // namespace tstitch
