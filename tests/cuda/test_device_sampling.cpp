// SPDX-License-Identifier: Apache-2.0
// Device sampling of DiTs from plain C++ (this file is compiled by the host compiler, not nvcc):
// DeviceSampler::run over DitModels, and over a DeviceStitcher that mixes a user's own engine
// type with a DitModel, against the host loop with the CPU DiT. The device runs must agree with
// each other bit for bit (same kernels, same order) and with the host within bf16's error.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../support/sample_variant.hpp"
#include "device_buffers.hpp"
#include "tiny_dit.hpp"
#include "tstitch/cuda/dit.hpp"
#include "tstitch/cuda/sampling.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

using namespace tstitch;

namespace {

using test::label_sensitive_weights;
using test::tiny_config;
using test::to_host;

/// A user's engine: its own type, no tstitch base class; here it forwards to a DitModel and
/// counts its calls, as a TensorRT wrapper would enqueue its engine.
class UserEngine {
public:
  using condition_type = std::vector<int>;
  explicit UserEngine(cuda::DitModel& model) : model_(&model) {}
  [[nodiscard]] Prediction prediction() const { return model_->prediction(); }
  [[nodiscard]] Shape latent_shape() const { return model_->latent_shape(); }
  [[nodiscard]] std::string model_name(std::size_t) const { return "user engine"; }
  [[nodiscard]] condition_type unconditional(const condition_type& c) const {
    return model_->unconditional(c);
  }
  [[nodiscard]] cudaStream_t stream() const { return model_->stream(); }
  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    ++calls;
    model_->predict(x, ctx, c, out);
  }
  int calls = 0;

private:
  cuda::DitModel* model_;
};
static_assert(!predicts_guided<UserEngine>); // guidance costs it two predict() calls

/// A user's engine that batches guidance itself, as DitModel does: UserEngine's members plus
/// predict_guided, forwarding to a DitModel and counting both kinds of call, so that a test sees
/// whether device sampling reaches predict_guided or falls back to predict() twice.
class GuidedUserEngine {
public:
  using condition_type = std::vector<int>;
  explicit GuidedUserEngine(cuda::DitModel& model) : model_(&model) {}
  [[nodiscard]] Prediction prediction() const { return model_->prediction(); }
  [[nodiscard]] Shape latent_shape() const { return model_->latent_shape(); }
  [[nodiscard]] std::string model_name(std::size_t k) const {
    return "guided engine over " + model_->model_name(k);
  }
  [[nodiscard]] condition_type unconditional(const condition_type& c) const {
    return model_->unconditional(c);
  }
  [[nodiscard]] cudaStream_t stream() const { return model_->stream(); }
  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    ++predict_calls;
    model_->predict(x, ctx, c, out);
  }
  void predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                      const condition_type& uncond, View out_cond, View out_uncond) {
    ++predict_guided_calls;
    model_->predict_guided(x, ctx, cond, uncond, out_cond, out_uncond);
  }
  int predict_calls = 0;
  int predict_guided_calls = 0;

private:
  cuda::DitModel* model_;
};
static_assert(predicts_guided<GuidedUserEngine>); // else the loop would silently call predict()

double relative_l2(const Tensor& got, const Tensor& want) {
  double diff = 0, norm = 0;
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

} // namespace

TEST_CASE("device sampling stitches DitModels and a user's engine like the host loop",
          "[cuda][sampling][dit]") {
  // Label-sensitive weights: with Weights::random alone the class label barely moves the output,
  // so a swap of the guidance halves or dropped guidance would pass the bounds below.
  const dit::Config small_config = tiny_config(1), large_config = tiny_config(2);
  dit::CpuModel cpu_small(label_sensitive_weights(small_config, 1), "small");
  dit::CpuModel cpu_large(label_sensitive_weights(large_config, 2), "large");
  cuda::DitModel small(label_sensitive_weights(small_config, 1), "small");
  cuda::DitModel large(label_sensitive_weights(large_config, 2), "large");
  UserEngine engine(small);
  GuidedUserEngine guided_small(small), guided_large(large);
  const Shape shape = small.latent_shape();
  const std::vector<int> labels{1, 7, 10}; // 10: the null class
  cuda::DeviceSampler sampler;

  struct Case {
    const char* name;
    cuda::DeviceSolver solver;
    AnyPolicy rule;
  };
  const Case cases[] = {
      {"DDPM learned range, PaperTimestep(0.4)",
       DDPM{DDPMOptions{DDPMVariance::learned_range, std::nullopt}}, PaperTimestep(0.4)},
      {"Heun, timestep threshold 500", Heun{}, TimestepThreshold(500.0)},
      {"UniPC, half the steps each", UniPC{}, StepFraction({0.5, 0.5})},
  };
  for (const Case& c : cases) {
    INFO("case: " << c.name);
    SampleOptions options;
    options.steps = 12;
    options.seed = 77;
    options.guidance = Guidance::dit(2.0);

    Tensor host(3, shape);
    fill_initial_noise(host.view(), options.seed);
    BasicStitcher<AnyPolicy, dit::CpuModel, dit::CpuModel> host_stitch(c.rule, cpu_small,
                                                                       cpu_large);
    const SampleResult host_result = testing::sample_with(host_stitch, DiscreteSchedule{}, c.solver,
                                                          host.view(), labels, options);

    // Device runs from the same x_T: DitModels through the span overload, the same models
    // through a DeviceStitcher, a user's engine (which has no predict_guided: two calls per
    // guided evaluation) with a DitModel, and (below) engines that offer predict_guided.
    Tensor noise(3, shape);
    fill_initial_noise(noise.view(), options.seed);
    cuda::DeviceTensor x(3, shape);
    auto run = [&](auto&& call) {
      cuda::upload(x.view(), noise.view());
      const SampleResult result = call();
      return std::pair{result, to_host(x.view())};
    };
    cuda::DitModel* models[] = {&small, &large};
    const auto [spans, from_span] = run([&] {
      return sampler.run(models, c.rule, DiscreteSchedule{}, c.solver, x.view(), labels, options);
    });
    cuda::DeviceStitcher dits(c.rule, {small, large});
    int switches = 0;
    dits.on_switch([&](const SwitchEvent& e) {
      ++switches;
      CHECK(e.from == 0);
      CHECK(e.to == 1);
    });
    const auto [stitched, from_stitcher] = run(
        [&] { return sampler.run(dits, DiscreteSchedule{}, c.solver, x.view(), labels, options); });
    cuda::DeviceStitcher mixed_stitcher(c.rule, {engine, large});
    engine.calls = 0;
    const auto [mixed, from_mixed] = run([&] {
      return sampler.run(mixed_stitcher, DiscreteSchedule{}, c.solver, x.view(), labels, options);
    });
    // A fourth, with engines that offer predict_guided: every guided evaluation must reach it
    // (one call per solver evaluation), never predict(). on_step snapshots the counters after
    // each step (the calls are made on the host as the work is enqueued).
    cuda::DeviceStitcher guided_stitcher(c.rule, {guided_small, guided_large});
    guided_small.predict_calls = guided_small.predict_guided_calls = 0;
    guided_large.predict_calls = guided_large.predict_guided_calls = 0;
    struct Counts {
      int predict[2];
      int guided[2];
    };
    std::vector<Counts> after_step;
    SampleOptions counted_options = options;
    counted_options.on_step = [&](const StepRecord&) {
      after_step.push_back(
          {{guided_small.predict_calls, guided_large.predict_calls},
           {guided_small.predict_guided_calls, guided_large.predict_guided_calls}});
      return true;
    };
    const auto [counted, from_counted] = run([&] {
      return sampler.run(guided_stitcher, DiscreteSchedule{}, c.solver, x.view(), labels,
                         counted_options);
    });

    int small_evaluations = 0;
    int guided_expected[2] = {0, 0}; // predict_guided calls each model should see
    REQUIRE(spans.records.size() == host_result.records.size());
    REQUIRE(mixed.records.size() == host_result.records.size());
    REQUIRE(counted.records.size() == host_result.records.size());
    REQUIRE(after_step.size() == host_result.records.size());
    for (std::size_t i = 0; i < host_result.records.size(); ++i) {
      INFO("step " << i);
      const StepRecord& want = host_result.records[i];
      CHECK(spans.records[i].model == want.model);
      CHECK(mixed.records[i].model == want.model);
      CHECK(mixed.records[i].evaluations == want.evaluations);
      CHECK(counted.records[i].model == want.model);
      CHECK(counted.records[i].evaluations == want.evaluations);
      if (want.model == 0)
        small_evaluations += want.evaluations;
      // Every step is guided: its record counts 2 per solver evaluation (Heun: 2 evaluations per
      // step but 1 into sigma = 0), and each solver evaluation is one predict_guided call of the
      // serving model and none of the other.
      REQUIRE(want.guidance_scale == 2.0);
      REQUIRE(want.model < 2);
      const Counts before = i == 0 ? Counts{{0, 0}, {0, 0}} : after_step[i - 1];
      for (std::size_t k = 0; k < 2; ++k) {
        INFO("model " << k);
        CHECK(after_step[i].predict[k] == 0);
        CHECK(after_step[i].guided[k] - before.guided[k] ==
              (k == want.model ? want.evaluations / 2 : 0));
      }
      guided_expected[want.model] += want.evaluations / 2;
    }
    CHECK(host_result.switches == 1);
    CHECK(stitched.switches == 1);
    CHECK(mixed.switches == 1);
    CHECK(counted.switches == 1);
    CHECK(switches == 1);
    CHECK(engine.calls == small_evaluations);
    // Totals (by the host loop: DDPM 4 + 8, Heun 10 + 13, UniPC 6 + 6 over the two models).
    CHECK(guided_small.predict_calls == 0);
    CHECK(guided_large.predict_calls == 0);
    CHECK(guided_small.predict_guided_calls == guided_expected[0]);
    CHECK(guided_large.predict_guided_calls == guided_expected[1]);
    CHECK(guided_expected[0] > 0);
    CHECK(guided_expected[1] > 0);
    const auto bytes = sizeof(float) * static_cast<std::size_t>(from_span.numel());
    CHECK(std::memcmp(from_span.data(), from_stitcher.data(), bytes) == 0);
    // The engines forward to the same DitModel::predict_guided the span overload reaches.
    CHECK(std::memcmp(from_span.data(), from_counted.data(), bytes) == 0);
    // 1e-2 separates the faults from bf16's error: measured on the CPU with these weights over
    // the three cases (rel L2 of the final latents to the host reference), guidance halves
    // swapped 0.17-0.22, guidance dropped 0.058-0.074, weights rounded to bf16 4.0e-4-4.8e-4.
    const double rel_dits = relative_l2(from_span, host), rel_mixed = relative_l2(from_mixed, host);
    std::printf("  %s: device vs host final latents rel L2: DitModels %.3e, user engine %.3e\n",
                c.name, rel_dits, rel_mixed);
    CHECK(rel_dits < 1e-2);
    CHECK(rel_mixed < 1e-2);
  }
}

TEST_CASE("DeviceSampler names what it cannot run", "[cuda][sampling][errors]") {
  const dit::Config config = tiny_config(1);
  cuda::DitModel model(dit::Weights::random(config, 3), "tiny");
  cuda::DeviceTensor x(1, model.latent_shape());
  SampleOptions options;
  options.steps = 4;
  cuda::DeviceSampler sampler;
  cuda::DitModel* none[] = {&model, nullptr};
  CHECK_THROWS_WITH(sampler.run(none, StepFraction({0.5, 0.5}), DiscreteSchedule{}, DDIM{},
                                x.view(), {1}, options),
                    Catch::Contains("models[1]"));
  UniPCOptions thresholded;
  thresholded.thresholding = DynamicThresholding{};
  cuda::DeviceStitcher one(StepFraction({1.0}), {model});
  CHECK_THROWS_WITH(
      sampler.run(one, DiscreteSchedule{}, UniPC(thresholded), x.view(), {1}, options),
      Catch::Contains("thresholding"));
  CHECK_THROWS_WITH(cuda::DeviceStitcher(PaperTimestep(0.4), {model, model, model}),
                    Catch::Contains("exactly 2"));
}

TEST_CASE("DitModel::predict_guided runs both guidance branches as one batch of 2N rows",
          "[cuda][dit]") {
  const dit::Config config = tiny_config(2);
  dit::CpuModel cpu(label_sensitive_weights(config, 5), "cpu");
  cuda::DitModel gpu(label_sensitive_weights(config, 5), "gpu");
  const Shape shape = gpu.latent_shape();
  const Shape out_shape{config.out_channels(), shape.height, shape.width};
  const std::vector<int> cond{1, 7, 3}, uncond = gpu.unconditional(cond);
  Tensor x(3, shape);
  fill_initial_noise(x.view(), 12);
  StepContext ctx;
  ctx.point.timestep = 400;

  Tensor want_cond(3, out_shape), want_uncond(3, out_shape);
  cpu.predict(x.view(), ctx, cond, want_cond.view());
  cpu.predict(x.view(), ctx, uncond, want_uncond.view());
  const double label_effect = relative_l2(want_uncond, want_cond);
  std::printf("  predict_guided: the labels move the CPU output by %.3e rel L2\n", label_effect);
  REQUIRE(label_effect > 0.1); // a swap of the halves would fail the checks below

  cuda::DeviceTensor x_dev(3, shape), out_cond(3, out_shape), out_uncond(3, out_shape),
      one_cond(3, out_shape);
  cuda::upload(x_dev.view(), x.view());
  gpu.predict_guided(x_dev.view(), ctx, cond, uncond, out_cond.view(), out_uncond.view());
  gpu.predict(x_dev.view(), ctx, cond, one_cond.view());
  const double rel_cond = relative_l2(to_host(out_cond.view()), want_cond);
  const double rel_uncond = relative_l2(to_host(out_uncond.view()), want_uncond);
  const double rel_single = relative_l2(to_host(out_cond.view()), to_host(one_cond.view()));
  std::printf("  predict_guided vs CPU: cond %.3e, uncond %.3e; vs predict(cond): %.3e\n", rel_cond,
              rel_uncond, rel_single);
  CHECK(rel_cond < 1e-2);
  CHECK(rel_uncond < 1e-2);
  CHECK(rel_single < 1e-2);
  const Tensor graph_cond = to_host(out_cond.view()), graph_uncond = to_host(out_uncond.view());

  // out_uncond as a channel slice of a wider tensor (batch stride wider than a sample): the same
  // values as the dense output, and the guard channels either side keep their sentinel.
  const std::int64_t out_channels = out_shape.channels;
  const Shape wide_shape{out_channels + 3, shape.height, shape.width};
  constexpr float sentinel = -12345.5f;
  Tensor guards(3, wide_shape);
  for (std::int64_t i = 0; i < guards.numel(); ++i)
    guards[i] = sentinel;
  cuda::DeviceTensor wide(3, wide_shape), cond_again(3, out_shape);
  cuda::upload(wide.view(), guards.view());
  gpu.predict_guided(x_dev.view(), ctx, cond, uncond, cond_again.view(),
                     wide.view().channels(1, out_channels));
  const Tensor again_cond = to_host(cond_again.view());
  const Tensor sliced_uncond = to_host(ConstView(wide.view()).channels(1, out_channels));
  const auto out_bytes = sizeof(float) * static_cast<std::size_t>(graph_cond.numel());
  CHECK(std::memcmp(again_cond.data(), graph_cond.data(), out_bytes) == 0);
  CHECK(std::memcmp(sliced_uncond.data(), graph_uncond.data(), out_bytes) == 0);
  const Tensor wide_host = to_host(wide.view());
  std::int64_t guards_changed = 0;
  for (std::int64_t n = 0; n < wide_host.batch(); ++n)
    for (std::int64_t ch : {std::int64_t{0}, out_channels + 1, out_channels + 2})
      for (std::int64_t h = 0; h < wide_shape.height; ++h)
        for (std::int64_t w = 0; w < wide_shape.width; ++w)
          guards_changed += wide_host.at(n, ch, h, w) != sentinel ? 1 : 0;
  CHECK(guards_changed == 0);

  // Graphs off: every call launches the forward's kernels directly, with the same numbers as the
  // graph replay (the bound of test_dit_cuda.cpp's graphs on/off check).
  gpu.set_graphs(false);
  REQUIRE_FALSE(gpu.graphs());
  cuda::DeviceTensor direct_cond(3, out_shape), direct_uncond(3, out_shape);
  gpu.predict_guided(x_dev.view(), ctx, cond, uncond, direct_cond.view(), direct_uncond.view());
  const double rel_direct_cond = relative_l2(to_host(direct_cond.view()), graph_cond);
  const double rel_direct_uncond = relative_l2(to_host(direct_uncond.view()), graph_uncond);
  std::printf("  predict_guided graphs off vs on: cond %.3e, uncond %.3e\n", rel_direct_cond,
              rel_direct_uncond);
  CHECK(rel_direct_cond < 1e-6);
  CHECK(rel_direct_uncond < 1e-6);

  CHECK_THROWS_WITH(
      gpu.predict_guided(x_dev.view(), ctx, cond, {10, 10}, out_cond.view(), out_uncond.view()),
      Catch::Contains("labels"));
}
