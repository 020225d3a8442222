// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"

using namespace tstitch;

namespace {

/// A solver that keeps a copy of every raw output it is given and leaves x unchanged: lets tests
/// see exactly what the loop hands to solvers.
struct RecordingSolver {
  std::vector<std::vector<float>> raw, x0, eps;
  template <class Backend> void begin(Backend&, const Trajectory&, std::int64_t, Shape) {}
  template <class Backend> void update(Backend&, const SolverStep&, const ModelOutput& out, View) {
    raw.push_back(flatten(out.raw));
    x0.push_back(flatten(out.x0));
    eps.push_back(flatten(out.eps));
  }
  static std::vector<float> flatten(ConstView v) {
    std::vector<float> values;
    for (std::int64_t n = 0; n < v.batch(); ++n)
      for (std::int64_t c = 0; c < v.shape().channels; ++c)
        for (std::int64_t h = 0; h < v.shape().height; ++h)
          for (std::int64_t w = 0; w < v.shape().width; ++w)
            values.push_back(v.at(n, c, h, w));
    return values;
  }
};
static_assert(Solver<RecordingSolver>);

/// Writes `cond_value` (label 1) or `uncond_value` (label -1) + channel index into every channel.
struct ConstantModel {
  using condition_type = std::vector<int>;
  Prediction kind = Prediction::epsilon;
  Prediction prediction() const { return kind; }
  Shape latent_shape() const { return {4, 2, 2}; }
  std::vector<int> unconditional(const std::vector<int>& c) const {
    return std::vector<int>(c.size(), -1);
  }
  void predict(ConstView, const StepContext&, const std::vector<int>& labels, View out) const {
    for (std::int64_t n = 0; n < out.batch(); ++n)
      for (std::int64_t c = 0; c < out.shape().channels; ++c)
        for (std::int64_t p = 0; p < out.shape().plane(); ++p)
          out.at(n, c, 0, p) =
              (labels[static_cast<std::size_t>(n)] >= 0 ? 10.0f : 2.0f) + static_cast<float>(c);
  }
};

const Shape small_shape{4, 2, 2};

} // namespace

TEST_CASE("Guidance: standard guides every latent channel, DiT's form only the first three",
          "[sample][guidance]") {
  ConstantModel model;
  const DiscreteSchedule schedule;
  const std::vector<int> labels{1, 1};
  for (const bool learned_sigma : {false, true}) {
    model.kind = learned_sigma ? Prediction::epsilon_learned_sigma : Prediction::epsilon;
    for (const bool dit : {false, true}) {
      Tensor x(2, small_shape);
      RecordingSolver solver;
      SampleOptions options;
      options.steps = 1;
      options.guidance = dit ? Guidance::dit(4.0) : Guidance::standard(4.0);
      sample(model, schedule, solver, x, labels, options);
      REQUIRE(solver.raw.size() == 1);
      const std::vector<float>& raw = solver.raw[0];
      const std::int64_t channels = learned_sigma ? 8 : 4;
      REQUIRE(raw.size() == static_cast<std::size_t>(2 * channels * 4));
      for (std::int64_t n = 0; n < 2; ++n)
        for (std::int64_t c = 0; c < channels; ++c) {
          const float cond = 10.0f + static_cast<float>(c), uncond = 2.0f + static_cast<float>(c);
          const bool guided = c < (dit ? 3 : 4);
          const float expected = guided ? uncond + 4.0f * (cond - uncond) : cond;
          INFO("learned sigma " << learned_sigma << ", dit " << dit << ", channel " << c);
          CHECK(raw[static_cast<std::size_t>((n * channels + c) * 4)] == expected);
        }
    }
  }
}

TEST_CASE("Guidance needs an unconditional branch and sane channels", "[sample][errors]") {
  auto model = make_denoiser(Prediction::epsilon, small_shape,
                             [](ConstView, const StepContext&, const NoCondition&, View out) {
                               HostBackend{}.fill(out, 0.0f);
                             });
  const DiscreteSchedule schedule;
  Tensor x(1, small_shape);
  DDIM ddim;
  SampleOptions options;
  options.steps = 2;
  options.guidance = Guidance::standard(3.0);
  CHECK_THROWS_WITH(sample(model, schedule, ddim, x, NoCondition{}, options),
                    Catch::Contains("guidance scale = 3") && Catch::Contains("unconditional"));
  CHECK_NOTHROW(sample(model, schedule, ddim, x, NoCondition{}, NoCondition{}, options));
  options.guidance = Guidance{3.0, 5};
  CHECK_THROWS_WITH(sample(model, schedule, ddim, x, NoCondition{}, NoCondition{}, options),
                    Catch::Contains("guided_channels = 5"));
  options.guidance = Guidance::standard(NAN);
  CHECK_THROWS_AS(sample(model, schedule, ddim, x, NoCondition{}, NoCondition{}, options),
                  tstitch::invalid_argument);
}

TEST_CASE("The loop converts every prediction type into x0 and eps", "[sample]") {
  // Exact models of the same Gaussian data with each prediction type must hand the solver the
  // same x0 and eps (up to float32 rounding of the conversion).
  const Shape shape{2, 3, 3};
  analytic::DiagonalGaussian data{std::vector<double>(18, 0.3), std::vector<double>(18, 0.5)};
  const DiscreteSchedule schedule;
  std::vector<RecordingSolver> solvers;
  for (Prediction p : {Prediction::epsilon, Prediction::v, Prediction::sample, Prediction::flow,
                       Prediction::epsilon_learned_sigma}) {
    analytic::ExactDenoiser model(shape, data, p);
    Tensor x(2, shape);
    fill_initial_noise(x, 9);
    RecordingSolver solver;
    SampleOptions options;
    options.steps = 4;
    sample(model, schedule, solver, x, analytic::Labels{}, options);
    solvers.push_back(solver);
  }
  for (std::size_t k = 1; k < solvers.size(); ++k)
    for (std::size_t step = 0; step < 4; ++step)
      for (std::size_t e = 0; e < solvers[0].x0[step].size(); ++e) {
        INFO("prediction " << k << ", step " << step << ", element " << e);
        CHECK(solvers[k].x0[step][e] == Approx(solvers[0].x0[step][e]).margin(2e-3));
        CHECK(solvers[k].eps[step][e] == Approx(solvers[0].eps[step][e]).margin(2e-5));
      }
}

TEST_CASE("Callbacks: progress can cancel, preview sees x0, records say what ran", "[sample]") {
  analytic::ExactDenoiser model(
      small_shape, analytic::DiagonalGaussian{std::vector<double>(16, 1.0),
                                              std::vector<double>(16, 0.0)}); // x0 is 1
  const DiscreteSchedule schedule;
  Tensor x(3, small_shape);
  fill_initial_noise(x, 4);
  DDIM ddim;
  std::vector<int> seen_steps;
  int previews = 0;
  SampleOptions options;
  options.steps = 10;
  options.on_step = [&](const StepRecord& r) {
    seen_steps.push_back(r.step);
    return r.step < 3;
  };
  options.on_preview = [&](const StepRecord&, ConstView x0) {
    ++previews;
    CHECK(x0.batch() == 3);
    CHECK(x0.at(2, 3, 1, 1) == Approx(1.0).margin(1e-3)); // a point mass: x0 is known
  };
  const SampleResult result = sample(model, schedule, ddim, x, analytic::Labels{}, options);
  CHECK(result.cancelled);
  CHECK(result.records.size() == 4);
  CHECK(seen_steps == std::vector<int>{0, 1, 2, 3});
  CHECK(previews == 4);
}

TEST_CASE("Bad input raises clear errors", "[sample][errors]") {
  analytic::ExactDenoiser model(
      small_shape,
      analytic::DiagonalGaussian{std::vector<double>(16, 0.0), std::vector<double>(16, 1.0)});
  const DiscreteSchedule schedule;
  DDIM ddim;
  SampleOptions options;
  options.steps = 10;

  Tensor x(2, small_shape);
  options.steps = 0;
  CHECK_THROWS_WITH(sample(model, schedule, ddim, x, analytic::Labels{}, options),
                    Catch::Contains("steps = 0"));
  options.steps = 1001;
  CHECK_THROWS_AS(sample(model, schedule, ddim, x, analytic::Labels{}, options),
                  tstitch::invalid_argument);
  options.steps = 10;
  options.start_step = 10;
  CHECK_THROWS_WITH(sample(model, schedule, ddim, x, analytic::Labels{}, options),
                    Catch::Contains("start_step = 10"));
  options.start_step = 0;

  Tensor wrong(2, Shape{4, 2, 3});
  CHECK_THROWS_WITH(sample(model, schedule, ddim, wrong, analytic::Labels{}, options),
                    Catch::Contains("[2, 4, 2, 3]") && Catch::Contains("4, 2, 2"));

  x[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(sample(model, schedule, ddim, x, analytic::Labels{}, options),
                  tstitch::invalid_argument);
  CHECK_THROWS_WITH(sample(model, schedule, ddim, x, analytic::Labels{}, options),
                    Catch::Contains("flat index 5"));

  // A model that breaks down at step 3: numerical_error naming the step.
  auto breaking =
      make_denoiser(Prediction::epsilon, small_shape,
                    [](ConstView, const StepContext& ctx, const NoCondition&, View out) {
                      HostBackend{}.fill(out, ctx.step == 3 ? INFINITY : 0.1f);
                    });
  Tensor y(1, small_shape);
  CHECK_THROWS_AS(sample(breaking, schedule, ddim, y, NoCondition{}, options),
                  tstitch::numerical_error);
  Tensor z(1, small_shape);
  CHECK_THROWS_WITH(sample(breaking, schedule, ddim, z, NoCondition{}, options),
                    Catch::Contains("after step 3 of 10"));
  try {
    Tensor w(1, small_shape);
    sample(breaking, schedule, ddim, w, NoCondition{}, options);
  } catch (const tstitch::error& e) { // every tstitch exception is a tstitch::error
    CHECK(std::string(e.message()).find("NaN or Inf") != std::string::npos);
  }
}

TEST_CASE("A sample's noise does not depend on its batch or position", "[sample]") {
  // DDPM draws noise at every step; sample k must come out the same alone or in a batch.
  analytic::ExactDenoiser model(
      small_shape,
      analytic::DiagonalGaussian{std::vector<double>(16, 0.2), std::vector<double>(16, 0.7)});
  const DiscreteSchedule schedule;
  SampleOptions options;
  options.steps = 30;
  options.seed = 99;

  Tensor batch(5, small_shape);
  fill_initial_noise(batch, 123);
  DDPM ddpm;
  sample(model, schedule, ddpm, batch, analytic::Labels{}, options);

  Tensor single(1, small_shape);
  fill_initial_noise(single, 123, /*first_sample=*/3);
  options.first_sample = 3;
  DDPM fresh;
  sample(model, schedule, fresh, single, analytic::Labels{}, options);
  CHECK(std::memcmp(single.data(), &batch.at(3, 0, 0, 0), sizeof(float) * 16) == 0);
  CHECK(std::memcmp(single.data(), &batch.at(2, 0, 0, 0), sizeof(float) * 16) != 0);
}

TEST_CASE("One seed, options.seed, drives the initial latents and the step noise", "[sample]") {
  analytic::ExactDenoiser model(
      small_shape,
      analytic::DiagonalGaussian{std::vector<double>(16, 0.2), std::vector<double>(16, 0.7)});
  const DiscreteSchedule schedule;
  auto bytes_equal = [](const Tensor& a, const Tensor& b) {
    return std::memcmp(a.data(), b.data(), sizeof(float) * 2 * 16) == 0;
  };
  SampleOptions options;
  options.steps = 12;
  options.seed = 77;
  options.first_sample = 2;

  // fill_initial_noise(x, options) draws x_T from the run's seed and first sample...
  Tensor from_options(2, small_shape), explicit_seed(2, small_shape);
  fill_initial_noise(from_options, options);
  fill_initial_noise(explicit_seed, 77, 2);
  CHECK(bytes_equal(from_options, explicit_seed));
  fill_initial_noise(explicit_seed, 77, 0);
  CHECK_FALSE(bytes_equal(from_options, explicit_seed));

  // ...so one number reproduces a stochastic run and another number changes all of it.
  auto run = [&](std::uint64_t seed) {
    SampleOptions o = options;
    o.seed = seed;
    Tensor x(2, small_shape);
    fill_initial_noise(x, o);
    DDPM ddpm;
    sample(model, schedule, ddpm, x, analytic::Labels{}, o);
    return x;
  };
  CHECK(bytes_equal(run(77), run(77)));
  CHECK_FALSE(bytes_equal(run(77), run(78)));

  // The initial latents keep a seed of their own where wanted: the step noise alone changes.
  auto run_with_start = [&](std::uint64_t step_seed) {
    SampleOptions o = options;
    o.seed = step_seed;
    Tensor x(2, small_shape);
    fill_initial_noise(x, 77, 2);
    DDPM ddpm;
    sample(model, schedule, ddpm, x, analytic::Labels{}, o);
    return x;
  };
  CHECK(bytes_equal(run_with_start(77), run(77)));
  CHECK_FALSE(bytes_equal(run_with_start(5), run(77)));
}

TEST_CASE("sample() takes a temporary solver, as it takes a temporary schedule", "[sample]") {
  analytic::ExactDenoiser model(
      small_shape,
      analytic::DiagonalGaussian{std::vector<double>(16, 0.1), std::vector<double>(16, 0.4)});
  SampleOptions options;
  options.steps = 8;
  options.seed = 3;
  Tensor named(2, small_shape), temporary(2, small_shape);
  fill_initial_noise(named, options);
  fill_initial_noise(temporary, options);
  DDPM ddpm;
  sample(model, DiscreteSchedule{}, ddpm, named, analytic::Labels{}, options);
  const SampleResult result =
      sample(model, DiscreteSchedule{}, DDPM{}, temporary, analytic::Labels{}, options);
  CHECK(result.records.size() == 8);
  CHECK(std::memcmp(named.data(), temporary.data(), sizeof(float) * 2 * 16) == 0);
}

TEST_CASE("start_step continues a trajectory from noised latents", "[sample]") {
  // Running steps [4, 10) after add_noise at trajectory[4] equals the last six steps of a full
  // run that passed through the same latents.
  analytic::ExactDenoiser model(
      small_shape,
      analytic::DiagonalGaussian{std::vector<double>(16, -0.2), std::vector<double>(16, 0.3)});
  const DiscreteSchedule schedule;
  const Trajectory trajectory = schedule.trajectory(10);
  Tensor clean(2, small_shape), noise(2, small_shape);
  HostBackend{}.fill(clean, 0.5f);
  fill_initial_noise(noise, 8);
  Tensor x = clean;
  add_noise(x, noise, trajectory[4]);
  CHECK(x[0] == Approx(trajectory[4].alpha * 0.5 + trajectory[4].sigma * noise[0]));

  std::vector<int> steps;
  DDIM ddim;
  SampleOptions options;
  options.steps = 10;
  options.start_step = 4;
  options.on_step = [&](const StepRecord& r) {
    steps.push_back(r.step);
    return true;
  };
  const SampleResult result = sample(model, schedule, ddim, x, analytic::Labels{}, options);
  CHECK(steps == std::vector<int>{4, 5, 6, 7, 8, 9});
  CHECK(result.records.front().timestep == trajectory[4].timestep);
}
