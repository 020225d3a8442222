// SPDX-License-Identifier: Apache-2.0
// Per-sample stitching (RowStitcher): one batch whose rows follow their own routing must give
// each row exactly what that row gets sampled alone with its own routing, with exact analytic
// denoisers (whose rows are computed independently, so bits must match).
#include <catch2/catch.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/stitch/denoiser_ref.hpp"
#include "tstitch/stitch/row_policy.hpp"
#include "tstitch/stitch/row_stitcher.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;
using testing::bit_identical;

namespace {

const Shape row_shape{3, 4, 4};

ExactDenoiser row_mixture(double offset, double spread) {
  return testing::two_component_mixture(row_shape, offset, spread);
}

using Ref = DenoiserRef<Labels>;

template <class D, class V>
Tensor run(D& denoiser, V solver, std::int64_t batch, std::uint32_t first, const Labels& labels,
           SampleOptions options, SampleResult* result = nullptr) {
  Tensor x(batch, row_shape);
  options.first_sample = first;
  fill_initial_noise(x.view(), options.seed, first);
  SampleResult r = sample(denoiser, DiscreteSchedule{}, solver, x.view(), labels, options);
  if (result)
    *result = r;
  return x;
}

SampleOptions options_with(int steps, double guidance) {
  SampleOptions o;
  o.steps = steps;
  o.seed = 17;
  o.guidance = Guidance::standard(guidance);
  return o;
}

/// A mixed batch at per-row fractions against each row alone through TrajectoryStitcher.
template <class V> void check_rows_match_alone(V solver, double guidance) {
  ExactDenoiser small = row_mixture(0.3, 0.8), large = row_mixture(0.5, 1.0);
  const std::vector<double> fractions{0.0, 0.4, 0.4, 0.8, 1.0};
  const Labels labels{0, 1, 0, 1, 1};
  RowStitcher<Ref, PerRow<StepFraction>> rows(row_fractions(fractions), {small, large});
  const SampleOptions options = options_with(10, guidance);
  SampleResult result;
  const Tensor batch = run(rows, solver, 5, 0, labels, options, &result);
  for (std::size_t r = 0; r < fractions.size(); ++r) {
    CAPTURE(r, fractions[r]);
    TrajectoryStitcher alone(small, large, fractions[r]);
    const Tensor one = run(alone, solver, 1, static_cast<std::uint32_t>(r), {labels[r]}, options);
    CHECK(bit_identical(one, testing::copy_samples(batch, static_cast<std::int64_t>(r), 1)));
  }
  // Records: the model of each row at each step, as its fraction says.
  REQUIRE(result.records.size() == 10);
  CHECK(result.records[0].rows == std::vector<std::size_t>{1, 0, 0, 0, 0});
  CHECK(result.records[4].rows == std::vector<std::size_t>{1, 1, 1, 0, 0});
  CHECK(result.records[8].rows == std::vector<std::size_t>{1, 1, 1, 1, 0});
  CHECK(result.switches == 2); // steps 4 and 8 change some row's model
}

} // namespace

TEST_CASE("RowStitcher: each row of a mixed batch equals that row sampled alone",
          "[stitch][rows]") {
  SECTION("DDIM") { check_rows_match_alone(DDIM{}, 1.0); }
  SECTION("DDPM (stochastic), guided") { check_rows_match_alone(DDPM{}, 2.5); }
  SECTION("DPM-Solver++ multistep: history kept across each row's switch, guided") {
    check_rows_match_alone(DPMSolverMultistep{}, 2.0);
  }
}

TEST_CASE("RowStitcher: a row routed to one model throughout equals plain sampling",
          "[stitch][rows]") {
  ExactDenoiser a = row_mixture(0.3, 0.8), b = row_mixture(0.5, 1.0), c = row_mixture(-0.2, 1.2);
  const Labels labels{1, 0, 1, 0};
  const SampleOptions options = options_with(8, 1.5);
  SECTION("every row on one model") {
    RowStitcher<Ref, RowRule> rows(RowRule([](const StepContext&, std::int64_t) { return 1; }),
                                   {a, b});
    const Tensor batch = run(rows, DPMSolverMultistep{}, 4, 0, labels, options);
    const Tensor plain = run(b, DPMSolverMultistep{}, 4, 0, labels, options);
    CHECK(bit_identical(batch, plain));
  }
  SECTION("row r on model r % 3, three models") {
    RowStitcher<Ref, RowRule> rows(
        RowRule([](const StepContext&, std::int64_t r) { return static_cast<std::size_t>(r % 3); }),
        {a, b, c});
    SampleResult result;
    const Tensor batch = run(rows, DDPM{}, 4, 0, labels, options, &result);
    ExactDenoiser* models[] = {&a, &b, &c};
    for (std::int64_t r = 0; r < 4; ++r) {
      CAPTURE(r);
      const Tensor one = run(*models[r % 3], DDPM{}, 1, static_cast<std::uint32_t>(r),
                             {labels[static_cast<std::size_t>(r)]}, options);
      CHECK(bit_identical(one, testing::copy_samples(batch, r, 1)));
    }
    CHECK(result.switches == 0);
    CHECK(result.records[3].rows == std::vector<std::size_t>{0, 1, 2, 0});
  }
}

TEST_CASE("RowStitcher: three models by per-row fractions", "[stitch][rows]") {
  ExactDenoiser a = row_mixture(0.3, 0.8), b = row_mixture(0.5, 1.0), c = row_mixture(-0.2, 1.2);
  const std::vector<std::vector<double>> fractions{{0.2, 0.3, 0.5}, {0.0, 0.5, 0.5}, {1, 0, 0}};
  std::vector<StepFraction> policies;
  for (const auto& f : fractions)
    policies.emplace_back(f);
  RowStitcher<Ref, PerRow<StepFraction>> rows(PerRow<StepFraction>(policies), {a, b, c});
  const SampleOptions options = options_with(10, 1.0);
  const Labels labels{0, 1, 1};
  const Tensor batch = run(rows, DPMSolverMultistep{}, 3, 0, labels, options);
  for (std::size_t r = 0; r < fractions.size(); ++r) {
    CAPTURE(r);
    Stitcher alone(fractions[r], a, b, c);
    const Tensor one =
        run(alone, DPMSolverMultistep{}, 1, static_cast<std::uint32_t>(r), {labels[r]}, options);
    CHECK(bit_identical(one, testing::copy_samples(batch, static_cast<std::int64_t>(r), 1)));
  }
}

TEST_CASE("RowStitcher: errors name the values", "[stitch][rows]") {
  ExactDenoiser a = row_mixture(0.3, 0.8), b = row_mixture(0.5, 1.0);
  RowStitcher<Ref, PerRow<StepFraction>> rows(row_fractions({0.0, 0.5}), {a, b});
  Tensor x(2, row_shape);
  Tensor out(2, row_shape);
  fill_initial_noise(x.view(), 3);
  StepContext ctx{0, 10, 0, DiscreteSchedule{}.trajectory(10)[0]};

  SECTION("assignment length differs from the batch") {
    const std::vector<std::size_t> three{0, 1, 1};
    ctx.serving.rows = three;
    CHECK_THROWS_WITH(rows.predict(x.view(), ctx, Labels{0, 1}, out.view()),
                      Catch::Contains("serving.rows.size()") && Catch::Contains("3") &&
                          Catch::Contains("batch size, 2"));
  }
  SECTION("a model index out of range") {
    const std::vector<std::size_t> bad{0, 7};
    ctx.serving.rows = bad;
    CHECK_THROWS_WITH(rows.predict(x.view(), ctx, Labels{0, 1}, out.view()),
                      Catch::Contains("serving.rows[1]") && Catch::Contains("7") &&
                          Catch::Contains("number of models, 2"));
  }
  SECTION("a solver that resets its history at a switch") {
    DPMSolverMultistepOptions reset;
    reset.history = HistoryPolicy::reset;
    CHECK_THROWS_WITH(
        sample(rows, DiscreteSchedule{}, DPMSolverMultistep{reset}, x.view(), Labels{0, 1}),
        Catch::Contains("solver history = reset") && Catch::Contains("HistoryPolicy::keep"));
  }
  SECTION("a batch other than the policy's rows") {
    Tensor three(3, row_shape);
    fill_initial_noise(three.view(), 3);
    CHECK_THROWS_WITH(sample(rows, DiscreteSchedule{}, DDIM{}, three.view(), Labels{0, 1, 0}),
                      Catch::Contains("batch size") && Catch::Contains("3") &&
                          Catch::Contains("number of rows, 2"));
  }
  SECTION("a condition that is not one entry per row") {
    const std::vector<std::size_t> mixed{0, 1};
    ctx.serving.rows = mixed;
    CHECK_THROWS_WITH(rows.predict(x.view(), ctx, Labels{0, 1, 1}, out.view()),
                      Catch::Contains("condition size") && Catch::Contains("3") &&
                          Catch::Contains("batch size, 2"));
  }
  SECTION("a rule choosing a model that does not exist") {
    RowStitcher<Ref, RowRule> wild(RowRule([](const StepContext&, std::int64_t) { return 5; }),
                                   {a, b});
    CHECK_THROWS_WITH(sample(wild, DiscreteSchedule{}, DDIM{}, x.view(), Labels{0, 1}),
                      Catch::Contains("model 5") && Catch::Contains("row 0") &&
                          Catch::Contains("2 models"));
  }
  SECTION("models that predict different things") {
    ExactDenoiser v(row_shape, testing::varied_gaussian(row_shape, 0.1, 1.0), Prediction::v);
    using Stitch = RowStitcher<Ref, RowRule>;
    const auto build = [&] {
      return Stitch(RowRule([](const StepContext&, std::int64_t) { return 0; }), {a, v});
    };
    CHECK_THROWS_WITH(build(), Catch::Contains("predict the same thing"));
  }
  SECTION("a context built by hand is routed by the policy") {
    // No serving.rows: row 0 (fraction 0) is on the large model, row 1 on the small one.
    rows.predict(x.view(), ctx, Labels{0, 1}, out.view());
    Tensor expect(1, row_shape);
    b.predict(ConstView(x.view()).samples(0, 1), ctx, Labels{0}, expect.view());
    CHECK(bit_identical(expect, testing::copy_samples(out, 0, 1)));
    a.predict(ConstView(x.view()).samples(1, 1), ctx, Labels{1}, expect.view());
    CHECK(bit_identical(expect, testing::copy_samples(out, 1, 1)));
  }
}

namespace {

/// An exact denoiser that offers predict_guided and counts its calls and rows.
class GuidedCounting {
public:
  using condition_type = Labels;
  explicit GuidedCounting(const ExactDenoiser& inner) : inner_(&inner) {}
  [[nodiscard]] Prediction prediction() const { return inner_->prediction(); }
  [[nodiscard]] Shape latent_shape() const { return inner_->latent_shape(); }
  [[nodiscard]] Labels unconditional(const Labels& c) const { return inner_->unconditional(c); }
  void predict(ConstView x, const StepContext& ctx, const Labels& c, View out) {
    ++plain_calls;
    inner_->predict(x, ctx, c, out);
  }
  void predict_guided(ConstView x, const StepContext& ctx, const Labels& cond, const Labels& uncond,
                      View out_cond, View out_uncond) {
    ++guided_calls;
    rows += x.batch();
    inner_->predict(x, ctx, cond, out_cond);
    inner_->predict(x, ctx, uncond, out_uncond);
  }
  int plain_calls = 0;
  int guided_calls = 0;
  std::int64_t rows = 0;

private:
  const ExactDenoiser* inner_;
};

} // namespace

TEST_CASE("RowStitcher: predict_guided once per model on its rows, models without rows skipped",
          "[stitch][rows]") {
  ExactDenoiser small = row_mixture(0.3, 0.8), large = row_mixture(0.5, 1.0);
  const std::vector<double> fractions{0.0, 0.5, 0.5};
  RowStitcher<GuidedCounting, PerRow<StepFraction>> counted(
      row_fractions(fractions), {GuidedCounting(small), GuidedCounting(large)});
  RowStitcher<Ref, PerRow<StepFraction>> plain(row_fractions(fractions), {small, large});
  const SampleOptions options = options_with(4, 2.0);
  const Labels labels{0, 1, 1};
  const Tensor a = run(counted, DDIM{}, 3, 0, labels, options);
  const Tensor b = run(plain, DDIM{}, 3, 0, labels, options);
  CHECK(bit_identical(a, b));
  // Steps 0-1: rows 1, 2 on the small model, row 0 on the large; steps 2-3: all on the large.
  CHECK(counted.model(0).guided_calls == 2);
  CHECK(counted.model(0).rows == 4);
  CHECK(counted.model(1).guided_calls == 4);
  CHECK(counted.model(1).rows == 2 * 1 + 2 * 3);
  CHECK(counted.model(0).plain_calls + counted.model(1).plain_calls == 0);
}
