// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tstitch/core/host_backend.hpp"
#include "tstitch/plan/deadline.hpp"
#include "tstitch/plan/planner.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/heun.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/clocked_model.hpp"

using namespace tstitch;
using plan::Planner;

namespace {

// A model whose predict advances a fake clock by a fixed cost: timings are exact, so no test
// depends on the speed of the machine.
struct FakeClock {
  double now = 0;
};

struct TimedModel {
  using condition_type = NoCondition;
  FakeClock* clock;
  double cost; // seconds per predict call
  int calls = 0;
  double slow_first = 0; // extra seconds on the first call (a cold start)
  [[nodiscard]] Prediction prediction() const { return Prediction::epsilon; }
  [[nodiscard]] Shape latent_shape() const { return {1, 2, 2}; }
  void predict(ConstView, const StepContext&, const NoCondition&, View out) {
    clock->now += cost + (calls == 0 ? slow_first : 0.0);
    ++calls;
    for (std::int64_t i = 0; i < out.numel(); ++i)
      out.data()[i] = 0.0f;
  }
};

plan::MeasureOptions fake_options(FakeClock& clock, int warmup = 2, int repeats = 5) {
  plan::MeasureOptions o;
  o.warmup = warmup;
  o.repeats = repeats;
  o.clock = [&clock] { return clock.now; };
  return o;
}

template <class F> std::string message_of(F&& f) {
  try {
    f();
  } catch (const tstitch::error& e) {
    return e.message();
  }
  return "(no error)";
}

// Small model 0.25 s, large 1 s per evaluation: binary-exact sums.
Planner pair(int steps, int evaluations = 1) { return Planner({0.25, 1.0}, steps, evaluations); }

int small_steps_of(const StepFraction& policy, int steps) {
  int small = 0;
  for (int i = 0; i < steps; ++i) {
    StepContext ctx;
    ctx.step = i;
    ctx.num_steps = steps;
    small += policy.model_for(ctx, 2) == 0 ? 1 : 0;
  }
  return small;
}

// The table of a 10-step run: 0.2 beats the large model alone (39 < 40).
plan::QualityTable fashion_like(const char* metric = "FD-cls") {
  plan::QualityTable table;
  table.metric = metric;
  table.steps = 10;
  const std::vector<double> fractions = {0.0, 0.2, 0.4, 0.6, 0.8, 1.0};
  const std::vector<double> cls = {40.0, 39.0, 41.0, 50.0, 60.0, 70.0};
  const std::vector<double> pca = {1, 2, 3, 4, 5, 6};
  for (std::size_t i = 0; i < fractions.size(); ++i)
    table.entries.push_back({fractions[i], std::string(metric) == "FD-cls" ? cls[i] : pca[i]});
  table.validate();
  return table;
}

} // namespace

TEST_CASE("plan: measure_costs takes the median after the warm-up, per model", "[plan]") {
  FakeClock clock;
  TimedModel small{&clock, 0.25, 0, 100.0}; // a cold first call, absorbed by the warm-up
  TimedModel large{&clock, 1.5};
  Tensor x(3, {1, 2, 2});
  StepContext ctx;
  const plan::ModelCosts costs =
      plan::measure_costs(x.view(), ctx, NoCondition{}, nullptr, fake_options(clock), small, large);
  REQUIRE(costs.seconds == std::vector<double>{0.25, 1.5});
  REQUIRE(costs.batch == 3);
  REQUIRE(small.calls == 7);
  REQUIRE(large.calls == 7);
  REQUIRE(costs.names.size() == 2);

  // Without a warm-up the cold call is one of five: the median ignores it.
  TimedModel cold{&clock, 0.5, 0, 100.0};
  REQUIRE(
      plan::measure_costs(x.view(), ctx, NoCondition{}, nullptr, fake_options(clock, 0, 5), cold)
          .seconds == std::vector<double>{0.5});
  // A guided evaluation is two predictions.
  const NoCondition uncond;
  TimedModel guided{&clock, 0.5};
  REQUIRE(plan::measure_costs(x.view(), ctx, NoCondition{}, &uncond, fake_options(clock), guided)
              .seconds == std::vector<double>{1.0});
}

TEST_CASE("plan: median_seconds of an even count averages the middle two", "[plan]") {
  FakeClock clock;
  std::vector<double> costs{4.0, 1.0, 3.0, 2.0};
  std::size_t k = 0;
  const double m =
      plan::median_seconds([&] { clock.now += costs[k++]; }, fake_options(clock, 0, 4));
  REQUIRE(m == 2.5);
  REQUIRE_THROWS_WITH(plan::median_seconds([] {}, fake_options(clock, 0, 0)),
                      Catch::Contains("repeats = 0"));
  REQUIRE_THROWS_WITH(plan::median_seconds([] {}, fake_options(clock, -1, 1)),
                      Catch::Contains("warmup = -1"));
  double t = 10;
  plan::MeasureOptions backwards;
  backwards.warmup = 0;
  backwards.clock = [&t] { return t -= 1; };
  REQUIRE_THROWS_WITH(plan::median_seconds([] {}, backwards), Catch::Contains("= -1"));
}

TEST_CASE("plan: median_seconds_each times its callables in turns", "[plan]") {
  FakeClock clock;
  std::vector<int> order;
  std::vector<double> slow{0.5, 9.0, 0.5}; // the second call of the first callable is slow
  std::size_t k = 0;
  const std::vector<std::function<void()>> fns{[&] {
                                                 order.push_back(0);
                                                 clock.now += slow[k++ % 3];
                                               },
                                               [&] {
                                                 order.push_back(1);
                                                 clock.now += 2.0;
                                               }};
  const std::vector<double> medians = plan::median_seconds_each(fns, fake_options(clock, 1, 3));
  REQUIRE(order == std::vector<int>{0, 1, 0, 1, 0, 1, 0, 1});
  REQUIRE(medians == std::vector<double>{0.5, 2.0});
}

TEST_CASE("plan: predicted time of a routing counts each step's evaluations", "[plan]") {
  // 4 steps, Heun-like evaluations 2, 2, 2, 1.
  const Planner p({0.25, 1.0}, std::vector<int>{2, 2, 2, 1});
  const std::vector<std::size_t> routing{0, 0, 1, 1};
  REQUIRE(p.predicted_seconds(routing) == 2 * 0.25 + 2 * 0.25 + 2 * 1.0 + 1 * 1.0);
  REQUIRE(p.predicted_seconds(std::vector<std::size_t>{1, 1, 1, 1}) == 7.0);
  REQUIRE(p.predicted_seconds(std::vector<std::size_t>{0, 0, 0, 0}) == 1.75);
  REQUIRE(p.predicted_seconds(StepFraction::small_fraction(0.5)) == 4.0);
  REQUIRE(p.at_small_steps(2).predicted_seconds == 4.0);
  REQUIRE(p.at_small_steps(2).speedup == 7.0 / 4.0);
  // Three models and a three-way policy.
  const Planner three({0.25, 0.5, 1.0}, 4);
  REQUIRE(three.predicted_seconds(StepFraction({0.25, 0.25, 0.5})) == 0.25 + 0.5 + 2.0);
  REQUIRE_THROWS_WITH(three.predicted_seconds(std::vector<std::size_t>{0, 3, 1, 1}),
                      Catch::Contains("routing[1] = 3"));
  REQUIRE_THROWS_WITH(three.predicted_seconds(std::vector<std::size_t>{0, 1}),
                      Catch::Contains("routing length = 2"));
}

TEST_CASE("plan: evaluations_per_step reads the solver (Heun: 2 per step, 1 into sigma 0)",
          "[plan]") {
  const int n = 6;
  const Trajectory trajectory = DiscreteSchedule{}.trajectory(n);
  HostBackend backend;
  Heun heun;
  heun.begin(backend, trajectory, 1, Shape{1, 2, 2});
  const std::vector<int> evals = plan::evaluations_per_step(heun, n);
  REQUIRE(evals.size() == static_cast<std::size_t>(n));
  int total = 0;
  for (int i = 0; i < n; ++i) {
    REQUIRE(evals[static_cast<std::size_t>(i)] == heun.evaluations(i));
    total += evals[static_cast<std::size_t>(i)];
  }
  REQUIRE(total > n); // some steps take two evaluations
  REQUIRE(plan::evaluations_per_step(DDIM{}, n) == std::vector<int>(n, 1));
  // Policies that read the trajectory: a timestep threshold.
  const Planner p({0.25, 1.0}, evals);
  const double cut = trajectory[2].timestep;
  const std::vector<std::size_t> route = p.routing_of(TimestepThreshold(cut), &trajectory);
  REQUIRE(route[0] == 0);
  REQUIRE(route[1] == 0);
  REQUIRE(route[2] == 0);
  REQUIRE(route[3] == 1);
}

TEST_CASE("plan: fraction_for_steps gives StepFraction exactly the whole steps", "[plan]") {
  for (int n = 1; n <= 120; ++n)
    for (int m = 0; m <= n; ++m)
      REQUIRE(small_steps_of(StepFraction::small_fraction(plan::fraction_for_steps(m, n)), n) == m);
  REQUIRE(plan::fraction_for_steps(0, 7) == 0.0);
  REQUIRE(plan::fraction_for_steps(7, 7) == 1.0);
  REQUIRE_THROWS_WITH(plan::fraction_for_steps(8, 7), Catch::Contains("small_steps = 8"));
}

TEST_CASE("plan: fraction for a target speed-up", "[plan]") {
  const Planner p = pair(4); // large-only 4 s; m small steps: 4 - 0.75 m
  // speed-up 1 (or less): no small steps.
  REQUIRE(p.for_speedup(1.0).small_steps == 0);
  REQUIRE(p.for_speedup(0.5).small_steps == 0);
  // Exactly met: 2 small steps give 4 / 2.5 = 1.6.
  const plan::Plan exact = p.for_speedup(4.0 / 2.5);
  REQUIRE(exact.small_steps == 2);
  REQUIRE(exact.predicted_seconds == 2.5);
  REQUIRE(exact.speedup == 4.0 / 2.5);
  // Just above: rounds up to the next whole step, reporting what it achieves.
  const plan::Plan above = p.for_speedup(1.61);
  REQUIRE(above.small_steps == 3);
  REQUIRE(above.speedup == 4.0 / 1.75);
  REQUIRE(small_steps_of(above.policy(), 4) == 3);
  REQUIRE(above.small_fraction() == 0.75);
  // Small only: 4x.
  REQUIRE(p.for_speedup(4.0).small_steps == 4);
  REQUIRE(p.for_speedup(4.0).policy().cumulative_nanos().front() == 1'000'000'000);
  REQUIRE_THROWS_WITH(p.for_speedup(4.5), Catch::Contains("target speed-up = 4.5") &&
                                              Catch::Contains("unreachable") &&
                                              Catch::Contains("gives 4x"));
}

TEST_CASE("plan: fraction for a deadline", "[plan]") {
  const Planner p = pair(4, 2); // large-only 8 s, small-only 2 s, 1.5 s saved per small step
  REQUIRE(p.for_deadline(8.0).small_steps == 0); // exactly met by the large model alone
  REQUIRE(p.for_deadline(100.0).small_steps == 0);
  REQUIRE(p.for_deadline(5.0).small_steps == 2);  // exactly met: 8 - 3
  REQUIRE(p.for_deadline(4.99).small_steps == 3); // just missed at 2: one more
  REQUIRE(p.for_deadline(4.99).predicted_seconds == 3.5);
  REQUIRE(p.for_deadline(2.0).small_steps == 4); // small only, exactly met
  REQUIRE(p.for_deadline(2.0).speedup == 4.0);
  REQUIRE_THROWS_WITH(p.for_deadline(1.5),
                      Catch::Contains("deadline (s) = 1.5") && Catch::Contains("takes 2 s"));
}

TEST_CASE("plan: bad inputs name the value", "[plan]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(Planner({0.25, -1.0}, 4), Catch::Contains("seconds_per_evaluation[1] = -1"));
  REQUIRE_THROWS_WITH(Planner({nan, 1.0}, 4), Catch::Contains("seconds_per_evaluation[0] = nan"));
  REQUIRE_THROWS_WITH(Planner(std::vector<double>{}, 4), Catch::Contains("number of models = 0"));
  REQUIRE_THROWS_WITH(Planner({0.25, 1.0}, 0), Catch::Contains("steps = 0"));
  REQUIRE_THROWS_WITH(Planner({0.25, 1.0}, std::vector<int>{1, 0}),
                      Catch::Contains("evaluations[1] = 0"));
  const Planner p = pair(4);
  REQUIRE_THROWS_WITH(p.for_deadline(0.0), Catch::Contains("deadline (s) = 0"));
  REQUIRE_THROWS_WITH(p.for_deadline(-2.0), Catch::Contains("deadline (s) = -2"));
  REQUIRE_THROWS_WITH(p.for_deadline(nan), Catch::Contains("deadline (s) = nan"));
  REQUIRE_THROWS_WITH(p.for_speedup(0.0), Catch::Contains("target speed-up = 0"));
  REQUIRE_THROWS_WITH(Planner({0.25, 0.5, 1.0}, 4).for_deadline(3.0),
                      Catch::Contains("number of models = 3"));
}

TEST_CASE("plan: the quality table picks the best metric within the budget", "[plan]") {
  const plan::QualityTable table = fashion_like();
  REQUIRE(table.metric == "FD-cls");
  REQUIRE(table.steps == 10);
  REQUIRE(table.entries.size() == 6);
  const Planner p = pair(10); // large-only 10 s, 0.75 s saved per small step
  // Any budget that allows 0.2 picks it: it beats the large model alone (39 < 40).
  const plan::Plan roomy = p.for_deadline(100.0, table);
  REQUIRE(roomy.small_steps == 2);
  REQUIRE(roomy.quality == 39.0);
  // 0.2 needs 8.5 s; at 8.49 s the next reachable entry is 0.4 (7 s).
  REQUIRE(p.for_deadline(8.5, table).small_steps == 2);
  const plan::Plan tight = p.for_deadline(8.49, table);
  REQUIRE(tight.small_steps == 4);
  REQUIRE(tight.quality == 41.0);
  REQUIRE(tight.predicted_seconds == 7.0);
  // Speed-up 2 needs 5 s: 0.8 (4 s) is the first table entry, not 0.7 (4.75 s, not in the table).
  REQUIRE(p.for_speedup(2.0).small_steps == 7);
  REQUIRE(p.for_speedup(2.0, table).small_steps == 8);
  REQUIRE(p.for_speedup(2.0, table).quality == 60.0);
  // Another metric of the same file.
  const plan::QualityTable pca = fashion_like("FD-pca");
  REQUIRE(p.for_deadline(100.0, pca).small_steps == 0);
  // Unreachable budget and fractions that are no whole number of the steps.
  REQUIRE_THROWS_WITH(p.for_deadline(2.0, table),
                      Catch::Contains("deadline (s) = 2") && Catch::Contains("takes 2.5 s"));
  const Planner three_steps = pair(3); // 0.2 * 3 etc. are not whole; 0.0 and 1.0 are
  REQUIRE_THROWS_WITH(three_steps.for_deadline(100.0, table),
                      Catch::Contains("quality table steps = 10") &&
                          Catch::Contains("must equal the planned steps, 3"));
  plan::QualityTable any_steps = table;
  any_steps.steps = 0; // a table that does not say where it was measured
  REQUIRE(three_steps.for_deadline(100.0, any_steps).small_steps == 0);
  plan::QualityTable odd = any_steps;
  odd.entries = {{0.2, 1.0}, {0.4, 2.0}};
  REQUIRE_THROWS_WITH(three_steps.for_deadline(100.0, odd), Catch::Contains("steps = 3"));
}

namespace {

// Routes n steps with a Deadline, advancing the fake clock by each step's model cost times the
// machine's speed factor (factor_from applies from step `slow_from` on).
std::vector<std::size_t> simulate(const plan::Deadline& deadline, FakeClock& clock, int n,
                                  const std::vector<double>& costs, int slow_from, double factor) {
  std::vector<std::size_t> route;
  for (int i = 0; i < n; ++i) {
    StepContext ctx;
    ctx.step = i;
    ctx.num_steps = n;
    const std::size_t k = deadline.route_step(ctx, 2); // as the stitcher's route() asks
    route.push_back(k);
    clock.now += costs[k] * (i >= slow_from ? factor : 1.0);
  }
  return route;
}

std::vector<std::size_t> small_then_large(int small, int n) {
  std::vector<std::size_t> r(static_cast<std::size_t>(n), 1);
  for (int i = 0; i < small; ++i)
    r[static_cast<std::size_t>(i)] = 0;
  return r;
}

} // namespace

TEST_CASE("plan: Deadline at the predicted speed routes as Planner::for_deadline", "[plan]") {
  FakeClock clock;
  const Planner p = pair(10); // T(m) = 10 - 0.75 m
  for (const double budget : {10.0, 9.0, 7.0, 6.99, 2.5}) {
    const plan::Deadline deadline(budget, p, [&clock] { return clock.now; });
    const double start = clock.now;
    const std::vector<std::size_t> route = simulate(deadline, clock, 10, {0.25, 1.0}, 10, 1.0);
    REQUIRE(route == small_then_large(p.for_deadline(budget).small_steps, 10));
    REQUIRE(deadline.routing() == route);
    REQUIRE(clock.now - start <= budget);
  }
  REQUIRE_THROWS_WITH(plan::Deadline(2.0, p, [&clock] { return clock.now; }),
                      Catch::Contains("deadline (s) = 2") && Catch::Contains("takes 2.5 s"));
  REQUIRE_THROWS_WITH(plan::Deadline(-1.0, p), Catch::Contains("deadline (s) = -1"));
  const plan::Deadline deadline(9.0, p, [&clock] { return clock.now; });
  StepContext ctx;
  ctx.num_steps = 10;
  ctx.step = 10;
  REQUIRE_THROWS_WITH(deadline.model_for(ctx, 2), Catch::Contains("step = 10"));
  ctx.num_steps = 11;
  ctx.step = 0;
  REQUIRE_THROWS_WITH(deadline.model_for(ctx, 2), Catch::Contains("steps = 11"));
  REQUIRE_THROWS_WITH(deadline.check(3), Catch::Contains("number of models = 3"));
}

TEST_CASE("plan: Deadline moves the switch when the machine slows down mid-run", "[plan]") {
  FakeClock clock;
  const Planner p = pair(10);
  // Budget 7: 4 small steps then 6 large at the predicted speed (7 s exactly).
  const plan::Deadline deadline(7.0, p, [&clock] { return clock.now; });
  // Twice as slow from step 2: at step i >= 3 the time left is 7.5 - 0.5 i against 2 (10 - i)
  // for the large model on every remaining step, first enough at i = 9.
  const std::vector<std::size_t> route = simulate(deadline, clock, 10, {0.25, 1.0}, 2, 2.0);
  REQUIRE(route == small_then_large(9, 10));
  REQUIRE(deadline.slowdown() == 2.0);
  REQUIRE(clock.now == 6.0);
  REQUIRE(clock.now <= 7.0);

  // Large first: the large model while the time left also covers the small one for the rest.
  clock.now = 0;
  const plan::Deadline large_first(
      7.0, p, [&clock] { return clock.now; }, plan::Deadline::Order::large_first);
  // At the predicted speed: large while 7 - i >= 1 + 0.25 (9 - i), i.e. i <= 5: 6 large steps
  // (6 s), then 4 small (1 s): the budget exactly.
  const std::vector<std::size_t> steady = simulate(large_first, clock, 10, {0.25, 1.0}, 10, 1.0);
  REQUIRE(steady == std::vector<std::size_t>{1, 1, 1, 1, 1, 1, 0, 0, 0, 0});
  REQUIRE(clock.now == 7.0);
  // Twice as slow from step 1: at step 2 the slowdown is 2; time left 7 - 3 = 4 against
  // 2 (1 + 0.25 * 7) = 5.5: the small model from step 2 on.
  clock.now = 0;
  const std::vector<std::size_t> slowed = simulate(large_first, clock, 10, {0.25, 1.0}, 1, 2.0);
  REQUIRE(slowed == std::vector<std::size_t>{1, 1, 0, 0, 0, 0, 0, 0, 0, 0});
  REQUIRE(clock.now == 1.0 + 2.0 + 8 * 0.5);
  REQUIRE(clock.now <= 7.0);
}

namespace {

// A fake model that advances the clock and writes a prediction that depends on its identity.
using TimedLinear = test::ClockedModel<FakeClock>;

} // namespace

TEST_CASE("plan: a Deadline run's records replay it bit for bit", "[plan]") {
  FakeClock clock;
  TimedLinear small{&clock, 0.25, 0.3f};
  TimedLinear large{&clock, 1.0, 0.7f};
  const Planner p = pair(10);
  const plan::Deadline deadline(7.0, p, [&clock] { return clock.now; });
  TrajectoryStitcher stitcher(small, large, deadline);
  SampleOptions options;
  options.steps = 10;
  Tensor x(2, {1, 2, 2});
  fill_initial_noise(x.view(), 7);
  Tensor y = x;
  const SampleResult run =
      sample(stitcher, DiscreteSchedule{}, DDIM{}, x.view(), NoCondition{}, options);
  REQUIRE(run.records.size() == 10);
  std::vector<std::size_t> models;
  for (const StepRecord& r : run.records)
    models.push_back(r.model);
  REQUIRE(models == small_then_large(4, 10)); // no solver time on the fake clock
  REQUIRE(deadline.routing() == models);

  const plan::Routing replay = plan::Routing::from_records(run.records);
  TrajectoryStitcher again(small, large, replay);
  const SampleResult second =
      sample(again, DiscreteSchedule{}, DDIM{}, y.view(), NoCondition{}, options);
  for (std::int64_t i = 0; i < x.numel(); ++i)
    REQUIRE(x[i] == y[i]);
  REQUIRE(second.records.size() == 10);
  // A routing of the wrong length or model is refused, naming it.
  REQUIRE_THROWS_WITH(plan::Routing({0, 2}).check(2), Catch::Contains("routing[1] = 2"));
  StepContext ctx;
  ctx.num_steps = 2;
  ctx.step = 2;
  REQUIRE_THROWS_WITH(plan::Routing({0, 1}).model_for(ctx, 2), Catch::Contains("step = 2"));
  ctx.num_steps = 3;
  REQUIRE_THROWS_WITH(plan::Routing({0, 1}).model_for(ctx, 2), Catch::Contains("steps = 3"));
  std::vector<StepRecord> partial(run.records.begin() + 1, run.records.end());
  REQUIRE_THROWS_WITH(plan::Routing::from_records(partial), Catch::Contains("records[0].step = 1"));
}
