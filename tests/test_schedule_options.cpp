// SPDX-License-Identifier: Apache-2.0
// Schedule and solver options added for diffusers parity (docs/parity.md, "Schedule options"):
//  - rescale_betas_zero_snr with DDIM/DDPM's zero terminal and Euler's 2^-24 terminal;
//  - use_beta_sigmas (SigmaSpacing::beta) and its inverse regularized incomplete beta;
//  - Euler's interpolation_type = "log_linear" (SigmaInterpolation::log_linear);
//  - dynamic thresholding for DDIM and DDPM.
// diffusers' own tests only run these options through check_over_configs (no asserted numbers),
// so the expected values below were printed by diffusers 0.31.0 (and scipy) with
// the §1 harness, and are checked with diffusers' full-loop tolerances (1e-2 on the sum of |x|,
// 1e-3 on its mean).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/spacing.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/euler.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

namespace {

void check_result(const Result& r, double sum, double mean) {
  INFO("sum " << r.sum << " (expected " << sum << "), mean " << r.mean << " (expected " << mean
              << ")");
  CHECK(std::abs(r.sum - sum) < 1e-2);
  CHECK(std::abs(r.mean - mean) < 1e-3);
}

/// The host backend drawing zeros: diffusers' DDPM loop with randn_tensor patched to zeros.
struct ZeroNoiseBackend : HostBackend {
  void fill_normal(View out, NoiseKey) const { fill(out, 0.0f); }
};

/// DDPMSchedulerTest's config run as a 10-step loop without noise (diffusers 0.31.0 with
/// randn_tensor returning zeros).
Result ddpm_zero_noise_loop(const DiscreteScheduleOptions& config, DDPM solver,
                            Prediction prediction) {
  auto model = harness_model(prediction);
  Tensor x = harness_tensor(false);
  SampleOptions options;
  options.steps = 10;
  Sampler<ZeroNoiseBackend> sampler;
  sampler.run(model, DiscreteSchedule(config), solver, x, NoCondition{}, nullptr, options);
  return abs_sum(x);
}

/// torch.linspace(start, end, n) in float32: test_scheduler_euler.py's linear betas exactly as
/// torch builds them (see test_k_solvers.cpp, k_schedule).
std::vector<double> torch_betas(double start, double end, int n) {
  std::vector<double> out;
  for (float b : spacing::torch_linspace_f32(start, end, n))
    out.push_back(b);
  return out;
}

/// EulerDiscreteSchedulerTest's config: N = 1100, linear 1e-4 .. 0.02, linspace, float32
/// timesteps, training betas as torch makes them.
DiscreteSchedule euler_schedule(DiscreteScheduleOptions o) {
  o.num_train_timesteps = 1100;
  o.round_timesteps = false;
  return DiscreteSchedule::from_betas(torch_betas(0.0001, 0.02, 1100), o);
}

DiscreteScheduleOptions euler_linspace_options() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace;
  return o;
}

/// diffusers' Euler full loop (pattern K of §1.2) in k-diffusion coordinates: x = sample *
/// init_noise_sigma (the largest sigma), then per step x = scale_model_input(x) (stored back),
/// x = step(model(x, t), t, x), in float32 like torch. The trajectory's points become
/// (t, alpha = 1, sigma = float32 VE sigma), as diffusers stores `self.sigmas`.
Result euler_loop(const Trajectory& vp, Prediction prediction) {
  Trajectory ve{{}, vp.num_train_timesteps};
  for (const TimePoint& p : vp.points)
    ve.points.push_back(TimePoint{static_cast<double>(static_cast<float>(p.timestep)), 1.0,
                                  static_cast<double>(static_cast<float>(p.ve_sigma()))});
  HostBackend backend;
  Tensor x = harness_tensor(false);
  backend.combine(x, Term{static_cast<float>(ve[0].sigma), ConstView(x)});
  Euler solver;
  solver.begin(backend, ve, x.batch(), harness_shape);
  Tensor m(4, harness_shape), x0(4, harness_shape), eps(4, harness_shape);
  for (int i = 0; i < ve.steps(); ++i) {
    const auto s = static_cast<float>(ve[i].sigma);
    const float root = std::sqrt(s * s + 1.0f);
    backend.map(
        x, [root](float v) { return v / root; }, ConstView(x));
    dummy_model(ve[i].timestep, x, m);
    for (std::int64_t k = 0; k < x.numel(); ++k) {
      x0[k] = prediction == Prediction::v ? m[k] * (-s / root) + x[k] / (s * s + 1.0f)
                                          : x[k] - s * m[k];
      eps[k] = (x[k] - x0[k]) / s;
    }
    solver.update(backend, SolverStep{i, 0, &ve, NoiseKey{}}, ModelOutput{x0, eps, m, prediction},
                  x);
  }
  return abs_sum(x);
}

/// Runs `f`, expecting std::invalid_argument whose message names `option` and `value`.
template <class F> void check_rejects(F f, const std::string& option, const std::string& value) {
  try {
    f();
    FAIL("no exception for " << option << " = " << value);
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(option) != std::string::npos);
    CHECK(what.find(value) != std::string::npos);
  }
}

} // namespace

// ---- rescale_betas_zero_snr ---------------------------------------------------------------------

TEST_CASE("rescale_betas_zero_snr reproduces diffusers' rescaled tables", "[parity][zero_snr]") {
  DiscreteScheduleOptions o; // DDIMSchedulerTest's training config, betas exactly as torch's
  o.rescale_betas_zero_snr = true;
  const DiscreteSchedule ddim = DiscreteSchedule::from_betas(torch_betas(0.0001, 0.02, 1000), o);
  // diffusers 0.31.0: DDIMScheduler(rescale_betas_zero_snr=True), indices 0, 1, 500, 998, 999.
  const int index[] = {0, 1, 500, 998, 999};
  const double alphas_cumprod[] = {0.999899983, 0.999779344, 0.0752462298, 4.213216e-09, 0.0};
  const double betas[] = {0.000100016594, 0.000120639801, 0.0102925301, 0.752269506, 1.0};
  for (int k = 0; k < 5; ++k) {
    const auto i = static_cast<std::size_t>(index[k]);
    INFO("t = " << i);
    CHECK(ddim.alphas_cumprod()[i] == Approx(alphas_cumprod[k]).epsilon(1e-6));
    CHECK(ddim.betas()[i] == Approx(betas[k]).epsilon(1e-6));
  }
  SECTION("the built-in linear table: its one-ulp beta differences (§2.1) grow in the tail") {
    // The shift r - r_last cancels most digits of the last roots: t = 998 moves by 1.5e-5.
    const DiscreteSchedule builtin(o);
    for (int k = 0; k < 5; ++k) {
      const auto i = static_cast<std::size_t>(index[k]);
      INFO("t = " << i);
      CHECK(builtin.alphas_cumprod()[i] == Approx(alphas_cumprod[k]).epsilon(5e-5));
      CHECK(builtin.betas()[i] == Approx(betas[k]).epsilon(5e-5));
    }
  }
  SECTION("the zero terminal is pure noise, also between training timesteps") {
    CHECK(ddim.alphas_cumprod().back() == 0.0f);
    CHECK(ddim.point(999).alpha == 0.0);
    CHECK(ddim.point(999).sigma == 1.0);
    CHECK(ddim.point(998.5).alpha == 0.0); // np.interp next to an infinite sigma
    CHECK(ddim.point(0).alpha == Approx(std::sqrt(0.999899983)).epsilon(1e-7));
  }
  SECTION("Euler's terminal: alphas_cumprod[-1] = 2^-24 (diffusers 0.31.0, N = 1100)") {
    DiscreteScheduleOptions e = euler_linspace_options();
    e.rescale_betas_zero_snr = true;
    e.zero_snr_terminal = ZeroSnrTerminal::fp16_min_subnormal;
    const DiscreteSchedule euler = euler_schedule(e);
    CHECK(euler.alphas_cumprod().back() == std::ldexp(1.0f, -24));
    CHECK(euler.alphas_cumprod().front() == Approx(0.999899983).epsilon(1e-7));
    CHECK(euler.train_sigmas().back() == 4095.99976f);
    CHECK(euler.betas().back() == 1.0f); // diffusers keeps the rescaled betas
  }
}

TEST_CASE("DDIM with zero terminal SNR matches diffusers", "[parity][zero_snr][ddim]") {
  DiscreteScheduleOptions config; // DDIMSchedulerTest, clip_sample=True
  config.rescale_betas_zero_snr = true;
  DDIM ddim(DDIMOptions{0.0, 1.0f, {}});
  SECTION("trailing, v_prediction: starts at t = 999, alpha = 0 (diffusers 0.31.0)") {
    config.spacing = TimestepSpacing::trailing;
    CHECK(DiscreteSchedule(config).trajectory(10)[0].alpha == 0.0);
    check_result(full_loop(config, ddim, Prediction::v), 50.557411193847656, 0.06582996249198914);
  }
  SECTION("trailing, sample prediction (diffusers 0.31.0)") {
    config.spacing = TimestepSpacing::trailing;
    check_result(full_loop(config, ddim, Prediction::sample), 550.9450073242188,
                 0.7173762917518616);
  }
  SECTION("leading, epsilon (never visits t = 999; diffusers 0.31.0)") {
    check_result(full_loop(config, ddim, Prediction::epsilon), 172.0943145751953,
                 0.2240811437368393);
  }
}

TEST_CASE("DDPM with zero terminal SNR matches diffusers (noise-free loop)",
          "[parity][zero_snr][ddpm]") {
  DiscreteScheduleOptions config;
  config.rescale_betas_zero_snr = true;
  config.spacing = TimestepSpacing::trailing;
  for (DDPMVariance variance : {DDPMVariance::fixed_small, DDPMVariance::fixed_large}) {
    // diffusers 0.31.0, DDPMSchedulerTest config (clip_sample=True), randn_tensor -> zeros.
    const Result r =
        ddpm_zero_noise_loop(config, DDPM(DDPMOptions{variance, 1.0f, {}}), Prediction::v);
    check_result(r, 0.0006697071949020028, 8.720145956431224e-07);
  }
}

TEST_CASE("Euler with rescale_betas_zero_snr (2^-24 terminal) matches diffusers",
          "[parity][zero_snr][euler]") {
  DiscreteScheduleOptions config = euler_linspace_options();
  config.rescale_betas_zero_snr = true;
  config.zero_snr_terminal = ZeroSnrTerminal::fp16_min_subnormal;
  SECTION("linspace, epsilon (diffusers 0.31.0)") {
    const Trajectory t = euler_schedule(config).trajectory(10);
    CHECK(static_cast<float>(t[0].ve_sigma()) == 4095.99976f);
    CHECK(static_cast<float>(t[1].ve_sigma()) == Approx(117.849197).epsilon(1e-6));
    check_result(euler_loop(t, Prediction::epsilon), 294.0919189453125, 0.382932186126709);
  }
  SECTION("linspace, v_prediction (diffusers 0.31.0)") {
    check_result(euler_loop(euler_schedule(config).trajectory(10), Prediction::v),
                 7.60411733580213e-10, 9.901194447659023e-13);
  }
  SECTION("trailing, v_prediction (diffusers 0.31.0)") {
    config.spacing = TimestepSpacing::trailing;
    const Trajectory t = euler_schedule(config).trajectory(10);
    CHECK(t[1].timestep == 989);
    CHECK(static_cast<float>(t[1].ve_sigma()) == Approx(138.747131).epsilon(1e-6));
    check_result(euler_loop(t, Prediction::v), 3.572227236237069e-11, 4.651337434245957e-14);
  }
}

TEST_CASE("DDIM and Euler converge at order 1 on a zero-SNR schedule", "[zero_snr][order]") {
  // From pure noise (alpha = 0) the v prediction still gives x0; the exact flow starts there too.
  DiscreteScheduleOptions o;
  o.rescale_betas_zero_snr = true;
  o.spacing = TimestepSpacing::trailing;
  const std::vector<int> steps{10, 20, 40, 80, 160};
  SECTION("DDIM, zero terminal") {
    const double order = measured_order(DiscreteSchedule(o), DDIM{}, Prediction::v, steps,
                                        Averaging::divide_the_sum);
    CHECK(order == Approx(1.0).margin(0.25));
  }
  SECTION("Euler, 2^-24 terminal") {
    o.zero_snr_terminal = ZeroSnrTerminal::fp16_min_subnormal;
    const double order = measured_order(DiscreteSchedule(o), Euler{}, Prediction::v, steps,
                                        Averaging::divide_the_sum);
    CHECK(order == Approx(1.0).margin(0.25));
  }
}

// ---- use_beta_sigmas ----------------------------------------------------------------------------

TEST_CASE("The inverse regularized incomplete beta matches scipy.stats.beta.ppf",
          "[schedule][beta]") {
  // scipy.stats.beta.ppf(q, 0.6, 0.6) from the diffusers 0.31.0 environment (scipy 1.x).
  const double q[] = {1e-12, 1e-6, 0.001, 0.1, 1.0 / 3, 0.5, 0.7, 0.9, 0.999, 1 - 1e-9};
  const double ppf[] = {1.8558824624914097e-20, 1.8558824624053043e-10, 1.855873851745199e-05,
                        0.03958440558878085,    0.2754132907776234,     0.5000000000000001,
                        0.7659829961247643,     0.9604155944112192,     0.9999814412614826,
                        0.9999999999999981};
  for (int i = 0; i < 10; ++i) {
    INFO("q = " << q[i]);
    const double x = spacing::inverse_regularized_incomplete_beta(0.6, 0.6, q[i]);
    CHECK(std::abs(x - ppf[i]) <= 1e-12 * std::max(ppf[i], 1e-3));
    if (q[i] <= 0.999) // nearer 1, one ulp of x moves I_x by more than 1e-12
      CHECK(spacing::regularized_incomplete_beta(0.6, 0.6, x) == Approx(q[i]).epsilon(1e-12));
  }
  CHECK(spacing::inverse_regularized_incomplete_beta(0.6, 0.6, 0.0) == 0.0);
  CHECK(spacing::inverse_regularized_incomplete_beta(0.6, 0.6, 1.0) == 1.0);
  // Asymmetric shapes, scipy.stats.beta.ppf(q, a, b).
  CHECK(std::abs(spacing::inverse_regularized_incomplete_beta(2, 5, 0.01) - 0.026763191142755053) <
        1e-14);
  CHECK(std::abs(spacing::inverse_regularized_incomplete_beta(2, 5, 0.95) - 0.5818034092520259) <
        1e-14);
  CHECK(std::abs(spacing::inverse_regularized_incomplete_beta(0.3, 4, 0.01) -
                 4.1041237593986866e-08) < 1e-20);
  CHECK(std::abs(spacing::inverse_regularized_incomplete_beta(0.3, 4, 0.5) - 0.019778314565049332) <
        1e-15);
}

TEST_CASE("Euler with use_beta_sigmas matches diffusers", "[parity][beta][euler]") {
  DiscreteScheduleOptions config = euler_linspace_options();
  config.sigma_spacing = SigmaSpacing::beta;
  const Trajectory t = euler_schedule(config).trajectory(10);
  // diffusers 0.31.0: EulerDiscreteScheduler(use_beta_sigmas=True).set_timesteps(10)
  const double timesteps[] = {1099,       1094.21667, 1083.31775, 1066.64612, 1043.13342,
                              1010.32062, 962.972107, 888.079773, 737.410706, 0};
  const double sigmas[] = {261.055573, 248.762466, 223.047058, 189.160156,   150.587677, 110.477898,
                           71.9054184, 38.0185242, 12.303112,  0.0100013297, 0};
  REQUIRE(t.steps() == 10);
  for (int i = 0; i <= 10; ++i) {
    INFO("point " << i);
    if (i < 10)
      CHECK(t[i].timestep == Approx(timesteps[i]).margin(1e-3));
    CHECK(static_cast<float>(t[i].ve_sigma()) == Approx(sigmas[i]).epsilon(1e-6));
  }
  check_result(euler_loop(t, Prediction::epsilon), 0.2997145652770996, 0.0003902533499058336);
  check_result(euler_loop(t, Prediction::v), 5.486037515613786e-17, 7.143277799710499e-20);
}

// ---- interpolation_type = "log_linear" ----------------------------------------------------------

TEST_CASE("Euler with log_linear sigma interpolation matches diffusers", "[parity][euler]") {
  DiscreteScheduleOptions config = euler_linspace_options();
  config.sigma_interpolation = SigmaInterpolation::log_linear;
  // diffusers 0.31.0: 11 log-linear sigmas, then the final sigma, which is never reached: the run
  // ends at the smallest training sigma whatever final_sigmas_type says.
  const double sigmas[] = {261.055634,   94.4203033,   34.1505737,  12.3518057,
                           4.46748304,   1.61582899,   0.58442378,  0.211378276,
                           0.0764526948, 0.0276519191, 0.0100013297};
  for (FinalPoint final_point : {FinalPoint::clean, FinalPoint::first_train_step}) {
    config.final_point = final_point;
    const DiscreteSchedule schedule = euler_schedule(config);
    const Trajectory t = schedule.trajectory(10);
    REQUIRE(t.steps() == 10);
    CHECK(t[1].timestep == Approx(976.888916).margin(1e-4)); // the linspace timesteps
    for (int i = 0; i <= 10; ++i) {
      INFO("point " << i);
      CHECK(static_cast<float>(t[i].ve_sigma()) == Approx(sigmas[i]).epsilon(1e-6));
    }
    check_result(euler_loop(t, Prediction::epsilon), 36.35570526123047, 0.04733815789222717);
    // diffusers' test_custom_timesteps with interpolation_type="log_linear": passing the default
    // timesteps back gives the same run.
    const Trajectory custom = schedule.trajectory_through(schedule.timesteps(10));
    REQUIRE(custom.points.size() == t.points.size());
    for (std::size_t i = 0; i < t.points.size(); ++i) {
      CHECK(custom.points[i].timestep == t.points[i].timestep);
      CHECK(custom.points[i].sigma == t.points[i].sigma);
    }
  }
}

// ---- dynamic thresholding -----------------------------------------------------------------------

TEST_CASE("DDIM with dynamic thresholding matches diffusers", "[parity][ddim][thresholding]") {
  // DDIMSchedulerTest's config has clip_sample=True; with thresholding diffusers does not clip, so
  // these loops also check that thresholding takes precedence over clip_sample.
  const DiscreteScheduleOptions config;
  auto ddim = [](double sample_max_value) {
    return DDIM(DDIMOptions{0.0, 1.0f, DynamicThresholding{0.995, sample_max_value}});
  };
  SECTION("sample_max_value 0.5 (diffusers 0.31.0)") {
    check_result(full_loop(config, ddim(0.5), Prediction::epsilon), 689.3290405273438,
                 0.8975638747215271);
    check_result(full_loop(config, ddim(0.5), Prediction::v), 57.22609329223633,
                 0.07451314479112625);
  }
  SECTION("sample_max_value 1 and 2: s = 1, diffusers' unthresholded test_full_loop values") {
    for (double max_value : {1.0, 2.0}) {
      check_result(full_loop(config, ddim(max_value), Prediction::epsilon), 172.0067, 0.223967);
      check_result(full_loop(config, ddim(max_value), Prediction::v), 52.5302, 0.0684);
    }
  }
}

TEST_CASE("DDPM with dynamic thresholding matches diffusers (noise-free loop)",
          "[parity][ddpm][thresholding]") {
  const DiscreteScheduleOptions config; // DDPMSchedulerTest: linear, fixed_small, clip_sample=True
  auto ddpm = [](double sample_max_value) {
    return DDPM(
        DDPMOptions{DDPMVariance::fixed_small, 1.0f, DynamicThresholding{0.995, sample_max_value}});
  };
  // diffusers 0.31.0 with randn_tensor -> zeros.
  check_result(ddpm_zero_noise_loop(config, DDPM(DDPMOptions{DDPMVariance::fixed_small, 1.0f, {}}),
                                    Prediction::epsilon),
               2.367476463317871, 0.0030826516449451447);
  check_result(ddpm_zero_noise_loop(config, ddpm(0.5), Prediction::epsilon), 25.605558395385742,
               0.03334056958556175);
  check_result(ddpm_zero_noise_loop(config, ddpm(0.5), Prediction::v), 0.03754628077149391,
               4.888838520855643e-05);
  check_result(ddpm_zero_noise_loop(config, ddpm(1.0), Prediction::v), 0.11241668462753296,
               0.00014637589629273862);
  check_result(ddpm_zero_noise_loop(config, ddpm(2.0), Prediction::epsilon), 2.367476463317871,
               0.0030826516449451447);
}

TEST_CASE("DDIM and DDPM with thresholding allocate in begin() only", "[ddim][ddpm]") {
  const Trajectory trajectory = DiscreteSchedule().trajectory(12);
  Tensor x = harness_tensor(false), x0 = harness_tensor(true);
  const ModelOutput out{x0.view(), x0.view(), x0.view(), Prediction::sample};
  auto run = [&](auto solver, int expected) {
    int allocations = 0;
    CountingBackend backend{{}, &allocations};
    solver.begin(backend, trajectory, 4, harness_shape);
    CHECK(allocations == expected);
    for (int pass = 0; pass < 2; ++pass) {
      solver.begin(backend, trajectory, 4, harness_shape);
      for (int i = 0; i < 12; ++i)
        solver.update(backend, SolverStep{i, 0, &trajectory, NoiseKey{1, 0, 0, 0}}, out, x.view());
    }
    CHECK(allocations == expected);
  };
  run(DDIM(DDIMOptions{0.5, {}, DynamicThresholding{0.9, 2.0}}), 2); // noise, thresholded x0
  run(DDPM(DDPMOptions{DDPMVariance::fixed_small, {}, DynamicThresholding{0.9, 2.0}}), 2);
}

// ---- validation ---------------------------------------------------------------------------------

TEST_CASE("Schedule and solver options are validated, naming the option and value",
          "[schedule][validation]") {
  DiscreteScheduleOptions o;
  SECTION("zero_snr_terminal without rescaling") {
    o.zero_snr_terminal = ZeroSnrTerminal::fp16_min_subnormal;
    check_rejects([&] { (void)DiscreteSchedule(o); }, "zero_snr_terminal", "fp16_min_subnormal");
  }
  SECTION("rescaling a one-step table") {
    o.rescale_betas_zero_snr = true;
    o.num_train_timesteps = 1;
    check_rejects([&] { (void)DiscreteSchedule(o); }, "rescale_betas_zero_snr", "1");
  }
  SECTION("rescaling with from_alphas_cumprod") {
    o.rescale_betas_zero_snr = true;
    check_rejects(
        [&] {
          (void)DiscreteSchedule::from_alphas_cumprod({0.9, 0.5}, o);
        },
        "rescale_betas_zero_snr", "1");
  }
  SECTION("a ramp up to an infinite sigma") {
    o.rescale_betas_zero_snr = true;
    o.sigma_spacing = SigmaSpacing::karras;
    check_rejects([&] { (void)DiscreteSchedule(o); }, "rescale_betas_zero_snr", "1");
    o.zero_snr_terminal = ZeroSnrTerminal::fp16_min_subnormal; // diffusers' DPM-Solver/UniPC way
    CHECK_NOTHROW(DiscreteSchedule(o).trajectory(10));
  }
  SECTION("log_linear with an infinite sigma or with a sigma ramp") {
    o.sigma_interpolation = SigmaInterpolation::log_linear;
    o.rescale_betas_zero_snr = true;
    check_rejects([&] { (void)DiscreteSchedule(o); }, "sigma_interpolation", "log_linear");
    o.rescale_betas_zero_snr = false;
    o.sigma_spacing = SigmaSpacing::beta;
    check_rejects([&] { (void)DiscreteSchedule(o); }, "sigma_interpolation", "log_linear");
  }
  SECTION("sigma_min / sigma_max need a ramp, beta included") {
    o.sigma_min = 0.1;
    check_rejects([&] { (void)DiscreteSchedule(o); }, "sigma_min", "0.1");
    o.sigma_spacing = SigmaSpacing::beta;
    CHECK_NOTHROW(DiscreteSchedule(o).trajectory(10));
  }
  SECTION("thresholding ratio and sample_max_value") {
    check_rejects(
        [] {
          (void)DDIM(DDIMOptions{0.0, {}, DynamicThresholding{1.0, 1.0}});
        },
        "DDIMOptions::thresholding->ratio", "1");
    check_rejects(
        [] {
          (void)DDIM(DDIMOptions{0.0, {}, DynamicThresholding{0.9, 0.0}});
        },
        "DDIMOptions::thresholding->sample_max_value", "0");
    check_rejects(
        [] {
          (void)DDPM(DDPMOptions{DDPMVariance::fixed_small, {}, DynamicThresholding{0.0, 1.0}});
        },
        "DDPMOptions::thresholding->ratio", "0");
    check_rejects(
        [] {
          (void)DDPM(
              DDPMOptions{DDPMVariance::fixed_small,
                          {},
                          DynamicThresholding{0.5, -std::numeric_limits<double>::infinity()}});
        },
        "DDPMOptions::thresholding->sample_max_value", "inf");
  }
  SECTION("the incomplete beta's arguments") {
    check_rejects([] { (void)spacing::inverse_regularized_incomplete_beta(0.6, 0.6, 1.5); }, "p",
                  "1.5");
    check_rejects([] { (void)spacing::regularized_incomplete_beta(-1, 0.6, 0.5); }, "a", "-1");
  }
}
