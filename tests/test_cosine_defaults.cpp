// SPDX-License-Identifier: Apache-2.0
// ContinuousSchedule::cosine() with its default arguments must sample an epsilon model to finite
// values under DDIM and DPM-Solver++: at t = 1 (alpha = 0) the model's x0 is 0/0.
#include <catch2/catch.hpp>

#include <cmath>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/dpm_solver.hpp"

using namespace tstitch;

namespace {

/// The exact noise prediction for data N(0, 0.25 I): eps = sigma x / (alpha^2 0.25 + sigma^2).
auto gaussian_epsilon_model(Shape shape) {
  return make_denoiser(Prediction::epsilon, shape,
                       [](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
                         const double a = ctx.point.alpha, s = ctx.point.sigma;
                         const auto k = static_cast<float>(s / (a * a * 0.25 + s * s));
                         for (std::int64_t i = 0; i < x.numel(); ++i)
                           out.data()[i] = k * x.data()[i];
                       });
}

template <class Solver> void check_finite_samples(Solver solver) {
  const Shape shape{1, 4, 4};
  auto model = gaussian_epsilon_model(shape);
  Tensor x(3, shape);
  fill_initial_noise(x, 7);
  SampleOptions options;
  options.steps = 10;
  REQUIRE_NOTHROW(sample(model, ContinuousSchedule::cosine(), solver, x, NoCondition{}, options));
  double sum_squares = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    REQUIRE(std::isfinite(x[i]));
    sum_squares += static_cast<double>(x[i]) * x[i];
  }
  // The samples have about the data's variance, 0.25 (48 values).
  CHECK(sum_squares / static_cast<double>(x.numel()) == Approx(0.25).epsilon(0.6));
}

} // namespace

TEST_CASE("ContinuousSchedule::cosine() defaults start where alpha > 0", "[schedule]") {
  const ContinuousSchedule s = ContinuousSchedule::cosine();
  CHECK(s.t_start() == ContinuousSchedule::cosine_t_max);
  CHECK(s.trajectory(4)[0].alpha > 0.0);
  CHECK(std::isfinite(s.trajectory(4)[0].ve_sigma()));
}

TEST_CASE("ContinuousSchedule::cosine() defaults sample an epsilon model", "[schedule][sample]") {
  SECTION("DDIM") { check_finite_samples(DDIM{}); }
  SECTION("DPM-Solver++ 2M") { check_finite_samples(DPMSolverMultistep{}); }
}

TEST_CASE("ContinuousSchedule::cosine(1.0) is pure noise, refused by an epsilon model's x0",
          "[schedule][sample][errors]") {
  const Shape shape{1, 4, 4};
  auto model = gaussian_epsilon_model(shape);
  Tensor x(1, shape);
  fill_initial_noise(x, 7);
  SampleOptions options;
  options.steps = 4;
  DDIM ddim;
  CHECK_THROWS_AS(sample(model, ContinuousSchedule::cosine(1.0), ddim, x, NoCondition{}, options),
                  tstitch::error);
}
