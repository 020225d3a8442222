// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <cmath>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/euler.hpp"

#include "support/gaussian_problems.hpp"

using namespace tstitch;
using namespace tstitch::testing;
using analytic::ExactDenoiser;
using analytic::Labels;

namespace {

/// The measured order over n = 10 .. 160 (see measured_order).
template <class Schedule, class SolverT>
double measured_order(const Schedule& schedule, SolverT solver, Prediction prediction) {
  return testing::measured_order(schedule, solver, prediction, {10, 20, 40, 80, 160},
                                 Averaging::divide_the_sum);
}

} // namespace

TEST_CASE("DDIM and Euler follow the exact probability-flow solution at order 1", "[solver]") {
  SECTION("DDIM, VP cosine, epsilon") {
    const double order = measured_order(cosine, DDIM{}, Prediction::epsilon);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("Euler, VP cosine, v") {
    const double order = measured_order(cosine, Euler{}, Prediction::v);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("DDIM, rectified flow, flow velocity") {
    const double order = measured_order(flow, DDIM{}, Prediction::flow);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("Euler, rectified flow, flow velocity") {
    const double order = measured_order(flow, Euler{}, Prediction::flow);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("Euler, DDPM discrete schedule, epsilon") {
    // Integer timesteps with trailing spacing: 1000 / n is exact for every n tested.
    DiscreteScheduleOptions o;
    o.spacing = TimestepSpacing::trailing;
    const double order = measured_order(DiscreteSchedule(o), Euler{}, Prediction::epsilon);
    CHECK(order == Approx(1.0).margin(0.2));
  }
}

TEST_CASE("DDIM with eta = 0 is deterministic and equals Euler up to rounding", "[solver]") {
  const double ddim = ode_error(cosine, DDIM{}, Prediction::epsilon, 40);
  const double euler = ode_error(cosine, Euler{}, Prediction::epsilon, 40);
  CHECK(ddim == Approx(euler).epsilon(1e-3));
}

// Ancestral samplers are exact only as the step count grows: with the exact posterior mean, each
// step drops the variance of x0 given x_t, most near t = 0 where beta_t / (1 - abar_t) is large.
// Propagating the variance through the chain (Gaussian data keeps every step linear) gives the
// relative bias of the final variance; for data variance 0.5..2 and 1000 steps it is -1.2..-0.7%
// (fixed small, DDIM eta = 1), -0.5% (learned range with v = 0) and +-0.1% (fixed large), all
// below one standard error at 20k samples (1%). At 250 steps fixed small is already -4%, and at
// data variance 0.05 -3% even with 1000 steps: those would fail for the right reason.
TEST_CASE("DDPM ancestral sampling reproduces the data's mean and variance", "[solver][stat]") {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace; // DiT's DDPM respacing
  const DiscreteSchedule schedule(o);
  SECTION("fixed small variance") {
    check_distribution(schedule, DDPM{}, Prediction::epsilon, 1000);
  }
  SECTION("fixed large variance") {
    check_distribution(schedule, DDPM{DDPMOptions{DDPMVariance::fixed_large, {}}},
                       Prediction::epsilon, 1000);
  }
  SECTION("learned range (DiT's 2C output)") {
    check_distribution(schedule, DDPM{DDPMOptions{DDPMVariance::learned_range, {}}},
                       Prediction::epsilon_learned_sigma, 1000);
  }
  SECTION("DDIM with eta = 1") {
    check_distribution(schedule, DDIM{DDIMOptions{1.0, {}}}, Prediction::epsilon, 1000);
  }
}

TEST_CASE("Solver options are validated", "[solver][errors]") {
  CHECK_THROWS_WITH(DDIM(DDIMOptions{-0.5, {}}), Catch::Contains("eta = -0.5"));
  CHECK_THROWS_WITH(DDIM(DDIMOptions{NAN, {}}), Catch::Contains("eta"));
  CHECK_THROWS_WITH(DDIM(DDIMOptions{0.0, 0.0f}), Catch::Contains("clip_sample = 0"));
  CHECK_THROWS_WITH(DDPM(DDPMOptions{DDPMVariance::fixed_small, -1.0f}),
                    Catch::Contains("clip_sample = -1"));

  // learned_range needs a model that outputs the variance channels.
  ExactDenoiser eps_only(curved_shape, curved_data(), Prediction::epsilon);
  DDPM ddpm(DDPMOptions{DDPMVariance::learned_range, {}});
  Tensor x(1, curved_shape);
  SampleOptions options;
  options.steps = 5;
  CHECK_THROWS_WITH(sample(eps_only, DiscreteSchedule{}, ddpm, x, Labels{}, options),
                    Catch::Contains("learned_range") && Catch::Contains("epsilon"));
}
