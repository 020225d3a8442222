// SPDX-License-Identifier: Apache-2.0
#pragma once

// from_diffusers_config: a diffusers scheduler_config.json as a tstitch schedule and solver that
// visit the same timesteps and compute the same trajectory as the diffusers class it names.
// docs/parity.md §7 lists, per class, the keys and values honoured.

#include <array>
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/prediction.hpp"
#include "tstitch/diffusers/config_keys.hpp"
#include "tstitch/schedule/any_schedule.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/edm.hpp"
#include "tstitch/schedule/inverse.hpp"
#include "tstitch/solver/any_solver.hpp"

namespace tstitch {

/// What a diffusers scheduler config describes, in tstitch's terms.
struct DiffusersScheduler {
  std::string class_name; ///< the config's _class_name
  AnySchedule schedule;   ///< the noise schedule and its inference spacing
  AnySolver solver;       ///< the solver, with the config's options
  Prediction prediction;  ///< prediction_type (and variance_type): what the model outputs
  /// EDM classes only: the model is a raw EDM network, to be wrapped as
  /// edm_preconditioned(network, *edm_sigma_data) (whose `prediction` is the network's).
  std::optional<double> edm_sigma_data;
  std::vector<std::string> ignored; ///< keys of other schedulers that this class ignores
};

namespace diffusers_config {

/// How a class names its spacings: DDIM's formulas, or the multistep solvers' (DPM-Solver, UniPC,
/// DEIS), which give "linspace" and "leading" other meanings (see TimestepSpacing).
enum class SpacingFamily { ddim, multistep };

/// Whether a class has rescale_betas_zero_snr, and what it leaves in alphas_cumprod[-1].
enum class ZeroSnrKey {
  absent, ///< the class has no such key (Heun, KDPM2, LMS, DEIS, PNDM): only false is accepted
  zero,   ///< DDIM, DDPM, LCM, TCD: alphas_cumprod[-1] stays 0
  fp16    ///< Euler, Euler ancestral, DPM-Solver multistep, UniPC: alphas_cumprod[-1] = 2^-24
};

/// The largest num_train_timesteps a config may ask for.
inline constexpr int max_train_timesteps = 100000;

/// The training-schedule defaults of a diffusers class (its constructor's).
struct ClassDefaults {
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string_view beta_schedule = "linear";
  std::string_view timestep_spacing = "leading";
  SpacingFamily family = SpacingFamily::ddim;
  ZeroSnrKey zero_snr = ZeroSnrKey::absent;
};

/// The training table and inference spacing shared by the discrete-time classes. Reads
/// num_train_timesteps, beta_*, trained_betas, rescale_betas_zero_snr and, where the class has it,
/// timestep_spacing / steps_offset.
struct DiscreteReader {
  ConfigKeys& keys;
  ClassDefaults defaults;

  DiscreteScheduleOptions options(bool has_spacing = true) const {
    DiscreteScheduleOptions o;
    o.num_train_timesteps = keys.integer("num_train_timesteps", 1000);
    // Released models train on 1000 steps (a few on 4000); a hostile file must not make the
    // schedule allocate gigabytes of tables.
    require(o.num_train_timesteps >= 1 && o.num_train_timesteps <= max_train_timesteps,
            "num_train_timesteps", o.num_train_timesteps,
            detail::concat("must be in [1, ", max_train_timesteps, "]"));
    o.beta_start = keys.number("beta_start", defaults.beta_start);
    o.beta_end = keys.number("beta_end", defaults.beta_end);
    const std::string beta = keys.choice(
        "beta_schedule", defaults.beta_schedule,
        std::array<std::string_view, 3>{"linear", "scaled_linear", "squaredcos_cap_v2"});
    o.beta_schedule = beta == "linear"          ? BetaSchedule::linear
                      : beta == "scaled_linear" ? BetaSchedule::scaled_linear
                                                : BetaSchedule::squaredcos_cap_v2;
    if (defaults.zero_snr == ZeroSnrKey::absent) {
      keys.only("rescale_betas_zero_snr", false, "this class has no zero terminal SNR rescaling");
    } else {
      o.rescale_betas_zero_snr = keys.boolean("rescale_betas_zero_snr", false);
      if (o.rescale_betas_zero_snr && defaults.zero_snr == ZeroSnrKey::fp16)
        o.zero_snr_terminal = ZeroSnrTerminal::fp16_min_subnormal;
    }
    if (has_spacing) {
      const std::string spacing =
          keys.choice("timestep_spacing", defaults.timestep_spacing,
                      std::array<std::string_view, 3>{"leading", "trailing", "linspace"});
      const bool multistep = defaults.family == SpacingFamily::multistep;
      o.spacing =
          spacing == "trailing" ? TimestepSpacing::trailing
          : spacing == "leading"
              ? (multistep ? TimestepSpacing::leading_multistep : TimestepSpacing::leading)
              : (multistep ? TimestepSpacing::linspace_multistep : TimestepSpacing::linspace);
      o.steps_offset = keys.integer("steps_offset", 0);
    }
    return o;
  }

  /// The schedule: built-in betas, or the config's trained_betas.
  DiscreteSchedule build(const DiscreteScheduleOptions& o) const {
    const std::vector<double> trained = keys.numbers("trained_betas");
    return trained.empty() ? DiscreteSchedule(o) : DiscreteSchedule::from_betas(trained, o);
  }
};

/// prediction_type: epsilon, v_prediction or sample.
inline Prediction read_prediction(ConfigKeys& keys) {
  const std::string p =
      keys.choice("prediction_type", "epsilon",
                  std::array<std::string_view, 3>{"epsilon", "v_prediction", "sample"});
  return p == "epsilon" ? Prediction::epsilon
                        : (p == "v_prediction" ? Prediction::v : Prediction::sample);
}

/// use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas (/ use_lu_lambdas where the
/// class has it): at most one may be set.
inline void read_sigma_spacing(ConfigKeys& keys, DiscreteScheduleOptions& o, bool has_lu = false) {
  // Newer diffusers (after 0.31) give DPM-Solver and UniPC flow-matching sigmas; tstitch's
  // FlowMatchSchedule is the way to those, not a discrete config.
  keys.only("use_flow_sigmas", false,
            "is not read from a discrete config; use FlowMatchSchedule with the solver");
  (void)keys.number("flow_shift", 1.0); // only used with use_flow_sigmas
  const bool karras = keys.boolean("use_karras_sigmas", false);
  const bool exponential = keys.boolean("use_exponential_sigmas", false);
  const bool lu = has_lu && keys.boolean("use_lu_lambdas", false);
  const bool beta = keys.boolean("use_beta_sigmas", false);
  require(int(karras) + int(exponential) + int(lu) + int(beta) <= 1, "use_karras_sigmas", karras,
          "at most one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas and "
          "use_lu_lambdas may be true");
  if (karras)
    o.sigma_spacing = SigmaSpacing::karras;
  else if (exponential)
    o.sigma_spacing = SigmaSpacing::exponential;
  else if (lu)
    o.sigma_spacing = SigmaSpacing::lu_lambdas;
  else if (beta)
    o.sigma_spacing = SigmaSpacing::beta;
}

/// Beta sigmas are checked against diffusers for Euler only; other classes refuse them until
/// they are.
inline void refuse_beta(const DiscreteScheduleOptions& o, std::string_view class_name) {
  if (o.sigma_spacing == SigmaSpacing::beta)
    throw_invalid_argument("use_beta_sigmas", "true",
                           detail::concat("is offered with EulerDiscreteScheduler only; with ",
                                          class_name, " it is not checked against diffusers yet"));
}

/// final_sigmas_type: "zero" ends at a clean point, "sigma_min" at the first training sigma.
inline FinalPoint read_final_sigmas(ConfigKeys& keys) {
  return keys.choice("final_sigmas_type", "zero",
                     std::array<std::string_view, 2>{"zero", "sigma_min"}) == "zero"
             ? FinalPoint::clean
             : FinalPoint::first_train_step;
}

/// clip_sample / clip_sample_range as tstitch's optional clip range.
inline std::optional<float> read_clip(ConfigKeys& keys, bool default_on) {
  const bool clip = keys.boolean("clip_sample", default_on);
  const double range = keys.number("clip_sample_range", 1.0);
  require(range > 0 && std::isfinite(range), "clip_sample_range", range,
          "must be positive and finite");
  return clip ? std::optional<float>(static_cast<float>(range)) : std::nullopt;
}

/// thresholding / dynamic_thresholding_ratio / sample_max_value.
inline std::optional<DynamicThresholding> read_thresholding(ConfigKeys& keys) {
  const bool on = keys.boolean("thresholding", false);
  const DynamicThresholding t{keys.number("dynamic_thresholding_ratio", 0.995),
                              keys.number("sample_max_value", 1.0)};
  return on ? std::optional<DynamicThresholding>(t) : std::nullopt;
}

/// Reads one class's keys into the result.
using ClassReader = std::function<void(ConfigKeys&, DiffusersScheduler&)>;

struct SupportedClass {
  std::string_view name;
  ClassReader read;
};

inline void read_ddim(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.zero_snr = ZeroSnrKey::zero}};
  DiscreteScheduleOptions o = reader.options();
  o.final_point =
      keys.boolean("set_alpha_to_one", true) ? FinalPoint::clean : FinalPoint::first_train_step;
  DDIMOptions d;
  d.clip_sample = read_clip(keys, true);
  d.thresholding = read_thresholding(keys); // takes precedence over clip_sample, as in diffusers
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = DDIM(d);
}

inline void read_ddpm(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.zero_snr = ZeroSnrKey::zero}};
  const DiscreteScheduleOptions o = reader.options();
  DDPMOptions d;
  d.clip_sample = read_clip(keys, true);
  d.thresholding = read_thresholding(keys);
  out.prediction = read_prediction(keys);
  const std::string variance =
      keys.choice("variance_type", "fixed_small",
                  std::array<std::string_view, 3>{"fixed_small", "fixed_large", "learned_range"});
  d.variance = variance == "fixed_small"   ? DDPMVariance::fixed_small
               : variance == "fixed_large" ? DDPMVariance::fixed_large
                                           : DDPMVariance::learned_range;
  if (d.variance == DDPMVariance::learned_range) {
    require(out.prediction == Prediction::epsilon, "variance_type", "learned_range",
            "is supported with prediction_type epsilon (tstitch's epsilon_learned_sigma)");
    out.prediction = Prediction::epsilon_learned_sigma;
  }
  out.schedule = reader.build(o);
  out.solver = DDPM(d);
}

/// Euler, Euler ancestral and Heun: k-diffusion classes on unrounded float32 timesteps.
inline DiscreteScheduleOptions read_k_schedule(ConfigKeys& keys, const DiscreteReader& reader,
                                               bool has_sigma_options) {
  DiscreteScheduleOptions o = reader.options();
  o.round_timesteps = false;
  if (has_sigma_options) {
    read_sigma_spacing(keys, o);
    if (o.sigma_spacing != SigmaSpacing::timesteps)
      require(
          o.spacing == TimestepSpacing::linspace, "timestep_spacing",
          o.spacing == TimestepSpacing::leading ? "leading" : "trailing",
          "with karras, exponential or beta sigmas tstitch supports linspace only (diffusers then "
          "takes the sigma range from the spaced timesteps)");
  }
  return o;
}

inline void read_euler(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.timestep_spacing = "linspace", .zero_snr = ZeroSnrKey::fp16}};
  DiscreteScheduleOptions o = read_k_schedule(keys, reader, true);
  if (keys.choice("interpolation_type", "linear",
                  std::array<std::string_view, 2>{"linear", "log_linear"}) == "log_linear" &&
      o.sigma_spacing == SigmaSpacing::timesteps) // with a ramp diffusers' log_linear = linear
    o.sigma_interpolation = SigmaInterpolation::log_linear;
  keys.only("timestep_type", "discrete", "tstitch supports discrete timesteps only");
  // diffusers uses sigma_min / sigma_max only for the karras, exponential and beta ramps.
  const auto lo = keys.optional_number("sigma_min");
  const auto hi = keys.optional_number("sigma_max");
  if (o.sigma_spacing != SigmaSpacing::timesteps) {
    o.sigma_min = lo;
    o.sigma_max = hi;
  }
  o.final_point = read_final_sigmas(keys);
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = Euler{};
}

inline void read_euler_ancestral(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.timestep_spacing = "linspace", .zero_snr = ZeroSnrKey::fp16}};
  const DiscreteScheduleOptions o = read_k_schedule(keys, reader, false);
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = EulerAncestral{};
}

inline void read_heun(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys,
                        {.beta_start = 0.00085, .beta_end = 0.012, .timestep_spacing = "linspace"}};
  const DiscreteScheduleOptions o = read_k_schedule(keys, reader, true);
  refuse_beta(o, "HeunDiscreteScheduler");
  HeunOptions h;
  h.clip_sample = read_clip(keys, false);
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = Heun(h);
}

/// DPM-Solver's variance_type: null, or learned_range (the model outputs 2C channels, the second
/// half ignored, as with tstitch's epsilon_learned_sigma).
inline void read_learned_variance(ConfigKeys& keys, DiffusersScheduler& out) {
  if (!keys.has("variance_type")) {
    (void)keys.text("variance_type", "");
    return;
  }
  (void)keys.choice("variance_type", "", std::array<std::string_view, 1>{"learned_range"});
  require(out.prediction == Prediction::epsilon, "variance_type", "learned_range",
          "is supported with prediction_type epsilon (tstitch's epsilon_learned_sigma)");
  out.prediction = Prediction::epsilon_learned_sigma;
}

/// DPM-Solver's solver_type: midpoint or heun; diffusers remaps logrho, bh1 and bh2 to midpoint.
inline DPMSolverType read_dpm_solver_type(ConfigKeys& keys) {
  return keys.choice("solver_type", "midpoint",
                     std::array<std::string_view, 5>{"midpoint", "heun", "logrho", "bh1", "bh2"}) ==
                 "heun"
             ? DPMSolverType::heun
             : DPMSolverType::midpoint;
}

/// DPM-Solver++'s own keys (shared by DPMSolverMultistepScheduler, its inverse and its EDM form,
/// which offers only the data-prediction algorithms). Names diffusers remaps are remapped the same
/// way: algorithm_type "deis" to "dpmsolver++", solver_type logrho / bh1 / bh2 to "midpoint".
inline DPMSolverMultistepOptions read_dpm_options(ConfigKeys& keys, bool edm = false) {
  DPMSolverMultistepOptions d;
  d.solver_order = keys.integer("solver_order", 2);
  std::string algorithm =
      edm ? keys.choice("algorithm_type", "dpmsolver++",
                        std::array<std::string_view, 2>{"dpmsolver++", "sde-dpmsolver++"})
          : keys.choice("algorithm_type", "dpmsolver++",
                        std::array<std::string_view, 5>{"dpmsolver++", "sde-dpmsolver++",
                                                        "dpmsolver", "sde-dpmsolver", "deis"});
  if (algorithm == "deis")
    algorithm = "dpmsolver++";
  d.algorithm = algorithm == "dpmsolver++"       ? DPMSolverAlgorithm::dpmsolver_pp
                : algorithm == "sde-dpmsolver++" ? DPMSolverAlgorithm::sde_dpmsolver_pp
                : algorithm == "dpmsolver"       ? DPMSolverAlgorithm::dpmsolver
                                                 : DPMSolverAlgorithm::sde_dpmsolver;
  d.solver_type = read_dpm_solver_type(keys);
  d.lower_order_final = keys.boolean("lower_order_final", true);
  d.euler_at_final = keys.boolean("euler_at_final", false);
  d.thresholding = read_thresholding(keys);
  const bool sde = d.algorithm == DPMSolverAlgorithm::sde_dpmsolver_pp ||
                   d.algorithm == DPMSolverAlgorithm::sde_dpmsolver;
  require(!(sde && d.solver_order == 3), "solver_order", 3,
          detail::concat("with algorithm_type ", algorithm,
                         " is not offered: diffusers' third-order SDE update is not third order "
                         "(the API offers DPMSolverThirdOrder::taylor instead)"));
  return d;
}

inline void read_dpm_solver(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys,
                        {.timestep_spacing = "linspace",
                         .family = SpacingFamily::multistep,
                         .zero_snr = ZeroSnrKey::fp16}};
  DiscreteScheduleOptions o = reader.options();
  read_sigma_spacing(keys, o, true);
  refuse_beta(o, "DPMSolverMultistepScheduler");
  o.final_point = read_final_sigmas(keys);
  // -inf, diffusers' default, clips nothing; anything else (NaN included) goes to the schedule.
  if (const auto clipped = keys.optional_number("lambda_min_clipped");
      clipped && !(std::isinf(*clipped) && *clipped < 0))
    o.lambda_min_clipped = *clipped;
  const DPMSolverMultistepOptions d = read_dpm_options(keys);
  const bool noise_form = d.algorithm == DPMSolverAlgorithm::dpmsolver ||
                          d.algorithm == DPMSolverAlgorithm::sde_dpmsolver;
  require(!(noise_form && o.final_point == FinalPoint::clean), "final_sigmas_type", "zero",
          "is refused by diffusers for algorithm_type dpmsolver and sde-dpmsolver; use sigma_min");
  out.prediction = read_prediction(keys);
  read_learned_variance(keys, out);
  out.schedule = reader.build(o);
  out.solver = DPMSolverMultistep(d);
}

inline void read_unipc(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys,
                        {.timestep_spacing = "linspace",
                         .family = SpacingFamily::multistep,
                         .zero_snr = ZeroSnrKey::fp16}};
  DiscreteScheduleOptions o = reader.options();
  read_sigma_spacing(keys, o);
  refuse_beta(o, "UniPCMultistepScheduler");
  o.final_point = read_final_sigmas(keys);
  UniPCOptions u;
  u.solver_order = keys.integer("solver_order", 2);
  u.solver_type =
      // diffusers remaps midpoint / heun / logrho to bh2.
      keys.choice("solver_type", "bh2",
                  std::array<std::string_view, 5>{"bh1", "bh2", "midpoint", "heun", "logrho"}) ==
              "bh1"
          ? UniPCVariant::bh1
          : UniPCVariant::bh2;
  u.lower_order_final = keys.boolean("lower_order_final", true);
  u.disable_corrector = keys.integers("disable_corrector");
  u.thresholding = read_thresholding(keys);
  u.predict_x0 = keys.boolean("predict_x0", true);
  keys.only("solver_p", nullptr,
            "is a scheduler object, which a config cannot hold; use UniPCWithPredictor in C++");
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = UniPC(u);
}

inline void read_lcm(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys,
                        {.beta_start = 0.00085,
                         .beta_end = 0.012,
                         .beta_schedule = "scaled_linear",
                         .zero_snr = ZeroSnrKey::zero}};
  DiscreteScheduleOptions o = reader.options();
  // LCM's last step returns its denoised estimate whatever the final point (see LCM), so
  // set_alpha_to_one changes nothing, in diffusers as here.
  o.final_point =
      keys.boolean("set_alpha_to_one", true) ? FinalPoint::clean : FinalPoint::first_train_step;
  LCMOptions l;
  l.timestep_scaling = keys.number("timestep_scaling", 10.0);
  l.clip_sample = read_clip(keys, false);
  keys.only("thresholding", false, "tstitch's LCM does not threshold yet");
  (void)keys.number("dynamic_thresholding_ratio", 0.995);
  (void)keys.number("sample_max_value", 1.0);
  const int original = keys.integer("original_inference_steps", 50);
  out.prediction = read_prediction(keys);
  out.schedule = LCMSchedule(reader.build(o), original);
  out.solver = LCM(l);
}

/// KDPM2 and its ancestral variant: k-diffusion classes that, unlike Euler, round their karras
/// timesteps (the midpoint timesteps stay unrounded).
inline void read_kdpm2(ConfigKeys& keys, DiffusersScheduler& out, bool ancestral) {
  DiscreteReader reader{keys,
                        {.beta_start = 0.00085, .beta_end = 0.012, .timestep_spacing = "linspace"}};
  DiscreteScheduleOptions o = read_k_schedule(keys, reader, true);
  refuse_beta(o, "KDPM2DiscreteScheduler");
  if (o.sigma_spacing == SigmaSpacing::karras)
    o.round_timesteps = true;
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = ancestral ? AnySolver(KDPM2Ancestral{}) : AnySolver(KDPM2{});
}

inline void read_lms(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.timestep_spacing = "linspace"}};
  const DiscreteScheduleOptions o = read_k_schedule(keys, reader, true);
  refuse_beta(o, "LMSDiscreteScheduler");
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = LMS{};
}

inline void read_deis(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.timestep_spacing = "linspace", .family = SpacingFamily::multistep}};
  DiscreteScheduleOptions o = reader.options();
  read_sigma_spacing(keys, o);
  refuse_beta(o, "DEISMultistepScheduler");
  require(o.sigma_spacing != SigmaSpacing::exponential, "use_exponential_sigmas", true,
          "is not offered with DEIS (diffusers 0.31 cannot run it either)");
  o.final_point = FinalPoint::first_train_step; // DEIS always ends on the first training sigma
  DEISOptions d;
  d.solver_order = keys.integer("solver_order", 2);
  d.lower_order_final = keys.boolean("lower_order_final", true);
  d.thresholding = read_thresholding(keys);
  // diffusers maps every other algorithm_type / solver_type onto deis / logrho (with a warning).
  (void)keys.choice("algorithm_type", "deis",
                    std::array<std::string_view, 3>{"deis", "dpmsolver", "dpmsolver++"});
  (void)keys.choice("solver_type", "logrho",
                    std::array<std::string_view, 5>{"logrho", "midpoint", "heun", "bh1", "bh2"});
  out.prediction = read_prediction(keys);
  out.schedule = reader.build(o);
  out.solver = DEIS(d);
}

inline void read_pndm(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {}};
  DiscreteScheduleOptions o = reader.options();
  o.final_point =
      keys.boolean("set_alpha_to_one", false) ? FinalPoint::clean : FinalPoint::first_train_step;
  PNDMOptions p;
  p.skip_prk_steps = keys.boolean("skip_prk_steps", false);
  out.prediction =
      keys.choice("prediction_type", "epsilon",
                  std::array<std::string_view, 2>{"epsilon", "v_prediction"}) == "epsilon"
          ? Prediction::epsilon
          : Prediction::v;
  out.schedule = reader.build(o);
  out.solver = PNDM(p);
}

/// IPNDM: its own schedule; trained_betas are the n + 1 sigmas of a run.
inline void read_ipndm(ConfigKeys& keys, DiffusersScheduler& out) {
  (void)keys.integer("num_train_timesteps", 1000); // diffusers' sampling does not use it either
  const std::vector<double> sigmas = keys.numbers("trained_betas");
  out.prediction = Prediction::v; // diffusers' IPNDM reads the output as v: e = sigma x + alpha m
  out.schedule = sigmas.empty() ? IPNDMSchedule{} : IPNDMSchedule(sigmas);
  out.solver = IPNDM{};
}

/// TCD: LCM's schedule and keys. Its step never reads set_alpha_to_one, clipping, thresholding
/// or timestep_scaling (diffusers 0.31), so they are read and have no effect, as there.
inline void read_tcd(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys,
                        {.beta_start = 0.00085,
                         .beta_end = 0.012,
                         .beta_schedule = "scaled_linear",
                         .zero_snr = ZeroSnrKey::zero}};
  DiscreteScheduleOptions o = reader.options();
  o.final_point = FinalPoint::first_train_step;
  (void)keys.boolean("set_alpha_to_one", true);
  (void)read_clip(keys, false);
  (void)read_thresholding(keys);
  (void)keys.number("timestep_scaling", 10.0);
  const int original = keys.integer("original_inference_steps", 50);
  out.prediction = read_prediction(keys);
  out.schedule = TCDSchedule(reader.build(o), original);
  out.solver = TCD{};
}

inline void read_cm(ConfigKeys& keys, DiffusersScheduler& out) {
  CMKarrasScheduleOptions o;
  o.num_train_timesteps = keys.integer("num_train_timesteps", 40);
  o.sigma_min = keys.number("sigma_min", 0.002);
  o.sigma_max = keys.number("sigma_max", 80.0);
  o.sigma_data = keys.number("sigma_data", 0.5);
  o.rho = keys.number("rho", 7.0);
  const CMKarrasSchedule schedule(o);
  CMStochasticIterativeOptions c = CMStochasticIterativeOptions::for_schedule(schedule);
  c.s_noise = keys.number("s_noise", 1.0);
  c.clip_denoised = keys.boolean("clip_denoised", true);
  out.prediction = Prediction::sample; // the network's raw output F; the solver scales it
  out.schedule = schedule;
  out.solver = CMStochasticIterative(c);
}

/// EDMEulerScheduler and EDMDPMSolverMultistepScheduler: an EDMSchedule, with the model wrapped
/// in edm_preconditioned (see DiffusersScheduler::edm_sigma_data).
inline void read_edm(ConfigKeys& keys, DiffusersScheduler& out, bool dpm) {
  EDMScheduleOptions o;
  o.sigma_min = keys.number("sigma_min", 0.002);
  o.sigma_max = keys.number("sigma_max", 80.0);
  o.rho = keys.number("rho", 7.0);
  o.sigma_schedule =
      keys.choice("sigma_schedule", "karras",
                  std::array<std::string_view, 2>{"karras", "exponential"}) == "karras"
          ? EDMSigmaSchedule::karras
          : EDMSigmaSchedule::exponential;
  o.num_train_timesteps = keys.integer("num_train_timesteps", 1000);
  out.edm_sigma_data = keys.number("sigma_data", 0.5);
  require(*out.edm_sigma_data > 0 && std::isfinite(*out.edm_sigma_data), "sigma_data",
          *out.edm_sigma_data, "must be positive and finite");
  out.prediction =
      keys.choice("prediction_type", "epsilon",
                  std::array<std::string_view, 2>{"epsilon", "v_prediction"}) == "epsilon"
          ? Prediction::epsilon
          : Prediction::v;
  if (!dpm) {
    out.schedule = EDMSchedule(o);
    out.solver = Euler{};
    return;
  }
  o.final_sigma = keys.choice("final_sigmas_type", "zero",
                              std::array<std::string_view, 2>{"zero", "sigma_min"}) == "zero"
                      ? EDMFinalSigma::zero
                      : EDMFinalSigma::sigma_min;
  out.schedule = EDMSchedule(o);
  out.solver = DPMSolverMultistep(read_dpm_options(keys, true));
}

/// DPMSolverSinglestepScheduler: always the multistep linspace spacing (the class has no
/// timestep_spacing key); deis / logrho and the other names diffusers remaps are accepted as it
/// remaps them.
inline void read_dpm_singlestep(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.timestep_spacing = "linspace", .family = SpacingFamily::multistep}};
  DiscreteScheduleOptions o = reader.options(false);
  o.spacing = TimestepSpacing::linspace_multistep;
  read_sigma_spacing(keys, o);
  refuse_beta(o, "DPMSolverSinglestepScheduler");
  o.final_point = read_final_sigmas(keys);
  if (const auto clipped = keys.optional_number("lambda_min_clipped");
      clipped && !(std::isinf(*clipped) && *clipped < 0))
    o.lambda_min_clipped = *clipped;
  DPMSolverSinglestepOptions d;
  d.solver_order = keys.integer("solver_order", 2);
  d.algorithm = keys.choice("algorithm_type", "dpmsolver++",
                            std::array<std::string_view, 3>{"dpmsolver++", "dpmsolver", "deis"}) ==
                        "dpmsolver"
                    ? DPMSolverSinglestepAlgorithm::dpmsolver
                    : DPMSolverSinglestepAlgorithm::dpmsolver_pp;
  d.solver_type = read_dpm_solver_type(keys);
  d.lower_order_final = keys.boolean("lower_order_final", false);
  d.thresholding = read_thresholding(keys);
  out.prediction = read_prediction(keys);
  read_learned_variance(keys, out);
  out.schedule = reader.build(o);
  out.solver = DPMSolverSinglestep(d);
}

/// DDIMInverseScheduler: DDIM's keys (no thresholding), with the deprecated set_alpha_to_zero
/// overriding set_alpha_to_one; the trajectory runs from clean to noisy (ddim_inverse).
inline void read_ddim_inverse(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.zero_snr = ZeroSnrKey::zero}};
  DiscreteScheduleOptions o = reader.options();
  bool to_one = keys.boolean("set_alpha_to_one", true);
  to_one = keys.boolean("set_alpha_to_zero", to_one);
  o.final_point = to_one ? FinalPoint::clean : FinalPoint::first_train_step;
  DDIMOptions d;
  d.clip_sample = read_clip(keys, true);
  out.prediction = read_prediction(keys);
  out.schedule = ddim_inverse(reader.build(o));
  out.solver = DDIM(d);
}

/// DPMSolverMultistepInverseScheduler: DPM-Solver++'s keys without use_lu_lambdas and
/// final_sigmas_type; the SDE variants cannot run towards noise.
inline void read_dpm_solver_inverse(ConfigKeys& keys, DiffusersScheduler& out) {
  DiscreteReader reader{keys, {.timestep_spacing = "linspace", .family = SpacingFamily::multistep}};
  DiscreteScheduleOptions o = reader.options();
  read_sigma_spacing(keys, o, false);
  refuse_beta(o, "DPMSolverMultistepInverseScheduler");
  if (const auto clipped = keys.optional_number("lambda_min_clipped");
      clipped && !(std::isinf(*clipped) && *clipped < 0))
    o.lambda_min_clipped = *clipped;
  const DPMSolverMultistepOptions d = read_dpm_options(keys);
  require(d.algorithm != DPMSolverAlgorithm::sde_dpmsolver_pp &&
              d.algorithm != DPMSolverAlgorithm::sde_dpmsolver,
          "algorithm_type", "an SDE", "cannot run an inversion (towards noise); use dpmsolver++");
  out.prediction = read_prediction(keys);
  read_learned_variance(keys, out);
  out.schedule = dpm_solver_inverse(reader.build(o));
  out.solver = DPMSolverMultistep(d);
}

/// The classes from_diffusers_config reads.
inline const std::vector<SupportedClass>& supported_classes() {
  static const std::vector<SupportedClass> classes{
      {"DDIMScheduler", read_ddim},
      {"DDPMScheduler", read_ddpm},
      {"EulerDiscreteScheduler", read_euler},
      {"EulerAncestralDiscreteScheduler", read_euler_ancestral},
      {"HeunDiscreteScheduler", read_heun},
      {"DPMSolverMultistepScheduler", read_dpm_solver},
      {"UniPCMultistepScheduler", read_unipc},
      {"LCMScheduler", read_lcm},
      {"DPMSolverSinglestepScheduler", read_dpm_singlestep},
      {"DDIMInverseScheduler", read_ddim_inverse},
      {"DPMSolverMultistepInverseScheduler", read_dpm_solver_inverse},
      {"PNDMScheduler", read_pndm},
      {"IPNDMScheduler", read_ipndm},
      {"LMSDiscreteScheduler", read_lms},
      {"DEISMultistepScheduler", read_deis},
      {"TCDScheduler", read_tcd},
      {"CMStochasticIterativeScheduler", read_cm},
      {"EDMEulerScheduler",
       [](ConfigKeys& keys, DiffusersScheduler& out) { read_edm(keys, out, false); }},
      {"EDMDPMSolverMultistepScheduler",
       [](ConfigKeys& keys, DiffusersScheduler& out) { read_edm(keys, out, true); }},
      {"KDPM2DiscreteScheduler",
       [](ConfigKeys& keys, DiffusersScheduler& out) { read_kdpm2(keys, out, false); }},
      {"KDPM2AncestralDiscreteScheduler",
       [](ConfigKeys& keys, DiffusersScheduler& out) { read_kdpm2(keys, out, true); }},
  };
  return classes;
}

} // namespace diffusers_config

/// Reads a diffusers scheduler config: `path_or_json` is JSON text (starting with '{'), a
/// scheduler_config.json, or a model folder holding one (directly or in scheduler/). The class
/// named by _class_name picks the solver, and every key is honoured: a value tstitch cannot
/// reproduce, or a key no diffusers scheduler has, is an error naming the key and the value. Keys
/// of other schedulers, which the class ignores in diffusers too, are listed in `ignored` and
/// logged as warnings. An unknown class is an error listing the supported ones.
[[nodiscard]] inline DiffusersScheduler from_diffusers_config(std::string_view path_or_json) {
  diffusers_config::ConfigKeys keys(path_or_json);
  const std::string name = keys.class_name();
  for (const auto& supported : diffusers_config::supported_classes()) {
    if (supported.name != name)
      continue;
    DiffusersScheduler out{name, DiscreteSchedule{}, DDIM{}, Prediction::epsilon, {}, {}};
    supported.read(keys, out);
    out.ignored = keys.finish(name);
    return out;
  }
  std::string list;
  for (const auto& supported : diffusers_config::supported_classes())
    list += (list.empty() ? "" : ", ") + std::string(supported.name);
  throw_invalid_argument("_class_name", detail::concat('"', name, '"'),
                         detail::concat("is not supported; tstitch reads ", list));
}

} // namespace tstitch
