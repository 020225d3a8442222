// SPDX-License-Identifier: Apache-2.0
#pragma once

// FlowMatchSchedule: rectified-flow / flow-matching models (SD3, Flux, Wan): x_s = (1 - s) x0 +
// s eps, model time t = s * N. Inference sigmas follow diffusers' FlowMatchEulerDiscreteScheduler,
// FlowMapEulerDiscreteScheduler and UniPC's flow-karras mode exactly (parity doc §4.8, §5).

#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/schedule/spacing.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// How a FlowMatchSchedule lays out the n sigmas of an n-step run.
enum class FlowSigmaSpacing {
  /// FlowMatchEulerDiscreteScheduler (SD3, Flux): n model times uniform from the shifted training
  /// range's top (s = 1) to its bottom, shifted again, then s = 0. At shift 1 the last step starts
  /// at s = 1/N.
  uniform,
  /// FlowMapEulerDiscreteScheduler: s = shift(linspace(1, 0, n + 1)), uniform all the way to 0.
  uniform_to_zero,
  /// UniPC with use_flow_sigmas and use_karras_sigmas: a Karras ramp in VE sigma k between
  /// karras_sigma_max and karras_sigma_min, mapped to s = k / (k + 1); integer (truncated) model
  /// times. No shift.
  karras
};

/// Options of a FlowMatchSchedule (defaults: diffusers' FlowMatchEulerDiscreteScheduler).
struct FlowMatchScheduleOptions {
  int num_train_timesteps = 1000; ///< N: model time t = s * N
  /// Timestep shift s' = shift * s / (1 + (shift - 1) * s) (SD3 uses 3). Not used by karras.
  double shift = 1.0;
  FlowSigmaSpacing spacing = FlowSigmaSpacing::uniform;
  /// Ends of the karras ramp, as VE sigmas k = s / (1 - s); 0.01 and 200 are the values of
  /// diffusers' flow-karras test (UniPC has no defaults that make sense for flow models).
  double karras_sigma_min = 0.01;
  double karras_sigma_max = 200.0;
  double karras_rho = 7.0;
};

/// A flow-matching noise schedule: alpha = 1 - s, sigma = s, model time t = s * N.
class FlowMatchSchedule {
public:
  FlowMatchSchedule() : FlowMatchSchedule(FlowMatchScheduleOptions{}) {}

  explicit FlowMatchSchedule(FlowMatchScheduleOptions options) : options_(std::move(options)) {
    require(options_.num_train_timesteps >= 1, "num_train_timesteps", options_.num_train_timesteps,
            "must be at least 1");
    require(options_.shift > 0 && std::isfinite(options_.shift), "shift", options_.shift,
            "must be positive and finite");
    if (options_.spacing == FlowSigmaSpacing::karras) {
      // UniPC's flow-karras branch never applies flow_shift; refusing beats silently ignoring it.
      require(options_.shift == 1.0, "shift", options_.shift,
              "is not applied to karras flow sigmas (as in diffusers' UniPC); leave it at 1");
      require(options_.karras_rho > 0 && std::isfinite(options_.karras_rho), "karras_rho",
              options_.karras_rho, "must be positive and finite");
      require(options_.karras_sigma_min > 0 && std::isfinite(options_.karras_sigma_min),
              "karras_sigma_min", options_.karras_sigma_min, "must be positive and finite");
      require(options_.karras_sigma_max > options_.karras_sigma_min &&
                  std::isfinite(options_.karras_sigma_max),
              "karras_sigma_max", options_.karras_sigma_max,
              "must be finite and above karras_sigma_min");
    }
  }

  /// A schedule with the user's own sigmas s_0 > s_1 > ... in (0, 1], one per step; s = 0 is
  /// appended as the end (FlowMapEuler's custom sigmas). The shift is applied to them unless it is
  /// 1, where they are kept bit for bit. trajectory(n) then needs n == sigmas.size().
  [[nodiscard]] static FlowMatchSchedule from_sigmas(const std::vector<double>& sigmas,
                                                     FlowMatchScheduleOptions options = {}) {
    FlowMatchSchedule s(std::move(options));
    s.check_custom_list(sigmas, "sigmas", 1.0);
    s.custom_sigmas_.reserve(sigmas.size());
    s.custom_timesteps_.reserve(sigmas.size());
    for (double v : sigmas) {
      const double shifted = s.shifted(v);
      s.custom_sigmas_.push_back(shifted);
      s.custom_timesteps_.push_back(shifted * s.horizon());
    }
    return s;
  }

  /// A schedule with the user's own model times t_0 > t_1 > ... in (0, N], one per step:
  /// s = t / N (shifted unless the shift is 1), then s = 0 at the end. At shift 1 the model is
  /// given the user's timesteps unchanged (diffusers recomputes them as (t / N) * N, which can
  /// move them by one ulp).
  [[nodiscard]] static FlowMatchSchedule from_timesteps(const std::vector<double>& timesteps,
                                                        FlowMatchScheduleOptions options = {}) {
    FlowMatchSchedule s(std::move(options));
    s.check_custom_list(timesteps, "timesteps", s.horizon());
    s.custom_sigmas_.reserve(timesteps.size());
    s.custom_timesteps_.reserve(timesteps.size());
    for (double t : timesteps) {
      const double shifted = s.shifted(t / s.horizon());
      s.custom_sigmas_.push_back(shifted);
      s.custom_timesteps_.push_back(s.options_.shift == 1.0 ? t : shifted * s.horizon());
    }
    return s;
  }

  // ---- NoiseSchedule -------------------------------------------------------------------------

  /// The point at model time t in [0, N]: s = t / N, alpha = 1 - s, sigma = s. (The shift only
  /// decides which model times a run visits; it is already inside t.)
  [[nodiscard]] TimePoint point(double t) const {
    require(t >= 0 && t <= horizon(), "t", t, "must lie in [0, num_train_timesteps]");
    const double s = t / horizon();
    return TimePoint{t, 1.0 - s, s};
  }

  /// The model time with VE sigma k = s / (1 - s): t = N * k / (k + 1); k = +inf gives N.
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    require(ve_sigma >= 0, "ve_sigma", ve_sigma, "must be non-negative (and not NaN)");
    if (std::isinf(ve_sigma))
      return horizon();
    return horizon() * (ve_sigma / (ve_sigma + 1.0));
  }

  /// The n model times of an n-step run, noisiest first (diffusers' `scheduler.timesteps`).
  [[nodiscard]] std::vector<double> timesteps(int n) const { return plan(n).timesteps; }

  /// The n + 1 flow sigmas s of an n-step run, the last one 0 (diffusers' `scheduler.sigmas`).
  [[nodiscard]] std::vector<double> sigmas(int n) const {
    std::vector<double> out = plan(n).sigmas;
    out.push_back(0.0);
    return out;
  }

  /// The n + 1 points of an n-step run; the last is the clean end s = 0 at timestep 0 (never
  /// evaluated). With uniform spacing the first point is pure noise: alpha = 0, ve_sigma = inf,
  /// log_snr = -inf; solvers that take log(alpha) there must handle it (diffusers' UniPC nudges
  /// s = 1 down by 1e-6 for that reason; we keep the exact point).
  [[nodiscard]] Trajectory trajectory(int n) const {
    const Plan p = plan(n);
    Trajectory traj;
    traj.num_train_timesteps = horizon();
    traj.points.reserve(p.sigmas.size() + 1);
    for (std::size_t i = 0; i < p.sigmas.size(); ++i)
      traj.points.push_back(TimePoint{p.timesteps[i], 1.0 - p.sigmas[i], p.sigmas[i]});
    traj.points.push_back(TimePoint{0.0, 1.0, 0.0});
    return traj;
  }

  // ---- accessors -----------------------------------------------------------------------------

  /// s' = shift * s / (1 + (shift - 1) * s) in double (exactly s at shift 1).
  [[nodiscard]] double shifted(double s) const {
    const double shift = options_.shift;
    return shift * s / (1.0 + (shift - 1.0) * s);
  }
  [[nodiscard]] bool has_custom_list() const { return !custom_sigmas_.empty(); }
  /// The number of steps of a custom list (0 without one).
  [[nodiscard]] int custom_steps() const { return static_cast<int>(custom_sigmas_.size()); }
  [[nodiscard]] int num_train_timesteps() const { return options_.num_train_timesteps; }
  [[nodiscard]] const FlowMatchScheduleOptions& options() const { return options_; }

private:
  struct Plan {
    std::vector<double> sigmas;    ///< n flow sigmas s, without the final 0
    std::vector<double> timesteps; ///< n model times
  };

  [[nodiscard]] double horizon() const { return static_cast<double>(options_.num_train_timesteps); }

  void check_custom_list(const std::vector<double>& values, const char* name, double top) const {
    require(options_.spacing == FlowSigmaSpacing::uniform, "spacing",
            static_cast<int>(options_.spacing),
            "a custom list brings its own spacing; leave spacing at uniform");
    require(!values.empty(), detail::concat(name, ".size()"), values.size(),
            "needs at least one value");
    for (std::size_t i = 0; i < values.size(); ++i) {
      require(values[i] > 0 && values[i] <= top, detail::concat(name, "[", i, "]"), values[i],
              detail::concat("must lie in (0, ", top, "]"));
      if (i > 0)
        require(values[i] < values[i - 1], detail::concat(name, "[", i, "]"), values[i],
                "must be below the previous value (the list runs from noisy to clean)");
    }
  }

  [[nodiscard]] Plan plan(int n) const {
    require(n >= 1, "num_steps", n, "must be at least 1");
    if (has_custom_list()) {
      require(n == custom_steps(), "num_steps", n,
              detail::concat("must equal the length of the custom list (", custom_steps(), ")"));
      return Plan{custom_sigmas_, custom_timesteps_};
    }
    switch (options_.spacing) {
    case FlowSigmaSpacing::uniform:
      return plan_uniform(n);
    case FlowSigmaSpacing::uniform_to_zero:
      return plan_uniform_to_zero(n);
    case FlowSigmaSpacing::karras:
      break;
    }
    return plan_karras(n);
  }

  /// FlowMatchEulerDiscreteScheduler. Its constructor builds the training sigmas in float32 torch
  /// arithmetic, shifted, and keeps their ends as sigma_max / sigma_min; set_timesteps spaces the
  /// model times between those ends in double, divides by N, and shifts *again*.
  ///
  /// diffusers surprise: the bottom end is therefore shifted twice (at shift 3 the last sigma is
  /// shift(shift(1/N)) ~ 0.0089, not shift(1/N) ~ 0.0030); the top end is a fixed point (s = 1).
  /// We reproduce it. Stored sigmas are float32 and model times are float32(s * N), as there.
  [[nodiscard]] Plan plan_uniform(int n) const {
    const float shift32 = static_cast<float>(options_.shift);
    const float shift_minus_one32 = static_cast<float>(options_.shift - 1.0);
    const auto shift_train = [&](float s) { // torch: shift * s / (1 + (shift - 1) * s), float32
      const float num = shift32 * s;
      const float den = 1.0f + shift_minus_one32 * s;
      return num / den;
    };
    const float n_train32 = static_cast<float>(options_.num_train_timesteps);
    const double sigma_max = shift_train(1.0f);
    const double sigma_min = shift_train(1.0f / n_train32);
    const auto times = spacing::numpy_linspace(sigma_max * horizon(), sigma_min * horizon(), n);
    Plan p;
    p.sigmas.reserve(times.size());
    p.timesteps.reserve(times.size());
    for (double t : times) {
      const float s32 = static_cast<float>(shifted(t / horizon()));
      p.sigmas.push_back(s32);
      p.timesteps.push_back(static_cast<double>(s32 * n_train32));
    }
    return p;
  }

  /// FlowMapEulerDiscreteScheduler: float64 throughout (torch.linspace, then the shift unless it
  /// is exactly 1), model times s * N.
  [[nodiscard]] Plan plan_uniform_to_zero(int n) const {
    auto grid = spacing::torch_linspace(1.0, 0.0, n + 1);
    grid.pop_back();
    Plan p;
    for (double s : grid) {
      const double v = options_.shift == 1.0 ? s : shifted(s);
      p.sigmas.push_back(v);
      p.timesteps.push_back(v * horizon());
    }
    return p;
  }

  /// UniPC (use_flow_sigmas + use_karras_sigmas): Karras VE sigmas k, s = k / (k + 1) in double,
  /// model times int64(s * N) (truncation, parity doc §2.4), sigmas stored as float32.
  [[nodiscard]] Plan plan_karras(int n) const {
    const auto ks = spacing::karras_sigmas(options_.karras_sigma_min, options_.karras_sigma_max, n,
                                           options_.karras_rho);
    Plan p;
    for (double k : ks) {
      const double s = k / (k + 1.0);
      p.sigmas.push_back(static_cast<float>(s));
      p.timesteps.push_back(std::trunc(s * horizon()));
    }
    return p;
  }

  FlowMatchScheduleOptions options_;
  std::vector<double> custom_sigmas_;
  std::vector<double> custom_timesteps_;
};

static_assert(NoiseSchedule<FlowMatchSchedule>);

} // namespace tstitch
