// SPDX-License-Identifier: Apache-2.0
// The run-time forms of stitching: DenoiserRef (any model type as one type), AnyPolicy and
// AnySchedule (any rule and schedule as one type), and RuntimeStitcher (models chosen at run
// time). cuda::DeviceSampler is built from exactly these, so what is proven here on the host holds
// for the device loop's routing: each must be bit-identical to the concrete types it wraps.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/any_schedule.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/flow.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/euler.hpp"
#include "tstitch/solver/euler_ancestral.hpp"
#include "tstitch/solver/heun.hpp"
#include "tstitch/solver/lcm.hpp"
#include "tstitch/solver/unipc.hpp"
#include "tstitch/stitch/denoiser_ref.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/gaussian_problems.hpp"
#include "support/sample_variant.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;

namespace {

using testing::bit_identical;

const Shape runtime_shape{3, 4, 4};

DiagonalGaussian runtime_gaussian(double mean_offset, double variance_scale) {
  return testing::varied_gaussian(runtime_shape, mean_offset, variance_scale);
}

/// Samples two rows from seed-`seed` noise with DDIM-like `solver`: the latents and the result.
template <class D, class SolverT>
std::pair<Tensor, SampleResult> sample_rows(D& denoiser, SolverT solver, int steps, double guidance,
                                            std::uint64_t seed) {
  Tensor x(2, runtime_shape);
  fill_initial_noise(x.view(), seed);
  SampleOptions options;
  options.steps = steps;
  options.guidance = Guidance::standard(guidance);
  SampleResult result =
      sample(denoiser, DiscreteSchedule{}, solver, x.view(), Labels{0, 0}, options);
  return {std::move(x), std::move(result)};
}

/// A model of another type than ExactDenoiser, with a name of its own and no unconditional():
/// it forwards to an ExactDenoiser, so its numbers are known.
class NamedModel {
public:
  using condition_type = Labels;
  NamedModel(const ExactDenoiser& inner, std::string name)
      : inner_(&inner), name_(std::move(name)) {}
  [[nodiscard]] Prediction prediction() const { return inner_->prediction(); }
  [[nodiscard]] Shape latent_shape() const { return inner_->latent_shape(); }
  [[nodiscard]] std::string model_name(std::size_t) const { return name_; }
  void predict(ConstView x, const StepContext& ctx, const Labels& c, View out) {
    inner_->predict(x, ctx, c, out);
  }

private:
  const ExactDenoiser* inner_;
  std::string name_;
};

/// A learned-sigma model: 2C output channels, the extra ones constant.
struct LearnedSigmaModel {
  using condition_type = Labels;
  [[nodiscard]] Prediction prediction() const { return Prediction::epsilon_learned_sigma; }
  [[nodiscard]] Shape latent_shape() const { return runtime_shape; }
  void predict(ConstView, const StepContext&, const Labels&, View out) {
    for (std::int64_t i = 0; i < out.batch() * out.sample_numel(); ++i)
      out.data()[i] = 0.25f;
  }
};

using Solvers =
    std::variant<DDIM, DDPM, Euler, EulerAncestral, Heun, DPMSolverMultistep, UniPC, LCM>;

struct RunCase {
  const char* name;
  Solvers solver;
  AnySchedule schedule = DiscreteSchedule{};
  AnyPolicy rule = StepFraction({0.3, 0.3, 0.4});
  double guidance = 1.0;
  int steps = 20;
  /// Model 0 predicts flow instead of epsilon: a flow schedule starts at alpha = 0, where an
  /// epsilon prediction says nothing about x0 (sampling stops there with a numerical_error).
  bool flow = false;
};

struct Run {
  Tensor x;
  SampleResult result;
  std::vector<SwitchEvent> switches;
};

template <class Stitch> Run run_case(Stitch& stitcher, const RunCase& c) {
  Run run{Tensor(3, runtime_shape), {}, {}};
  stitcher.set_guidance_scales({std::nullopt, 1.0, std::nullopt});
  stitcher.on_switch([&](const SwitchEvent& e) { run.switches.push_back(e); });
  fill_initial_noise(run.x.view(), 5);
  SampleOptions options;
  options.steps = c.steps;
  options.seed = 1126;
  options.guidance = Guidance::standard(c.guidance);
  run.result =
      testing::sample_with(stitcher, c.schedule, c.solver, run.x.view(), Labels{0, 0, 0}, options);
  return run;
}

} // namespace

TEST_CASE("DenoiserRef forwards every member the sampling loop asks for", "[stitch][runtime]") {
  ExactDenoiser exact(runtime_shape, runtime_gaussian(0.2, 1.5), Prediction::v);
  NamedModel named(exact, "named");
  LearnedSigmaModel learned;
  const DenoiserRef<Labels> a(exact), b(named), c(learned);

  CHECK(a.prediction() == Prediction::v);
  CHECK(a.latent_shape() == runtime_shape);
  CHECK(a.output_channels() == runtime_shape.channels);
  CHECK(c.output_channels() == 2 * runtime_shape.channels);
  CHECK(a.model_name(3) == "model 3");
  CHECK(b.model_name(0) == "named");
  REQUIRE(a.unconditional(Labels{1, 2}).has_value());
  CHECK(*a.unconditional(Labels{1, 2}) == exact.unconditional(Labels{1, 2}));
  CHECK_FALSE(b.unconditional(Labels{1, 2}).has_value());
  CHECK(unconditional_of(a, Labels{4}) == std::optional<Labels>(exact.unconditional(Labels{4})));
  CHECK_FALSE(unconditional_of(b, Labels{4}).has_value());
  CHECK(a.address() == &exact);
  CHECK_FALSE(a.composite());

  // A copy, and a conversion from a class derived from DenoiserRef (as cuda::DeviceDenoiserRef
  // is), refer to the model itself, never to the reference they came from.
  struct TaggedRef : DenoiserRef<Labels> {
    explicit TaggedRef(ExactDenoiser& m) : DenoiserRef<Labels>(m) {}
  };
  TaggedRef tagged(exact);
  const DenoiserRef<Labels> from_tagged = tagged;
  CHECK(from_tagged.address() == &exact);
  const DenoiserRef<Labels> copy = a;
  CHECK(copy.address() == &exact);
  static_assert(!std::is_constructible_v<DenoiserRef<Labels>, const NamedModel&>,
                "a const model cannot be referred to (predict may change it)");
  static_assert(!std::is_constructible_v<DenoiserRef<NoCondition>, ExactDenoiser&>,
                "the condition types must match");

  SECTION("sampling through the reference is sampling the model, guidance included") {
    for (double guidance : {1.0, 2.5}) {
      DenoiserRef<Labels> ref(exact);
      const auto [direct, r1] = sample_rows(exact, DDPM{}, 15, guidance, 9);
      const auto [through, r2] = sample_rows(ref, DDPM{}, 15, guidance, 9);
      INFO("guidance " << guidance);
      CHECK(bit_identical(direct, through));
      CHECK(r1.records.size() == r2.records.size());
      CHECK(r2.records[0].evaluations == (guidance == 1.0 ? 1 : 2));
    }
  }

  SECTION("a model without unconditional() cannot be guided, with the usual error") {
    DenoiserRef<Labels> ref(named);
    Tensor x(1, runtime_shape);
    fill_initial_noise(x.view(), 1);
    SampleOptions options;
    options.guidance = Guidance::standard(2.0);
    DDIM ddim;
    CHECK_THROWS_WITH(sample(ref, DiscreteSchedule{}, ddim, x.view(), Labels{0}, options),
                      Catch::Contains("needs an unconditional condition"));
  }

  SECTION("a reference to a stitcher keeps its routing") {
    ExactDenoiser small(runtime_shape, runtime_gaussian(0.3, 2.0), Prediction::epsilon);
    TrajectoryStitcher stitcher(small, exact, 0.4);
    DenoiserRef<Labels> ref(stitcher);
    const auto [direct, r1] = sample_rows(stitcher, DDIM{}, 10, 1.0, 4);
    const auto [through, r2] = sample_rows(ref, DDIM{}, 10, 1.0, 4);
    CHECK(bit_identical(direct, through));
    CHECK(r2.switches == 1);
    for (std::size_t i = 0; i < r1.records.size(); ++i)
      CHECK(r2.records[i].model == r1.records[i].model);
  }
}

namespace {

/// A model that counts its calls and those whose context carried the loop's route.
struct RouteProbe {
  using condition_type = Labels;
  [[nodiscard]] Prediction prediction() const { return Prediction::epsilon; }
  [[nodiscard]] Shape latent_shape() const { return runtime_shape; }
  void predict(ConstView, const StepContext& ctx, const Labels&, View out) {
    ++calls;
    routed += ctx.serving.model.has_value() ? 1 : 0;
    for (std::int64_t i = 0; i < out.batch() * out.sample_numel(); ++i)
      out.data()[i] = 0.0f;
  }
  int calls = 0, routed = 0;
};

} // namespace

TEST_CASE("The loop routes each step once and hands the route to the stitcher in the context",
          "[stitch][runtime]") {
  // The route is the stitcher's: a plain model sees none, directly, through a DenoiserRef or as
  // one of a stitch's models (which may itself be a stitcher deciding on its own).
  RouteProbe plain;
  DenoiserRef<Labels> ref(plain);
  (void)sample_rows(plain, DDIM{}, 4, 1.0, 1);
  (void)sample_rows(ref, DDIM{}, 4, 1.0, 1);
  CHECK(plain.calls == 8);
  CHECK(plain.routed == 0);

  RouteProbe a, b;
  TrajectoryStitcher stitcher(a, b, 0.5);
  std::vector<SwitchEvent> events;
  stitcher.on_switch([&](const SwitchEvent& e) { events.push_back(e); });
  (void)sample_rows(stitcher, DDIM{}, 4, 1.0, 1);
  CHECK(a.calls == 2);
  CHECK(b.calls == 2);
  CHECK(a.routed + b.routed == 0);

  // The switch the loop detects reaches the observer through a reference, once per run.
  DenoiserRef<Labels> to_stitcher(stitcher);
  const auto [x, result] = sample_rows(to_stitcher, DDIM{}, 4, 1.0, 1);
  CHECK(result.switches == 1);
  REQUIRE(events.size() == 2);
  CHECK(events[1].from == 0);
  CHECK(events[1].to == 1);
  CHECK(events[1].context.step == 2);
  CHECK(events[1].context.serving.model == std::optional<std::size_t>(1));
}

TEST_CASE("AnySchedule is the schedule it holds, number for number", "[stitch][runtime]") {
  auto same = [](const auto& concrete) {
    const AnySchedule any = concrete;
    for (int n : {1, 4, 7, 50}) {
      const Trajectory a = concrete.trajectory(n), b = any.trajectory(n);
      REQUIRE(a.points.size() == b.points.size());
      CHECK(a.num_train_timesteps == b.num_train_timesteps);
      for (std::size_t i = 0; i < a.points.size(); ++i) {
        CHECK(a.points[i].timestep == b.points[i].timestep);
        CHECK(a.points[i].alpha == b.points[i].alpha);
        CHECK(a.points[i].sigma == b.points[i].sigma);
      }
    }
    // Model times inside every schedule here's range (flow and continuous time run to 1 or to
    // num_train_timesteps; both are fine at these points).
    for (double t : {0.0, 0.25, 0.5, 1.0}) {
      CHECK(any.point(t).alpha == concrete.point(t).alpha);
      CHECK(any.point(t).sigma == concrete.point(t).sigma);
    }
    for (double s : {0.01, 1.0, 80.0})
      CHECK(any.timestep_at(s) == concrete.timestep_at(s));
  };
  SECTION("DiscreteSchedule") { same(DiscreteSchedule{}); }
  SECTION("DiscreteSchedule, karras sigmas") {
    DiscreteScheduleOptions o;
    o.sigma_spacing = SigmaSpacing::karras;
    same(DiscreteSchedule(o));
  }
  SECTION("FlowMatchSchedule, shift 3") {
    same(FlowMatchSchedule(FlowMatchScheduleOptions{.shift = 3.0}));
  }
  SECTION("LCMSchedule") { same(LCMSchedule{}); }
  SECTION("ContinuousSchedule::cosine") { same(ContinuousSchedule::cosine(/*t_start=*/1.0)); }
  SECTION("errors are the held schedule's") {
    const AnySchedule any = DiscreteSchedule{};
    CHECK_THROWS_WITH(any.trajectory(0), Catch::Contains("steps"));
  }
}

TEST_CASE("AnyPolicy is the policy it holds, and forwards check()", "[stitch][runtime]") {
  struct EveryOther { // a user's policy, without check()
    std::size_t model_for(const StepContext& ctx, std::size_t k) const {
      return static_cast<std::size_t>(ctx.step) % k;
    }
  };
  const Trajectory trajectory = DiscreteSchedule{}.trajectory(100);
  auto same = [&](const auto& policy, std::size_t k) {
    const AnyPolicy any = policy;
    for (int i = 0; i < trajectory.steps(); ++i) {
      const StepContext ctx{i, trajectory.steps(), 0, trajectory[i]};
      if (any.model_for(ctx, k) != policy.model_for(ctx, k))
        return false;
    }
    return true;
  };
  CHECK(same(StepFraction({0.3, 0.3, 0.4}), 3));
  CHECK(same(PaperTimestep(0.7), 2));
  CHECK(same(TimestepThreshold({700, 300}), 3));
  CHECK(same(SigmaThreshold(2.0), 2));
  CHECK(same(LogSnrThreshold(-1.0), 2));
  CHECK(same(EveryOther{}, 3));

  CHECK_THROWS_WITH(AnyPolicy(PaperTimestep(0.5)).check(3), Catch::Contains("exactly 2"));
  CHECK_THROWS_WITH(AnyPolicy(StepFraction({0.5, 0.5})).check(3),
                    Catch::Contains("number of fractions"));
  CHECK_NOTHROW(AnyPolicy(EveryOther{}).check(5));
}

TEST_CASE("RuntimeStitcher over DenoiserRef samples bit-identically to BasicStitcher",
          "[stitch][runtime]") {
  // Three models of two types, with different data and prediction types.
  ExactDenoiser s(runtime_shape, runtime_gaussian(0.3, 2.0), Prediction::epsilon);
  ExactDenoiser s_flow(runtime_shape, runtime_gaussian(0.3, 2.0), Prediction::flow);
  ExactDenoiser b_inner(runtime_shape, runtime_gaussian(0.1, 1.2), Prediction::v);
  NamedModel b(b_inner, "B");
  ExactDenoiser xl(runtime_shape, runtime_gaussian(0.0, 1.0), Prediction::sample);

  DPMSolverMultistepOptions reset;
  reset.history = HistoryPolicy::reset;
  const RunCase cases[] = {
      {"DDIM", DDIM{}},
      {"DDPM (noise), guidance 2", DDPM{}, DiscreteSchedule{}, StepFraction({0.3, 0.3, 0.4}), 2.0},
      {"Euler", Euler{}},
      {"Euler ancestral (noise), guidance 3", EulerAncestral{}, DiscreteSchedule{},
       StepFraction({0.3, 0.3, 0.4}), 3.0},
      {"Heun, timestep thresholds", Heun{}, DiscreteSchedule{}, TimestepThreshold({700, 300})},
      {"DPM-Solver++ 2M, history reset", DPMSolverMultistep(reset)},
      {"UniPC, guidance 2", UniPC{}, DiscreteSchedule{}, StepFraction({0.3, 0.3, 0.4}), 2.0},
      {"LCM on its schedule", LCM{}, LCMSchedule{}, StepFraction({0.25, 0.25, 0.5}), 1.0, 4},
      {"Euler on a flow schedule, sigma thresholds", Euler{},
       FlowMatchSchedule(FlowMatchScheduleOptions{.shift = 3.0}), SigmaThreshold({4.0, 1.0}), 1.0,
       20, true},
  };
  for (const RunCase& c : cases) {
    INFO("case: " << c.name);
    ExactDenoiser& first = c.flow ? s_flow : s;
    BasicStitcher<AnyPolicy, ExactDenoiser, NamedModel, ExactDenoiser> fixed(c.rule, first, b, xl);
    RuntimeStitcher<DenoiserRef<Labels>, AnyPolicy> runtime(c.rule, {first, b, xl});
    const Run expected = run_case(fixed, c);
    const Run got = run_case(runtime, c);
    CHECK(std::isfinite(expected.x[0]));
    CHECK(bit_identical(expected.x, got.x));
    CHECK(got.result.switches == expected.result.switches);
    CHECK(expected.result.switches == 2);
    REQUIRE(got.result.records.size() == expected.result.records.size());
    for (std::size_t i = 0; i < got.result.records.size(); ++i) {
      INFO("step " << i);
      CHECK(got.result.records[i].model == expected.result.records[i].model);
      CHECK(got.result.records[i].evaluations == expected.result.records[i].evaluations);
      CHECK(got.result.records[i].guidance_scale == expected.result.records[i].guidance_scale);
    }
    REQUIRE(got.switches.size() == expected.switches.size());
    for (std::size_t i = 0; i < got.switches.size(); ++i) {
      CHECK(got.switches[i].from == expected.switches[i].from);
      CHECK(got.switches[i].to == expected.switches[i].to);
      CHECK(got.switches[i].context.step == expected.switches[i].context.step);
    }
  }
}

TEST_CASE("RuntimeStitcher names its models and its errors name the offending values",
          "[stitch][runtime][errors]") {
  ExactDenoiser a(runtime_shape, runtime_gaussian(0, 1)), c(runtime_shape, runtime_gaussian(0, 1));
  NamedModel b(a, "B");
  ExactDenoiser other(Shape{3, 8, 8}, DiagonalGaussian{std::vector<double>(192, 0.0),
                                                       std::vector<double>(192, 1.0)});
  using Runtime = RuntimeStitcher<DenoiserRef<Labels>, AnyPolicy>;

  Runtime stitcher(StepFraction({0.5, 0.5}), {a, b});
  CHECK(stitcher.size() == 2);
  CHECK(stitcher.model_name(0) == "model 0");
  CHECK(stitcher.model_name(1) == "B"); // the model's own name
  stitcher.set_names({"small", "large"});
  CHECK(stitcher.model_name(1) == "large");
  CHECK(stitcher.model(1).address() == &b);
  CHECK(stitcher.steps_per_model(DiscreteSchedule{}.trajectory(10)) == std::vector<int>{5, 5});

  CHECK_THROWS_WITH(Runtime(StepFraction({1.0}), {}),
                    Catch::Contains("number of models") && Catch::Contains("at least 1"));
  CHECK_THROWS_WITH(Runtime(StepFraction({0.5, 0.5}), {b, other}),
                    Catch::Contains("B has [3, 4, 4]") && Catch::Contains("[3, 8, 8]"));
  CHECK_THROWS_WITH(Runtime(PaperTimestep(0.5), {a, b, c}), Catch::Contains("exactly 2"));
  CHECK_THROWS_WITH(Runtime(StepFraction({0.5, 0.5}), {a, b, c}),
                    Catch::Contains("number of fractions"));
  CHECK_THROWS_WITH(stitcher.set_names({"one"}), Catch::Contains("names.size()"));
  CHECK_THROWS_WITH(stitcher.set_guidance_scales({1.0, NAN}),
                    Catch::Contains("guidance_scales[1]"));

  struct OutOfRange {
    std::size_t model_for(const StepContext&, std::size_t) const { return 7; }
  };
  Runtime bad(OutOfRange{}, {a, b});
  CHECK_THROWS_WITH(bad.model_index(StepContext{}), Catch::Contains("chose model 7"));

  // A stitcher serving as a model is named "model k": its own model_name(k) would name its k-th
  // model, not itself.
  TrajectoryStitcher inner(a, c, 0.5);
  inner.set_names({"inner-a", "inner-c"});
  Runtime nested(StepFraction({0.5, 0.5}), {b, inner});
  CHECK(nested.model_name(0) == "B");
  CHECK(nested.model_name(1) == "model 1");
  CHECK(nested.model(1).composite());

  // Models predicting different things have no common prediction; route() answers per step.
  ExactDenoiser v_model(runtime_shape, runtime_gaussian(0, 1), Prediction::v);
  Runtime mixed(StepFraction({0.5, 0.5}), {a, v_model});
  CHECK_THROWS_WITH(mixed.prediction(), Catch::Contains("predict different things"));
  CHECK(mixed.route(StepContext{9, 10, 0, {}}).prediction == Prediction::v);
}

namespace {

/// An ExactDenoiser that offers predict_guided, computed as one batch of 2N rows (as a GPU model
/// would), and counts which entry point the loop used.
class BatchedExact {
public:
  using condition_type = Labels;
  explicit BatchedExact(const ExactDenoiser& inner) : inner_(&inner) {}
  [[nodiscard]] Prediction prediction() const { return inner_->prediction(); }
  [[nodiscard]] Shape latent_shape() const { return inner_->latent_shape(); }
  [[nodiscard]] Labels unconditional(const Labels& c) const { return inner_->unconditional(c); }
  void predict(ConstView x, const StepContext& ctx, const Labels& c, View out) {
    ++predict_calls;
    inner_->predict(x, ctx, c, out);
  }
  void predict_guided(ConstView x, const StepContext& ctx, const Labels& cond, const Labels& uncond,
                      View out_cond, View out_uncond) {
    ++guided_calls;
    const std::int64_t n = x.batch();
    Tensor both(2 * n, x.shape()), out(2 * n, out_cond.shape());
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t e = 0; e < x.sample_numel(); ++e)
        both.data()[i * x.sample_numel() + e] = both.data()[(n + i) * x.sample_numel() + e] =
            x.data()[i * x.batch_stride() + e];
    Labels labels(cond);
    labels.insert(labels.end(), uncond.begin(), uncond.end());
    inner_->predict(both.view(), ctx, labels, out.view());
    const std::int64_t per = out_cond.sample_numel();
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t e = 0; e < per; ++e) {
        out_cond.data()[i * out_cond.batch_stride() + e] = out.data()[i * per + e];
        out_uncond.data()[i * out_uncond.batch_stride() + e] = out.data()[(n + i) * per + e];
      }
  }
  int predict_calls = 0, guided_calls = 0;

private:
  const ExactDenoiser* inner_;
};
static_assert(predicts_guided<BatchedExact>);
static_assert(!predicts_guided<ExactDenoiser>);

} // namespace

TEST_CASE("predict_guided: one call per guided evaluation where the model offers it",
          "[stitch][runtime]") {
  const ExactDenoiser small(runtime_shape, runtime_gaussian(0.3, 2.0)),
      large(runtime_shape, runtime_gaussian(0.0, 1.0));
  ExactDenoiser small_plain = small, large_plain = large;

  SECTION("the loop calls it once per guided evaluation, and the numbers do not change") {
    BatchedExact batched(large);
    const auto [got, result] = sample_rows(batched, DDIM{}, 10, 3.0, 21);
    CHECK(bit_identical(got, sample_rows(large_plain, DDIM{}, 10, 3.0, 21).first));
    CHECK(batched.guided_calls == 10);
    CHECK(batched.predict_calls == 0);
    CHECK(result.records[0].evaluations == 2); // still two model evaluations per step
    batched.guided_calls = 0;
    CHECK(bit_identical(sample_rows(batched, DDIM{}, 10, 1.0, 21).first,
                        sample_rows(large_plain, DDIM{}, 10, 1.0, 21).first));
    CHECK(batched.guided_calls == 0); // no guidance: plain predict
    CHECK(batched.predict_calls == 10);
  }

  SECTION("stitchers and DenoiserRef forward it to the serving model, which may lack it") {
    const Tensor expected = [&] {
      TrajectoryStitcher plain(small_plain, large_plain, 0.4);
      return sample_rows(plain, DDIM{}, 10, 3.0, 21).first;
    }();
    BatchedExact batched(large);
    TrajectoryStitcher fixed(small_plain, batched, 0.4);
    CHECK(bit_identical(sample_rows(fixed, DDIM{}, 10, 3.0, 21).first, expected));
    CHECK(batched.guided_calls == 6); // the large model's 6 of 10 steps

    BatchedExact batched_small(small);
    RuntimeStitcher<DenoiserRef<Labels>> runtime(StepFraction({0.4, 0.6}),
                                                 {batched_small, large_plain});
    CHECK(bit_identical(sample_rows(runtime, DDIM{}, 10, 3.0, 21).first, expected));
    CHECK(batched_small.guided_calls == 4);
    CHECK(batched_small.predict_calls == 0);

    DenoiserRef<Labels> ref(batched);
    batched.guided_calls = 0;
    CHECK(bit_identical(sample_rows(ref, DDIM{}, 10, 3.0, 21).first,
                        sample_rows(large_plain, DDIM{}, 10, 3.0, 21).first));
    CHECK(batched.guided_calls == 10);
  }
}
