// SPDX-License-Identifier: Apache-2.0
#pragma once

// Inversion: trajectories that run from the clean end of a schedule to its noisy end, so that a
// sampler run maps an image to the latents that sampling would map back to it (DDIM inversion,
// DPM-Solver++ inversion; the first half of most image-editing methods). Inversion is a direction
// of a trajectory, not a solver: DDIM's x_s = alpha_s x0 + sigma_s eps and DPM-Solver++'s updates
// in lambda (with a negative step h) hold in both directions, so the existing solvers run an
// inverted trajectory unchanged through tstitch::sample, and the stitchers route its steps.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/spacing.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// Which n + 1 points an inverted n-step run visits.
enum class InversionRule {
  /// Any schedule: its own n-step trajectory run backwards. Each point is evaluated at its own
  /// timestep. A trajectory whose clean end has sigma = 0 suits DDIM; DPM-Solver++ needs a
  /// first point with sigma > 0 (e.g. FinalPoint::first_train_step), since lambda is +inf there.
  reversed,
  /// diffusers' DDIMInverseScheduler (a DiscreteSchedule, spacing leading or trailing): the step
  /// at timestep t moves from the noise level of t - N // n (or, below 0, the schedule's
  /// final_point: set_alpha_to_one) to that of t, and the model is conditioned on t, the
  /// timestep of the level it moves *to* (diffusers' convention, kept for parity).
  ddim,
  /// diffusers' DPMSolverMultistepInverseScheduler (a DiscreteSchedule, spacing
  /// linspace_multistep ("linspace"), leading_multistep ("leading") or trailing, sigma_spacing
  /// timesteps or karras): the n spaced timesteps from the cleanest up, then the noisiest
  /// (non-clipped) training level.
  dpm_solver
};

/// A NoiseSchedule whose trajectories run from the clean end to the noisy end of `base`.
/// point() and timestep_at() are the base schedule's, so solvers that evaluate between points
/// see the same maps as in the forward direction.
template <NoiseSchedule S> class InvertedSchedule {
public:
  explicit InvertedSchedule(S base, InversionRule rule = InversionRule::reversed)
      : base_(std::move(base)), rule_(rule) {
    if (rule_ != InversionRule::reversed)
      require(std::is_same_v<S, DiscreteSchedule>, "InversionRule",
              rule_ == InversionRule::ddim ? "ddim" : "dpm_solver",
              "reproduces a diffusers inverse scheduler and needs a DiscreteSchedule");
    if constexpr (std::is_same_v<S, DiscreteSchedule>)
      validate();
  }

  [[nodiscard]] const S& base() const { return base_; }
  [[nodiscard]] InversionRule rule() const { return rule_; }

  // ---- NoiseSchedule -------------------------------------------------------------------------

  [[nodiscard]] TimePoint point(double t) const { return base_.point(t); }
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    return static_cast<double>(base_.timestep_at(ve_sigma));
  }

  /// The n + 1 points of an n-step inversion, cleanest first.
  [[nodiscard]] Trajectory trajectory(int n) const {
    if constexpr (std::is_same_v<S, DiscreteSchedule>) {
      if (rule_ == InversionRule::ddim)
        return ddim_trajectory(n);
      if (rule_ == InversionRule::dpm_solver)
        return dpm_trajectory(n);
    }
    Trajectory t = base_.trajectory(n);
    std::reverse(t.points.begin(), t.points.end());
    return t;
  }

  /// The n model timesteps of an n-step inversion, in order (diffusers' `scheduler.timesteps`
  /// after set_timesteps(n) for the ddim and dpm_solver rules).
  [[nodiscard]] std::vector<double> timesteps(int n) const {
    const Trajectory t = trajectory(n);
    std::vector<double> out;
    for (int i = 0; i < t.steps(); ++i)
      out.push_back(t[i].timestep);
    return out;
  }

private:
  static constexpr const char* spacing_option = "DiscreteScheduleOptions::spacing";

  static const char* name(TimestepSpacing s) {
    switch (s) {
    case TimestepSpacing::leading:
      return "leading";
    case TimestepSpacing::trailing:
      return "trailing";
    case TimestepSpacing::linspace:
      return "linspace";
    case TimestepSpacing::linspace_multistep:
      return "linspace_multistep";
    case TimestepSpacing::leading_multistep:
      return "leading_multistep";
    default:
      return "another timestep spacing";
    }
  }
  static const char* name(SigmaSpacing s) {
    switch (s) {
    case SigmaSpacing::timesteps:
      return "timesteps";
    case SigmaSpacing::karras:
      return "karras";
    case SigmaSpacing::exponential:
      return "exponential";
    case SigmaSpacing::lu_lambdas:
      return "lu_lambdas";
    default: // spacings added later are not supported by the inverse rules either
      return "another sigma spacing";
    }
  }

  void validate() const {
    const DiscreteScheduleOptions& o = base_.options();
    if (rule_ == InversionRule::ddim) {
      require(o.spacing == TimestepSpacing::leading || o.spacing == TimestepSpacing::trailing,
              spacing_option, name(o.spacing),
              "DDIM inversion (DDIMInverseScheduler) supports leading and trailing only");
      require(o.sigma_spacing == SigmaSpacing::timesteps, "DiscreteScheduleOptions::sigma_spacing",
              name(o.sigma_spacing), "DDIM inversion spaces timesteps, not sigmas");
    }
    if (rule_ == InversionRule::dpm_solver) {
      require(o.spacing == TimestepSpacing::linspace_multistep ||
                  o.spacing == TimestepSpacing::leading_multistep ||
                  o.spacing == TimestepSpacing::trailing,
              spacing_option, name(o.spacing),
              "DPM-Solver++ inversion supports linspace_multistep, leading_multistep and "
              "trailing (diffusers' linspace, leading, trailing)");
      require(o.sigma_spacing == SigmaSpacing::timesteps || o.sigma_spacing == SigmaSpacing::karras,
              "DiscreteScheduleOptions::sigma_spacing", name(o.sigma_spacing),
              "DPM-Solver++ inversion supports timesteps and karras (diffusers' exponential and "
              "beta sigmas have no final point in DPMSolverMultistepInverseScheduler)");
    }
  }

  void check_num_steps(int n) const {
    require(n >= 1, "num_steps", n, "must be at least 1");
    require(n <= base_.num_train_timesteps(), "num_steps", n,
            detail::concat("exceeds num_train_timesteps (", base_.num_train_timesteps(), ")"));
  }

  /// The level at training timestep k: (alpha, sigma) = (sqrt(abar_k), sqrt(1 - abar_k)).
  [[nodiscard]] TimePoint level(double timestep, int k) const {
    TimePoint p = base_.point(static_cast<double>(k));
    p.timestep = timestep;
    return p;
  }

  /// DDIMInverseScheduler.set_timesteps and step. Step i is at timestep t_i; it starts at the
  /// level of t_i - N // n and ends at the level of t_i. Consecutive steps join (the end of one is
  /// the start of the next) for leading spacing and for trailing when n divides N; see the parity
  /// notes for the other trailing case.
  [[nodiscard]] Trajectory ddim_trajectory(int n) const {
    check_num_steps(n);
    const DiscreteScheduleOptions& o = base_.options();
    const int n_train = base_.num_train_timesteps();
    std::vector<int> ts(static_cast<std::size_t>(n));
    if (o.spacing == TimestepSpacing::leading) {
      const int ratio = n_train / n; // (arange(n) * (N // n)).round() + steps_offset
      for (int i = 0; i < n; ++i)
        ts[static_cast<std::size_t>(i)] = i * ratio + o.steps_offset;
      require(ts.back() <= n_train - 1, "DiscreteScheduleOptions::steps_offset", o.steps_offset,
              detail::concat("pushes the last inverse timestep (", ts.back(),
                             ") past num_train_timesteps - 1 (", n_train - 1, ")"));
    } else { // round(arange(N, 0, -N/n)[::-1]) - 1, numpy's arange fill
      const double step = static_cast<double>(n_train) / static_cast<double>(n);
      const double start = static_cast<double>(n_train);
      const double delta = (start + -step) - start;
      for (int i = 0; i < n; ++i) {
        const double v = i == 0 ? start : start + static_cast<double>(i) * delta;
        ts[static_cast<std::size_t>(n - 1 - i)] = static_cast<int>(spacing::round_half_even(v)) - 1;
      }
    }
    const int ratio = n_train / n;
    const auto start_level = [&](int t) {
      const int k = std::min(t - ratio, n_train - 1);
      if (k >= 0)
        return level(static_cast<double>(t), k);
      if (o.final_point == FinalPoint::clean) // set_alpha_to_one
        return TimePoint{static_cast<double>(t), 1.0, 0.0};
      return level(static_cast<double>(t), 0);
    };
    Trajectory traj;
    traj.num_train_timesteps = static_cast<double>(n_train);
    for (int t : ts)
      traj.points.push_back(start_level(t));
    // The end: the level of the last timestep, labelled with the timestep a further step would
    // condition on (it is never evaluated).
    const int last = ts.back();
    traj.points.push_back(level(static_cast<double>(std::min(last + ratio, n_train - 1)), last));
    return traj;
  }

  /// DPMSolverMultistepInverseScheduler.set_timesteps.
  [[nodiscard]] Trajectory dpm_trajectory(int n) const {
    check_num_steps(n);
    const DiscreteScheduleOptions& o = base_.options();
    const int n_train = base_.num_train_timesteps();
    const int noisiest = n_train - 1 - clipped_count();
    Trajectory traj;
    traj.num_train_timesteps = static_cast<double>(n_train);
    std::vector<double> ts(static_cast<std::size_t>(n));
    if (o.sigma_spacing == SigmaSpacing::karras) {
      // diffusers hands the ramp the training sigmas in increasing order, so its "sigma_min" is
      // the largest and the ramp climbs: (small^(1/rho) + r (large^(1/rho) - small^(1/rho)))^rho.
      const auto& train = base_.train_sigmas();
      const double small = o.sigma_min.value_or(static_cast<double>(train.front()));
      const double large = o.sigma_max.value_or(static_cast<double>(train.back()));
      const double rho = o.karras_rho;
      const double small_inv = std::pow(small, 1.0 / rho);
      const double large_inv = std::pow(large, 1.0 / rho);
      const std::vector<double> ramp = spacing::numpy_linspace(0.0, 1.0, n);
      for (int i = 0; i < n; ++i) {
        const double s =
            std::pow(small_inv + ramp[static_cast<std::size_t>(i)] * (large_inv - small_inv), rho);
        const double t = spacing::round_half_even(base_.timestep_at(s));
        const double stored = static_cast<float>(s); // self.sigmas is float32
        const double alpha = 1.0 / std::sqrt(stored * stored + 1.0);
        traj.points.push_back(TimePoint{t, alpha, stored * alpha});
        ts[static_cast<std::size_t>(i)] = t;
      }
      traj.points.push_back(traj.points.back()); // sigmas[-1:] again: a zero-length last step
    } else {
      switch (o.spacing) {
      case TimestepSpacing::linspace_multistep: { // linspace(0, noisiest, n + 1).round()[:-1]
        const auto lin = spacing::numpy_linspace(0.0, static_cast<double>(noisiest), n + 1);
        for (int i = 0; i < n; ++i)
          ts[static_cast<std::size_t>(i)] =
              spacing::round_half_even(lin[static_cast<std::size_t>(i)]);
        break;
      }
      case TimestepSpacing::leading_multistep: { // arange(n + 1)[:-1] * ratio + steps_offset
        const int ratio = (noisiest + 1) / (n + 1);
        for (int i = 0; i < n; ++i)
          ts[static_cast<std::size_t>(i)] = static_cast<double>(i * ratio + o.steps_offset);
        require(ts.back() <= n_train - 1, "DiscreteScheduleOptions::steps_offset", o.steps_offset,
                detail::concat("pushes the last inverse timestep (", ts.back(),
                               ") past num_train_timesteps - 1 (", n_train - 1, ")"));
        break;
      }
      default: { // trailing: round(arange(noisiest + 1, 0, -N/n))[::-1] - 1
        const double step = static_cast<double>(n_train) / static_cast<double>(n);
        const double start = static_cast<double>(noisiest + 1);
        const double delta = (start + -step) - start;
        const auto count = static_cast<int>(std::ceil(start / step));
        require(count == n, "num_steps", n,
                detail::concat("gives ", count, " trailing inverse timesteps (diffusers' arange)"));
        for (int i = 0; i < n; ++i) {
          const double v = i == 0 ? start : start + static_cast<double>(i) * delta;
          ts[static_cast<std::size_t>(n - 1 - i)] = spacing::round_half_even(v) - 1.0;
        }
        break;
      }
      }
      for (double t : ts)
        traj.points.push_back(level(t, static_cast<int>(t)));
      traj.points.push_back(level(static_cast<double>(noisiest), noisiest));
    }
    for (std::size_t i = 1; i < ts.size(); ++i)
      require(ts[i] != ts[i - 1], "num_steps", n,
              detail::concat("repeats timestep ", ts[i],
                             " (diffusers would drop the repeat and run fewer steps)"));
    return traj;
  }

  /// DPM-Solver's lambda_min_clipped: how many of the noisiest training timesteps have
  /// lambda = log(alpha) - log(sigma) (float32) below the bound.
  [[nodiscard]] int clipped_count() const {
    const auto& bound = base_.options().lambda_min_clipped;
    if (!bound)
      return 0;
    const auto& ac = base_.alphas_cumprod();
    int clipped = 0;
    for (std::size_t k = ac.size(); k-- > 0;) {
      const float lambda_t = std::log(std::sqrt(ac[k])) - std::log(std::sqrt(1.0f - ac[k]));
      if (!(static_cast<double>(lambda_t) < *bound))
        break;
      ++clipped;
    }
    return clipped;
  }

  S base_;
  InversionRule rule_;
};

/// `schedule` run from its clean end to its noisy end (see InversionRule).
template <NoiseSchedule S>
[[nodiscard]] InvertedSchedule<S> inverted(S schedule,
                                           InversionRule rule = InversionRule::reversed) {
  return InvertedSchedule<S>(std::move(schedule), rule);
}

/// diffusers' DDIMInverseScheduler on `schedule` (DDIMInverseScheduler's config maps to the
/// DiscreteScheduleOptions of the forward DDIMScheduler; pair it with the DDIM solver).
[[nodiscard]] inline InvertedSchedule<DiscreteSchedule> ddim_inverse(DiscreteSchedule schedule) {
  return InvertedSchedule<DiscreteSchedule>(std::move(schedule), InversionRule::ddim);
}

/// diffusers' DPMSolverMultistepInverseScheduler on `schedule` (pair it with DPMSolverMultistep,
/// algorithm dpmsolver_pp).
[[nodiscard]] inline InvertedSchedule<DiscreteSchedule>
dpm_solver_inverse(DiscreteSchedule schedule) {
  return InvertedSchedule<DiscreteSchedule>(std::move(schedule), InversionRule::dpm_solver);
}

static_assert(NoiseSchedule<InvertedSchedule<DiscreteSchedule>>);

} // namespace tstitch
