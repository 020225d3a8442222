// SPDX-License-Identifier: Apache-2.0
// tstitch-sample's planning choice (apps/cli_plan.hpp) from given costs: the quality table's
// fraction against the fewest small-model steps, and the errors that say what is achievable.
#include <catch2/catch.hpp>

#include <string>

#include "cli_plan.hpp"

using tstitch_sample::choose_plan;
using tstitch_sample::PlanRequest;

namespace {

// The shipped table's shape: FD-cls at fractions 0, 0.1, ..., 1 (lower is better), 50 steps.
tstitch::plan::QualityTable fashion_like_table() {
  tstitch::plan::QualityTable t;
  t.metric = "FD-cls";
  t.steps = 50;
  const double values[] = {37.90, 38.21, 38.22, 38.95, 41.48, 46.52,
                           52.22, 56.73, 60.07, 63.06, 62.90};
  for (int i = 0; i <= 10; ++i)
    t.entries.push_back({i / 10.0, values[i]});
  return t;
}

std::string message_of(const PlanRequest& r, const tstitch::plan::Planner& p) {
  try {
    (void)choose_plan(r, p, nullptr);
  } catch (const tstitch_sample::plan_error& e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST_CASE("cli plan: a speed-up target takes the fewest steps, or the table's best fraction") {
  // Small 1 s, large 4 s per step, 50 steps: 2x needs 200 / (4 * 50 - 3 s) >= 2, s >= 33.3.
  const tstitch::plan::Planner planner({1.0, 4.0}, 50);
  PlanRequest r;
  r.target_speedup = 2.0;
  const tstitch::plan::Plan fewest = choose_plan(r, planner, nullptr);
  CHECK(fewest.small_steps == 34);
  CHECK_FALSE(fewest.quality);
  const tstitch::plan::QualityTable table = fashion_like_table();
  const tstitch::plan::Plan best = choose_plan(r, planner, &table);
  CHECK(best.small_steps == 35); // 0.7: the lowest FD-cls of 0.7, 0.8, 0.9 and 1.0
  CHECK(best.quality == 56.73);
  r.target_speedup = 3.9; // only 1.0 (200 / 50 = 4x) meets it; the table has it
  CHECK(choose_plan(r, planner, &table).small_steps == 50);
}

TEST_CASE("cli plan: a deadline takes the fewest small-model steps that meet it") {
  const tstitch::plan::Planner planner({1.0, 4.0}, 50);
  PlanRequest r;
  r.deadline_ms = 170e3; // 200 - 3 s <= 170: s >= 10
  CHECK(choose_plan(r, planner, nullptr).small_steps == 10);
  const tstitch::plan::QualityTable table = fashion_like_table();
  CHECK(choose_plan(r, planner, &table).small_steps == 10); // 0.2: the best that meets it
  r.deadline_ms = 196e3;                                    // s >= 2: 0.1 (5 steps) on the table
  CHECK(choose_plan(r, planner, nullptr).small_steps == 2);
  CHECK(choose_plan(r, planner, &table).small_steps == 5);
}

TEST_CASE("cli plan: unreachable budgets name what is achievable") {
  const tstitch::plan::Planner planner({1.0, 4.0}, 50);
  PlanRequest r;
  r.target_speedup = 5.0;
  CHECK(message_of(r, planner) == "--target-speedup = 5: above the achievable speed-up, 4x (all "
                                  "50 steps on the small model, predicted 5e+04 ms)");
  r = {};
  r.deadline_ms = 49e3;
  CHECK(message_of(r, planner) == "--deadline-ms = 49000: below the fastest routing's predicted "
                                  "time, 5e+04 ms (all 50 steps on the small model)");
  r.deadline_ms = 50e3; // exactly the all-small time: met
  CHECK(choose_plan(r, planner, nullptr).small_steps == 50);
}

TEST_CASE("cli plan: the request's values are checked before any model loads") {
  PlanRequest r;
  r.target_speedup = 0.0;
  CHECK_THROWS_WITH(tstitch_sample::check_plan_request(r, 2, "fraction", "cpu"),
                    "--target-speedup = 0: must be finite and > 0 (a speed-up over the large "
                    "model alone)");
  r.target_speedup = 2.0;
  CHECK_THROWS_WITH(tstitch_sample::check_plan_request(r, 3, "fraction", "cpu"),
                    "--target-speedup = 2: plans a small and a large model; got 3 models");
  CHECK_NOTHROW(tstitch_sample::check_plan_request(r, 2, "fraction", "cpu"));
  r.repeats = 0;
  CHECK_THROWS_WITH(tstitch_sample::check_plan_request(r, 2, "fraction", "cpu"),
                    "--plan-repeats = 0: must be in [1, 1000]");
  r.repeats = 1001;
  CHECK_THROWS_WITH(tstitch_sample::check_plan_request(r, 2, "fraction", "cpu"),
                    "--plan-repeats = 1001: must be in [1, 1000]");
  r.repeats = 1000;
  CHECK_NOTHROW(tstitch_sample::check_plan_request(r, 2, "fraction", "cpu"));
  PlanRequest plain; // no budget: a repeat count has nothing to measure, even the default one
  CHECK_NOTHROW(tstitch_sample::check_plan_request(plain, 2, "fraction", "cpu"));
  plain.repeats = 9;
  CHECK_THROWS_WITH(tstitch_sample::check_plan_request(plain, 2, "fraction", "cpu"),
                    "--plan-repeats = 9: used only with --target-speedup or --deadline-ms");
  plain.repeats = PlanRequest::default_repeats;
  CHECK_THROWS_WITH(tstitch_sample::check_plan_request(plain, 2, "fraction", "cpu"),
                    "--plan-repeats = 5: used only with --target-speedup or --deadline-ms");
}

TEST_CASE("cli plan: the run's evaluations per step follow its solver") {
  const tstitch::Trajectory trajectory = tstitch::DiscreteSchedule{}.trajectory(5);
  const tstitch::Shape shape{3, 16, 16};
  CHECK(tstitch_sample::run_evaluations(tstitch::AnySolver(tstitch::DDIM{}), trajectory, shape) ==
        std::vector<int>{1, 1, 1, 1, 1});
  // Heun: two evaluations per step, one into sigma = 0.
  CHECK(tstitch_sample::run_evaluations(tstitch::AnySolver(tstitch::Heun{}), trajectory, shape) ==
        std::vector<int>{2, 2, 2, 2, 1});
}
