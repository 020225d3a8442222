// SPDX-License-Identifier: Apache-2.0
// plan::Deadline decides once per step, when the sampling loop routes it (route_step); asking a
// stitcher's assignment() or steps_per_model() mid-run, or the planner's prediction, is a pure
// query that neither reads the clock nor moves the run.
#include <catch2/catch.hpp>

#include <cstddef>
#include <vector>

#include "tstitch/plan/deadline.hpp"
#include "tstitch/plan/planner.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/stitcher.hpp"
#include "tstitch/tstitch.hpp"

#include "support/clocked_model.hpp"

using namespace tstitch;

namespace {

struct QueryClock {
  double now = 0;
  int reads = 0;
};

// Advances the fake clock by its cost per evaluation; output: a multiple of x.
using ClockedModel = test::ClockedModel<QueryClock>;

std::vector<std::size_t> models_of(const SampleResult& run) {
  std::vector<std::size_t> out;
  for (const StepRecord& r : run.records)
    out.push_back(r.model);
  return out;
}

// 4 small steps then 6 large: the plan for a 7 s budget at 0.25 s and 1 s per step.
const std::vector<std::size_t> planned{0, 0, 0, 0, 1, 1, 1, 1, 1, 1};

} // namespace

TEST_CASE("plan: querying a Deadline stitcher mid-run leaves the run as it was",
          "[plan][deadline]") {
  QueryClock clock;
  ClockedModel small{&clock, 0.25, 0.3f}, large{&clock, 1.0, 0.7f};
  const plan::Planner planner({0.25, 1.0}, 10);
  const plan::Deadline deadline(7.0, planner, [&clock] {
    ++clock.reads;
    return clock.now;
  });
  TrajectoryStitcher stitcher(small, large, deadline);
  const Trajectory trajectory = DiscreteSchedule{}.trajectory(10);
  // Before any run the queries give the plan at the planner's costs, without the clock.
  REQUIRE(stitcher.assignment(trajectory) == planned);
  REQUIRE(planner.predicted_seconds(deadline) == planner.for_deadline(7.0).predicted_seconds);
  REQUIRE(clock.reads == 0);

  SampleOptions options;
  options.steps = 10;
  std::vector<std::vector<int>> seen;
  options.on_step = [&](const StepRecord&) {
    const int reads = clock.reads;
    seen.push_back(stitcher.steps_per_model(trajectory));
    (void)stitcher.assignment(trajectory);
    REQUIRE(clock.reads == reads); // a query reads no clock
    return true;
  };
  Tensor x(1, {1, 2, 2});
  fill_initial_noise(x.view(), 3);
  const SampleResult run = sample(stitcher, DiscreteSchedule{}, DDIM{}, x.view(), {}, options);
  REQUIRE(models_of(run) == planned);
  REQUIRE(deadline.routing() == planned);
  REQUIRE(clock.reads == 10); // once per step, by the loop
  REQUIRE(clock.now == 7.0);
  for (const std::vector<int>& counts : seen)
    REQUIRE(counts == std::vector<int>{4, 6});

  // A second run starts afresh, and the run-time stitcher (AnyPolicy) routes the same way.
  RuntimeStitcher<DenoiserRef<NoCondition>, AnyPolicy> runtime(
      plan::Deadline(7.0, planner, [&clock] { return clock.now; }), {small, large});
  options.on_step = [&](const StepRecord&) {
    (void)runtime.assignment(trajectory);
    return true;
  };
  const SampleResult again = sample(runtime, DiscreteSchedule{}, DDIM{}, x.view(), {}, options);
  REQUIRE(models_of(again) == planned);
}

TEST_CASE("plan: a Deadline's queries project the rest of the run from the last step's speed",
          "[plan][deadline]") {
  double now = 0;
  const plan::Planner planner({0.25, 1.0}, 10);
  const plan::Deadline deadline(7.0, planner, [&now] { return now; });
  StepContext ctx;
  ctx.num_steps = 10;
  // Steps 0 and 1 routed by the loop; step 0 ran twice as slow as predicted.
  ctx.step = 0;
  REQUIRE(deadline.route_step(ctx, 2) == 0);
  now += 0.5;
  ctx.step = 1;
  REQUIRE(deadline.route_step(ctx, 2) == 0);
  REQUIRE(deadline.slowdown() == 2.0);
  // Routed steps answer as routed; the rest as the rule would at twice the cost: after step 1
  // (1 s spent), step i >= 2 takes the large model once 7 - 1 - 0.5 (i - 2) >= 2 (10 - i), i = 9.
  std::vector<std::size_t> projected;
  for (int i = 0; i < 10; ++i) {
    ctx.step = i;
    projected.push_back(deadline.model_for(ctx, 2));
  }
  REQUIRE(projected == std::vector<std::size_t>{0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  REQUIRE(deadline.routing() == std::vector<std::size_t>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
}
