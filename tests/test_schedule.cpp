// SPDX-License-Identifier: Apache-2.0
//
// Schedules against diffusers. [A] marks values diffusers' own tests assert (oracles, with their
// tolerance); [R] marks re-derived values from docs/parity.md; [py] marks values
// computed independently with numpy (float32 emulated with np.float32 casts, following diffusers'
// set_timesteps code), never by printing this library's output.

#include <catch2/catch.hpp>

#include <cmath>
#include <initializer_list>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/flow.hpp"
#include "tstitch/schedule/spacing.hpp"

using tstitch::BetaSchedule;
using tstitch::ContinuousSchedule;
using tstitch::DiscreteSchedule;
using tstitch::DiscreteScheduleOptions;
using tstitch::FinalPoint;
using tstitch::FlowMatchSchedule;
using tstitch::FlowMatchScheduleOptions;
using tstitch::FlowSigmaSpacing;
using tstitch::SigmaSpacing;
using tstitch::TimestepSpacing;

static_assert(tstitch::NoiseSchedule<DiscreteSchedule>);
static_assert(tstitch::NoiseSchedule<FlowMatchSchedule>);
static_assert(tstitch::NoiseSchedule<ContinuousSchedule>);

// Both checks: the exception type, and a message that names the parameter.
#define CHECK_INVALID(expr, parameter)                                                             \
  do {                                                                                             \
    CHECK_THROWS_AS(expr, tstitch::invalid_argument);                                              \
    CHECK_THROWS_WITH(expr, Catch::Contains(parameter));                                           \
  } while (false)

namespace {

/// torch.allclose(actual, expected, rtol, atol): |a - e| <= atol + rtol * |e|.
bool allclose(double actual, double expected, double rtol = 1e-5, double atol = 1e-8) {
  return std::fabs(actual - expected) <= atol + rtol * std::fabs(expected);
}

bool rel_close(double actual, double expected, double rel) {
  return std::fabs(actual - expected) <= rel * std::fabs(expected);
}

DiscreteScheduleOptions ddim_options() { return DiscreteScheduleOptions{}; }

/// diffusers' DPMSolverMultistepScheduler config of §4.5 with use_karras_sigmas=True.
DiscreteScheduleOptions dpm_karras_options() {
  DiscreteScheduleOptions o;
  o.sigma_spacing = SigmaSpacing::karras;
  o.round_timesteps = true;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

/// diffusers' EulerDiscreteScheduler test config of §4.10 (N = 1100, linspace, float timesteps).
DiscreteScheduleOptions euler_options() {
  DiscreteScheduleOptions o;
  o.num_train_timesteps = 1100;
  o.spacing = TimestepSpacing::linspace;
  o.round_timesteps = false;
  return o;
}

std::vector<double> ints(std::initializer_list<int> values) {
  return std::vector<double>(values.begin(), values.end());
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Training tables (§2.1)
// ---------------------------------------------------------------------------------------------

TEST_CASE("DiscreteSchedule builds the linear training table the torch float32 way", "[schedule]") {
  const DiscreteSchedule s; // DDIM defaults: N = 1000, linear 1e-4 .. 0.02
  REQUIRE(s.num_train_timesteps() == 1000);
  REQUIRE(s.alphas_cumprod().size() == 1000);
  // [py] np.linspace(1e-4, 0.02, 1000).astype(float32), then the §2.1 pipeline.
  CHECK(s.betas()[0] == static_cast<float>(9.999999747378752e-05));
  CHECK(s.betas()[1] == static_cast<float>(0.00011991991777904332));
  CHECK(s.betas()[500] == static_cast<float>(0.010059960186481476));
  CHECK(s.betas()[999] == static_cast<float>(0.019999999552965164));
  CHECK(s.alphas()[0] == 1.0f - s.betas()[0]);
  CHECK(s.alphas_cumprod()[0] == static_cast<float>(0.9998999834060669));
  CHECK(s.alphas_cumprod()[1] == static_cast<float>(0.9997800588607788));
  CHECK(s.alphas_cumprod()[10] == static_cast<float>(0.9978064894676208));
  CHECK(s.alphas_cumprod()[500] == static_cast<float>(0.07779666036367416));
  CHECK(s.alphas_cumprod()[999] == static_cast<float>(4.035829988424666e-05));
  CHECK(s.train_sigmas()[0] == static_cast<float>(0.010001329705119133));
  CHECK(s.train_sigmas()[500] == static_cast<float>(3.442966938018799));
  CHECK(s.train_sigmas()[999] == static_cast<float>(157.4072723388672));
}

TEST_CASE("The cumulative product is accumulated in double, not float32", "[schedule]") {
  // [py] np.cumprod(alphas, dtype=float32) first differs from the double-accumulated product at
  // index 4 (0.999301016330719 instead of 0.9993009567260742); diffusers' torch CPU cumprod
  // accumulates in double, and four Euler/Heun/LMS/KDPM2 oracles depend on it (§2.1).
  const DiscreteSchedule s;
  CHECK(s.alphas_cumprod()[4] == static_cast<float>(0.9993009567260742));
  CHECK(s.alphas_cumprod()[4] != static_cast<float>(0.999301016330719));
  CHECK(s.alphas_cumprod()[10] == static_cast<float>(0.9978064894676208));
  CHECK(s.alphas_cumprod()[10] != static_cast<float>(0.9978065490722656));
}

TEST_CASE("DiscreteSchedule builds scaled_linear and squaredcos_cap_v2 tables", "[schedule]") {
  SECTION("scaled_linear 0.00085 .. 0.012 (Stable Diffusion, LCM config)") {
    DiscreteScheduleOptions o;
    o.beta_start = 0.00085;
    o.beta_end = 0.012;
    o.beta_schedule = BetaSchedule::scaled_linear;
    const DiscreteSchedule s(o);
    // [py] float32(float32(linspace(sqrt(bs), sqrt(be), N))^2) and the §2.1 pipeline.
    CHECK(s.betas()[0] == static_cast<float>(0.0008499999530613422));
    CHECK(s.betas()[1] == static_cast<float>(0.0008546985918655992));
    CHECK(s.betas()[500] == static_cast<float>(0.004814954474568367));
    CHECK(s.betas()[999] == static_cast<float>(0.011999999172985554));
    CHECK(s.alphas_cumprod()[0] == static_cast<float>(0.9991499781608582));
    CHECK(s.alphas_cumprod()[1] == static_cast<float>(0.9982960224151611));
    CHECK(s.alphas_cumprod()[10] == static_cast<float>(0.9904313087463379));
    CHECK(s.alphas_cumprod()[500] == static_cast<float>(0.27633243799209595));
    CHECK(s.alphas_cumprod()[999] == static_cast<float>(0.004660093691200018));
    CHECK(s.train_sigmas()[999] == static_cast<float>(14.614648818969727));
  }
  SECTION("squaredcos_cap_v2 (improved-DDPM cosine, capped at 0.999)") {
    DiscreteScheduleOptions o;
    o.beta_schedule = BetaSchedule::squaredcos_cap_v2;
    const DiscreteSchedule s(o);
    // [py] Python-double betas_for_alpha_bar, rounded to float32.
    CHECK(s.betas()[0] == static_cast<float>(4.128422369831242e-05));
    CHECK(s.betas()[1] == static_cast<float>(4.614175122696906e-05));
    CHECK(s.betas()[500] == static_cast<float>(0.003155691549181938));
    CHECK(s.betas()[999] == static_cast<float>(0.9990000128746033)); // the cap
    CHECK(s.alphas_cumprod()[0] == static_cast<float>(0.9999586939811707));
    CHECK(s.alphas_cumprod()[1] == static_cast<float>(0.9999125599861145));
    CHECK(s.alphas_cumprod()[10] == static_cast<float>(0.9992788434028625));
    CHECK(s.alphas_cumprod()[500] == static_cast<float>(0.4922850430011749));
    CHECK(s.alphas_cumprod()[999] == static_cast<float>(2.4287349909002387e-09));
    CHECK(s.train_sigmas()[0] == static_cast<float>(0.006427108775824308));
    CHECK(s.train_sigmas()[999] == static_cast<float>(20291.302734375));
  }
}

TEST_CASE("from_betas and from_alphas_cumprod reproduce the built-in table", "[schedule]") {
  const DiscreteSchedule builtin;
  const auto betas = tstitch::spacing::numpy_linspace(0.0001, 0.02, 1000);
  DiscreteScheduleOptions o;
  o.num_train_timesteps = 7; // replaced by the table size
  const auto from_betas = DiscreteSchedule::from_betas(betas, o);
  CHECK(from_betas.num_train_timesteps() == 1000);
  CHECK(from_betas.betas() == builtin.betas());
  CHECK(from_betas.alphas_cumprod() == builtin.alphas_cumprod());
  CHECK(from_betas.train_sigmas() == builtin.train_sigmas());

  const std::vector<double> ac(builtin.alphas_cumprod().begin(), builtin.alphas_cumprod().end());
  const auto from_ac = DiscreteSchedule::from_alphas_cumprod(ac);
  CHECK(from_ac.alphas_cumprod() == builtin.alphas_cumprod());
  CHECK(from_ac.train_sigmas() == builtin.train_sigmas());
  CHECK(from_ac.log_sigmas() == builtin.log_sigmas());
  // Derived alphas: abar_i / abar_{i-1}, close to the true alphas (float32 division error).
  CHECK(std::fabs(from_ac.alphas()[500] - builtin.alphas()[500]) < 1e-6);
  CHECK(from_ac.trajectory(10).points[3].alpha == builtin.trajectory(10).points[3].alpha);
}

// ---------------------------------------------------------------------------------------------
// Inference spacing (§2.4, §4.1, §5)
// ---------------------------------------------------------------------------------------------

TEST_CASE("DDIM steps_offset=1 gives 801 601 401 201 1 (diffusers test_steps_offset, [A])",
          "[schedule]") {
  DiscreteScheduleOptions o = ddim_options();
  o.steps_offset = 1;
  const DiscreteSchedule s(o);
  CHECK(s.timesteps(5) == ints({801, 601, 401, 201, 1}));
}

TEST_CASE("DiscreteSchedule leading spacing", "[schedule]") {
  const DiscreteSchedule s; // §4.1 [R]: [900, 800, ..., 0]
  CHECK(s.timesteps(10) == ints({900, 800, 700, 600, 500, 400, 300, 200, 100, 0}));
  // [py] (arange(n) * (N // n))[::-1]
  CHECK(s.timesteps(7) == ints({852, 710, 568, 426, 284, 142, 0}));
  CHECK(s.timesteps(3) == ints({666, 333, 0}));
  DiscreteScheduleOptions o;
  o.num_train_timesteps = 1100;
  CHECK(DiscreteSchedule(o).timesteps(10) ==
        ints({990, 880, 770, 660, 550, 440, 330, 220, 110, 0}));
}

TEST_CASE("DiscreteSchedule trailing spacing follows numpy's arange and round-half-even",
          "[schedule]") {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::trailing;
  o.steps_offset = 1; // diffusers adds steps_offset only to leading timesteps
  const DiscreteSchedule s(o);
  // [py] np.round(np.arange(N, 0, -N/n)) - 1
  CHECK(s.timesteps(10) == ints({999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
  CHECK(s.timesteps(7) == ints({999, 856, 713, 570, 428, 285, 142}));
  CHECK(s.timesteps(13) == ints({999, 922, 845, 768, 691, 614, 537, 461, 384, 307, 230, 153, 76}));
  CHECK(s.timesteps(3) == ints({999, 666, 332}));

  DiscreteScheduleOptions small = o;
  small.num_train_timesteps = 10;
  // arange(10, 0, -2.5) = [10, 7.5, 5, 2.5]: 7.5 -> 8 and 2.5 -> 2 (half to even).
  CHECK(DiscreteSchedule(small).timesteps(4) == ints({9, 7, 4, 1}));

  SECTION("where numpy's arange overshoots, the first n values are kept") {
    // [py] np.arange(1000, 0, -1000/61) has 62 elements (the last ~0, giving timestep -1);
    // diffusers then runs 62 steps. We return the first 61.
    const auto t61 = s.timesteps(61);
    REQUIRE(t61.size() == 61);
    CHECK(t61[58] == 48);
    CHECK(t61[59] == 32);
    CHECK(t61[60] == 15);
    small.num_train_timesteps = 15;
    CHECK(DiscreteSchedule(small).timesteps(13) ==
          ints({14, 13, 12, 11, 9, 8, 7, 6, 5, 4, 2, 1, 0}));
  }
}

TEST_CASE("DiscreteSchedule linspace spacing rounds half-integers to even", "[schedule]") {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace;
  o.steps_offset = 1; // not added to linspace timesteps either
  const DiscreteSchedule s(o);
  // §2.4: np.linspace(0, 999, 7) = [0, 166.5, 333, 499.5, 666, 832.5, 999]
  CHECK(s.timesteps(7) == ints({999, 832, 666, 500, 333, 166, 0}));
  CHECK(s.timesteps(10) == ints({999, 888, 777, 666, 555, 444, 333, 222, 111, 0}));
  CHECK(s.timesteps(1) == ints({0})); // np.linspace(0, 999, 1) == [0]
  DiscreteScheduleOptions small = o;
  small.num_train_timesteps = 12;
  // np.linspace(0, 11, 5) = [0, 2.75, 5.5, 8.25, 11]: 5.5 -> 6
  CHECK(DiscreteSchedule(small).timesteps(5) == ints({11, 8, 6, 3, 0}));
}

TEST_CASE("Euler: unrounded float32 linspace timesteps and init sigma (parity 4.10)",
          "[schedule]") {
  const DiscreteSchedule s(euler_options());
  const auto t = s.timesteps(10);
  // [py] np.linspace(0, 1099, 10, dtype=np.float32)[::-1]; §4.10 [R]: [1099, 976.8889, ..., 0]
  const std::vector<double> expected = {1099.0,
                                        976.888916015625,
                                        854.7777709960938,
                                        732.6666870117188,
                                        610.5555419921875,
                                        488.4444580078125,
                                        366.3333435058594,
                                        244.22222900390625,
                                        122.11111450195312,
                                        0.0};
  CHECK(t == expected);
  const auto traj = s.trajectory(10);
  // §4.10 [R]: init_noise_sigma = max sigma = 261.05557 (the k-sigma of the first point).
  CHECK(rel_close(traj[0].ve_sigma(), 261.05557, 1e-6));
  // [py] np.interp(976.888916015625, arange(1100), sigma_train) = 81.40569331124425
  CHECK(rel_close(traj[1].ve_sigma(), 81.40569331124425, 1e-12));
  CHECK(traj[1].timestep == 976.888916015625);
  // §4.10 with_noise [R]: add_noise sigma at t = 122.1111 is 0.40016323
  CHECK(rel_close(traj[8].ve_sigma(), 0.40016323, 1e-6));
  CHECK(traj[10].alpha == 1.0); // final_sigmas_type "zero"
  CHECK(traj[10].sigma == 0.0);
}

// ---------------------------------------------------------------------------------------------
// Karras and exponential sigmas (§4.5, §4.10)
// ---------------------------------------------------------------------------------------------

TEST_CASE("DPM-Solver karras schedule: rounded timesteps and float32 sigmas (parity 4.5, [R])",
          "[schedule]") {
  const DiscreteSchedule s(dpm_karras_options());
  CHECK(s.timesteps(10) == ints({999, 937, 864, 775, 663, 511, 301, 102, 18, 0}));
  const auto traj = s.trajectory(10);
  REQUIRE(traj.steps() == 10);
  const std::vector<double> sigmas = {157.40726,   85.710724,  44.047642, 21.105602,
                                      9.2747393,   3.6526399,  1.2463602, 0.34970611,
                                      0.073930286, 0.01000133, 0.01000133};
  for (int i = 0; i <= 10; ++i) {
    INFO("point " << i);
    CHECK(rel_close(traj[i].ve_sigma(), sigmas[static_cast<std::size_t>(i)], 1e-6));
    CHECK(traj[i].timestep == (i < 10 ? s.timesteps(10)[static_cast<std::size_t>(i)] : 0.0));
  }
  // [py] the float32 sigma values themselves: the points sit exactly on them.
  CHECK(rel_close(traj[1].ve_sigma(), 85.71073150634766, 1e-14));
  CHECK(rel_close(traj[9].ve_sigma(), 0.010001329705119133, 1e-14));
  // §2.5: the last karras sigma and sigma_min are the same float32 value: a zero-length step.
  CHECK(traj[9].alpha == traj[10].alpha);
  CHECK(traj[9].sigma == traj[10].sigma);
}

TEST_CASE("Euler karras schedule: float32 timesteps (parity 4.10, [R])", "[schedule]") {
  DiscreteScheduleOptions o = euler_options();
  o.sigma_spacing = SigmaSpacing::karras;
  const DiscreteSchedule s(o);
  const auto t = s.timesteps(10);
  const std::vector<double> expected = {1099,     1035.54,   961.0531,  871.1001,  757.83496,
                                        605.7829, 387.29605, 139.53793, 23.536715, 0};
  REQUIRE(t.size() == expected.size());
  for (std::size_t i = 0; i < t.size(); ++i) {
    INFO("timestep " << i << " = " << t[i]);
    CHECK(std::fabs(t[i] - expected[i]) <= 1e-3 * expected[i]);   // [R] values, ~7 digits
    CHECK(t[i] == static_cast<double>(static_cast<float>(t[i]))); // stored as float32
  }
  const auto traj = s.trajectory(10);
  // [py] karras sigmas between sigma_train[0] and sigma_train[1099], as float32
  CHECK(rel_close(traj[0].ve_sigma(), 261.05560302734375, 1e-14));
  CHECK(rel_close(traj[1].ve_sigma(), 140.04827880859375, 1e-14));
  CHECK(rel_close(traj[8].ve_sigma(), 0.08781188726425171, 1e-14));
  CHECK(traj[10].sigma == 0.0);
}

TEST_CASE("Exponential sigmas: log-uniform from sigma_max to sigma_min", "[schedule]") {
  DiscreteScheduleOptions o;
  o.sigma_spacing = SigmaSpacing::exponential;
  const DiscreteSchedule s(o);
  // [py] sigma_to_t of exp(linspace(log 157.407, log 0.0100013, 10)), rounded half-even
  // (unrounded: 999, 886.399, 757.336, 602.770, 409.974, 202.277, 72.802, 21.942, 4.806, 0).
  CHECK(s.timesteps(10) == ints({999, 886, 757, 603, 410, 202, 73, 22, 5, 0}));
  const auto traj = s.trajectory(10);
  CHECK(rel_close(traj[1].ve_sigma(), 53.78920364379883, 1e-14));
  CHECK(rel_close(traj[5].ve_sigma(), 0.733460009098053, 1e-14));
  // Successive ratios are constant (up to the float32 storage of each sigma).
  const double r0 = traj[1].ve_sigma() / traj[0].ve_sigma();
  for (int i = 1; i < 9; ++i)
    CHECK(rel_close(traj[i + 1].ve_sigma() / traj[i].ve_sigma(), r0, 1e-6));

  SECTION("sigma_min / sigma_max override the training range") {
    DiscreteScheduleOptions k;
    k.sigma_spacing = SigmaSpacing::karras;
    k.sigma_min = 0.1;
    k.sigma_max = 10.0;
    k.round_timesteps = false;
    const auto kt = DiscreteSchedule(k).trajectory(4);
    CHECK(rel_close(kt[0].ve_sigma(), static_cast<float>(10.0), 1e-14));
    CHECK(rel_close(kt[3].ve_sigma(), static_cast<float>(0.1), 1e-14));
    // karras(0.1, 10, 4)[1] = (10^(1/7) + (0.1^(1/7) - 10^(1/7)) / 3)^7
    const double mid = std::pow(
        std::pow(10.0, 1 / 7.0) + (std::pow(0.1, 1 / 7.0) - std::pow(10.0, 1 / 7.0)) / 3.0, 7.0);
    CHECK(rel_close(kt[1].ve_sigma(), mid, 1e-7));
  }
}

// ---------------------------------------------------------------------------------------------
// point, timestep_at, trajectory
// ---------------------------------------------------------------------------------------------

TEST_CASE("DiscreteSchedule::point: DDIM numerics at integers, interpolation between",
          "[schedule]") {
  const DiscreteSchedule s;
  const auto p = s.point(500);
  CHECK(p.timestep == 500);
  CHECK(p.alpha == std::sqrt(0.07779666036367416)); // sqrt(double(ac[500])), [py] ac[500]
  CHECK(p.sigma == std::sqrt(1.0 - 0.07779666036367416));
  // Between integers: np.interp of the float32 table (checked against numpy for N = 1100 below).
  const double lo = s.train_sigmas()[500], hi = s.train_sigmas()[501];
  const auto q = s.point(500.25);
  CHECK(rel_close(q.ve_sigma(), lo + 0.25 * (hi - lo), 1e-14));
  CHECK(rel_close(q.alpha * q.alpha + q.sigma * q.sigma, 1.0, 1e-15)); // variance preserving

  const DiscreteSchedule e(euler_options());
  CHECK(rel_close(e.point(500.25).ve_sigma(), 3.0417027473449707, 1e-14)); // [py] N = 1100
}

TEST_CASE("DiscreteSchedule::timestep_at is diffusers' _sigma_to_t", "[schedule]") {
  const DiscreteSchedule s;
  // [py] _sigma_to_t over np.log(sigma_train) (numpy's float32 log, which is not correctly
  // rounded: a one-ulp table difference moves t by ~1e-5, hence the tolerance).
  CHECK(std::fabs(s.timestep_at(0.5) - 144.15382302745928) < 1e-4);
  CHECK(std::fabs(s.timestep_at(1.0) - 258.09302163484153) < 1e-4);
  CHECK(std::fabs(s.timestep_at(3.0) - 474.54897122737987) < 1e-4);
  CHECK(std::fabs(s.timestep_at(80.0) - 929.618060703905) < 1e-4);
  CHECK(s.timestep_at(1e6) == 999.0); // clamped at the noisy end
  CHECK(s.timestep_at(0.0) == 0.0);   // below the table: clamped at 0
  CHECK(s.timestep_at(std::numeric_limits<double>::infinity()) == 999.0);
  for (int t : {0, 1, 17, 250, 500, 998, 999}) {
    INFO("t = " << t);
    // point(t) uses double sqrt(ac); the table is float32, so the inverse is close, not exact.
    CHECK(std::fabs(s.timestep_at(s.point(t).ve_sigma()) - t) < 1e-3);
  }
}

TEST_CASE("DiscreteSchedule::trajectory: n + 1 points and the final point", "[schedule]") {
  const DiscreteSchedule s;
  const auto traj = s.trajectory(10);
  REQUIRE(traj.steps() == 10);
  CHECK(traj.num_train_timesteps == 1000);
  CHECK(traj[0].timestep == 900);
  CHECK(traj[0].alpha == s.point(900).alpha);
  CHECK(traj[9].timestep == 0);
  CHECK(traj[10].timestep == 0); // the final point carries timestep 0
  CHECK(traj[10].alpha == 1.0);  // set_alpha_to_one=True
  CHECK(traj[10].sigma == 0.0);

  DiscreteScheduleOptions o;
  o.final_point = FinalPoint::first_train_step; // set_alpha_to_one=False
  const auto last = DiscreteSchedule(o).trajectory(10)[10];
  CHECK(last.alpha == std::sqrt(0.9998999834060669)); // sqrt(ac[0]), [py]
  CHECK(last.sigma == std::sqrt(1.0 - 0.9998999834060669));
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

TEST_CASE("DiscreteSchedule rejects bad arguments, naming them", "[schedule]") {
  const DiscreteSchedule s;
  CHECK_INVALID(s.timesteps(0), "num_steps");
  CHECK_INVALID(s.trajectory(-3), "num_steps");
  CHECK_INVALID(s.trajectory(1001), "num_steps");
  CHECK_THROWS_WITH(s.trajectory(1001), Catch::Contains("exceeds num_train_timesteps"));
  CHECK_INVALID(s.point(-0.5), "t");
  CHECK_INVALID(s.point(999.5), "t");
  CHECK_INVALID(s.point(std::nan("")), "t");
  CHECK_INVALID(s.timestep_at(-1.0), "ve_sigma");
  CHECK_INVALID(s.timestep_at(std::nan("")), "ve_sigma");

  DiscreteScheduleOptions o;
  o.num_train_timesteps = 0;
  CHECK_INVALID(DiscreteSchedule(o), "num_train_timesteps");
  o = {};
  o.beta_start = 0.0;
  CHECK_INVALID(DiscreteSchedule(o), "beta_start");
  o = {};
  o.beta_end = 1.0;
  CHECK_INVALID(DiscreteSchedule(o), "beta_end");
  o = {};
  o.beta_start = 0.03; // above beta_end = 0.02
  CHECK_INVALID(DiscreteSchedule(o), "beta_start");
  o = {};
  o.steps_offset = -1;
  CHECK_INVALID(DiscreteSchedule(o), "steps_offset");
  o = {};
  o.karras_rho = 0.0;
  CHECK_INVALID(DiscreteSchedule(o), "karras_rho");
  o = dpm_karras_options();
  o.sigma_min = 5.0;
  o.sigma_max = 2.0;
  CHECK_INVALID(DiscreteSchedule(o), "sigma_min");
  o = {};
  o.sigma_min = 0.1; // only meaningful for karras / exponential
  CHECK_INVALID(DiscreteSchedule(o), "sigma_min");
  o = {};
  o.beta_end = 0.9; // the product of 1000 alphas <= 0.55 underflows float32
  CHECK_INVALID(DiscreteSchedule(o), "beta_end");

  SECTION("leading timesteps pushed past N - 1 by steps_offset") {
    DiscreteScheduleOptions off;
    off.steps_offset = 1;
    const DiscreteSchedule so(off);
    CHECK(so.timesteps(999).front() == 999); // (999 - 1) * 1 + 1
    CHECK_INVALID(so.timesteps(1000), "steps_offset");
  }

  SECTION("user tables: the message names the index") {
    CHECK_INVALID(DiscreteSchedule::from_betas({0.1, 1.5}), "betas[1]");
    CHECK_INVALID(DiscreteSchedule::from_betas({0.0}), "betas[0]");
    CHECK_INVALID(DiscreteSchedule::from_betas({}), "betas");
    CHECK_INVALID(DiscreteSchedule::from_alphas_cumprod({0.9, 0.95}), "alphas_cumprod[1]");
    CHECK_INVALID(DiscreteSchedule::from_alphas_cumprod({0.9, 0.0}), "alphas_cumprod[1]");
    CHECK_INVALID(DiscreteSchedule::from_alphas_cumprod({1.0}), "alphas_cumprod[0]");
    CHECK_INVALID(DiscreteSchedule::from_alphas_cumprod({1.0 - 1e-10}), "alphas_cumprod[0]");
  }
}

// ---------------------------------------------------------------------------------------------
// FlowMatchSchedule (§4.8, §5)
// ---------------------------------------------------------------------------------------------

TEST_CASE("Flow karras sigmas match UniPC test_flow_and_karras_sigmas_values [A]", "[schedule]") {
  FlowMatchScheduleOptions o;
  o.spacing = FlowSigmaSpacing::karras; // karras 0.01 .. 200, s = k / (k + 1)
  const FlowMatchSchedule s(o);
  const std::vector<double> expected = {0.9950248599052429,   0.9787454605102539,
                                        0.8774884343147278,   0.3604971766471863,
                                        0.009900986216962337, 0.0};
  const auto sig = s.sigmas(5);
  REQUIRE(sig.size() == expected.size());
  for (std::size_t i = 0; i < sig.size(); ++i) {
    INFO("sigma " << i << " = " << sig[i]);
    CHECK(allclose(sig[i], expected[i])); // torch.allclose defaults: rtol 1e-5, atol 1e-8
  }
  CHECK(s.timesteps(5) == ints({995, 978, 877, 360, 9})); // exact
  const auto traj = s.trajectory(5);
  CHECK(traj[0].timestep == 995);
  CHECK(traj[0].sigma == sig[0]);
  CHECK(traj[0].alpha == 1.0 - sig[0]);
  CHECK(traj[5].sigma == 0.0);
}

TEST_CASE("FlowMatchEuler uniform sigmas, with diffusers' double shift of the low end",
          "[schedule]") {
  SECTION("shift 1") {
    const FlowMatchSchedule s;
    // [py] linspace(1000, 1.0000000475, 5) / 1000, float32; timesteps float32(s * 1000)
    const std::vector<double> sig = {
        1.0, 0.750249981880188, 0.5005000233650208, 0.25075000524520874, 0.0010000000474974513,
        0.0};
    CHECK(s.sigmas(5) == sig);
    const std::vector<double> t = {1000.0, 750.25, 500.5000305175781, 250.75, 1.0};
    CHECK(s.timesteps(5) == t);
    CHECK(s.timesteps(1) == std::vector<double>{1000.0});
  }
  SECTION("shift 3") {
    FlowMatchScheduleOptions o;
    o.shift = 3.0;
    const FlowMatchSchedule s(o);
    const std::vector<double> sig = {1.0,
                                     0.9003590941429138,
                                     0.7511211037635803,
                                     0.5029850602149963,
                                     0.008928571827709675, // shift(shift(1/1000)), not 0.00299
                                     0.0};
    CHECK(s.sigmas(5) == sig);
    const std::vector<double> t = {1000.0, 900.3590698242188, 751.12109375, 502.98504638671875,
                                   8.928571701049805};
    CHECK(s.timesteps(5) == t);
  }
}

TEST_CASE("FlowMapEuler endpoints (test_set_timesteps_endpoints [A])", "[schedule]") {
  FlowMatchScheduleOptions o;
  o.spacing = FlowSigmaSpacing::uniform_to_zero;
  const FlowMatchSchedule s(o);
  for (int nfe : {1, 2, 4, 8, 16}) {
    INFO("nfe = " << nfe);
    const auto t = s.timesteps(nfe);
    const auto sig = s.sigmas(nfe);
    CHECK(t.size() == static_cast<std::size_t>(nfe));
    CHECK(sig.size() == static_cast<std::size_t>(nfe) + 1);
    CHECK(std::fabs(t[0] - 1000.0) < 0.5e-4); // assertAlmostEqual(places=4)
    CHECK(std::fabs(sig.back()) < 0.5e-4);
    CHECK(s.trajectory(nfe).steps() == nfe);
  }
  // [py] torch.linspace(1, 0, 5)[:-1] = [1, 0.75, 0.5, 0.25]: uniform all the way to 0.
  CHECK(s.timesteps(4) == std::vector<double>{1000.0, 750.0, 500.0, 250.0});
  o.shift = 3.0; // [py] shift(1, .75, .5, .25) = [1, 0.9, 0.75, 0.5]
  const auto shifted = FlowMatchSchedule(o).sigmas(4);
  CHECK(rel_close(shifted[1], 0.9, 1e-15));
  CHECK(rel_close(shifted[3], 0.5, 1e-15));
}

TEST_CASE("FlowMapEuler custom sigmas and timesteps (test_set_timesteps_custom, [A])",
          "[schedule]") {
  const auto by_sigmas = FlowMatchSchedule::from_sigmas({0.9, 0.7, 0.4, 0.1});
  const auto sig = by_sigmas.sigmas(4);
  REQUIRE(sig.size() == 5);
  CHECK(sig == std::vector<double>{0.9, 0.7, 0.4, 0.1, 0.0}); // kept exactly, then 0
  CHECK(by_sigmas.trajectory(4)[2].sigma == 0.4);
  CHECK(by_sigmas.trajectory(4)[4].sigma == 0.0);

  const auto by_timesteps = FlowMatchSchedule::from_timesteps({900, 700, 400, 100});
  const auto st = by_timesteps.sigmas(4);
  const std::vector<double> expected = {0.9, 0.7, 0.4, 0.1, 0.0}; // t / 1000
  for (std::size_t i = 0; i < st.size(); ++i)
    CHECK(std::fabs(st[i] - expected[i]) < 0.5e-5); // assertAlmostEqual(places=5)
  CHECK(by_timesteps.timesteps(4) == ints({900, 700, 400, 100}));

  CHECK_INVALID(by_sigmas.trajectory(3), "num_steps");
  CHECK_INVALID(FlowMatchSchedule::from_sigmas({0.9, 0.95}), "sigmas[1]");
  CHECK_INVALID(FlowMatchSchedule::from_sigmas({1.5}), "sigmas[0]");
  CHECK_INVALID(FlowMatchSchedule::from_sigmas({}), "sigmas");
  CHECK_INVALID(FlowMatchSchedule::from_timesteps({900, 0}), "timesteps[1]");
  CHECK_INVALID(FlowMatchSchedule::from_timesteps({1200}), "timesteps[0]");
}

TEST_CASE("FlowMatchSchedule point and timestep_at", "[schedule]") {
  const FlowMatchSchedule s;
  const auto p = s.point(250);
  CHECK(p.timestep == 250);
  CHECK(p.alpha == 0.75);
  CHECK(p.sigma == 0.25);
  CHECK(s.point(1000).alpha == 0.0);
  CHECK(s.point(0).sigma == 0.0);
  CHECK(std::fabs(s.timestep_at(p.ve_sigma()) - 250.0) < 1e-9); // k = 1/3
  CHECK(s.timestep_at(1.0) == 500.0);
  CHECK(s.timestep_at(0.0) == 0.0);
  CHECK(s.timestep_at(std::numeric_limits<double>::infinity()) == 1000.0);
  CHECK(s.timestep_at(s.point(1000).ve_sigma()) == 1000.0);

  CHECK_INVALID(s.point(1000.5), "t");
  CHECK_INVALID(s.point(-1), "t");
  CHECK_INVALID(s.timestep_at(-0.1), "ve_sigma");
  CHECK_INVALID(s.trajectory(0), "num_steps");
  FlowMatchScheduleOptions o;
  o.shift = 0.0;
  CHECK_INVALID(FlowMatchSchedule(o), "shift");
  o = {};
  o.num_train_timesteps = 0;
  CHECK_INVALID(FlowMatchSchedule(o), "num_train_timesteps");
  o = {};
  o.spacing = FlowSigmaSpacing::karras;
  o.shift = 3.0; // UniPC's karras flow sigmas are never shifted
  CHECK_INVALID(FlowMatchSchedule(o), "shift");
  o.shift = 1.0;
  o.karras_sigma_max = 0.001;
  CHECK_INVALID(FlowMatchSchedule(o), "karras_sigma_max");
  o = {};
  o.spacing = FlowSigmaSpacing::karras;
  o.karras_rho = -1;
  CHECK_INVALID(FlowMatchSchedule(o), "karras_rho");
}

// ---------------------------------------------------------------------------------------------
// ContinuousSchedule
// ---------------------------------------------------------------------------------------------

TEST_CASE("ContinuousSchedule::cosine has exact ends", "[schedule]") {
  const auto s = ContinuousSchedule::cosine(1.0);
  const auto noisy = s.point(1.0);
  CHECK(noisy.alpha == 0.0);
  CHECK(noisy.sigma == 1.0);
  const auto clean = s.point(0.0);
  CHECK(clean.alpha == 1.0);
  CHECK(clean.sigma == 0.0);
  const auto mid = s.point(0.5);
  CHECK(rel_close(mid.alpha, std::sqrt(0.5), 1e-15));
  CHECK(rel_close(mid.sigma, std::sqrt(0.5), 1e-15));

  const auto traj = s.trajectory(4);
  REQUIRE(traj.steps() == 4);
  CHECK(traj.num_train_timesteps == 1.0);
  CHECK(traj[0].timestep == 1.0);
  CHECK(traj[1].timestep == 0.75);
  CHECK(traj[4].timestep == 0.0);
  CHECK(traj[4].sigma == 0.0);
  CHECK(rel_close(traj[1].sigma, std::sin(0.75 * std::numbers::pi / 2), 1e-15));

  const auto clipped = ContinuousSchedule::cosine(0.999, 0.001);
  CHECK(clipped.point(0.999).alpha > 0.0);
  CHECK(clipped.trajectory(2)[2].timestep == 0.001);
}

TEST_CASE("ContinuousSchedule::linear_flow spacing and inverse", "[schedule]") {
  const auto s = ContinuousSchedule::linear_flow();
  const auto traj = s.trajectory(8);
  REQUIRE(traj.steps() == 8);
  for (int i = 0; i <= 8; ++i) {
    INFO("point " << i);
    CHECK(traj[i].timestep == 1.0 - i / 8.0); // exact: multiples of 1/8
    CHECK(traj[i].sigma == traj[i].timestep);
    CHECK(traj[i].alpha == 1.0 - traj[i].timestep);
  }
  for (double t : {0.0, 1e-6, 0.1, 0.3, 0.5, 0.77, 0.999999, 1.0}) {
    INFO("t = " << t);
    CHECK(std::fabs(s.timestep_at(s.point(t).ve_sigma()) - t) < 1e-9);
  }
  const auto cos = ContinuousSchedule::cosine(1.0);
  for (double t : {0.0, 0.01, 0.25, 0.6, 0.95, 1.0}) {
    INFO("cosine t = " << t);
    CHECK(std::fabs(cos.timestep_at(cos.point(t).ve_sigma()) - t) < 1e-9);
  }
}

TEST_CASE("ContinuousSchedule from a user functor (log-SNR linear, model time 0..1000)",
          "[schedule]") {
  // lambda(t) = log(alpha^2 / sigma^2) falls linearly from 10 at t = 0 to -10 at t = 1000.
  const auto fn = [](double t) {
    const double lambda = 10.0 - 0.02 * t;
    const double alpha = std::sqrt(1.0 / (1.0 + std::exp(-lambda)));
    const double sigma = std::sqrt(1.0 / (1.0 + std::exp(lambda)));
    return tstitch::TimePoint{-1.0, alpha, sigma}; // timestep field is replaced by t
  };
  const ContinuousSchedule s(fn, 1000.0, 0.0);
  CHECK(s.horizon() == 1000.0);
  const auto traj = s.trajectory(10);
  CHECK(traj.num_train_timesteps == 1000.0);
  CHECK(traj[3].timestep == 700.0);
  for (int i = 0; i < 10; ++i) // uniform in t, so uniform in log-SNR: steps of 2
    CHECK(std::fabs(traj[i + 1].log_snr() - traj[i].log_snr() - 2.0) < 1e-9);
  for (double t : {0.0, 123.456, 500.0, 999.0, 1000.0})
    CHECK(std::fabs(s.timestep_at(s.point(t).ve_sigma()) - t) < 1e-9);
}

TEST_CASE("ContinuousSchedule rejects bad arguments, naming them", "[schedule]") {
  const auto s = ContinuousSchedule::linear_flow(0.9, 0.1);
  CHECK_INVALID(s.point(0.95), "t");
  CHECK_INVALID(s.point(0.05), "t");
  CHECK_INVALID(s.trajectory(0), "num_steps");
  CHECK_INVALID(s.timestep_at(100.0), "ve_sigma"); // above ve(0.9) = 9: not bracketed
  CHECK_INVALID(s.timestep_at(0.01), "ve_sigma");  // below ve(0.1) = 1/9
  CHECK_INVALID(s.timestep_at(-1.0), "ve_sigma");
  // Swapped ends: t_start must be the noisy one.
  CHECK_INVALID(ContinuousSchedule::linear_flow(0.0, 1.0), "t_start");
  CHECK_INVALID(ContinuousSchedule::cosine(1.5), "t_start");
  CHECK_INVALID(ContinuousSchedule::cosine(1.0, 1.0), "t_end");
  const auto negative = [](double t) { return tstitch::TimePoint{t, 1.0 - t, t - 0.5}; };
  CHECK_INVALID(ContinuousSchedule(negative, 1.0, 0.0), "sigma(t)");
  CHECK_INVALID(ContinuousSchedule(ContinuousSchedule::Function{}, 1.0, 0.0), "function");
}

TEST_CASE("linspace_multistep spacing: DPM-Solver/UniPC timesteps (parity §4.5 [R])",
          "[schedule]") {
  tstitch::DiscreteScheduleOptions o;
  o.spacing = tstitch::TimestepSpacing::linspace_multistep;
  const tstitch::DiscreteSchedule schedule(o);
  CHECK(schedule.timesteps(10) ==
        std::vector<double>{999, 899, 799, 699, 599, 500, 400, 300, 200, 100});
}

TEST_CASE("trajectory_through: custom timesteps give the default schedule's points", "[schedule]") {
  const tstitch::DiscreteSchedule schedule;
  const tstitch::Trajectory by_n = schedule.trajectory(10);
  const tstitch::Trajectory custom = schedule.trajectory_through(schedule.timesteps(10));
  REQUIRE(custom.steps() == 10);
  for (int i = 0; i <= 10; ++i) {
    CHECK(custom[i].timestep == by_n[i].timestep);
    CHECK(custom[i].alpha == by_n[i].alpha);
    CHECK(custom[i].sigma == by_n[i].sigma);
  }
  CHECK_THROWS_WITH(schedule.trajectory_through({500, 600}), Catch::Contains("timesteps[1] = 600"));
  CHECK_THROWS_WITH(schedule.trajectory_through({1000}), Catch::Contains("t = 1000"));
  CHECK_THROWS_AS(schedule.trajectory_through({}), tstitch::invalid_argument);
}

TEST_CASE("lu_lambdas: DPM-Solver's uniform-lambda timesteps (parity §4.5 [R])", "[schedule]") {
  tstitch::DiscreteScheduleOptions o;
  o.spacing = tstitch::TimestepSpacing::linspace_multistep;
  o.sigma_spacing = tstitch::SigmaSpacing::lu_lambdas;
  o.final_point = tstitch::FinalPoint::first_train_step;
  const tstitch::DiscreteSchedule schedule(o);
  CHECK(schedule.timesteps(10) == std::vector<double>{999, 886, 757, 603, 410, 202, 73, 22, 5, 0});
  const tstitch::Trajectory trajectory = schedule.trajectory(10);
  // Uniform in lambda = log(alpha / sigma) = -log(ve sigma) from the last training sigma to the
  // first; with final_sigmas_type = "sigma_min" the last step has zero length (§2.5).
  const double first = -std::log(trajectory[0].ve_sigma());
  const double last = -std::log(trajectory[9].ve_sigma());
  CHECK(first == Approx(-std::log(schedule.train_sigmas().back())).epsilon(1e-6));
  CHECK(last == Approx(-std::log(schedule.train_sigmas().front())).epsilon(1e-6));
  for (int i = 0; i < 9; ++i)
    CHECK(-std::log(trajectory[i + 1].ve_sigma()) + std::log(trajectory[i].ve_sigma()) ==
          Approx((last - first) / 9).epsilon(1e-5));
  CHECK(trajectory[10].sigma == trajectory[9].sigma);
}

TEST_CASE("leading_multistep spacing: DPM-Solver/UniPC/DEIS 'leading' (diffusers 0.31.0 values)",
          "[schedule]") {
  SECTION("Stable Diffusion 1.5's DPM-Solver++ config, 20 steps") {
    DiscreteScheduleOptions o;
    o.beta_schedule = BetaSchedule::scaled_linear;
    o.beta_start = 0.00085;
    o.beta_end = 0.012;
    o.spacing = TimestepSpacing::leading_multistep;
    o.steps_offset = 1;
    CHECK(DiscreteSchedule(o).timesteps(20) ==
          std::vector<double>{941, 894, 847, 800, 753, 706, 659, 612, 565, 518,
                              471, 424, 377, 330, 283, 236, 189, 142, 95,  48});
    o.spacing = TimestepSpacing::leading; // DDIM's formula under the same name
    CHECK(DiscreteSchedule(o).timesteps(20).front() == 951);
  }
  SECTION("default table, 7 steps") {
    DiscreteScheduleOptions o;
    o.spacing = TimestepSpacing::leading_multistep;
    CHECK(DiscreteSchedule(o).timesteps(7) ==
          std::vector<double>{875, 750, 625, 500, 375, 250, 125});
  }
  SECTION("a first timestep past N - 1 is rejected, naming steps_offset") {
    DiscreteScheduleOptions o;
    o.spacing = TimestepSpacing::leading_multistep;
    o.steps_offset = 60;
    CHECK_THROWS_WITH(DiscreteSchedule(o).timesteps(20),
                      Catch::Contains("steps_offset") && Catch::Contains("(1000)"));
  }
}

TEST_CASE("lambda_min_clipped shortens the multistep spacings (diffusers 0.31.0 values)",
          "[schedule]") {
  DiscreteScheduleOptions o;
  o.beta_schedule = BetaSchedule::squaredcos_cap_v2;
  o.lambda_min_clipped = -5.1;
  o.spacing = TimestepSpacing::linspace_multistep;
  CHECK(DiscreteSchedule(o).timesteps(10) ==
        std::vector<double>{995, 896, 796, 696, 597, 498, 398, 298, 199, 100});
  o.spacing = TimestepSpacing::trailing;
  CHECK(DiscreteSchedule(o).timesteps(10) ==
        std::vector<double>{995, 895, 795, 695, 595, 495, 395, 295, 195, 95});
  o.spacing = TimestepSpacing::leading_multistep;
  CHECK(DiscreteSchedule(o).timesteps(10) ==
        std::vector<double>{900, 810, 720, 630, 540, 450, 360, 270, 180, 90});
}
