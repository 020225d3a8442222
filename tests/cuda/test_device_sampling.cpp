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
#include <variant>
#include <vector>

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
    SampleResult host_result;
    std::visit(
        [&](const auto& s) {
          auto solver = s;
          host_result =
              sample(host_stitch, DiscreteSchedule{}, solver, host.view(), labels, options);
        },
        c.solver);

    // DitModels through the span overload.
    cuda::DeviceTensor x(3, shape);
    cuda::upload(x.view(),
                 [&] {
                   Tensor noise(3, shape);
                   fill_initial_noise(noise.view(), options.seed);
                   return noise;
                 }()
                     .view());
    cuda::DitModel* models[] = {&small, &large};
    const SampleResult spans =
        sampler.run(models, c.rule, DiscreteSchedule{}, c.solver, x.view(), labels, options);
    Tensor from_span(3, shape);
    cuda::download(from_span.view(), x.view());

    // A user's engine and a DitModel through a DeviceStitcher.
    Tensor noise(3, shape);
    fill_initial_noise(noise.view(), options.seed);
    cuda::upload(x.view(), noise.view());
    cuda::DeviceStitcher stitcher(c.rule, {engine, large});
    int switches = 0;
    stitcher.on_switch([&](const SwitchEvent& e) {
      ++switches;
      CHECK(e.from == 0);
      CHECK(e.to == 1);
    });
    engine.calls = 0;
    const SampleResult mixed =
        sampler.run(stitcher, DiscreteSchedule{}, c.solver, x.view(), labels, options);
    Tensor from_stitcher(3, shape);
    cuda::download(from_stitcher.view(), x.view());

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
    CHECK(mixed.switches == 1);
    CHECK(switches == 1);
    CHECK(engine.calls == small_evaluations);
    CHECK(std::memcmp(from_span.data(), from_stitcher.data(),
                      sizeof(float) * static_cast<std::size_t>(from_span.numel())) == 0);
    const double rel = relative_l2(from_stitcher, host);
    std::printf("  %s: device vs host final latents rel L2 %.3e\n", c.name, rel);
    CHECK(rel < 2e-2);
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
