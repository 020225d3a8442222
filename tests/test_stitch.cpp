// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;

namespace {

/// Counts, for every model, the steps a policy assigns to it when only step indices matter.
template <class Policy>
std::vector<int> count_steps(const Policy& policy, int n, std::size_t models) {
  std::vector<int> counts(models, 0);
  std::size_t previous = 0;
  for (int i = 0; i < n; ++i) {
    const std::size_t k = policy.model_for(StepContext{i, n, 0, {}}, models);
    REQUIRE(k >= previous); // segments are contiguous and in order
    previous = k;
    ++counts[k];
  }
  return counts;
}

using testing::bit_identical;

const Shape stitch_shape{3, 4, 4};

DiagonalGaussian stitch_gaussian(double mean_offset, double variance_scale) {
  return testing::varied_gaussian(stitch_shape, mean_offset, variance_scale);
}

} // namespace

TEST_CASE("StepFraction serves floor(r*n) steps for every r = 0.00..1.00 and n", "[stitch]") {
  for (int n : {1, 2, 10, 50, 100, 250}) {
    for (int percent = 0; percent <= 100; ++percent) {
      const int expected = percent * n / 100; // exact integer floor
      // Both ways a user writes the fraction; k * 0.01 is off by an ulp for many k.
      for (double r : {percent / 100.0, percent * 0.01}) {
        INFO("n = " << n << ", r = " << r);
        const std::vector<int> counts = count_steps(StepFraction::small_fraction(r), n, 2);
        CHECK(counts[0] == expected);
        CHECK(counts[1] == n - expected);
      }
    }
  }
}

TEST_CASE("StepFraction states 0.7 of 100 as 70 and 0.29 of 100 as 29", "[stitch]") {
  CHECK(count_steps(StepFraction::small_fraction(0.7), 100, 2)[0] == 70);
  CHECK(count_steps(StepFraction::small_fraction(0.29), 100, 2)[0] == 29);
  CHECK(std::floor(0.29 * 100) == 28); // the naive rule this replaces
}

TEST_CASE("StepFraction with three models uses cumulative boundaries", "[stitch]") {
  for (int n : {1, 2, 10, 50, 100, 250}) {
    for (int a = 0; a <= 10; ++a) {
      for (int b = 0; a + b <= 10; ++b) {
        const StepFraction policy({a / 10.0, b / 10.0, (10 - a - b) / 10.0});
        const int first = a * n / 10, second = (a + b) * n / 10;
        INFO("n = " << n << ", fractions " << a << "/" << b << "/" << 10 - a - b << " tenths");
        CHECK(count_steps(policy, n, 3) == std::vector<int>{first, second - first, n - second});
      }
    }
  }
}

TEST_CASE("StepFraction rejects bad fractions, naming them", "[stitch][errors]") {
  CHECK_THROWS_AS(StepFraction({0.5, 0.6}), tstitch::invalid_argument);
  CHECK_THROWS_WITH(StepFraction({0.5, 0.6}),
                    Catch::Contains("sum of fractions") && Catch::Contains("1.1"));
  CHECK_THROWS_WITH(StepFraction({-0.1, 1.1}), Catch::Contains("fractions[0]"));
  CHECK_THROWS_WITH(StepFraction({0.5, NAN}), Catch::Contains("fractions[1]"));
  CHECK_THROWS_WITH(StepFraction::small_fraction(1.5), Catch::Contains("small_fraction"));
  CHECK_THROWS_AS(StepFraction::small_fraction(-0.01), std::invalid_argument);
  CHECK_NOTHROW(StepFraction({1.0 / 3, 1.0 / 3, 1.0 / 3}));
}

TEST_CASE("PaperTimestep reproduces the official T-Stitch rule t/T >= 1 - r", "[stitch]") {
  // Expected counts computed with the official expression in Python (double precision):
  //   sum(t / 1000 >= (1 - r) for t in DDIM-n timesteps)
  struct Case {
    int n;
    double r;
    int small_steps;
  };
  const DiscreteSchedule schedule; // leading spacing: DDIM-100 visits t = 990, 980, ..., 0
  ExactDenoiser a(stitch_shape, stitch_gaussian(0, 1)), b(stitch_shape, stitch_gaussian(0, 1));
  for (const Case& c : {Case{100, 0.7, 69}, Case{100, 0.4, 40}, Case{100, 0.3, 30},
                        Case{100, 0.0, 0}, Case{100, 1.0, 100}, Case{50, 0.7, 34},
                        Case{50, 0.4, 20}, Case{10, 0.7, 6}, Case{10, 0.8, 8}}) {
    INFO("n = " << c.n << ", r = " << c.r);
    TrajectoryStitcher stitcher(a, b, PaperTimestep(c.r));
    const std::vector<int> counts = stitcher.steps_per_model(schedule.trajectory(c.n));
    CHECK(counts[0] == c.small_steps);
    CHECK(counts[1] == c.n - c.small_steps);
  }
  // The same ratio under StepFraction gives the stated 70.
  TrajectoryStitcher by_fraction(a, b, 0.7);
  CHECK(by_fraction.steps_per_model(schedule.trajectory(100))[0] == 70);
}

TEST_CASE("Threshold policies switch where the schedule crosses the threshold", "[stitch]") {
  const DiscreteSchedule schedule; // 10 steps: t = 900, 800, ..., 0
  const Trajectory trajectory = schedule.trajectory(10);
  const TimePoint at500 = schedule.point(500);
  ExactDenoiser a(stitch_shape, stitch_gaussian(0, 1)), b(stitch_shape, stitch_gaussian(0, 1)),
      c(stitch_shape, stitch_gaussian(0, 1));

  // Small serves t = 900..500: five steps, by every measure of "t >= 500".
  CHECK(TrajectoryStitcher(a, b, TimestepThreshold(500)).steps_per_model(trajectory) ==
        std::vector<int>{5, 5});
  CHECK(TrajectoryStitcher(a, b, SigmaThreshold(at500.ve_sigma())).steps_per_model(trajectory) ==
        std::vector<int>{5, 5});
  CHECK(TrajectoryStitcher(a, b, LogSnrThreshold(at500.log_snr())).steps_per_model(trajectory) ==
        std::vector<int>{5, 5});
  CHECK(TrajectoryStitcher(a, b, TimestepThreshold(550)).steps_per_model(trajectory) ==
        std::vector<int>{4, 6});

  // Three models: t >= 700 -> 0, 300 <= t < 700 -> 1, t < 300 -> 2.
  BasicStitcher<TimestepThreshold, ExactDenoiser, ExactDenoiser, ExactDenoiser> three(
      TimestepThreshold({700, 300}), a, b, c);
  CHECK(three.steps_per_model(trajectory) == std::vector<int>{3, 4, 3});
  BasicStitcher<LogSnrThreshold, ExactDenoiser, ExactDenoiser, ExactDenoiser> three_snr(
      LogSnrThreshold({schedule.point(700).log_snr(), schedule.point(300).log_snr()}), a, b, c);
  CHECK(three_snr.steps_per_model(trajectory) == std::vector<int>{3, 4, 3});
}

TEST_CASE("Stitcher construction errors name the offending values", "[stitch][errors]") {
  ExactDenoiser a(stitch_shape, stitch_gaussian(0, 1)), b(stitch_shape, stitch_gaussian(0, 1));
  ExactDenoiser other(Shape{3, 8, 8}, DiagonalGaussian{std::vector<double>(192, 0.0),
                                                       std::vector<double>(192, 1.0)});
  CHECK_THROWS_AS(TrajectoryStitcher(a, other, 0.5), tstitch::invalid_argument);
  CHECK_THROWS_WITH(TrajectoryStitcher(a, other, 0.5),
                    Catch::Contains("[3, 4, 4]") && Catch::Contains("[3, 8, 8]"));
  CHECK_THROWS_WITH(TrajectoryStitcher(a, b, TimestepThreshold({700, 300})),
                    Catch::Contains("number of models"));
  CHECK_THROWS_WITH(TrajectoryStitcher(a, b, TimestepThreshold({300, 700})),
                    Catch::Contains("must not increase"));
  CHECK_THROWS_WITH((Stitcher({0.5, 0.5}, a, b, a)), Catch::Contains("number of fractions"));
  CHECK_THROWS_WITH((BasicStitcher<PaperTimestep, ExactDenoiser, ExactDenoiser, ExactDenoiser>(
                        PaperTimestep(0.5), a, b, a)),
                    Catch::Contains("exactly 2"));
  CHECK_THROWS_WITH(TrajectoryStitcher(a, b, 0.5).set_guidance_scales({1.0}),
                    Catch::Contains("guidance_scales.size()"));

  struct OutOfRange {
    std::size_t model_for(const StepContext&, std::size_t) const { return 7; }
  };
  TrajectoryStitcher bad(a, b, OutOfRange{});
  CHECK_THROWS_WITH(bad.model_index(StepContext{}), Catch::Contains("chose model 7"));
}

TEST_CASE("Fraction 0 is bit-identical to the large model alone, 1 to the small", "[stitch]") {
  // Different data and different prediction types: the two models really differ.
  ExactDenoiser small(stitch_shape, stitch_gaussian(0.3, 2.0), Prediction::v);
  ExactDenoiser large(stitch_shape, stitch_gaussian(0.0, 1.0), Prediction::epsilon);
  const DiscreteSchedule schedule;
  const Labels labels(4, 0);

  auto run = [&](auto& denoiser, auto solver, double guidance) {
    Tensor x(4, stitch_shape);
    fill_initial_noise(x, 7);
    SampleOptions options;
    options.steps = 25;
    options.seed = 11;
    options.guidance = Guidance::standard(guidance);
    sample(denoiser, schedule, solver, x, labels, options);
    return x;
  };
  for (double guidance : {1.0, 3.0}) {
    TrajectoryStitcher none(small, large, 0.0), all(small, large, 1.0);
    INFO("guidance " << guidance);
    CHECK(bit_identical(run(none, DDIM{}, guidance), run(large, DDIM{}, guidance)));
    CHECK(bit_identical(run(all, DDIM{}, guidance), run(small, DDIM{}, guidance)));
    CHECK(bit_identical(run(none, DDPM{}, guidance), run(large, DDPM{}, guidance)));
    CHECK(bit_identical(run(all, DDPM{}, guidance), run(small, DDPM{}, guidance)));
    CHECK_FALSE(bit_identical(run(none, DDIM{}, guidance), run(all, DDIM{}, guidance)));
  }
}

TEST_CASE("Stitching a model with itself changes nothing, at any fraction", "[stitch]") {
  ExactDenoiser model(stitch_shape, stitch_gaussian(0.1, 1.0));
  const DiscreteSchedule schedule;
  Tensor reference(2, stitch_shape);
  fill_initial_noise(reference, 3);
  Tensor x = reference;
  DDPM ddpm;
  SampleOptions options;
  options.steps = 20;
  sample(model, schedule, ddpm, reference, Labels{}, options);
  for (double r : {0.1, 0.5, 0.9}) {
    TrajectoryStitcher stitcher(model, model, r);
    Tensor y = x;
    const SampleResult result = sample(stitcher, schedule, ddpm, y, Labels{}, options);
    CHECK(bit_identical(y, reference));
    CHECK(result.switches == 1);
  }
}

TEST_CASE("Records, switch observer and per-segment guidance report what ran", "[stitch]") {
  ExactDenoiser s(stitch_shape, stitch_gaussian(0.0, 1.0)),
      b(stitch_shape, stitch_gaussian(0.0, 1.0)), xl(stitch_shape, stitch_gaussian(0.0, 1.0));
  Stitcher stitcher({0.3, 0.3, 0.4}, s, b, xl);
  stitcher.set_names({"S", "B", "XL"}).set_guidance_scales({1.0, std::nullopt, 4.0});
  std::vector<SwitchEvent> switches;
  stitcher.on_switch([&](const SwitchEvent& e) { switches.push_back(e); });

  const DiscreteSchedule schedule;
  Tensor x(2, stitch_shape);
  fill_initial_noise(x, 1);
  DDIM ddim;
  SampleOptions options;
  options.steps = 10;
  options.guidance = Guidance::standard(2.0);
  const SampleResult result = sample(stitcher, schedule, ddim, x, Labels{0, 0}, options);

  REQUIRE(result.records.size() == 10);
  const Trajectory trajectory = schedule.trajectory(10);
  for (const StepRecord& r : result.records) {
    const std::size_t expected = r.step < 3 ? 0 : (r.step < 6 ? 1 : 2);
    CHECK(r.model == expected);
    CHECK(r.timestep == trajectory[r.step].timestep);
    CHECK(r.sigma == trajectory[r.step].sigma);
    CHECK(r.guidance_scale == (expected == 0 ? 1.0 : (expected == 1 ? 2.0 : 4.0)));
    CHECK(r.evaluations == (expected == 0 ? 1 : 2)); // no unconditional pass at scale 1
    CHECK(r.seconds >= 0);
  }
  CHECK(result.switches == 2);
  REQUIRE(switches.size() == 2);
  CHECK(switches[0].from == 0);
  CHECK(switches[0].to == 1);
  CHECK(switches[0].context.step == 3);
  CHECK(switches[1].from == 1);
  CHECK(switches[1].to == 2);
  CHECK(switches[1].context.step == 6);
  CHECK(stitcher.model_name(2) == "XL");
}

TEST_CASE("A reused stitcher starts each run afresh: switch events and direct predict()",
          "[stitch]") {
  // Three different models, so that the one that ran can be told from the output.
  ExactDenoiser s(stitch_shape, stitch_gaussian(0.0, 1.0)),
      b(stitch_shape, stitch_gaussian(0.5, 1.0)), xl(stitch_shape, stitch_gaussian(1.0, 0.5));
  const DiscreteSchedule schedule;
  DDIM ddim;
  SampleOptions options;
  options.steps = 10;
  // Runs a full trajectory, then one from step 4 (steps 4, 5: model 1; 6..9: model 2).
  auto switches_of_second_run = [&](auto& stitcher, bool run_first) {
    std::vector<SwitchEvent> switches;
    stitcher.on_switch([&](const SwitchEvent& e) { switches.push_back(e); });
    Tensor x(1, stitch_shape);
    fill_initial_noise(x, 2);
    if (run_first) {
      sample(stitcher, schedule, ddim, x, Labels{0}, options); // ends on model 2
      CHECK(switches.size() == 2);
      switches.clear();
    }
    SampleOptions later = options;
    later.start_step = 4;
    const SampleResult result = sample(stitcher, schedule, ddim, x, Labels{0}, later);
    CHECK(result.switches == 1);
    stitcher.on_switch(nullptr); // `switches` ends here
    return switches;
  };
  Stitcher fresh({0.3, 0.3, 0.4}, s, b, xl), reused({0.3, 0.3, 0.4}, s, b, xl);
  const std::vector<SwitchEvent> expected = switches_of_second_run(fresh, false);
  const std::vector<SwitchEvent> got = switches_of_second_run(reused, true);
  REQUIRE(expected.size() == 1);
  CHECK(expected[0].from == 1);
  CHECK(expected[0].to == 2);
  CHECK(expected[0].context.step == 6);
  REQUIRE(got.size() == expected.size());
  CHECK(got[0].from == expected[0].from);
  CHECK(got[0].to == expected[0].to);
  CHECK(got[0].context.step == expected[0].context.step);

  // predict() runs the model the loop routed the step to (ctx.serving), whatever the policy
  // says at the evaluation's point; a context built by hand, with no route in it, asks the policy:
  // step 9 of 100 belongs to model 0.
  StepContext ctx{9, 100, 0, schedule.trajectory(100)[9]};
  Tensor x(1, stitch_shape), out(1, stitch_shape), reference(1, stitch_shape);
  fill_initial_noise(x, 3);
  reused.predict(x, ctx, Labels{0}, out);
  s.predict(x, ctx, Labels{0}, reference);
  CHECK(bit_identical(out, reference));
  ctx.serving.model = 2;
  reused.predict(x, ctx, Labels{0}, out);
  xl.predict(x, ctx, Labels{0}, reference);
  CHECK(bit_identical(out, reference));
  ctx.serving.model = 3;
  CHECK_THROWS_WITH(reused.predict(x, ctx, Labels{0}, out),
                    Catch::Contains("serving.model = 3") && Catch::Contains("models, 3"));

  // A run that starts right after the step where a cancelled one stopped is a run of its own:
  // the loop, not the stitcher, knows where runs begin.
  options.on_step = [](const StepRecord& r) { return r.step < 5; }; // cancels after step 5
  Stitcher cancelled({0.3, 0.3, 0.4}, s, b, xl);
  std::vector<SwitchEvent> switches;
  cancelled.on_switch([&](const SwitchEvent& e) { switches.push_back(e); });
  Tensor y(1, stitch_shape);
  fill_initial_noise(y, 4);
  CHECK(sample(cancelled, schedule, ddim, y, Labels{0}, options).cancelled);
  REQUIRE(switches.size() == 1); // 0 -> 1 at step 3
  SampleOptions next;
  next.steps = 10;
  next.start_step = 6; // model 2 from its first step: no switch
  sample(cancelled, schedule, ddim, y, Labels{0}, next);
  CHECK(switches.size() == 1);
}

TEST_CASE("Models with different prediction types stitch into the same solution", "[stitch]") {
  // The same exact model, once predicting v and once flow velocity: stitched, the result must
  // match the unstitched one up to float32 rounding of the conversions.
  const DiagonalGaussian data = stitch_gaussian(0.2, 1.0);
  ExactDenoiser as_v(stitch_shape, data, Prediction::v),
      as_eps(stitch_shape, data, Prediction::epsilon);
  ExactDenoiser as_x0(stitch_shape, data, Prediction::sample);
  const DiscreteSchedule schedule;
  Tensor reference(2, stitch_shape);
  fill_initial_noise(reference, 5);
  Tensor x = reference;
  DDIM ddim;
  SampleOptions options;
  options.steps = 20;
  sample(as_eps, schedule, ddim, reference, Labels{}, options);
  Stitcher stitcher({0.4, 0.3, 0.3}, as_v, as_x0, as_eps);
  CHECK(stitcher.output_channels() == 3);
  CHECK_THROWS_WITH(stitcher.prediction(), Catch::Contains("predict different things"));
  sample(stitcher, schedule, ddim, x, Labels{}, options);
  for (std::int64_t i = 0; i < x.numel(); ++i)
    CHECK(x[i] == Approx(reference[i]).margin(2e-4));
}

TEST_CASE("A worse small model costs more quality the more steps it serves", "[stitch]") {
  // Large: exact for the data. Small: exact for data with shifted means and inflated variance,
  // the way a weaker model misplaces detail. The distance of the generated distribution to the
  // data must not fall as the small model's fraction grows (common random numbers: the same x_T
  // for every fraction).
  const DiagonalGaussian data = stitch_gaussian(0.0, 1.0);
  ExactDenoiser large(stitch_shape, data);
  ExactDenoiser small(stitch_shape, stitch_gaussian(0.25, 1.6));
  const DiscreteSchedule schedule;
  const int samples = 4000;
  Tensor noise(samples, stitch_shape);
  fill_initial_noise(noise, 2024);

  auto distance = [&](double fraction) {
    TrajectoryStitcher stitcher(small, large, fraction);
    Tensor x = noise;
    DDIM ddim;
    SampleOptions options;
    options.steps = 50;
    sample(stitcher, schedule, ddim, x, Labels{}, options);
    // Frechet distance between diagonal Gaussians fitted to the samples and the data.
    double fd = 0;
    for (std::int64_t e = 0; e < stitch_shape.numel(); ++e) {
      double sum = 0, sum2 = 0;
      for (int n = 0; n < samples; ++n) {
        const double v = x[n * stitch_shape.numel() + e];
        sum += v;
        sum2 += v * v;
      }
      const double mean = sum / samples, var = sum2 / samples - mean * mean;
      const auto u = static_cast<std::size_t>(e);
      fd += std::pow(mean - data.mean[u], 2) +
            std::pow(std::sqrt(var) - std::sqrt(data.variance[u]), 2);
    }
    return fd;
  };
  std::vector<double> fds;
  for (double r : {0.0, 0.2, 0.4, 0.6, 0.8, 1.0})
    fds.push_back(distance(r));
  // Statistical floor: ~2 * numel * var / samples for the large-only run.
  const double noise_floor = 4.0 * static_cast<double>(stitch_shape.numel()) * 0.5 / samples;
  for (std::size_t i = 1; i < fds.size(); ++i) {
    INFO("fraction " << 0.2 * static_cast<double>(i) << ": " << fds[i] << " after " << fds[i - 1]);
    CHECK(fds[i] >= fds[i - 1] - noise_floor);
  }
  CHECK(fds.back() > 10 * (fds.front() + noise_floor)); // the small model is clearly worse
  // ...yet serving the noisiest 20% of the steps costs (almost) nothing: the paper's claim.
  CHECK(fds[1] < 1.1 * fds[0] + noise_floor);
}
