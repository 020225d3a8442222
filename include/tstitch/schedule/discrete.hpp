// SPDX-License-Identifier: Apache-2.0
#pragma once

// DiscreteSchedule: a DDPM training schedule (betas over N training timesteps) and the ways
// diffusers picks n inference points from it. Numbers follow diffusers exactly, because users
// check tstitch against PyTorch pipelines (see docs/parity.md §2.1, §2.4, §4).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/schedule/spacing.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// How the training betas are laid out over the N training timesteps (diffusers `beta_schedule`).
enum class BetaSchedule {
  linear,           ///< linspace(beta_start, beta_end, N)
  scaled_linear,    ///< linspace(sqrt(beta_start), sqrt(beta_end), N)^2 (Stable Diffusion)
  squaredcos_cap_v2 ///< improved-DDPM cosine alpha-bar, betas capped at 0.999; ignores
                    ///< beta_start/end
};

/// Which n training timesteps an n-step run visits (diffusers `timestep_spacing`, with the
/// DDIM/DDPM meaning of each name; DPM-Solver and UniPC use other formulas under the same names).
enum class TimestepSpacing {
  leading,  ///< (arange(n) * (N // n))[::-1] + steps_offset: 900, 800, ..., 0 for N=1000, n=10
  trailing, ///< round(arange(N, 0, -N/n)) - 1: 999, 899, ..., 99; starts at the noisiest step
  linspace, ///< round(linspace(0, N-1, n))[::-1]: 999, 888, ..., 0; both ends included
  /// DPM-Solver, UniPC and DEIS call this "linspace": round(linspace(0, N-1, n+1))[::-1][:-1],
  /// i.e. n + 1 points with the cleanest (t = 0) dropped: 999, 899, ..., 100 for n = 10.
  linspace_multistep,
  /// DPM-Solver, UniPC and DEIS call this "leading": (arange(n+1) * (N // (n+1)))[::-1][:-1] +
  /// steps_offset, i.e. n + 1 points with the cleanest dropped: 941, 894, ..., 48 for N = 1000,
  /// n = 20, steps_offset = 1 (Stable Diffusion 1.5's DPM-Solver++), where DDIM's `leading`
  /// gives 951, 901, ..., 1.
  leading_multistep
};

/// Where the sigmas of the n points come from.
enum class SigmaSpacing {
  timesteps,   ///< the schedule's own value at each spaced timestep (DDIM, DDPM, Euler)
  karras,      ///< Karras et al. rho-ramp between sigma_max and sigma_min (use_karras_sigmas)
  exponential, ///< log-uniform between sigma_max and sigma_min (use_exponential_sigmas)
  /// Uniform in lambda = log(alpha / sigma), i.e. log-uniform in sigma, between the ends of the
  /// float32 log-sigma table (DPM-Solver's use_lu_lambdas; Lu et al. 2022). Differs from
  /// `exponential` only in how the ramp is rounded, which is diffusers' own.
  lu_lambdas,
  /// The quantiles of a Beta(0.6, 0.6) distribution between sigma_max and sigma_min (diffusers'
  /// use_beta_sigmas; Lee et al. 2024): steps crowd at both ends. See spacing::beta_sigmas.
  beta
};

/// How the sigmas of the spaced timesteps are found (Euler's `interpolation_type`). Only used with
/// sigma_spacing = timesteps.
enum class SigmaInterpolation {
  /// Each point sits at its timestep's own sigma: np.interp of the training sigmas (point(t)).
  linear,
  /// diffusers' "log_linear": the n + 1 sigmas of an n-step run are exp(torch.linspace(log
  /// sigma_max, log sigma_min, n + 1)) in float32 over the training range, whatever the spaced
  /// timesteps are; the model is still told the spaced timesteps. The (n+1)-th sigma, the
  /// smallest training sigma, is where the run ends: diffusers appends its final sigma after
  /// those n + 1 and never reaches it, so `final_point` has no effect.
  log_linear
};

/// What the last alphas_cumprod becomes once rescale_betas_zero_snr has made it 0.
enum class ZeroSnrTerminal {
  /// Kept at 0: the last training timestep is pure noise, alpha = 0, sigma = 1 (diffusers' DDIM,
  /// DDPM, LCM and TCD). Needs a v or sample prediction there (x0 = -v at alpha = 0); an epsilon
  /// model cannot say anything about x0 at pure noise.
  zero,
  /// Set to 2^-24, the smallest positive float16 subnormal, so that the largest VE sigma is
  /// finite (sqrt(2^24 - 1) ~ 4096): diffusers' Euler, Euler ancestral, DPM-Solver multistep and
  /// UniPC, whose steps divide by sigma / alpha. betas() and alphas() keep the rescaled values
  /// (last beta 1), as diffusers keeps them.
  fp16_min_subnormal
};

/// Where the last step lands.
enum class FinalPoint {
  clean,           ///< alpha = 1, sigma = 0 (set_alpha_to_one=True / final_sigmas_type="zero")
  first_train_step ///< alphas_cumprod[0] (set_alpha_to_one=False / final_sigmas_type="sigma_min")
};

/// Options of a DiscreteSchedule. The defaults are those of diffusers' DDIMScheduler.
struct DiscreteScheduleOptions {
  int num_train_timesteps = 1000; ///< N
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::linear;
  TimestepSpacing spacing = TimestepSpacing::leading;
  /// Added to every *leading* timestep (diffusers adds it nowhere else; Stable Diffusion uses 1).
  int steps_offset = 0;
  /// true: integer timesteps (DDIM, DDPM, DPM-Solver). false: Euler's float32 timesteps, which
  /// only differ with `linspace` spacing and with karras/exponential sigmas.
  bool round_timesteps = true;
  SigmaSpacing sigma_spacing = SigmaSpacing::timesteps;
  double karras_rho = 7.0;
  /// Ends of the karras/exponential/beta ramps, as VE sigmas (sigma / alpha). Unset: the training
  /// range train_sigmas()[0] and train_sigmas()[N-1]. Only valid with those sigma spacings.
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  FinalPoint final_point = FinalPoint::clean;
  /// DPM-Solver's lambda_min_clipped: the spaced timesteps stop short of the training timesteps
  /// whose half log-SNR lambda lies below this value (for squaredcos_cap_v2, whose last lambdas
  /// plunge). Unset: -inf, no clipping. Applies to the multistep spacings and to trailing.
  std::optional<double> lambda_min_clipped;
  /// diffusers' rescale_betas_zero_snr (Lin et al. 2024, "Common Diffusion Noise Schedules and
  /// Sample Steps are Flawed", Algorithm 1): sqrt(alphas_cumprod) is shifted so that its last
  /// value is 0 and scaled so that its first is unchanged, and the betas are recomputed from it
  /// (in float32, as torch does). The last training timestep then carries no signal, which is
  /// what the noise of the first sampling step is; pair it with trailing spacing, as the paper
  /// does. Needs N >= 2. Not available with from_alphas_cumprod.
  bool rescale_betas_zero_snr = false;
  /// The last alphas_cumprod after rescaling (see ZeroSnrTerminal). Only with
  /// rescale_betas_zero_snr.
  ZeroSnrTerminal zero_snr_terminal = ZeroSnrTerminal::zero;
  /// How the spaced timesteps get their sigmas (see SigmaInterpolation).
  SigmaInterpolation sigma_interpolation = SigmaInterpolation::linear;
};

/// A discrete-time DDPM noise schedule: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for the
/// training timesteps t = 0..N-1, with inference spacings that reproduce diffusers' DDIM, DDPM,
/// Euler and DPM-Solver (karras) timesteps.
///
/// The training tables are built the torch-CPU float32 way (parity doc §2.1): betas rounded to
/// float32, alphas = float32(1 - beta), a *double* running product stored as float32. Leaving out
/// any of these roundings changes diffusers' reference results beyond their test tolerances.
class DiscreteSchedule {
public:
  DiscreteSchedule() : DiscreteSchedule(DiscreteScheduleOptions{}) {}

  explicit DiscreteSchedule(DiscreteScheduleOptions options) : options_(std::move(options)) {
    const int n_train = options_.num_train_timesteps;
    require(n_train >= 1, "num_train_timesteps", n_train, "must be at least 1");
    if (options_.beta_schedule != BetaSchedule::squaredcos_cap_v2) {
      require(options_.beta_start > 0 && options_.beta_start < 1, "beta_start", options_.beta_start,
              "must lie in (0, 1)");
      require(options_.beta_end > 0 && options_.beta_end < 1, "beta_end", options_.beta_end,
              "must lie in (0, 1)");
      require(options_.beta_start <= options_.beta_end, "beta_start", options_.beta_start,
              "must not exceed beta_end");
    }
    build_from_betas(training_betas(), false);
    validate_spacing_options();
  }

  /// diffusers' rescale_zero_terminal_snr on float32 betas, in torch's float32 arithmetic: the
  /// cumulative product (accumulated in double, see build_from_betas), its square root, shifted
  /// by the last root and scaled by first / (first - last), squared back, and the betas recomputed
  /// from the ratios of neighbours. The last beta comes out 1. Needs at least two betas.
  [[nodiscard]] static std::vector<float>
  rescale_zero_terminal_snr(const std::vector<float>& betas) {
    require(betas.size() >= 2, "rescale_betas_zero_snr", true,
            detail::concat("needs at least 2 training timesteps, got ", betas.size()));
    const std::size_t n = betas.size();
    std::vector<float> root(n);
    double running = 1.0;
    for (std::size_t i = 0; i < n; ++i) {
      running *= static_cast<double>(1.0f - betas[i]);
      root[i] = std::sqrt(static_cast<float>(running));
    }
    const float first = root.front();
    const float last = root.back();
    require(first > last, "rescale_betas_zero_snr", true,
            "needs alphas_cumprod to fall from the first training timestep to the last");
    const float scale = first / (first - last);
    for (float& r : root)
      r = (r - last) * scale;
    std::vector<float> out(n);
    float previous = root[0] * root[0];
    out[0] = 1.0f - previous;
    for (std::size_t i = 1; i < n; ++i) {
      const float current = root[i] * root[i];
      out[i] = 1.0f - current / previous;
      previous = current;
    }
    return out;
  }

  /// A schedule from the user's own training betas (diffusers `trained_betas`). N becomes
  /// betas.size(); options.num_train_timesteps, beta_start, beta_end and beta_schedule are not
  /// used. Each beta must lie in (0, 1).
  [[nodiscard]] static DiscreteSchedule from_betas(const std::vector<double>& betas,
                                                   DiscreteScheduleOptions options = {}) {
    require(!betas.empty(), "betas.size()", betas.size(), "needs at least one beta");
    std::vector<float> rounded(betas.size());
    for (std::size_t i = 0; i < betas.size(); ++i) {
      require(betas[i] > 0 && betas[i] < 1, indexed("betas", i), betas[i], "must lie in (0, 1)");
      rounded[i] = static_cast<float>(betas[i]); // torch.tensor(trained_betas, dtype=float32)
    }
    options.num_train_timesteps = static_cast<int>(betas.size());
    DiscreteSchedule s(std::move(options), table_tag{});
    s.build_from_betas(std::move(rounded), true);
    s.validate_spacing_options();
    return s;
  }

  /// A schedule from the user's own cumulative alpha products abar_0 >= abar_1 >= ... (stored as
  /// float32 like every table here). N becomes the table size; the beta fields of `options` are
  /// not used. betas() and alphas() are derived from the table (alpha_i = abar_i / abar_{i-1}).
  [[nodiscard]] static DiscreteSchedule
  from_alphas_cumprod(const std::vector<double>& alphas_cumprod,
                      DiscreteScheduleOptions options = {}) {
    require(!alphas_cumprod.empty(), "alphas_cumprod.size()", alphas_cumprod.size(),
            "needs at least one value");
    require(!options.rescale_betas_zero_snr, "rescale_betas_zero_snr", true,
            "rescales betas; pass the rescaled table itself to from_alphas_cumprod");
    for (std::size_t i = 0; i < alphas_cumprod.size(); ++i) {
      require(alphas_cumprod[i] > 0 && alphas_cumprod[i] < 1, indexed("alphas_cumprod", i),
              alphas_cumprod[i], "must lie in (0, 1)");
      if (i > 0)
        require(alphas_cumprod[i] <= alphas_cumprod[i - 1], indexed("alphas_cumprod", i),
                alphas_cumprod[i],
                "must not exceed the previous value (the table is non-increasing)");
    }
    options.num_train_timesteps = static_cast<int>(alphas_cumprod.size());
    DiscreteSchedule s(std::move(options), table_tag{});
    const std::size_t n = alphas_cumprod.size();
    s.alphas_cumprod_.resize(n);
    s.alphas_.resize(n);
    s.betas_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const float ac = static_cast<float>(alphas_cumprod[i]);
      require(ac < 1.0f, indexed("alphas_cumprod", i), alphas_cumprod[i],
              "rounds to 1 in float32, which leaves no noise at that timestep");
      s.alphas_cumprod_[i] = ac;
      s.alphas_[i] = i == 0 ? ac
                            : static_cast<float>(static_cast<double>(ac) /
                                                 static_cast<double>(s.alphas_cumprod_[i - 1]));
      s.betas_[i] = 1.0f - s.alphas_[i];
    }
    s.build_sigma_tables();
    s.validate_spacing_options();
    return s;
  }

  // ---- NoiseSchedule -------------------------------------------------------------------------

  /// The point at model time t in [0, N-1]. At an integer t: alpha = sqrt(abar_t),
  /// sigma = sqrt(1 - abar_t) in double (what DDIM and DDPM use). Between integers: the VE sigma
  /// is np.interp of the float32 training sigmas (what Euler uses for fractional timesteps), and
  /// alpha = 1 / sqrt(s^2 + 1), sigma = s * alpha. The two rules agree at the integers to about
  /// 1e-7 relative (the float32 rounding of the sigma table). Next to a zero-SNR last timestep
  /// (ZeroSnrTerminal::zero) the interpolated sigma is infinite, as np.interp makes it: that
  /// point is pure noise, alpha = 0, sigma = 1.
  [[nodiscard]] TimePoint point(double t) const {
    const double last = static_cast<double>(options_.num_train_timesteps - 1);
    require(t >= 0 && t <= last, "t", t, "must lie in [0, num_train_timesteps - 1]");
    const double whole = std::floor(t);
    const auto i = static_cast<std::size_t>(whole);
    if (t == whole) {
      const double ac = alphas_cumprod_[i];
      return TimePoint{t, std::sqrt(ac), std::sqrt(1.0 - ac)};
    }
    // np.interp over xp = 0..N-1: slope * (x - xp[j]) + fp[j], with slope computed first.
    const double lo = train_sigmas_[i];
    const double slope = static_cast<double>(train_sigmas_[i + 1]) - lo;
    return from_ve_sigma(t, slope * (t - whole) + lo);
  }

  /// The model time whose training VE sigma is `ve_sigma` (diffusers `_sigma_to_t`): linear
  /// interpolation in log sigma over the float32 log-sigma table, clamped to [0, N-1]. ve_sigma
  /// may be 0 (gives 0) or +inf (gives N-1).
  ///
  /// diffusers evaluates this with numpy; the log-sigma differences are float32 (both operands
  /// are table entries) while the distance to the query is float64 (numpy >= 2 promotion rules;
  /// numpy 1.x computed it in float32, which moves results by about 1e-5 timesteps).
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    require(ve_sigma >= 0, "ve_sigma", ve_sigma, "must be non-negative (and not NaN)");
    const int n_train = options_.num_train_timesteps;
    if (n_train == 1)
      return 0.0;
    const double log_sigma = std::log(std::max(ve_sigma, 1e-10));
    // The last index whose log sigma is <= the query (0 if none), kept below N-1 so that it has
    // an upper neighbour. The table is non-decreasing, so this is a binary search.
    const auto above =
        std::upper_bound(log_sigmas_.begin(), log_sigmas_.end(), log_sigma,
                         [](double v, float e) { return v < static_cast<double>(e); });
    std::ptrdiff_t low = (above - log_sigmas_.begin()) - 1;
    low = std::clamp<std::ptrdiff_t>(low, 0, n_train - 2);
    const float lo = log_sigmas_[static_cast<std::size_t>(low)];
    const float hi = log_sigmas_[static_cast<std::size_t>(low) + 1];
    const float gap = lo - hi; // float32 - float32 stays float32 in numpy
    // A flat stretch of a user table (gap == 0) would give 0/0; diffusers would return NaN there.
    double w = gap == 0.0f ? 0.0 : (static_cast<double>(lo) - log_sigma) / static_cast<double>(gap);
    w = std::clamp(w, 0.0, 1.0);
    return (1.0 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
  }

  /// The n model timesteps of an n-step run, noisiest first (what diffusers' `set_timesteps(n)`
  /// leaves in `scheduler.timesteps`).
  [[nodiscard]] std::vector<double> timesteps(int n) const {
    check_num_steps(n);
    if (options_.sigma_spacing == SigmaSpacing::timesteps)
      return spaced_timesteps(n);
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(n));
    for (double s : ramp_sigmas(n))
      out.push_back(ramp_timestep(s));
    return out;
  }

  /// The n + 1 points of an n-step run: the n spaced points, then the final point chosen by
  /// options().final_point. The final point carries timestep 0; it is where sampling ends and is
  /// never evaluated by a model.
  ///
  /// With sigma_spacing = timesteps every point is point(t) of its timestep. (Euler stores an
  /// interpolated sigma as float32 first; we keep the double, ~6e-8 relative apart: §2.2 of the
  /// parity notes finds double arithmetic after the training table changes no oracle.) With
  /// karras or exponential sigmas the timestep is sigma_to_t of the ramp sigma (rounded when
  /// round_timesteps), but alpha and sigma come from the ramp sigma itself, stored as float32
  /// first as diffusers stores `self.sigmas`: the model is told a rounded timestep while the
  /// latents sit at the exact ramp sigma, as in diffusers.
  [[nodiscard]] Trajectory trajectory(int n) const {
    check_num_steps(n);
    Trajectory traj;
    traj.num_train_timesteps = static_cast<double>(options_.num_train_timesteps);
    traj.points.reserve(static_cast<std::size_t>(n) + 1);
    if (log_linear()) {
      append_log_linear(traj, spaced_timesteps(n));
      return traj;
    }
    if (options_.sigma_spacing == SigmaSpacing::timesteps) {
      for (double t : spaced_timesteps(n))
        traj.points.push_back(point(t));
    } else {
      for (double s : ramp_sigmas(n))
        traj.points.push_back(from_ve_sigma(ramp_timestep(s), static_cast<float>(s)));
    }
    traj.points.push_back(final_point());
    return traj;
  }

  /// The trajectory through user-chosen timesteps (diffusers' `set_timesteps(timesteps=[...])`),
  /// noisiest first, then the final point. Each must lie in [0, N-1] and they must decrease.
  /// With log_linear sigma interpolation the points get the log-linear sigmas of a run of that
  /// many steps, as diffusers' Euler gives them.
  [[nodiscard]] Trajectory trajectory_through(const std::vector<double>& timesteps) const {
    require(!timesteps.empty(), "timesteps.size()", 0, "must be at least 1");
    Trajectory traj;
    traj.num_train_timesteps = static_cast<double>(options_.num_train_timesteps);
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      if (i > 0 && !(timesteps[i] < timesteps[i - 1]))
        throw_invalid_argument(
            indexed("timesteps", i), timesteps[i],
            detail::concat("must be below timesteps[", i - 1, "] = ", timesteps[i - 1]));
      traj.points.push_back(point(timesteps[i]));
    }
    if (log_linear()) {
      traj.points.clear();
      append_log_linear(traj, timesteps);
      return traj;
    }
    traj.points.push_back(final_point());
    return traj;
  }

  // ---- accessors -----------------------------------------------------------------------------

  [[nodiscard]] const std::vector<float>& betas() const { return betas_; }
  [[nodiscard]] const std::vector<float>& alphas() const { return alphas_; }
  [[nodiscard]] const std::vector<float>& alphas_cumprod() const { return alphas_cumprod_; }
  /// VE sigmas sqrt((1 - abar) / abar) of the training timesteps, float32 as diffusers builds them.
  [[nodiscard]] const std::vector<float>& train_sigmas() const { return train_sigmas_; }
  /// float32(log(train_sigmas)), the table timestep_at interpolates in.
  [[nodiscard]] const std::vector<float>& log_sigmas() const { return log_sigmas_; }
  [[nodiscard]] int num_train_timesteps() const { return options_.num_train_timesteps; }
  [[nodiscard]] const DiscreteScheduleOptions& options() const { return options_; }

private:
  struct table_tag {};
  DiscreteSchedule(DiscreteScheduleOptions options, table_tag) : options_(std::move(options)) {}

  static std::string indexed(const char* name, std::size_t i) {
    return detail::concat(name, "[", i, "]");
  }

  // ---- training tables -----------------------------------------------------------------------

  /// The float32 betas of a built-in beta schedule. Computing the linspace in double and rounding
  /// once matches torch's float32 linspace closely enough for every diffusers oracle (§2.1).
  [[nodiscard]] std::vector<float> training_betas() const {
    const int n_train = options_.num_train_timesteps;
    std::vector<float> betas(static_cast<std::size_t>(n_train));
    switch (options_.beta_schedule) {
    case BetaSchedule::linear: {
      const auto b = spacing::numpy_linspace(options_.beta_start, options_.beta_end, n_train);
      for (std::size_t i = 0; i < betas.size(); ++i)
        betas[i] = static_cast<float>(b[i]);
      break;
    }
    case BetaSchedule::scaled_linear: {
      // torch squares the float32 linspace in float32; the square of a float is exact in double,
      // so one rounding of the double square is the float32 product.
      const auto r = spacing::numpy_linspace(std::sqrt(options_.beta_start),
                                             std::sqrt(options_.beta_end), n_train);
      for (std::size_t i = 0; i < betas.size(); ++i) {
        const double root = static_cast<float>(r[i]);
        betas[i] = static_cast<float>(root * root);
      }
      break;
    }
    case BetaSchedule::squaredcos_cap_v2: {
      // diffusers' betas_for_alpha_bar: Python doubles, one float32 rounding at the end.
      constexpr double pi = 3.141592653589793;
      const auto alpha_bar = [](double t) {
        const double c = std::cos((t + 0.008) / 1.008 * pi / 2); // evaluated left to right
        return c * c;
      };
      const double n = static_cast<double>(n_train);
      for (std::size_t i = 0; i < betas.size(); ++i) {
        const double t1 = static_cast<double>(i) / n;
        const double t2 = static_cast<double>(i + 1) / n;
        betas[i] = static_cast<float>(std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), 0.999));
      }
      break;
    }
    }
    return betas;
  }

  /// alphas and alphas_cumprod from float32 betas, the torch-CPU way: alpha = float32(1 - beta),
  /// then a cumulative product accumulated in double and stored as float32. (Accumulating in
  /// float32 instead breaks four diffusers oracles; see §2.1.)
  /// `user_table` only decides whom an error blames: the user's betas[i], or beta_start /
  /// beta_end of a built-in schedule.
  void build_from_betas(std::vector<float> betas, bool user_table) {
    const bool rescale = options_.rescale_betas_zero_snr;
    betas_ = rescale ? rescale_zero_terminal_snr(betas) : std::move(betas);
    alphas_.resize(betas_.size());
    alphas_cumprod_.resize(betas_.size());
    double running = 1.0;
    for (std::size_t i = 0; i < betas_.size(); ++i) {
      alphas_[i] = 1.0f - betas_[i];
      running *= static_cast<double>(alphas_[i]);
      alphas_cumprod_[i] = static_cast<float>(running);
      if (rescale && i + 1 == betas_.size() && alphas_cumprod_[i] == 0.0f)
        break; // the zero terminal SNR the rescaling is for
      if (!(alphas_cumprod_[i] > 0.0f && alphas_cumprod_[i] < 1.0f)) {
        const std::string what =
            alphas_cumprod_[i] == 0.0f
                ? detail::concat("makes alphas_cumprod[", i, "] underflow to 0 in float32")
                : detail::concat("makes alphas_cumprod[", i, "] round to 1 in float32 (no noise)");
        if (rescale)
          throw_invalid_argument("rescale_betas_zero_snr", true, what);
        if (user_table)
          throw_invalid_argument(indexed("betas", i), betas_[i], what);
        if (alphas_cumprod_[i] == 0.0f)
          throw_invalid_argument("beta_end", options_.beta_end, what);
        throw_invalid_argument("beta_start", options_.beta_start, what);
      }
    }
    if (rescale && options_.zero_snr_terminal == ZeroSnrTerminal::fp16_min_subnormal)
      alphas_cumprod_.back() = 0x1p-24f;
    build_sigma_tables();
  }

  /// train_sigmas = float32(sqrt(float32(float32(1 - abar) / abar))) and their float32 logs, as
  /// torch evaluates `((1 - ac) / ac) ** 0.5` on a float32 tensor. (numpy's float32 log may differ
  /// from the correctly rounded log used here by one ulp; that moves timestep_at by ~1e-6.)
  void build_sigma_tables() {
    train_sigmas_.resize(alphas_cumprod_.size());
    log_sigmas_.resize(alphas_cumprod_.size());
    for (std::size_t i = 0; i < alphas_cumprod_.size(); ++i) {
      const float ac = alphas_cumprod_[i];
      const float ratio = (1.0f - ac) / ac;
      train_sigmas_[i] = std::sqrt(ratio);
      log_sigmas_[i] = static_cast<float>(std::log(static_cast<double>(train_sigmas_[i])));
    }
  }

  void validate_spacing_options() const {
    if (!options_.rescale_betas_zero_snr)
      require(options_.zero_snr_terminal == ZeroSnrTerminal::zero, "zero_snr_terminal",
              "fp16_min_subnormal", "only applies with rescale_betas_zero_snr");
    require(options_.sigma_interpolation == SigmaInterpolation::linear ||
                options_.sigma_spacing == SigmaSpacing::timesteps,
            "sigma_interpolation", "log_linear",
            "only applies with sigma_spacing = timesteps (the ramps replace the sigmas)");
    // A zero terminal SNR makes the largest training sigma infinite: nothing can be spaced in
    // log sigma, or ramped, up to it.
    if (std::isinf(train_sigmas_.back())) {
      require(!log_linear(), "sigma_interpolation", "log_linear",
              "needs a finite largest training sigma; with rescale_betas_zero_snr use "
              "ZeroSnrTerminal::fp16_min_subnormal (as diffusers' Euler does)");
      require(options_.sigma_spacing == SigmaSpacing::timesteps || options_.sigma_max,
              "rescale_betas_zero_snr", true,
              "with ZeroSnrTerminal::zero leaves sigma_max infinite for the sigma ramp; use "
              "ZeroSnrTerminal::fp16_min_subnormal or set sigma_max");
    }
    require(options_.steps_offset >= 0, "steps_offset", options_.steps_offset,
            "must be non-negative");
    // Also keeps the spacing arithmetic (offset + (n - 1) * ratio) far from int overflow.
    require(
        options_.steps_offset < options_.num_train_timesteps, "steps_offset", options_.steps_offset,
        detail::concat("must be below num_train_timesteps (", options_.num_train_timesteps, ")"));
    require(options_.karras_rho > 0 && std::isfinite(options_.karras_rho), "karras_rho",
            options_.karras_rho, "must be positive and finite");
    if (options_.lambda_min_clipped)
      require(!std::isnan(*options_.lambda_min_clipped), "lambda_min_clipped",
              *options_.lambda_min_clipped, "must not be NaN");
    require(last_timestep() >= 1, "lambda_min_clipped", options_.lambda_min_clipped.value_or(0),
            "clips every training timestep");
    const bool ramp = options_.sigma_spacing != SigmaSpacing::timesteps;
    if (options_.sigma_min) {
      require(ramp, "sigma_min", *options_.sigma_min,
              "only applies with karras, exponential, lu_lambdas or beta sigma_spacing");
      require(*options_.sigma_min > 0 && std::isfinite(*options_.sigma_min), "sigma_min",
              *options_.sigma_min, "must be positive and finite");
    }
    if (options_.sigma_max) {
      require(ramp, "sigma_max", *options_.sigma_max,
              "only applies with karras, exponential, lu_lambdas or beta sigma_spacing");
      require(std::isfinite(*options_.sigma_max), "sigma_max", *options_.sigma_max,
              "must be finite");
    }
    if (ramp)
      require(ramp_sigma_min() < ramp_sigma_max(), "sigma_min", ramp_sigma_min(),
              detail::concat("must be below sigma_max (", ramp_sigma_max(), ")"));
  }

  // ---- inference spacing ---------------------------------------------------------------------

  void check_num_steps(int n) const {
    require(n >= 1, "num_steps", n, "must be at least 1");
    require(n <= options_.num_train_timesteps, "num_steps", n,
            detail::concat("exceeds num_train_timesteps (", options_.num_train_timesteps, ")"));
  }

  /// The DDIM/DDPM spacings. diffusers computes them with numpy; each line below names the numpy
  /// expression it reproduces.
  [[nodiscard]] std::vector<double> spaced_timesteps(int n) const {
    const int n_train = options_.num_train_timesteps;
    const int last = last_timestep();
    std::vector<double> out(static_cast<std::size_t>(n));
    switch (options_.spacing) {
    case TimestepSpacing::leading: {
      // (arange(n) * (N // n))[::-1] + steps_offset. The offset is only added here.
      const int ratio = n_train / n;
      const int first = (n - 1) * ratio + options_.steps_offset;
      require(first <= n_train - 1, "steps_offset", options_.steps_offset,
              detail::concat("pushes the first leading timestep (", first,
                             ") past num_train_timesteps - 1 (", n_train - 1, ")"));
      for (int i = 0; i < n; ++i)
        out[static_cast<std::size_t>(i)] = (n - 1 - i) * ratio + options_.steps_offset;
      break;
    }
    case TimestepSpacing::trailing: {
      // round(np.arange(N, 0, -N/n)) - 1, no steps_offset. numpy's arange stores start and
      // start + step, then fills element i as start + i * (second - start).
      //
      // diffusers surprise: ceil(N / (N/n)) can round up to n + 1 (N=1000 with n=61, 103, 121,
      // ...; 62 of the n <= 1000), so diffusers then returns n + 1 timesteps, the last one -1. We
      // keep the first n, which are the ones every other n gets.
      const double step = static_cast<double>(n_train) / static_cast<double>(n);
      const double start = static_cast<double>(last);
      const double delta = (start + -step) - start;
      for (int i = 0; i < n; ++i) {
        const double v = i == 0 ? start : start + static_cast<double>(i) * delta;
        out[static_cast<std::size_t>(i)] = spacing::round_half_even(v) - 1.0;
      }
      break;
    }
    case TimestepSpacing::linspace: {
      // DDIM/DDPM: round(linspace(0, N-1, n))[::-1]. Euler (round_timesteps=false) keeps the
      // float32 linspace values instead. n == 1 gives {0}, as np.linspace does: a one-step run
      // evaluates the model at the *cleanest* timestep. Faithful to diffusers, rarely useful.
      const auto lin = spacing::numpy_linspace(0.0, static_cast<double>(n_train - 1), n);
      for (int i = 0; i < n; ++i) {
        const double v = lin[static_cast<std::size_t>(n - 1 - i)];
        out[static_cast<std::size_t>(i)] = options_.round_timesteps
                                               ? spacing::round_half_even(v)
                                               : static_cast<double>(static_cast<float>(v));
      }
      break;
    }
    case TimestepSpacing::linspace_multistep: {
      const auto lin = spacing::numpy_linspace(0.0, static_cast<double>(last - 1), n + 1);
      for (int i = 0; i < n; ++i)
        out[static_cast<std::size_t>(i)] =
            spacing::round_half_even(lin[static_cast<std::size_t>(n - i)]);
      break;
    }
    case TimestepSpacing::leading_multistep: {
      // (arange(n + 1) * (last // (n + 1)))[::-1][:-1] + steps_offset.
      const int ratio = last / (n + 1);
      require(ratio >= 1, "num_steps", n,
              detail::concat("leaves no room for multistep leading spacing: ", n + 1,
                             " points over ", last, " training timesteps"));
      require(
          n * ratio + options_.steps_offset <= n_train - 1, "steps_offset", options_.steps_offset,
          detail::concat("pushes the first leading timestep (", n * ratio + options_.steps_offset,
                         ") past num_train_timesteps - 1 (", n_train - 1, ")"));
      for (int i = 0; i < n; ++i)
        out[static_cast<std::size_t>(i)] = (n - i) * ratio + options_.steps_offset;
      break;
    }
    }
    return out;
  }

  /// N, less the training timesteps clipped by lambda_min_clipped: DPM-Solver's
  /// N - searchsorted(flip(lambda_t), lambda_min_clipped), lambda_t = log(alpha) - log(sigma) of
  /// the float32 tables in float32.
  [[nodiscard]] int last_timestep() const {
    const int n_train = options_.num_train_timesteps;
    if (!options_.lambda_min_clipped)
      return n_train;
    int clipped = 0; // training timesteps whose lambda lies below the bound (the noisiest ones)
    for (int t = n_train - 1; t >= 0; --t) {
      const float ac = alphas_cumprod_[static_cast<std::size_t>(t)];
      const float lambda_t = std::log(std::sqrt(ac)) - std::log(std::sqrt(1.0f - ac));
      if (!(static_cast<double>(lambda_t) < *options_.lambda_min_clipped))
        break;
      ++clipped;
    }
    return n_train - clipped;
  }

  [[nodiscard]] bool log_linear() const {
    return options_.sigma_interpolation == SigmaInterpolation::log_linear &&
           options_.sigma_spacing == SigmaSpacing::timesteps;
  }

  /// The points of a log_linear run through `timesteps` (n of them): point i at timesteps[i] with
  /// the i-th of exp(torch.linspace(log sigma_max, log sigma_min, n + 1)) (float32 throughout, as
  /// diffusers computes it from the float32 log-sigma table), then the end at the (n+1)-th.
  void append_log_linear(Trajectory& traj, const std::vector<double>& timesteps) const {
    const int n = static_cast<int>(timesteps.size());
    const std::vector<float> logs = spacing::torch_linspace_f32(
        static_cast<double>(log_sigmas_.back()), static_cast<double>(log_sigmas_.front()), n + 1);
    for (int i = 0; i <= n; ++i) {
      const float s = std::exp(logs[static_cast<std::size_t>(i)]);
      traj.points.push_back(from_ve_sigma(i < n ? timesteps[static_cast<std::size_t>(i)] : 0.0, s));
    }
  }

  [[nodiscard]] double ramp_sigma_min() const {
    return options_.sigma_min.value_or(static_cast<double>(train_sigmas_.front()));
  }
  [[nodiscard]] double ramp_sigma_max() const {
    return options_.sigma_max.value_or(static_cast<double>(train_sigmas_.back()));
  }

  /// Karras, exponential, lu or beta sigmas (double, as diffusers computes them before storing
  /// float32; beta's already rounded to float32, as diffusers rounds them before sigma_to_t).
  /// Their range is the training range (DPM-Solver and UniPC; Euler too with linspace spacing,
  /// its default). Euler with leading/trailing spacing would take the range from the spaced
  /// timesteps instead; we do not reproduce that.
  [[nodiscard]] std::vector<double> ramp_sigmas(int n) const {
    if (options_.sigma_spacing == SigmaSpacing::karras)
      return spacing::karras_sigmas(ramp_sigma_min(), ramp_sigma_max(), n, options_.karras_rho);
    if (options_.sigma_spacing == SigmaSpacing::lu_lambdas)
      return lu_sigmas(n);
    if (options_.sigma_spacing == SigmaSpacing::beta) {
      // diffusers stores them with torch.Tensor (float32) before asking for their timesteps.
      std::vector<double> out = spacing::beta_sigmas(ramp_sigma_min(), ramp_sigma_max(), n);
      for (double& s : out)
        s = static_cast<float>(s);
      return out;
    }
    return spacing::exponential_sigmas(ramp_sigma_min(), ramp_sigma_max(), n);
  }

  /// diffusers' _convert_to_lu: exp(l_max + ramp * (l_min - l_max)) with ramp = np.linspace(0, 1,
  /// n) and the ends taken from the float32 log-sigma table (its rho = 1 powers are exact). A
  /// sigma_min / sigma_max override (which diffusers does not offer here) replaces an end by its
  /// log.
  [[nodiscard]] std::vector<double> lu_sigmas(int n) const {
    const double l_min = options_.sigma_min ? std::log(*options_.sigma_min)
                                            : static_cast<double>(log_sigmas_.front());
    const double l_max = options_.sigma_max ? std::log(*options_.sigma_max)
                                            : static_cast<double>(log_sigmas_.back());
    std::vector<double> out = spacing::numpy_linspace(0.0, 1.0, n);
    for (double& r : out)
      r = std::exp(l_max + r * (l_min - l_max));
    return out;
  }

  /// The timestep diffusers gives a ramp sigma: sigma_to_t of the double sigma, then rounded
  /// (DPM-Solver/UniPC with karras) or kept as float32 (Euler).
  ///
  /// diffusers surprises, not reproduced: DPM-Solver does *not* round for squaredcos_cap_v2 and
  /// never rounds exponential sigmas, and then casts to int64, i.e. truncates; we round.
  [[nodiscard]] double ramp_timestep(double ve_sigma) const {
    const double t = timestep_at(ve_sigma);
    return options_.round_timesteps ? spacing::round_half_even(t)
                                    : static_cast<double>(static_cast<float>(t));
  }

  [[nodiscard]] static TimePoint from_ve_sigma(double timestep, double s) {
    if (std::isinf(s)) // a zero-SNR point: pure noise
      return TimePoint{timestep, 0.0, 1.0};
    const double alpha = 1.0 / std::sqrt(s * s + 1.0);
    return TimePoint{timestep, alpha, s * alpha};
  }

  /// The end of the trajectory. For first_train_step on a karras/exponential ramp the point is
  /// built from the float32 training sigma train_sigmas()[0], as diffusers' final_sigmas_type =
  /// "sigma_min" stores it; the last ramp sigma rounds to the same float32 value, so the last
  /// step has zero length exactly as in diffusers (parity doc §2.5). With spaced timesteps it is
  /// point(0) (DDIM's set_alpha_to_one=False: final alpha_cumprod = alphas_cumprod[0]).
  /// (diffusers' UniPC instead ends on the last karras sigma; that differs only when sigma_min is
  /// overridden.)
  [[nodiscard]] TimePoint final_point() const {
    if (options_.final_point == FinalPoint::clean)
      return TimePoint{0.0, 1.0, 0.0};
    if (options_.sigma_spacing == SigmaSpacing::timesteps)
      return point(0.0);
    return from_ve_sigma(0.0, train_sigmas_.front());
  }

  DiscreteScheduleOptions options_;
  std::vector<float> betas_;
  std::vector<float> alphas_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<float> log_sigmas_;
};

static_assert(NoiseSchedule<DiscreteSchedule>);

} // namespace tstitch
