// SPDX-License-Identifier: Apache-2.0
// diffusers parity for DDIM: the oracles of docs/parity.md §4.1, with
// diffusers' own harness (§1) and tolerances. Values are diffusers' asserted numbers.
#include <catch2/catch.hpp>

#include <cmath>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/posterior.hpp"

#include "support/diffusers_harness.hpp"

using namespace tstitch;
using namespace tstitch::testing;

TEST_CASE("DDIM full loops match diffusers' DDIMSchedulerTest", "[parity][ddim]") {
  DiscreteScheduleOptions config;    // num_train_timesteps 1000, linear 1e-4..0.02, leading
  DDIM ddim(DDIMOptions{0.0, 1.0f}); // the test config's clip_sample=True, range 1
  SECTION("test_full_loop_no_noise") {
    const Result r = full_loop(config, ddim, Prediction::epsilon);
    CHECK(std::abs(r.sum - 172.0067) < 1e-2);
    CHECK(std::abs(r.mean - 0.223967) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(config, ddim, Prediction::v);
    CHECK(std::abs(r.sum - 52.5302) < 1e-2);
    CHECK(std::abs(r.mean - 0.0684) < 1e-3);
  }
  SECTION("test_full_loop_with_set_alpha_to_one") {
    config.beta_start = 0.01;
    config.final_point = FinalPoint::clean;
    const Result r = full_loop(config, ddim, Prediction::epsilon);
    CHECK(std::abs(r.sum - 149.8295) < 1e-2);
    CHECK(std::abs(r.mean - 0.1951) < 1e-3);
  }
  SECTION("test_full_loop_with_no_set_alpha_to_one") {
    config.beta_start = 0.01;
    config.final_point = FinalPoint::first_train_step;
    const Result r = full_loop(config, ddim, Prediction::epsilon);
    CHECK(std::abs(r.sum - 149.0784) < 1e-2);
    CHECK(std::abs(r.mean - 0.1941) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 8: timesteps [100, 0])") {
    const Result r = full_loop(config, ddim, Prediction::epsilon, 8);
    CHECK(std::abs(r.sum - 354.5418) < 1e-2);
    CHECK(std::abs(r.mean - 0.4616) < 1e-3);
  }
}

TEST_CASE("DDIM variance matches diffusers' test_variance", "[parity][ddim]") {
  const DiscreteSchedule schedule; // the §4.1 config
  auto variance = [&](int t, int prev) {
    return posterior_variance(schedule.point(t), schedule.point(prev));
  };
  CHECK(std::abs(variance(0, 0) - 0.0) < 1e-5);
  CHECK(std::abs(variance(420, 400) - 0.14771) < 1e-5);
  CHECK(std::abs(variance(980, 960) - 0.32460) < 1e-5);
  CHECK(std::abs(variance(487, 486) - 0.00979) < 1e-5);
  CHECK(std::abs(variance(999, 998) - 0.02) < 1e-5);
}

TEST_CASE("DDIM steps_offset matches diffusers' test_steps_offset", "[parity][ddim]") {
  DiscreteScheduleOptions config;
  config.steps_offset = 1;
  const Trajectory trajectory = DiscreteSchedule(config).trajectory(5);
  REQUIRE(trajectory.steps() == 5);
  const double expected[] = {801, 601, 401, 201, 1};
  for (int i = 0; i < 5; ++i)
    CHECK(trajectory[i].timestep == expected[i]);
}
