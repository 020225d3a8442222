// SPDX-License-Identifier: Apache-2.0
// Sigma rules (schedule/sigma_rules.hpp): AYS, GITS, sgm_uniform, simple and kl_optimal.
//  - the published AYS and GITS tables, reproduced exactly where a table row exists;
//  - interpolated and formula values against references computed independently in numpy;
//  - endpoints, monotonicity, trajectories over DiscreteSchedule and EDMSchedule;
//  - Euler on the exactly solvable Gaussian problem converges under every rule;
//  - option validation.
//
// "numpy reference" below: values from a separate numpy 1.24.2 script implementing each published
// formula in double (AYS/GITS: log sigma interpolated linearly on [0, 1] grids, as the AYS paper's
// loglinear_interp; simple: sigmas[N-1-int(i * N/n)]; sgm_uniform: exp of the log-sigma table
// interpolated at float32(linspace(N-1, 0, n+1)[:-1]); kl_optimal: tan of a ramp in arctan sigma),
// each value then rounded to float32 and the last set to 0. Its training table is Stable
// Diffusion's (scaled_linear 0.00085 .. 0.012, N = 1000) built in numpy the way DiscreteSchedule
// builds it (parity doc §2.1), so that the check is of the rules alone; that table is within 3.6e-7
// relative of diffusers 0.31.0's.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/edm.hpp"
#include "tstitch/schedule/sigma_rules.hpp"
#include "tstitch/solver/euler.hpp"

#include "support/gaussian_problems.hpp"

using namespace tstitch;
using namespace tstitch::testing;

namespace {

/// Stable Diffusion 1.x / 2.x / XL's training schedule (scaled_linear 0.00085 .. 0.012, N = 1000).
DiscreteSchedule sd_schedule() {
  DiscreteScheduleOptions o;
  o.beta_schedule = BetaSchedule::scaled_linear;
  o.beta_start = 0.00085;
  o.beta_end = 0.012;
  return DiscreteSchedule(o);
}

/// Distance in float32 units in the last place (0 = the same float32 value).
std::int64_t ulps(double a, double b) {
  const auto fa = static_cast<float>(a), fb = static_cast<float>(b);
  std::int32_t ia = 0, ib = 0;
  std::memcpy(&ia, &fa, sizeof ia);
  std::memcpy(&ib, &fb, sizeof ib);
  return std::abs(static_cast<std::int64_t>(ia) - static_cast<std::int64_t>(ib));
}

/// Each value within `max_ulps` float32 ulps of the reference, and the sizes equal.
void check_close(const std::vector<double>& got, const std::vector<double>& want,
                 std::int64_t max_ulps) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("index " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(ulps(got[i], want[i]) <= max_ulps);
  }
}

/// A published table row (its last value replaced by 0, as the tools run it) as float32 values.
std::vector<double> as_run(std::vector<double> row) {
  for (double& s : row)
    s = static_cast<float>(s);
  row.back() = 0.0;
  return row;
}

/// error(n) decreases at each doubling of n = 5 .. 80, and error(80) < error(5) / 4 (measured:
/// 0.142 -> 0.011 for ays_sd15, 0.175 -> 0.023 for sgm_uniform, the slowest).
template <class Error> void check_decreasing(const char* name, Error error) {
  const double first = error(5);
  double previous = first;
  for (int n : {10, 20, 40, 80}) {
    const double e = error(n);
    INFO(name << ", n = " << n << ": error " << e << " after " << previous);
    CHECK(e < previous);
    previous = e;
  }
  INFO(name << ": error " << first << " at n = 5, " << previous << " at n = 80");
  CHECK(previous < first / 4);
}

const std::vector<SigmaRule> all_rules = {
    SigmaRule::ays_sd15,    SigmaRule::ays_sdxl, SigmaRule::ays_svd,   SigmaRule::gits,
    SigmaRule::sgm_uniform, SigmaRule::simple,   SigmaRule::kl_optimal};

} // namespace

TEST_CASE("AYS: the published 10-step tables, exactly", "[sigma_rules][ays]") {
  // NVIDIA's AYS "how to" page, as ComfyUI (nodes_align_your_steps.py) and stable-diffusion.cpp
  // (AYSScheduler) carry them; the last value (sigma_min) becomes 0 in a run.
  const DiscreteSchedule base = sd_schedule();
  const std::vector<double> sd15 = {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520,
                                    1.8841921177,  1.3943805092, 0.9642583904, 0.6523686016,
                                    0.3977456272,  0.1515232662, 0.0291671582};
  const std::vector<double> sdxl = {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769,
                                    1.3405244945,  0.8620721141, 0.5550693289, 0.3798540708,
                                    0.2332364134,  0.1114188177, 0.0291671582};
  const std::vector<double> svd = {700.00, 54.5,  15.886, 7.977, 4.248, 1.789,
                                   0.981,  0.403, 0.173,  0.034, 0.002};
  CHECK(SigmaSchedule{base, SigmaRule::ays_sd15}.sigmas(10) == as_run(sd15));
  CHECK(SigmaSchedule{base, SigmaRule::ays_sdxl}.sigmas(10) == as_run(sdxl));
  CHECK(SigmaSchedule{EDMSchedule{}, SigmaRule::ays_svd}.sigmas(10) == as_run(svd));

  // The published timesteps: diffusers 0.31.0 AysSchedules["StableDiffusionTimesteps"] and
  // ["StableDiffusionXLTimesteps"]; the tables' sigmas map back onto them.
  const std::vector<double> sd15_t = {999, 850, 736, 645, 545, 455, 343, 233, 124, 24};
  const std::vector<double> sdxl_t = {999, 845, 730, 587, 443, 310, 193, 116, 53, 13};
  const auto check_timesteps = [&](SigmaRule rule, const std::vector<double>& want) {
    const std::vector<double> t = SigmaSchedule{base, rule}.timesteps(10);
    REQUIRE(t.size() == want.size());
    for (std::size_t i = 0; i < t.size(); ++i)
      CHECK(t[i] == Approx(want[i]).margin(1e-3));
  };
  check_timesteps(SigmaRule::ays_sd15, sd15_t);
  check_timesteps(SigmaRule::ays_sdxl, sdxl_t);
}

TEST_CASE("AYS: log-linear interpolation to other step counts", "[sigma_rules][ays]") {
  // numpy reference (see the file comment).
  const DiscreteSchedule base = sd_schedule();
  const auto sigmas = [&](SigmaRule rule, int n) { return SigmaSchedule{base, rule}.sigmas(n); };
  check_close(sigmas(SigmaRule::ays_sd15, 1), {14.6146412, 0}, 0);
  check_close(sigmas(SigmaRule::ays_sd15, 5),
              {14.6146412, 3.86367464, 1.88419211, 0.964258373, 0.397745639, 0}, 1);
  check_close(
      sigmas(SigmaRule::ays_sd15, 20),
      {14.6146412,  9.72746658,  6.474576,    5.00156546,  3.86367464,  3.22662616,   2.69461513,
       2.25325823,  1.88419211,  1.62088883,  1.39438045,  1.15954435,  0.964258373,  0.793127894,
       0.652368605, 0.509388626, 0.397745639, 0.245494843, 0.151523262, 0.0664793402, 0},
      1);
  check_close(sigmas(SigmaRule::ays_sd15, 32), {14.6146412,   11.3317089,   8.78623199,
                                                6.81255293,   5.69060755,   4.84275818,
                                                4.1212306,    3.61123776,   3.22662616,
                                                2.88297725,   2.57676792,   2.30420804,
                                                2.06047845,   1.84907138,   1.68304694,
                                                1.53192949,   1.39438045,   1.24257493,
                                                1.10729635,   0.986745536,  0.874517143,
                                                0.773992896,  0.685023725,  0.594568133,
                                                0.509388626,  0.436412156,  0.352545083,
                                                0.260758072,  0.192868292,  0.136695817,
                                                0.0816835985, 0.0488106385, 0},
              1);
  check_close(sigmas(SigmaRule::ays_sdxl, 5),
              {14.6146412, 3.76817894, 1.34052444, 0.555069327, 0.233236417, 0}, 1);
  check_close(
      sigmas(SigmaRule::ays_sdxl, 20),
      {14.6146412,  9.60946751,  6.31844854,  4.87945127,  3.76817894,  2.86687231,   2.18114805,
       1.70993638,  1.34052444,  1.07500172,  0.86207211,  0.69174403,  0.555069327,  0.459178984,
       0.379854083, 0.297650456, 0.233236417, 0.161204606, 0.111418821, 0.0570067577, 0},
      1);
  check_close(sigmas(SigmaRule::ays_svd, 5),
              {700, 15.8859997, 4.24800014, 0.981000006, 0.172999993, 0}, 1);
  check_close(
      sigmas(SigmaRule::ays_svd, 20),
      {700,         195.320251, 54.5,        29.4242592,  15.8859997,   11.2571144,    7.97700024,
       5.8211937,   4.24800014, 2.75675035,  1.78900003,  1.32476747,   0.981000006,   0.62876308,
       0.402999997, 0.26404357, 0.172999993, 0.076694198, 0.0340000018, 0.00824621134, 0},
      1);
}

TEST_CASE("GITS: the published tables, exactly, for 2..20 steps", "[sigma_rules][gits]") {
  // Rows copied from ComfyUI's comfy_extras/nodes_gits.py NOISE_LEVELS (stable-diffusion.cpp's
  // gits_noise.h has the same rows for coefficient 1.20, the one it uses).
  const DiscreteSchedule base = sd_schedule();
  const SigmaSchedule gits{base, SigmaRule::gits}; // coefficient 1.20 by default
  CHECK(gits.sigmas(2) == as_run({14.61464119, 0.803307, 0.02916753}));
  CHECK(gits.sigmas(10) ==
        as_run({14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381,
                0.32104823, 0.19894916, 0.09824532, 0.02916753}));
  CHECK(gits.sigmas(20) ==
        as_run({14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151,
                1.24153244,  0.95350921, 0.74807048, 0.59516323, 0.50118381, 0.41087446,
                0.34370604,  0.29807833, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
                0.13792117,  0.09824532, 0.02916753}));
  const auto with_coeff = [&](double c) {
    return SigmaSchedule{base, SigmaRule::gits, SigmaRuleOptions{c}};
  };
  CHECK(with_coeff(0.80).sigmas(10) ==
        as_run({14.61464119, 13.76078796, 12.96784878, 12.2308979, 10.90732002, 8.75849152,
                7.49001646, 5.85520077, 3.07277966, 1.56271636, 0.02916753}));
  CHECK(with_coeff(1.50).sigmas(10) ==
        as_run({14.61464119, 1.84880662, 0.95350921, 0.59516323, 0.41087446, 0.29807833, 0.22545385,
                0.17026083, 0.13792117, 0.09824532, 0.02916753}));
  CHECK(with_coeff(1.05).sigmas(2) == as_run({14.61464119, 0.95350921, 0.02916753}));
  // stable-diffusion.cpp's copy of coefficient 0.80 lacks rows; ComfyUI's n = 16 row:
  CHECK(with_coeff(0.80).sigmas(16) ==
        as_run({14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002,
                10.31284904, 9.24142551, 8.75849152, 8.30717278, 7.49001646, 6.14220476, 4.86714602,
                3.1956799, 1.98035145, 0.86115354, 0.02916753}));

  // Every row of every coefficient: n + 1 values from 14.61464119, strictly decreasing, 0 last.
  for (int k = 0; k <= 14; ++k) {
    const auto schedule = with_coeff(0.80 + 0.05 * k);
    for (int n = 2; n <= 20; ++n) {
      INFO("coefficient index " << k << ", n = " << n);
      const std::vector<double> s = schedule.sigmas(n);
      REQUIRE(s.size() == static_cast<std::size_t>(n) + 1);
      CHECK(s.front() == static_cast<float>(14.61464119));
      CHECK(s[s.size() - 1] == 0.0);
      for (std::size_t i = 1; i < s.size(); ++i)
        CHECK(s[i] < s[i - 1]);
    }
  }
}

TEST_CASE("GITS: beyond 20 steps, the 20-step row log-linearly interpolated",
          "[sigma_rules][gits]") {
  // numpy reference (see the file comment).
  const DiscreteSchedule base = sd_schedule();
  const auto sigmas = [&](double c, int n) {
    return SigmaSchedule{base, SigmaRule::gits, SigmaRuleOptions{c}}.sigmas(n);
  };
  check_close(sigmas(1.20, 21), {14.6146412,   7.7322669,
                                 4.87045336,   3.26060009,
                                 2.34446692,   1.73880386,
                                 1.33855259,   1.04120433,
                                 0.820518136,  0.65644145,
                                 0.543925524,  0.455939859,
                                 0.380614609,  0.325553745,
                                 0.281303823,  0.243096083,
                                 0.218839332,  0.193134874,
                                 0.16521354,   0.133536667,
                                 0.0927250311, 0},
              1);
  check_close(sigmas(1.20, 30),
              {14.6146412,
               9.35946941,
               6.39175272,
               4.65472794,
               3.52900577,
               2.74887061,
               2.19988537,
               1.7906853,
               1.47980762,
               1.24153244,
               1.04120433,
               0.879422247,
               0.748070478,
               0.642300487,
               0.562026024,
               0.501183808,
               0.439007342,
               0.387140393,
               0.343706042,
               0.312571466,
               0.281303823,
               0.25053367,
               0.23352164,
               0.216248184,
               0.198949158,
               0.17933175,
               0.158715799,
               0.137921169,
               0.110006467,
               0.065540202,
               0},
              1);
  check_close(sigmas(0.80, 25),
              {14.6146412, 13.9274712, 13.2793884, 12.6678848,  12.090621,  11.5454187, 11.0320539,
               10.5466471, 10.0874672, 9.65289688, 9.24142551,  8.8530159,  8.48484039, 8.13568974,
               7.80443382, 7.49001646, 6.91076422, 6.20640087,  5.43794537, 4.62149572, 3.75677586,
               3.00753403, 2.1522646,  1.29785013, 0.413890213, 0},
              1);
  const std::vector<double> s50 = sigmas(1.50, 50);
  REQUIRE(s50.size() == 51);
  CHECK(ulps(s50[1], 7.15466213) <= 1);
  CHECK(ulps(s50[25], 0.343706042) <= 1);
  CHECK(ulps(s50[49], 0.0474094078) <= 1);
}

TEST_CASE("simple, sgm_uniform and kl_optimal on Stable Diffusion's schedule",
          "[sigma_rules][simple][sgm_uniform][kl_optimal]") {
  // numpy reference (see the file comment).
  const DiscreteSchedule base = sd_schedule();
  const SigmaSchedule simple{base, SigmaRule::simple};
  const SigmaSchedule sgm{base, SigmaRule::sgm_uniform};
  const SigmaSchedule kl{base, SigmaRule::kl_optimal};

  CHECK(simple.timesteps(7) == std::vector<double>{999, 857, 714, 571, 428, 285, 142});
  CHECK(simple.timesteps(10) ==
        std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99});
  check_close(
      simple.sigmas(7),
      {14.6146488, 6.7016325, 3.52820516, 2.06167173, 1.27623582, 0.790061533, 0.43806231, 0}, 0);
  check_close(simple.sigmas(10),
              {14.6146488, 8.30280685, 5.08776617, 3.32108498, 2.27646422, 1.61288714, 1.16057897,
               0.829860032, 0.569285393, 0.341674417, 0},
              0);
  // ComfyUI's int(i * (1000 / 38)) gives 499 at i = 19 (the double product is 499.99...); the
  // timestep is 1000 - 1 - 499 = 500 (stable-diffusion.cpp's float32 stride gives 499 there).
  CHECK(simple.timesteps(38)[19] == 500);

  check_close(
      sgm.sigmas(7),
      {14.6146507, 6.67800188, 3.52205849, 2.06064224, 1.27683294, 0.791260302, 0.439666301, 0}, 1);
  check_close(sgm.sigmas(10),
              {14.6146507, 8.30717468, 5.09241104, 3.32507086, 2.27973151, 1.61558127, 1.16286528,
               0.831884205, 0.571189404, 0.343705386, 0},
              1);
  const std::vector<double> sgm25 = sgm.sigmas(25);
  REQUIRE(sgm25.size() == 26);
  CHECK(ulps(sgm25[1], 11.5454226) <= 1);
  CHECK(ulps(sgm25[13], 1.51179194) <= 1);
  CHECK(ulps(sgm25[24], 0.198947936) <= 1);
  const std::vector<double> sgm_t = sgm.timesteps(10);
  for (int i = 0; i < 10; ++i)
    CHECK(sgm_t[static_cast<std::size_t>(i)] == static_cast<float>(999.0 - 99.9 * i));

  check_close(kl.sigmas(1), {14.6146488, 0}, 0);
  check_close(
      kl.sigmas(7),
      {14.6146488, 3.08070302, 1.59706676, 0.961588442, 0.5729146, 0.281838179, 0.0291675329, 0},
      1);
  check_close(kl.sigmas(10),
              {14.6146488, 4.23235178, 2.39371967, 1.59706676, 1.13299727, 0.815244913, 0.5729146,
               0.372484535, 0.195288703, 0.0291675329, 0},
              1);
  const std::vector<double> kl25 = kl.sigmas(25);
  REQUIRE(kl25.size() == 26);
  CHECK(ulps(kl25[1], 7.66644144) <= 1);
  CHECK(ulps(kl25[12], 0.961588442) <= 1);
  CHECK(ulps(kl25[23], 0.0907958373) <= 1);
}

TEST_CASE("Every rule: n + 1 sigmas, first at the top, strictly decreasing to 0", "[sigma_rules]") {
  const DiscreteSchedule base = sd_schedule();
  const double train_max = base.train_sigmas().back();
  for (SigmaRule rule : all_rules) {
    const SigmaSchedule schedule{base, rule};
    double top = train_max;
    if (rule == SigmaRule::ays_svd)
      top = 700.0;
    else if (rule == SigmaRule::ays_sd15 || rule == SigmaRule::ays_sdxl)
      top = 14.6146412293;
    else if (rule == SigmaRule::gits)
      top = 14.61464119;
    else if (rule == SigmaRule::sgm_uniform) // exp of the float32 log table's last entry
      top = std::exp(static_cast<double>(base.log_sigmas().back()));
    for (int n : {1, 2, 3, 9, 10, 11, 20, 21, 50, 200, 1000}) {
      if (rule == SigmaRule::gits && n < 2)
        continue;
      INFO(sigma_rule_name(rule) << ", n = " << n);
      const std::vector<double> s = schedule.sigmas(n);
      REQUIRE(s.size() == static_cast<std::size_t>(n) + 1);
      CHECK(ulps(s.front(), top) <= 1);
      CHECK(s.back() == 0.0);
      bool decreasing = true;
      for (std::size_t i = 1; i < s.size(); ++i)
        decreasing = decreasing && s[i] < s[i - 1];
      CHECK(decreasing);

      // The trajectory: the same VE sigmas, timesteps non-increasing within [0, N - 1], clean end.
      const Trajectory traj = schedule.trajectory(n);
      REQUIRE(traj.steps() == n);
      CHECK(traj.num_train_timesteps == 1000);
      bool ordered = true;
      for (int i = 0; i < n; ++i) {
        const TimePoint& p = traj[i];
        CHECK(p.ve_sigma() == Approx(s[static_cast<std::size_t>(i)]).epsilon(1e-14));
        CHECK(p.alpha * p.alpha + p.sigma * p.sigma == Approx(1.0).epsilon(1e-14));
        ordered = ordered && p.timestep >= 0 && p.timestep <= 999 &&
                  (i == 0 || p.timestep <= traj[i - 1].timestep);
      }
      CHECK(ordered);
      CHECK(traj[n].sigma == 0.0);
      CHECK(traj[n].alpha == 1.0);
      CHECK(traj[n].timestep == 0.0);
    }
  }
}

TEST_CASE("Trajectory timesteps are the base's timestep_at of each sigma", "[sigma_rules]") {
  const DiscreteSchedule base = sd_schedule();
  for (SigmaRule rule : all_rules) {
    INFO(sigma_rule_name(rule));
    const SigmaSchedule schedule{base, rule};
    const Trajectory traj = schedule.trajectory(12);
    for (int i = 0; i < 12; ++i) {
      const double t = base.timestep_at(traj[i].ve_sigma());
      // float32 storage; simple/sgm_uniform carry their defining timesteps, which timestep_at
      // recovers up to the float32 rounding of the sigmas.
      CHECK(traj[i].timestep == Approx(t).margin(2e-3));
    }
    CHECK(schedule.point(500.0).sigma == base.point(500.0).sigma);
    CHECK(schedule.timestep_at(1.0) == base.timestep_at(1.0));
  }

  // AYS's SVD table over the EDM schedule: model time c_noise = 0.25 log sigma, ending at -inf.
  const SigmaSchedule svd{EDMSchedule{}, SigmaRule::ays_svd};
  const Trajectory traj = svd.trajectory(10);
  CHECK(traj[0].timestep == Approx(0.25 * std::log(700.0)).epsilon(1e-7));
  CHECK(traj[9].timestep == Approx(0.25 * std::log(0.034)).epsilon(1e-7));
  CHECK(traj[10].timestep == -std::numeric_limits<double>::infinity());
  CHECK(traj[10].sigma == 0.0);
}

TEST_CASE("Euler under every rule converges on the Gaussian problem", "[sigma_rules][solver]") {
  // Errors against the exact probability-flow solution from the same x_T. Every rule ends with a
  // step from a fixed sigma (>= the training sigma_min) into 0, whose error does not shrink with
  // n, so this checks a steady decrease rather than an order.
  const DiscreteSchedule base = sd_schedule();
  for (SigmaRule rule : all_rules) {
    if (rule == SigmaRule::ays_svd)
      continue; // SVD's sigma range, checked below on the EDM schedule
    const SigmaSchedule schedule{base, rule};
    check_decreasing(sigma_rule_name(rule),
                     [&](int n) { return ode_error(schedule, Euler{}, Prediction::epsilon, n); });
  }
  const SigmaSchedule svd{EDMSchedule{}, SigmaRule::ays_svd};
  check_decreasing("ays_svd",
                   [&](int n) { return ode_error(svd, Euler{}, Prediction::epsilon, n); });
}

TEST_CASE("Sigma rules: errors name the option and its value", "[sigma_rules][errors]") {
  const DiscreteSchedule base = sd_schedule();
  CHECK_THROWS_WITH((SigmaSchedule{base, SigmaRule::gits, SigmaRuleOptions{1.23}}),
                    Catch::Contains("SigmaRuleOptions::gits_coeff = 1.23"));
  CHECK_THROWS_WITH((SigmaSchedule{base, SigmaRule::gits, SigmaRuleOptions{1.55}}),
                    Catch::Contains("gits_coeff = 1.55"));
  CHECK_THROWS_WITH((SigmaSchedule{base, SigmaRule::ays_sd15, SigmaRuleOptions{1.0}}),
                    Catch::Contains("gits_coeff = 1") && Catch::Contains("only applies"));
  CHECK_THROWS_WITH(SigmaSchedule(base, SigmaRule::gits).sigmas(1),
                    Catch::Contains("num_steps = 1"));
  for (SigmaRule rule : all_rules) {
    INFO(sigma_rule_name(rule));
    CHECK_THROWS_WITH(SigmaSchedule(base, rule).trajectory(0), Catch::Contains("num_steps = 0"));
  }
  CHECK_THROWS_WITH(SigmaSchedule(base, SigmaRule::simple).sigmas(1001),
                    Catch::Contains("num_steps = 1001"));
  for (SigmaRule rule : {SigmaRule::simple, SigmaRule::sgm_uniform, SigmaRule::kl_optimal})
    CHECK_THROWS_WITH((SigmaSchedule{EDMSchedule{}, rule}),
                      Catch::Contains(std::string("rule = ") + sigma_rule_name(rule)));
  CHECK_NOTHROW(SigmaSchedule{base, SigmaRule::gits, SigmaRuleOptions{0.8}});
  CHECK_NOTHROW(SigmaSchedule{base, SigmaRule::gits, SigmaRuleOptions{1.5}});
}
