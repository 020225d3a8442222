// SPDX-License-Identifier: Apache-2.0
#pragma once

// EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"):
// the sigma schedule of diffusers' EDMEulerScheduler and EDMDPMSolverMultistepScheduler
// (EDMSchedule) and the network preconditioning c_in, c_noise, c_skip, c_out
// (edm_preconditioned). With the two, the existing tstitch::Euler and DPMSolverMultistep are
// diffusers' EDM schedulers: no EDM-specific solver is needed.
//
// Why the preconditioning is a denoiser wrapper, not a Prediction value or part of the schedule:
//  - An EDM network is D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s)) on VE latents
//    x = x0 + s eps. The output map is linear in (x, F), like every Prediction conversion, but its
//    coefficients depend on sigma_data, which neither a TimePoint nor conversion(p, alpha, sigma)
//    carries; adding it would change the shared Prediction enum and every conversion (host and
//    CUDA) for one model family.
//  - The input scaling c_in is no conversion at all: it changes what the network sees. A schedule
//    could hide it by choosing the latents' form x = c_in (x0 + s eps) (alpha = c_in), but the
//    output map is then still no existing Prediction unless sigma_data = 1, and the latents' scale
//    would depend on a property of the network rather than of the noise.
//  - A wrapper keeps EDM local: to the sampling loop, the solvers and the stitcher it is a plain
//    data-predicting denoiser (Prediction::sample) on any schedule (it reads s = sigma / alpha from
//    the point it is asked about), so EDM models stitch with each other or with other models and
//    every solver reaches them unchanged. The cost is one scaled copy of the latents per evaluation
//    and one in-place combine, with the backend's own ops (so it runs on a device backend too).

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/schedule/trajectory.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

// ---- preconditioning ----------------------------------------------------------------------------

/// The EDM preconditioning coefficients at VE sigma s (diffusers' precondition_inputs,
/// precondition_noise and precondition_outputs).
struct EDMCoefficients {
  double c_in;    ///< network input = c_in * x_ve, with c_in = 1 / sqrt(s^2 + sigma_data^2)
  double c_noise; ///< the network's time input, 0.25 log s (float32, as diffusers computes it)
  double c_skip;  ///< x0 = c_skip * x_ve + c_out * F, c_skip = sigma_data^2 / (s^2 + sigma_data^2)
  double c_out;   ///< +-s sigma_data / sqrt(s^2 + sigma_data^2): + for epsilon, - for v
};

/// EDM's noise conditioning c_noise = 0.25 log s, evaluated in float32 from the float32 sigma as
/// diffusers' precondition_noise does with torch; -inf at s = 0.
[[nodiscard]] inline double edm_c_noise(double ve_sigma) {
  return static_cast<double>(0.25f * std::log(static_cast<float>(ve_sigma)));
}

/// The coefficients at VE sigma `ve_sigma` for a network of `prediction` (diffusers'
/// prediction_type): Prediction::epsilon is EDM's own F (c_out > 0), Prediction::v the negated one
/// diffusers calls "v_prediction" (c_out < 0). With sigma_data = 1, "v_prediction" is exactly the
/// usual v = alpha eps - sigma x0 on the variance-preserving form of the point.
[[nodiscard]] inline EDMCoefficients edm_coefficients(double ve_sigma, double sigma_data,
                                                      Prediction prediction) {
  require(prediction == Prediction::epsilon || prediction == Prediction::v, "EDM prediction",
          prediction, "must be epsilon or v (diffusers' prediction_type epsilon / v_prediction)");
  const double norm2 = ve_sigma * ve_sigma + sigma_data * sigma_data;
  const double root = std::sqrt(norm2);
  const double c_out = ve_sigma * sigma_data / root;
  return EDMCoefficients{1.0 / root, edm_c_noise(ve_sigma), sigma_data * sigma_data / norm2,
                         prediction == Prediction::epsilon ? c_out : -c_out};
}

/// An EDM-preconditioned denoiser around a raw network F (Karras et al. 2022, Table 1). Asked for
/// latents x at a point (alpha, sigma), with s = sigma / alpha and x_ve = x / alpha, it
///   1. writes the network input c_in * x_ve into a workspace tensor,
///   2. calls the network there, at the point {c_noise, c_in, c_in * s}: the timestep is
///      c_noise = 0.25 log s (whatever the schedule's own model time), and (c_in, c_in * s) is
///      the signal and noise scale of the input it is handed,
///   3. returns x0 = c_skip * x_ve + c_out * F in place of F: its prediction() is
///      Prediction::sample.
/// The network declares what F means through its prediction(): epsilon or v, diffusers'
/// prediction_type "epsilon" / "v_prediction" for EDM (see edm_coefficients); it writes C channels.
///
/// Wrap each EDM model of a stitch separately (edm_preconditioned(a), edm_preconditioned(b)) and
/// stitch the wrappers. The network is held by value; hold a large model through DenoiserRef. The
/// workspace comes from `backend` at the first evaluation of a batch size and is reused after.
template <Denoiser D, class Backend = HostBackend> class EDMPreconditioned {
public:
  using condition_type = condition_of<D>;

  explicit EDMPreconditioned(D network, double sigma_data = 0.5, Backend backend = {})
      : network_(std::move(network)), sigma_data_(sigma_data), backend_(std::move(backend)) {
    require(sigma_data > 0 && std::isfinite(sigma_data), "sigma_data", sigma_data,
            "must be positive and finite");
    const Prediction p = network_.prediction();
    require(p == Prediction::epsilon || p == Prediction::v, "network prediction()", p,
            "must be epsilon or v (diffusers' prediction_type epsilon / v_prediction for EDM)");
  }

  [[nodiscard]] Prediction prediction() const { return Prediction::sample; }
  [[nodiscard]] Shape latent_shape() const { return network_.latent_shape(); }
  [[nodiscard]] double sigma_data() const { return sigma_data_; }
  [[nodiscard]] D& network() { return network_; }
  [[nodiscard]] const D& network() const { return network_; }

  [[nodiscard]] std::optional<condition_type> unconditional(const condition_type& c) const {
    return unconditional_of(network_, c);
  }
  [[nodiscard]] std::string model_name(std::size_t k) const { return model_name_of(network_, k); }

  /// The coefficients of an evaluation at `point` (a point with alpha > 0 and sigma > 0).
  [[nodiscard]] EDMCoefficients coefficients(const TimePoint& point) const {
    const double s = point.ve_sigma();
    require(point.alpha > 0 && s > 0 && std::isfinite(s), "EDM evaluation sigma / alpha", s,
            "must be positive and finite (EDM models are not evaluated at pure noise or at a "
            "clean point)");
    return edm_coefficients(s, sigma_data_, network_.prediction());
  }

  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    const EDMCoefficients k = coefficients(ctx.point);
    const StepContext inner = network_context(ctx, k);
    const ConstView in = scaled_input(x, ctx, k);
    network_.predict(in, inner, c, out);
    to_x0(x, ctx, k, out);
  }

  /// Both predictions of a guided evaluation from one scaled input, through the network's
  /// predict_guided (one 2N batch on a GPU).
  void predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                      const condition_type& uncond, View out_cond,
                      View out_uncond) requires predicts_guided<D> {
    const EDMCoefficients k = coefficients(ctx.point);
    const StepContext inner = network_context(ctx, k);
    const ConstView in = scaled_input(x, ctx, k);
    network_.predict_guided(in, inner, cond, uncond, out_cond, out_uncond);
    to_x0(x, ctx, k, out_cond);
    to_x0(x, ctx, k, out_uncond);
  }

private:
  [[nodiscard]] static StepContext network_context(const StepContext& ctx,
                                                   const EDMCoefficients& k) {
    StepContext inner = ctx;
    inner.point = TimePoint{k.c_noise, k.c_in, k.c_in * ctx.point.ve_sigma()};
    return inner;
  }

  ConstView scaled_input(ConstView x, const StepContext& ctx, const EDMCoefficients& k) {
    ensure_workspace(backend_, input_, x.batch(), x.shape());
    backend_.combine(input_.view(), Term{static_cast<float>(k.c_in / ctx.point.alpha), x});
    return ConstView(input_.view());
  }

  void to_x0(ConstView x, const StepContext& ctx, const EDMCoefficients& k, View out) {
    backend_.combine(out, Term{static_cast<float>(k.c_skip / ctx.point.alpha), x},
                     Term{static_cast<float>(k.c_out), ConstView(out)});
  }

  D network_;
  double sigma_data_;
  Backend backend_;
  AnyTensor input_;
};

/// `network` with EDM preconditioning for data of standard deviation sigma_data (diffusers'
/// sigma_data, 0.5 in EDM); see EDMPreconditioned.
template <Denoiser D, class Backend = HostBackend>
[[nodiscard]] EDMPreconditioned<D, Backend> edm_preconditioned(D network, double sigma_data = 0.5,
                                                               Backend backend = {}) {
  return EDMPreconditioned<D, Backend>(std::move(network), sigma_data, std::move(backend));
}

// ---- schedule -----------------------------------------------------------------------------------

/// diffusers' `sigma_schedule`.
enum class EDMSigmaSchedule {
  karras,     ///< uniform in sigma^(1/rho) from sigma_max to sigma_min (EDM, eq. 5)
  exponential ///< uniform in log sigma (k-diffusion's get_sigmas_exponential; CosXL)
};

/// diffusers' `final_sigmas_type`: where the last step lands.
enum class EDMFinalSigma {
  zero,     ///< sigma = 0, the clean point (EDMEulerScheduler always; DPM-Solver's default)
  sigma_min ///< float32(sigma_min): the last karras sigma again, up to rounding
};

/// Options of an EDMSchedule; the defaults are diffusers' (EDMEulerScheduler,
/// EDMDPMSolverMultistepScheduler). sigma_data belongs to the network (edm_preconditioned).
struct EDMScheduleOptions {
  double sigma_min = 0.002;
  double sigma_max = 80.0;
  double rho = 7.0; ///< karras only
  EDMSigmaSchedule sigma_schedule = EDMSigmaSchedule::karras;
  EDMFinalSigma final_sigma = EDMFinalSigma::zero;
  /// Reported as Trajectory::num_train_timesteps only: EDM has no training table, and its model
  /// time c_noise is no fraction of it (rules stated as t / T do not apply to EDM).
  int num_train_timesteps = 1000;

  friend bool operator==(const EDMScheduleOptions&, const EDMScheduleOptions&) = default;
};

/// The EDM noise schedule: VE sigmas s between sigma_min and sigma_max, model time
/// t = c_noise = 0.25 log s (what diffusers' EDM schedulers put in `timesteps`).
///
/// Points are in variance-preserving form, alpha = 1 / sqrt(1 + s^2), sigma = s alpha, as
/// DiscreteSchedule's karras points: x_T is standard normal noise (fill_initial_noise) and the
/// clean end has alpha = 1, so the result is the sample itself. diffusers' EDM latents are the VE
/// form x / alpha (it starts from noise * sqrt(sigma_max^2 + 1)); Euler and DPM-Solver++ give the
/// same steps in either form (they step in ratios and in lambda), so only float32 rounding differs.
class EDMSchedule {
public:
  EDMSchedule() : EDMSchedule(EDMScheduleOptions{}) {}

  explicit EDMSchedule(EDMScheduleOptions options) : options_(options) {
    require(options_.sigma_min > 0 && std::isfinite(options_.sigma_min),
            "EDMScheduleOptions::sigma_min", options_.sigma_min, "must be positive and finite");
    require(std::isfinite(options_.sigma_max) && options_.sigma_max > options_.sigma_min,
            "EDMScheduleOptions::sigma_max", options_.sigma_max,
            detail::concat("must be finite and above sigma_min (", options_.sigma_min, ")"));
    require(options_.rho > 0 && std::isfinite(options_.rho), "EDMScheduleOptions::rho",
            options_.rho, "must be positive and finite");
    require(options_.num_train_timesteps >= 1, "EDMScheduleOptions::num_train_timesteps",
            options_.num_train_timesteps, "must be at least 1");
  }

  // ---- NoiseSchedule -------------------------------------------------------------------------

  /// The point at model time t = 0.25 log s, i.e. s = exp(4 t); t = -inf is the clean point.
  [[nodiscard]] TimePoint point(double t) const {
    require(t < std::numeric_limits<double>::infinity() && !std::isnan(t), "t", t,
            "must be finite or -inf (the clean point)");
    return from_ve_sigma(t, std::exp(4.0 * t));
  }

  /// The model time of VE sigma s: 0.25 log s (double; the trajectory's timesteps are diffusers'
  /// float32 values of the same).
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    require(ve_sigma >= 0, "ve_sigma", ve_sigma, "must be non-negative (and not NaN)");
    return 0.25 * std::log(ve_sigma);
  }

  /// The n + 1 points of an n-step run: the n float32 sigmas of sigmas(n), each with timestep
  /// edm_c_noise(s), then the final point (timestep -inf for sigma = 0; it is never evaluated).
  [[nodiscard]] Trajectory trajectory(int n) const {
    Trajectory traj;
    traj.num_train_timesteps = static_cast<double>(options_.num_train_timesteps);
    for (double s : sigmas(n))
      traj.points.push_back(from_ve_sigma(edm_c_noise(s), s));
    if (options_.final_sigma == EDMFinalSigma::zero) {
      traj.points.push_back(TimePoint{-std::numeric_limits<double>::infinity(), 1.0, 0.0});
    } else {
      const auto s = static_cast<double>(static_cast<float>(options_.sigma_min));
      traj.points.push_back(from_ve_sigma(edm_c_noise(s), s));
    }
    return traj;
  }

  /// The n VE sigmas of an n-step run, noisiest first, rounded to float32 as diffusers stores
  /// them. diffusers evaluates the ramp in float32 torch arithmetic: a float32 linspace, then
  /// float32 (max^(1/rho) + ramp (min^(1/rho) - max^(1/rho))) and a float32 power (karras), or
  /// exp of a float32 linspace of the logs, reversed (exponential). We do the same, with correctly
  /// rounded pow / exp; torch's vectorised float32 pow and exp are not, so a few sigmas differ
  /// from diffusers' by up to 2e-6 relative (a few float32 ulps).
  ///
  /// n = 1 gives {sigma_max} for karras but {sigma_min} for exponential: torch.linspace(a, b, 1)
  /// is {a}, and diffusers' exponential ramp runs from log sigma_min before it is reversed.
  [[nodiscard]] std::vector<double> sigmas(int n) const {
    require(n >= 1, "num_steps", n, "must be at least 1");
    std::vector<double> out(static_cast<std::size_t>(n));
    if (options_.sigma_schedule == EDMSigmaSchedule::karras) {
      const double min_inv = std::pow(options_.sigma_min, 1.0 / options_.rho);
      const double max_inv = std::pow(options_.sigma_max, 1.0 / options_.rho);
      const auto start = static_cast<float>(max_inv);
      const auto span = static_cast<float>(min_inv - max_inv);
      const std::vector<float> ramp = torch_linspace_f32(0.0, 1.0, n);
      for (int i = 0; i < n; ++i) {
        const float base = start + ramp[static_cast<std::size_t>(i)] * span;
        out[static_cast<std::size_t>(i)] =
            static_cast<float>(std::pow(static_cast<double>(base), options_.rho));
      }
    } else {
      const std::vector<float> logs =
          torch_linspace_f32(std::log(options_.sigma_min), std::log(options_.sigma_max), n);
      for (int i = 0; i < n; ++i)
        out[static_cast<std::size_t>(n - 1 - i)] =
            static_cast<float>(std::exp(static_cast<double>(logs[static_cast<std::size_t>(i)])));
    }
    return out;
  }

  /// The n model timesteps of an n-step run (diffusers' `timesteps` after set_timesteps(n)).
  [[nodiscard]] std::vector<double> timesteps(int n) const {
    std::vector<double> out = sigmas(n);
    for (double& s : out)
      s = edm_c_noise(s);
    return out;
  }

  [[nodiscard]] const EDMScheduleOptions& options() const { return options_; }

private:
  [[nodiscard]] static TimePoint from_ve_sigma(double timestep, double s) {
    const double alpha = 1.0 / std::sqrt(s * s + 1.0);
    return TimePoint{timestep, alpha, s * alpha};
  }

  /// torch.linspace(start, end, n) in float32 on the CPU: float32 ends and step, the first half
  /// counted up from start, the second half down from end.
  [[nodiscard]] static std::vector<float> torch_linspace_f32(double start, double end, int n) {
    const auto a = static_cast<float>(start), b = static_cast<float>(end);
    std::vector<float> out(static_cast<std::size_t>(n));
    if (n == 1) {
      out[0] = a;
      return out;
    }
    const float step = (b - a) / static_cast<float>(n - 1);
    for (int i = 0; i < n; ++i)
      out[static_cast<std::size_t>(i)] =
          i < n / 2 ? a + step * static_cast<float>(i) : b - step * static_cast<float>(n - 1 - i);
    return out;
  }

  EDMScheduleOptions options_;
};

static_assert(NoiseSchedule<EDMSchedule>);

} // namespace tstitch
