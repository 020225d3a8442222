// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/prediction.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;

// --- What models the concepts, and what does not ----------------------------------------------

namespace {

struct GoodModel {
  using condition_type = std::vector<int>;
  Prediction prediction() const { return Prediction::v; }
  Shape latent_shape() const { return {4, 32, 32}; }
  void predict(ConstView, const StepContext&, const std::vector<int>&, View) {}
};
struct NoConditionType {
  Prediction prediction() const { return Prediction::v; }
  Shape latent_shape() const { return {4, 32, 32}; }
  void predict(ConstView, const StepContext&, const int&, View) {}
};
struct WrongPredictionType {
  using condition_type = int;
  int prediction() const { return 0; }
  Shape latent_shape() const { return {4, 32, 32}; }
  void predict(ConstView, const StepContext&, const int&, View) {}
};
struct NoLatentShape {
  using condition_type = int;
  Prediction prediction() const { return Prediction::v; }
  void predict(ConstView, const StepContext&, const int&, View) {}
};
struct PredictTakesWrongCondition {
  using condition_type = int;
  Prediction prediction() const { return Prediction::v; }
  Shape latent_shape() const { return {4, 32, 32}; }
  void predict(ConstView, const StepContext&, const std::vector<float>&, View) {}
};
struct WritesNothing { // predict takes a ConstView output: cannot write its prediction
  using condition_type = int;
  Prediction prediction() const { return Prediction::v; }
  Shape latent_shape() const { return {4, 32, 32}; }
  void predict(ConstView, const StepContext&, const int&, ConstView) {}
  void predict(ConstView, const StepContext&, const int&, View) = delete;
};

} // namespace

static_assert(Denoiser<GoodModel>);
static_assert(!Denoiser<NoConditionType> && !has_condition_type<NoConditionType>);
static_assert(!Denoiser<WrongPredictionType> && !declares_prediction<WrongPredictionType>);
static_assert(!Denoiser<NoLatentShape> && !declares_latent_shape<NoLatentShape>);
static_assert(!Denoiser<PredictTakesWrongCondition> && !predicts<PredictTakesWrongCondition>);
static_assert(!Denoiser<WritesNothing>);
static_assert(!Denoiser<int>);
// Stitchers are denoisers themselves, and so are lambda wrappers.
static_assert(Denoiser<TrajectoryStitcher<GoodModel, GoodModel>>);
static_assert(Denoiser<Stitcher<GoodModel, GoodModel, GoodModel>>);
static_assert(Denoiser<decltype(make_denoiser(Prediction::epsilon, Shape{},
                                              [](ConstView, const StepContext&, const NoCondition&,
                                                 View) {}))>);
// Policies and solvers.
static_assert(StitchPolicy<StepFraction> && StitchPolicy<PaperTimestep> &&
              StitchPolicy<TimestepThreshold> && StitchPolicy<SigmaThreshold> &&
              StitchPolicy<LogSnrThreshold>);
static_assert(!StitchPolicy<int>);
static_assert(Solver<DDIM> && !Solver<GoodModel>);

// --- Tensors and views -------------------------------------------------------------------------

TEST_CASE("Views index [N, C, H, W] and slice samples and channels", "[core]") {
  Tensor t(2, Shape{3, 2, 2});
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t[i] = static_cast<float>(i);
  const View v = t.view();
  CHECK(v.at(1, 2, 1, 0) == 12 + 8 + 2);
  CHECK(v.contiguous());

  const View second = v.samples(1, 1);
  CHECK(second.batch() == 1);
  CHECK(second.at(0, 0, 0, 0) == 12);

  const View tail = v.channels(1, 2); // channels 1..2 of both samples: strided
  CHECK(tail.shape() == Shape{2, 2, 2});
  CHECK(tail.batch_stride() == 12);
  CHECK_FALSE(tail.contiguous());
  CHECK(tail.at(1, 0, 0, 0) == 16);
  CHECK(tail.at(0, 1, 1, 1) == 11);

  CHECK_THROWS_WITH(v.channels(2, 2), Catch::Contains("channels(first, count) = 2, 2"));
  CHECK_THROWS_AS(v.samples(1, 2), tstitch::invalid_argument);
  CHECK_THROWS_WITH(Tensor(-1, Shape{1, 1, 1}), Catch::Contains("batch = -1"));
}

TEST_CASE("Host backend element-wise operations", "[core]") {
  const HostBackend backend;
  const Shape shape{2, 3, 1};
  Tensor a(2, shape), b(2, shape), c(2, shape), d(2, shape), out(2, shape);
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    a[i] = static_cast<float>(i);
    b[i] = 1.0f;
    c[i] = static_cast<float>(-i);
    d[i] = 0.5f;
  }
  backend.combine(out, Term{2.0f, a}, Term{3.0f, b}, Term{0.5f, c}, Term{-4.0f, d});
  for (std::int64_t i = 0; i < a.numel(); ++i)
    CHECK(out[i] == Approx(2.0 * i + 3.0 - 0.5 * i - 2.0));

  backend.combine(a, Term{-1.0f, a}); // out may alias an input
  CHECK(a[5] == -5.0f);

  // Strided views on both sides: channel 1 of c into channel 0 of out.
  backend.combine(View(out).channels(0, 1), Term{1.0f, ConstView(c).channels(1, 1)});
  CHECK(out.at(1, 0, 2, 0) == c.at(1, 1, 2, 0));
  CHECK(out.at(1, 1, 2, 0) == Approx(2.0 * 11 + 3.0 - 0.5 * 11 - 2.0)); // untouched

  backend.map(
      out, [](float x, float y) { return x * y; }, ConstView(b), ConstView(d));
  CHECK(out[3] == 0.5f);

  CHECK_THROWS_WITH(backend.combine(out, Term{1.0f, ConstView(View(a).channels(0, 1))}),
                    Catch::Contains("combine input shape") && Catch::Contains("[2, 1, 3, 1]"));

  CHECK(backend.find_nonfinite(out) == -1);
  out[4] = std::numeric_limits<float>::infinity();
  CHECK(backend.find_nonfinite(out) == 4);
  CHECK(backend.find_nonfinite(ConstView(out).channels(1, 1)) == 1); // flat index in the view
}

TEST_CASE("Gaussian fill keys rows by sample index, whatever the batch", "[core]") {
  const HostBackend backend;
  const Shape shape{4, 3, 3};
  Tensor batch(6, shape), single(1, shape);
  backend.fill_normal(batch, NoiseKey{77, 10, 4, stream_solver});
  backend.fill_normal(single, NoiseKey{77, 13, 4, stream_solver});
  for (std::int64_t e = 0; e < shape.numel(); ++e)
    CHECK(single[e] == batch.at(3, 0, 0, 0 + e));
  // A strided destination gets the same per-sample values in its rows.
  Tensor wide(2, Shape{8, 3, 3});
  backend.fill_normal(View(wide).channels(4, 4), NoiseKey{77, 13, 4, stream_solver});
  CHECK(wide.at(0, 4, 0, 0) == single[0]);
}

// --- Prediction conversions --------------------------------------------------------------------

TEST_CASE("Prediction conversions recover x0 and eps exactly", "[core]") {
  // Pick x0 and eps, form x_t and each raw prediction by its definition, and convert back.
  const double x0 = 0.37, eps = -1.21;
  for (const auto& [alpha, sigma] : {std::pair{0.8, 0.6}, std::pair{0.995, 0.0998749},
                                     std::pair{0.3, 0.7}, std::pair{0.05, 0.9987492}}) {
    const double x = alpha * x0 + sigma * eps;
    struct Case {
      Prediction p;
      double raw;
    };
    for (const Case& c :
         {Case{Prediction::epsilon, eps}, Case{Prediction::epsilon_learned_sigma, eps},
          Case{Prediction::v, alpha * eps - sigma * x0}, Case{Prediction::sample, x0},
          Case{Prediction::flow, eps - x0}}) {
      const PredictionConversion k = conversion(c.p, alpha, sigma);
      INFO(c.p << " at alpha " << alpha << ", sigma " << sigma);
      CHECK(k.x0_from_x * x + k.x0_from_m * c.raw == Approx(x0).epsilon(1e-12));
      CHECK(k.eps_from_x * x + k.eps_from_m * c.raw == Approx(eps).epsilon(1e-12));
    }
  }
  CHECK(output_channels(Prediction::epsilon_learned_sigma, 4) == 8);
  CHECK(output_channels(Prediction::flow, 4) == 4);
}

TEST_CASE("Errors derive from both tstitch::error and the standard types", "[core][errors]") {
  try {
    throw_invalid_argument("steps", 0, "must be at least 1");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "tstitch: steps = 0: must be at least 1");
    CHECK(dynamic_cast<const tstitch::error*>(&e) != nullptr);
  }
  CHECK_THROWS_AS(throw numerical_error("x"), std::runtime_error);
  CHECK_THROWS_AS(throw numerical_error("x"), tstitch::runtime_error);
}
