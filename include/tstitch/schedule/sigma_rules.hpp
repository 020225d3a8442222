// SPDX-License-Identifier: Apache-2.0
#pragma once

// Sigma rules: the named schedules that stable-diffusion.cpp (`--scheduler`) and ComfyUI
// (scheduler names and scheduler nodes) offer on top of a model's training schedule. Each rule
// gives the n + 1 VE sigmas (sigma / alpha) of an n-step run, the last one 0; SigmaSchedule turns
// them into a Trajectory over the model's own schedule, which also tells the model its timesteps.
// Users move between those tools and tstitch, so each rule follows their formula and their
// float32 result (parity doc, sigma rules section); the rules themselves are:
//
//   ays_sd15/ays_sdxl/ays_svd  Align Your Steps (Sabour et al. 2024): NVIDIA's published 10-step
//                              tables, log-linearly interpolated to other step counts
//   gits                       GITS (Chen et al. 2024): published tables for 2..20 steps per
//                              coefficient 0.80..1.50, log-linearly interpolated beyond 20
//   sgm_uniform                n timesteps uniform from N-1 down to (not including) 0
//   simple                     every (N/n)-th training sigma, from the noisiest
//   kl_optimal                 uniform in arctan(sigma) between the training sigma range
//
// (The AYS and GITS tables are for Stable Diffusion's sigma range; like the two tools, we apply
// them to whatever schedule they are given. AYS's SVD table is for SVD's EDM model.)

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/gits_tables.hpp"
#include "tstitch/schedule/spacing.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// A named sigma rule (see the file comment). The comments give stable-diffusion.cpp's
/// `--scheduler` value and ComfyUI's scheduler / node name.
enum class SigmaRule {
  ays_sd15,    ///< sd.cpp "ays" on an SD 1.x model; ComfyUI AlignYourStepsScheduler "SD1"
  ays_sdxl,    ///< sd.cpp "ays" on an SDXL model; ComfyUI AlignYourStepsScheduler "SDXL"
  ays_svd,     ///< sd.cpp "ays" on SVD; ComfyUI AlignYourStepsScheduler "SVD"
  gits,        ///< sd.cpp "gits" (coefficient 1.20); ComfyUI GITSScheduler
  sgm_uniform, ///< sd.cpp "sgm_uniform"; ComfyUI "sgm_uniform"
  simple,      ///< sd.cpp "simple"; ComfyUI "simple"
  kl_optimal   ///< sd.cpp "kl_optimal"; ComfyUI "kl_optimal"
};

/// The rule's name as this header spells it ("ays_sd15", "gits", ...), for messages.
[[nodiscard]] constexpr const char* sigma_rule_name(SigmaRule rule) {
  switch (rule) {
  case SigmaRule::ays_sd15:
    return "ays_sd15";
  case SigmaRule::ays_sdxl:
    return "ays_sdxl";
  case SigmaRule::ays_svd:
    return "ays_svd";
  case SigmaRule::gits:
    return "gits";
  case SigmaRule::sgm_uniform:
    return "sgm_uniform";
  case SigmaRule::simple:
    return "simple";
  case SigmaRule::kl_optimal:
    return "kl_optimal";
  }
  return "unknown";
}

/// The options of a sigma rule beyond its name.
struct SigmaRuleOptions {
  /// GITS coefficient: one of 0.80, 0.85, ..., 1.50 (ComfyUI's choices; 1.20 is ComfyUI's default
  /// and the value stable-diffusion.cpp always uses). Only applies to SigmaRule::gits.
  double gits_coeff = 1.20;

  bool operator==(const SigmaRuleOptions&) const = default;
};

namespace sigma_rules {

/// The Align Your Steps 10-step sigma tables (11 values, the last = the training sigma_min), as
/// published on NVIDIA's AYS "how to" page and used by ComfyUI and stable-diffusion.cpp.
inline constexpr double ays_sd15_table[11] = {
    14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
    0.9642583904,  0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582};
inline constexpr double ays_sdxl_table[11] = {
    14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
    0.5550693289,  0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582};
inline constexpr double ays_svd_table[11] = {700.00, 54.5,  15.886, 7.977, 4.248, 1.789,
                                             0.981,  0.403, 0.173,  0.034, 0.002};

/// `np.interp(x, xp, fp)` for one x in [xp.front(), xp.back()], xp increasing: numpy's
/// slope * (x - xp[j]) + fp[j] with the slope computed first, and fp[j] itself where x hits a
/// knot (so the ends are exact).
[[nodiscard]] inline double numpy_interp(double x, std::span<const double> xp,
                                         std::span<const double> fp) {
  const std::size_t last = xp.size() - 1;
  if (x >= xp[last])
    return fp[last];
  if (x <= xp[0])
    return fp[0];
  std::size_t j = 0;
  while (xp[j + 1] <= x)
    ++j;
  if (xp[j] == x)
    return fp[j];
  const double slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
  return slope * (x - xp[j]) + fp[j];
}

/// Log-linear interpolation of a decreasing table to `count` values (the AYS paper's
/// loglinear_interp, as ComfyUI evaluates it in numpy double): the table's logs, ascending, are
/// placed at linspace(0, 1, size) and read back at linspace(0, 1, count). Both ends are kept.
[[nodiscard]] inline std::vector<double> loglinear_interp(std::span<const double> decreasing,
                                                          int count) {
  require(decreasing.size() >= 2, "table.size()", decreasing.size(), "needs at least two values");
  require(count >= 2, "count", count, "must be at least 2");
  const int size = static_cast<int>(decreasing.size());
  const std::vector<double> xs = spacing::numpy_linspace(0.0, 1.0, size);
  std::vector<double> ys(decreasing.size());
  for (std::size_t i = 0; i < ys.size(); ++i)
    ys[i] = std::log(decreasing[decreasing.size() - 1 - i]);
  const std::vector<double> new_xs = spacing::numpy_linspace(0.0, 1.0, count);
  std::vector<double> out(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < out.size(); ++i)
    out[out.size() - 1 - i] = std::exp(numpy_interp(new_xs[i], xs, ys));
  return out;
}

/// The n + 1 sigmas of a table rule: the table itself when it has n + 1 values, else its
/// log-linear interpolation; each rounded to float32 (both tools hand float32 sigmas on), the
/// last replaced by 0 so that the run ends clean.
[[nodiscard]] inline std::vector<double> from_table(std::span<const double> table, int n) {
  std::vector<double> out = static_cast<std::size_t>(n) + 1 == table.size()
                                ? std::vector<double>(table.begin(), table.end())
                                : loglinear_interp(table, n + 1);
  for (double& s : out)
    s = static_cast<float>(s);
  out.back() = 0.0;
  return out;
}

/// Align Your Steps: the n + 1 VE sigmas for rule ays_sd15, ays_sdxl or ays_svd.
[[nodiscard]] inline std::vector<double> ays(SigmaRule rule, int n) {
  require(n >= 1, "num_steps", n, "must be at least 1");
  switch (rule) {
  case SigmaRule::ays_sd15:
    return from_table(ays_sd15_table, n);
  case SigmaRule::ays_sdxl:
    return from_table(ays_sdxl_table, n);
  case SigmaRule::ays_svd:
    return from_table(ays_svd_table, n);
  default:
    throw_invalid_argument("rule", sigma_rule_name(rule), "is not an Align Your Steps rule");
  }
}

/// The index k of GITS coefficient 0.80 + 0.05 k; rejects any other value.
[[nodiscard]] inline int gits_coeff_index(double coeff) {
  const double scaled = coeff * 20.0;
  const double k = std::nearbyint(scaled);
  require(std::isfinite(coeff) && std::abs(scaled - k) < 1e-6 && k >= 16 && k <= 30,
          "SigmaRuleOptions::gits_coeff", coeff, "must be one of 0.80, 0.85, ..., 1.50");
  return static_cast<int>(k) - 16;
}

/// GITS: the n + 1 VE sigmas for coefficient `coeff`: the published row for n <= 20, the log-linear
/// interpolation of the 20-step row beyond. n = 1 has no row (ComfyUI's minimum is 2 steps).
[[nodiscard]] inline std::vector<double> gits(double coeff, int n) {
  const int k = gits_coeff_index(coeff);
  require(n >= sigma_tables::gits_min_steps, "num_steps", n, "GITS needs at least 2 steps");
  const double* levels = sigma_tables::gits_noise_levels[k];
  const int row = std::min(n, sigma_tables::gits_max_steps);
  const std::span<const double> table(levels + sigma_tables::gits_row_offset(row),
                                      static_cast<std::size_t>(row) + 1);
  return from_table(table, n);
}

/// simple: the training timesteps N-1-int(i * (N / n)) for i < n, the Python expression ComfyUI
/// evaluates in double. (stable-diffusion.cpp evaluates N / n in float32: for N = 1000 one of its
/// timesteps differs by 1 at n = 30, 38, 60, 76, ... — 112 of the n <= 1000.)
[[nodiscard]] inline std::vector<double> simple_timesteps(int num_train_timesteps, int n) {
  require(n >= 1, "num_steps", n, "must be at least 1");
  require(n <= num_train_timesteps, "num_steps", n,
          detail::concat("exceeds num_train_timesteps (", num_train_timesteps,
                         "): simple would repeat training sigmas"));
  const double stride = static_cast<double>(num_train_timesteps) / static_cast<double>(n);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<double>(
        num_train_timesteps - 1 - static_cast<int>(static_cast<double>(i) * stride));
  return out;
}

/// sgm_uniform: linspace(N-1, 0, n + 1) without its last value, as float32 values (both tools
/// keep float32 timesteps; we round numpy's double linspace once, where ComfyUI's torch and
/// stable-diffusion.cpp's running sum may land one or more float32 ulps away).
[[nodiscard]] inline std::vector<double> sgm_uniform_timesteps(int num_train_timesteps, int n) {
  require(n >= 1, "num_steps", n, "must be at least 1");
  // numpy's linspace(N - 1, 0, n + 1) element for element (see spacing::numpy_linspace), the
  // last (0) dropped, each value rounded to float32 through a volatile: g++ 12 -O3's SLP
  // vectoriser dropped the rounding of the last two values when this was inlined into
  // SigmaSchedule::timesteps.
  const double start = static_cast<double>(num_train_timesteps - 1);
  const double step = (0.0 - start) / static_cast<double>(n);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    volatile float rounded = static_cast<float>(static_cast<double>(i) * step + start);
    out[static_cast<std::size_t>(i)] = rounded;
  }
  return out;
}

/// The training sigma at model time t the k-diffusion way (ComfyUI's ModelSamplingDiscrete.sigma,
/// stable-diffusion.cpp's t_to_sigma): exp of the linear interpolation of the float32 log-sigma
/// table, in double.
[[nodiscard]] inline double log_sigma_interp(std::span<const float> log_sigmas, double t) {
  const double last = static_cast<double>(log_sigmas.size() - 1);
  t = std::clamp(t, 0.0, last);
  const double low = std::floor(t);
  const double w = t - low;
  const auto lo = static_cast<std::size_t>(low);
  const std::size_t hi = w > 0 ? lo + 1 : lo;
  return std::exp((1.0 - w) * static_cast<double>(log_sigmas[lo]) +
                  w * static_cast<double>(log_sigmas[hi]));
}

/// kl_optimal: tan of a ramp uniform in arctan(sigma), from arctan(sigma_max) down to
/// arctan(sigma_min), n values and then 0 (double, rounded to float32). n = 1 gives
/// {sigma_max, 0} as stable-diffusion.cpp does (ComfyUI divides by n - 1 = 0 there).
[[nodiscard]] inline std::vector<double> kl_optimal(double sigma_min, double sigma_max, int n) {
  require(n >= 1, "num_steps", n, "must be at least 1");
  require(sigma_min > 0 && sigma_min < sigma_max && std::isfinite(sigma_max), "sigma_min",
          sigma_min, detail::concat("must be positive and below sigma_max (", sigma_max, ")"));
  std::vector<double> out(static_cast<std::size_t>(n) + 1, 0.0);
  if (n == 1) {
    out[0] = static_cast<float>(sigma_max);
    return out;
  }
  const double a_min = std::atan(sigma_min), a_max = std::atan(sigma_max);
  for (int i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(n - 1);
    out[static_cast<std::size_t>(i)] = static_cast<float>(std::tan(t * a_min + (1.0 - t) * a_max));
  }
  return out;
}

} // namespace sigma_rules

/// Schedules that expose a discrete training table (DiscreteSchedule): what simple, sgm_uniform
/// and kl_optimal are defined on.
template <class S>
concept has_training_sigmas = requires(const S& s) {
  { s.train_sigmas() } -> std::convertible_to<const std::vector<float>&>;
  { s.log_sigmas() } -> std::convertible_to<const std::vector<float>&>;
  { s.num_train_timesteps() } -> std::convertible_to<int>;
};

/// A model's schedule (`base`) sampled at the sigmas of a SigmaRule:
/// `SigmaSchedule{DiscreteSchedule(sd15_options), SigmaRule::ays_sd15}`.
///
/// Point i of an n-step trajectory sits at the rule's float32 VE sigma s_i (alpha = 1/sqrt(1 +
/// s^2), sigma = s alpha) and carries the model time base.timestep_at(s_i) as a float32 value, as
/// stable-diffusion.cpp tells the model sigma_to_t(sigma) (and diffusers' set_timesteps(sigmas=)
/// stores it). simple and sgm_uniform are defined by their timesteps, so their points carry those
/// timesteps themselves (timestep_at(s_i) gives them back to ~1e-4).
/// The last point is s = 0, at model time base.timestep_at(0); it is never evaluated.
/// point() and timestep_at() are the base's own maps.
///
/// AYS and GITS need only timestep_at, so any NoiseSchedule works as the base (AYS's SVD table
/// with an EDMSchedule, for instance); simple, sgm_uniform and kl_optimal need the training
/// table of a DiscreteSchedule.
template <NoiseSchedule Base = DiscreteSchedule> class SigmaSchedule {
public:
  SigmaSchedule(Base base, SigmaRule rule, SigmaRuleOptions options = {})
      : base_(std::move(base)), rule_(rule), options_(options) {
    if (rule_ == SigmaRule::gits)
      (void)sigma_rules::gits_coeff_index(options_.gits_coeff);
    else
      require(options_.gits_coeff == SigmaRuleOptions{}.gits_coeff, "SigmaRuleOptions::gits_coeff",
              options_.gits_coeff, "only applies to SigmaRule::gits");
    if constexpr (!has_training_sigmas<Base>)
      require(!needs_training_table(), "rule", sigma_rule_name(rule_),
              "needs a DiscreteSchedule base: the rule is defined on its training sigmas");
  }

  // ---- NoiseSchedule -------------------------------------------------------------------------

  [[nodiscard]] TimePoint point(double t) const { return base_.point(t); }
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    return static_cast<double>(base_.timestep_at(ve_sigma));
  }

  [[nodiscard]] Trajectory trajectory(int n) const {
    const std::vector<double> s = sigmas(n);
    const std::vector<double> t = timesteps(n);
    Trajectory traj;
    traj.num_train_timesteps = num_train_timesteps();
    traj.points.reserve(s.size());
    for (std::size_t i = 0; i < t.size(); ++i) {
      const double alpha = 1.0 / std::sqrt(s[i] * s[i] + 1.0);
      traj.points.push_back(TimePoint{t[i], alpha, s[i] * alpha});
    }
    traj.points.push_back(TimePoint{timestep_at(0.0), 1.0, 0.0});
    return traj;
  }

  // ---- the rule ------------------------------------------------------------------------------

  /// The n + 1 VE sigmas of an n-step run, noisiest first, float32 values; the last is 0.
  [[nodiscard]] std::vector<double> sigmas(int n) const {
    switch (rule_) {
    case SigmaRule::ays_sd15:
    case SigmaRule::ays_sdxl:
    case SigmaRule::ays_svd:
      return sigma_rules::ays(rule_, n);
    case SigmaRule::gits:
      return sigma_rules::gits(options_.gits_coeff, n);
    default:
      break;
    }
    if constexpr (has_training_sigmas<Base>) {
      const std::vector<float>& train = base_.train_sigmas();
      if (rule_ == SigmaRule::kl_optimal)
        return sigma_rules::kl_optimal(train.front(), train.back(), n);
      std::vector<double> out;
      out.reserve(static_cast<std::size_t>(n) + 1);
      if (rule_ == SigmaRule::simple) {
        for (double t : sigma_rules::simple_timesteps(base_.num_train_timesteps(), n))
          out.push_back(train[static_cast<std::size_t>(t)]);
      } else {
        for (double t : sigma_rules::sgm_uniform_timesteps(base_.num_train_timesteps(), n))
          out.push_back(static_cast<float>(sigma_rules::log_sigma_interp(base_.log_sigmas(), t)));
      }
      out.push_back(0.0);
      return out;
    }
    throw_invalid_argument("rule", sigma_rule_name(rule_), "needs a DiscreteSchedule base");
  }

  /// The n model timesteps of an n-step run (the first n points' timesteps).
  [[nodiscard]] std::vector<double> timesteps(int n) const {
    if constexpr (has_training_sigmas<Base>) {
      if (rule_ == SigmaRule::simple)
        return sigma_rules::simple_timesteps(base_.num_train_timesteps(), n);
      if (rule_ == SigmaRule::sgm_uniform)
        return sigma_rules::sgm_uniform_timesteps(base_.num_train_timesteps(), n);
    }
    std::vector<double> out = sigmas(n);
    out.pop_back();
    for (double& s : out)
      s = static_cast<float>(timestep_at(s));
    return out;
  }

  [[nodiscard]] const Base& base() const { return base_; }
  [[nodiscard]] SigmaRule rule() const { return rule_; }
  [[nodiscard]] const SigmaRuleOptions& options() const { return options_; }

private:
  [[nodiscard]] bool needs_training_table() const {
    return rule_ == SigmaRule::simple || rule_ == SigmaRule::sgm_uniform ||
           rule_ == SigmaRule::kl_optimal;
  }

  [[nodiscard]] double num_train_timesteps() const {
    if constexpr (has_training_sigmas<Base>)
      return static_cast<double>(base_.num_train_timesteps());
    else
      return base_.trajectory(1).num_train_timesteps;
  }

  Base base_;
  SigmaRule rule_;
  SigmaRuleOptions options_;
};

static_assert(NoiseSchedule<SigmaSchedule<DiscreteSchedule>>);

} // namespace tstitch
