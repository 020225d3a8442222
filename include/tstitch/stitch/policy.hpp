// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"

namespace tstitch {

/// A rule that says which of k models serves a step. Model 0 serves first (the noisiest steps,
/// usually the smallest model); indices never decrease along a trajectory for the rules here,
/// though user policies may do as they please.
///
/// 1. `model_for(ctx, k)` returns an index in [0, k) for the step described by ctx.
/// Optional: `check(k)` throws tstitch::invalid_argument when the rule cannot serve k models; the
/// stitcher calls it once, when it is built.
/// Optional: `route_step(ctx, k)`, the sampling loop's choice for step ctx (the stitcher's route()
/// asks it once per step): a rule whose choice depends on the run so far updates its state there,
/// so that model_for, which queries such as assignment() ask, stays free of effects.
template <class P>
concept StitchPolicy = requires(const P& p, const StepContext& ctx, std::size_t num_models) {
  { p.model_for(ctx, num_models) } -> std::convertible_to<std::size_t>;
};

/// By fraction of steps. With cumulative fractions c_0 = 0 < c_1 <= ... <= c_k = 1, model j serves
/// the steps i (0-based, of n) with
///     floor(c_j * n) <= i < floor(c_{j+1} * n).
/// Each c_j is rounded to 9 decimals first and the floor is taken in integers, so decimal
/// fractions behave as written: 0.7 of 100 steps is exactly 70 steps and 0.29 of 100 is 29 (a
/// plain double product would give 28.999999999999996 and floor to 28).
class StepFraction {
public:
  /// One fraction per model, each in [0, 1], summing to 1 (within 1e-9).
  explicit StepFraction(std::vector<double> fractions) {
    require(fractions.size() >= 1, "fractions.size()", fractions.size(), "must be at least 1");
    double sum = 0;
    for (std::size_t j = 0; j < fractions.size(); ++j) {
      const double f = fractions[j];
      if (!(f >= 0.0 && f <= 1.0)) // also rejects NaN
        throw_invalid_argument(detail::concat("fractions[", j, "]"), f, "must be in [0, 1]");
      sum += f;
      cumulative_.push_back(std::llround(sum * scale));
    }
    if (!(std::abs(sum - 1.0) <= 1e-9))
      throw_invalid_argument("sum of fractions", sum, "must be 1");
    cumulative_.back() = scale;
  }

  /// The two-model form: the first (small) model serves `small_fraction` of the steps.
  static StepFraction small_fraction(double r) {
    if (!(r >= 0.0 && r <= 1.0))
      throw_invalid_argument("small_fraction", r, "must be in [0, 1]");
    return StepFraction({r, 1.0 - r});
  }

  void check(std::size_t num_models) const {
    require(num_models == cumulative_.size(), "number of models", num_models,
            detail::concat("must equal the number of fractions, ", cumulative_.size()));
  }

  /// First step of model j's segment: floor(c_j * n), with c_0 = 0.
  [[nodiscard]] std::int64_t segment_begin(std::size_t j, std::int64_t n) const {
    if (j == 0)
      return 0;
    // c < 10^9 and n < 2^31 keep the product below 2^63.
    return cumulative_[j - 1] * n / scale;
  }

  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t num_models) const {
    std::size_t j = 0;
    while (j + 1 < num_models && ctx.step >= segment_begin(j + 1, ctx.num_steps))
      ++j;
    return j;
  }

  /// The cumulative fractions in units of 1e-9.
  [[nodiscard]] const std::vector<std::int64_t>& cumulative_nanos() const { return cumulative_; }

private:
  static constexpr std::int64_t scale = 1'000'000'000;
  std::vector<std::int64_t> cumulative_;
};

namespace detail {

/// Counts thresholds that `level` lies strictly below; thresholds are non-increasing, so model j
/// serves levels in [thresholds[j], thresholds[j-1]).
inline std::size_t count_below(double level, const std::vector<double>& thresholds,
                               std::size_t num_models) {
  std::size_t j = 0;
  while (j + 1 < num_models && j < thresholds.size() && level < thresholds[j])
    ++j;
  return j;
}

inline void check_thresholds(const std::vector<double>& thresholds, const char* name,
                             bool non_increasing) {
  for (std::size_t j = 0; j < thresholds.size(); ++j) {
    if (std::isnan(thresholds[j]))
      throw_invalid_argument(detail::concat(name, "[", j, "]"), thresholds[j], "must not be NaN");
    if (j > 0 &&
        (non_increasing ? thresholds[j] > thresholds[j - 1] : thresholds[j] < thresholds[j - 1]))
      throw_invalid_argument(detail::concat(name, "[", j, "]"), thresholds[j],
                             non_increasing ? "thresholds must not increase"
                                            : "thresholds must not decrease");
  }
}

inline void check_threshold_count(std::size_t count, std::size_t num_models) {
  require(count + 1 == num_models, "number of models", num_models,
          detail::concat("must be one more than the number of thresholds, ", count));
}

} // namespace detail

/// By model time. Two models: the first serves every step with t >= threshold. k models take k-1
/// non-increasing thresholds; model j serves thresholds[j] <= t < thresholds[j-1].
class TimestepThreshold {
public:
  explicit TimestepThreshold(std::vector<double> thresholds) : thresholds_(std::move(thresholds)) {
    detail::check_thresholds(thresholds_, "timestep thresholds", true);
  }
  explicit TimestepThreshold(double threshold)
      : TimestepThreshold(std::vector<double>{threshold}) {}
  void check(std::size_t num_models) const {
    detail::check_threshold_count(thresholds_.size(), num_models);
  }
  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t num_models) const {
    return detail::count_below(ctx.point.timestep, thresholds_, num_models);
  }

private:
  std::vector<double> thresholds_;
};

/// By noise level sigma / alpha (k-diffusion's sigma, TimePoint::ve_sigma). Two models: the first
/// serves every step with sigma/alpha >= threshold; k models as TimestepThreshold.
class SigmaThreshold {
public:
  explicit SigmaThreshold(std::vector<double> thresholds) : thresholds_(std::move(thresholds)) {
    detail::check_thresholds(thresholds_, "sigma thresholds", true);
  }
  explicit SigmaThreshold(double threshold) : SigmaThreshold(std::vector<double>{threshold}) {}
  void check(std::size_t num_models) const {
    detail::check_threshold_count(thresholds_.size(), num_models);
  }
  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t num_models) const {
    return detail::count_below(ctx.point.ve_sigma(), thresholds_, num_models);
  }

private:
  std::vector<double> thresholds_;
};

/// By log signal-to-noise ratio lambda = log(alpha^2 / sigma^2). Two models: the first serves every
/// step with lambda <= threshold; k models take non-decreasing thresholds and model j serves
/// thresholds[j-1] < lambda <= thresholds[j].
class LogSnrThreshold {
public:
  explicit LogSnrThreshold(std::vector<double> thresholds) : thresholds_(std::move(thresholds)) {
    detail::check_thresholds(thresholds_, "log-SNR thresholds", false);
    for (double& t : thresholds_)
      t = -t; // -lambda rises with noise like t and sigma do
  }
  explicit LogSnrThreshold(double threshold) : LogSnrThreshold(std::vector<double>{threshold}) {}
  void check(std::size_t num_models) const {
    detail::check_threshold_count(thresholds_.size(), num_models);
  }
  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t num_models) const {
    return detail::count_below(-ctx.point.log_snr(), thresholds_, num_models);
  }

private:
  std::vector<double> thresholds_;
};

/// The rule of the official T-Stitch DiT code (NVlabs/T-Stitch, dit/models.py, class TStitch),
/// reproduced bit for bit: the small model serves a step when, in double precision,
///     t / T >= 1 - ratio.
/// Because 1 - 0.7 is 0.30000000000000004 in binary floating point, ratio 0.7 at 100 DDIM steps
/// (t = 990, 980, ..., 0) gives 69 small-model steps, not 70. Two models only.
class PaperTimestep {
public:
  explicit PaperTimestep(double ratio, double num_train_timesteps = 1000)
      : ratio_(ratio), horizon_(num_train_timesteps) {
    if (!(ratio >= 0.0 && ratio <= 1.0))
      throw_invalid_argument("ratio", ratio, "must be in [0, 1]");
    if (!(num_train_timesteps > 0))
      throw_invalid_argument("num_train_timesteps", num_train_timesteps, "must be > 0");
  }
  void check(std::size_t num_models) const {
    require(num_models == 2, "number of models", num_models, "PaperTimestep stitches exactly 2");
  }
  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t) const {
    return ctx.point.timestep / horizon_ >= 1.0 - ratio_ ? 0 : 1;
  }

private:
  double ratio_;
  double horizon_;
};

/// Any StitchPolicy as one type (it holds a shared, immutable copy): for interfaces compiled once,
/// such as cuda::DeviceSampler, which takes its rule as an AnyPolicy so that StepFraction,
/// PaperTimestep, the thresholds and a user's own policy all reach it. check(k) forwards to the
/// held policy's check when it has one.
class AnyPolicy {
public:
  template <StitchPolicy P>
  requires(!std::same_as<std::remove_cvref_t<P>, AnyPolicy>) AnyPolicy(P policy) // NOLINT
      : policy_(std::make_shared<const P>(std::move(policy))),
        model_for_([](const void* p, const StepContext& ctx, std::size_t k) -> std::size_t {
          return static_cast<const P*>(p)->model_for(ctx, k);
        }),
        route_step_([](const void* p, const StepContext& ctx, std::size_t k) -> std::size_t {
          if constexpr (requires(const P& q) { q.route_step(ctx, k); })
            return static_cast<const P*>(p)->route_step(ctx, k);
          else
            return static_cast<const P*>(p)->model_for(ctx, k);
        }),
        check_([](const void* p, std::size_t k) {
          if constexpr (requires(const P& q) { q.check(k); })
            static_cast<const P*>(p)->check(k);
        }) {}

  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t num_models) const {
    return model_for_(policy_.get(), ctx, num_models);
  }
  /// The sampling loop's choice for a step: the policy's route_step if it has one, else model_for.
  [[nodiscard]] std::size_t route_step(const StepContext& ctx, std::size_t num_models) const {
    return route_step_(policy_.get(), ctx, num_models);
  }
  void check(std::size_t num_models) const { check_(policy_.get(), num_models); }

private:
  std::shared_ptr<const void> policy_;
  std::size_t (*model_for_)(const void*, const StepContext&, std::size_t);
  std::size_t (*route_step_)(const void*, const StepContext&, std::size_t);
  void (*check_)(const void*, std::size_t);
};

} // namespace tstitch
