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
#include "tstitch/cuda/dit.hpp"
#include "tstitch/cuda/sampling.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

using namespace tstitch;

namespace {

dit::Config tiny_config(std::int64_t depth) {
  dit::Config c;
  c.input_size = 8;
  c.patch_size = 2;
  c.in_channels = 4;
  c.hidden_size = 128;
  c.num_heads = 2; // head dim 64, which the flash kernel serves
  c.depth = depth;
  c.num_classes = 10;
  c.learn_sigma = true;
  return c;
}

/// Random weights whose class embeddings are large enough that the label visibly changes the
/// output (with Weights::random alone it barely does, and a swap of the two guidance halves
/// would go unseen).
dit::Weights label_sensitive_weights(const dit::Config& c, std::uint64_t seed) {
  dit::Weights w = dit::Weights::random(c, seed);
  float* table = const_cast<float*>(w.class_table.data); // random() owns its values
  for (std::int64_t i = 0; i < w.class_table.rows * w.class_table.cols; ++i)
    table[i] *= 40.0f;
  return w;
}

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
  const dit::Config small_config = tiny_config(1), large_config = tiny_config(2);
  dit::CpuModel cpu_small(dit::Weights::random(small_config, 1), "small");
  dit::CpuModel cpu_large(dit::Weights::random(large_config, 2), "large");
  cuda::DitModel small(dit::Weights::random(small_config, 1), "small");
  cuda::DitModel large(dit::Weights::random(large_config, 2), "large");
  UserEngine engine(small);
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

    // Three device runs from the same x_T: DitModels through the span overload, the same models
    // through a DeviceStitcher, and a user's engine (which has no predict_guided: two calls per
    // guided evaluation) with a DitModel.
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

    int small_evaluations = 0;
    REQUIRE(spans.records.size() == host_result.records.size());
    REQUIRE(mixed.records.size() == host_result.records.size());
    for (std::size_t i = 0; i < host_result.records.size(); ++i) {
      INFO("step " << i);
      CHECK(spans.records[i].model == host_result.records[i].model);
      CHECK(mixed.records[i].model == host_result.records[i].model);
      CHECK(mixed.records[i].evaluations == host_result.records[i].evaluations);
      if (host_result.records[i].model == 0)
        small_evaluations += host_result.records[i].evaluations;
    }
    CHECK(host_result.switches == 1);
    CHECK(stitched.switches == 1);
    CHECK(mixed.switches == 1);
    CHECK(switches == 1);
    CHECK(engine.calls == small_evaluations);
    CHECK(std::memcmp(from_span.data(), from_stitcher.data(),
                      sizeof(float) * static_cast<std::size_t>(from_span.numel())) == 0);
    const double rel_dits = relative_l2(from_span, host), rel_mixed = relative_l2(from_mixed, host);
    std::printf("  %s: device vs host final latents rel L2: DitModels %.3e, user engine %.3e\n",
                c.name, rel_dits, rel_mixed);
    CHECK(rel_dits < 2e-2);
    CHECK(rel_mixed < 2e-2);
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

  CHECK_THROWS_WITH(
      gpu.predict_guided(x_dev.view(), ctx, cond, {10, 10}, out_cond.view(), out_uncond.view()),
      Catch::Contains("labels"));
}
