// SPDX-License-Identifier: Apache-2.0
// The LibTorch adapter: the shipped Fashion DiT-L exported to TorchScript
// (tools/export_torchscript.py, run by the build) against tstitch's native CPU DiT on the same
// weights, alone and stitched with the native DiT-S; and the adapter's errors on modules that do
// not fit a denoiser's call.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "tstitch/adapters/libtorch.hpp"
// LibTorch's headers bring glog's CHECK (silent when true, abort when false); Catch's must win.
#undef CHECK
#include <catch2/catch.hpp>

#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

using namespace tstitch;
using Catch::Matchers::Contains;
using libtorch::TorchScriptDenoiser;

namespace {

const std::string models_dir = TSTITCH_MODELS_DIR;
const std::string torchscript_dir = TSTITCH_TORCHSCRIPT_DIR;

dit::CpuModel native(const char* file, const char* name) {
  return dit::CpuModel(dit::Weights::load(models_dir + "/" + file), name);
}

libtorch::Options options_for(const dit::CpuModel& model, std::string name) {
  libtorch::Options o;
  o.prediction = model.prediction();
  o.latent_shape = model.latent_shape();
  o.name = std::move(name);
  o.null_label = static_cast<int>(model.config().num_classes);
  return o;
}

/// ||a - b|| / ||b|| over all values, in double.
double relative_l2(const Tensor& a, const Tensor& b) {
  double diff = 0, norm = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    diff += std::pow(static_cast<double>(a[i]) - b[i], 2);
    norm += std::pow(static_cast<double>(b[i]), 2);
  }
  return std::sqrt(diff / norm);
}

/// max |a - b| / max |b|: no element may differ by more than the bound relative to the output's
/// scale (a relative L2 bound alone would let a few elements be far off).
double relative_max(const Tensor& a, const Tensor& b) {
  double diff = 0, scale = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

StepContext step_at(double timestep) {
  StepContext ctx;
  ctx.point.timestep = timestep;
  return ctx;
}

const Shape image{1, 32, 32};

TorchScriptDenoiser<> hostile(const std::string& name, libtorch::Options o = {}) {
  o.latent_shape = image;
  o.name = name;
  return TorchScriptDenoiser<>::load(torchscript_dir + "/hostile/" + name + ".pt", o);
}

} // namespace

TEST_CASE("LibTorch DiT-L equals the native CPU DiT-L on the same weights", "[libtorch]") {
  dit::CpuModel large = native("fashion_dit_l.safetensors", "DiT-L");
  auto torch_large =
      TorchScriptDenoiser<>::load(torchscript_dir + "/fashion_dit_l.pt", options_for(large, "L"));
  REQUIRE(torch_large.prediction() == large.prediction());

  Tensor x(3, image);
  fill_initial_noise(x, /*seed=*/11);
  const std::vector<int> labels{0, 7, 10}; // 10: the null class
  for (const double t : {999.0, 480.0, 3.0}) {
    CAPTURE(t);
    Tensor want(3, image), got(3, image);
    large.predict(x.view(), step_at(t), labels, want.view());
    torch_large.predict(x.view(), step_at(t), labels, got.view());
    // Both float32, the same arithmetic in another order (oneDNN or Eigen against LibTorch's
    // kernels): rounding differences only.
    CHECK(relative_max(got, want) <= 1e-5);
    CHECK(relative_l2(got, want) <= 1e-5);
  }
}

TEST_CASE("A run stitching native DiT-S with LibTorch DiT-L equals the all-native run",
          "[libtorch]") {
  dit::CpuModel small = native("fashion_dit_s.safetensors", "DiT-S");
  dit::CpuModel large = native("fashion_dit_l.safetensors", "DiT-L");
  auto torch_large =
      TorchScriptDenoiser<>::load(torchscript_dir + "/fashion_dit_l.pt", options_for(large, "L"));

  const std::vector<int> labels{1, 4, 9, 3};
  Tensor noise(4, image);
  SampleOptions options;
  options.steps = 6;
  options.seed = 5;
  options.guidance = Guidance::standard(2.0); // the null class from DiT-S's unconditional()
  fill_initial_noise(noise, options);
  const DiscreteSchedule schedule;
  DDIM solver(DDIMOptions{0.0, 1.0f});

  Tensor all_native = noise, mixed = noise;
  TrajectoryStitcher native_pair(small, large, 0.5);
  TrajectoryStitcher mixed_pair(small, torch_large, 0.5);
  const SampleResult a = sample(native_pair, schedule, solver, all_native, labels, options);
  const SampleResult b = sample(mixed_pair, schedule, solver, mixed, labels, options);
  REQUIRE(mixed_pair.steps_per_model(schedule.trajectory(options.steps)) == std::vector<int>{3, 3});
  REQUIRE(b.switches == 1);
  REQUIRE(a.records.size() == b.records.size());
  // 3 guided steps of DiT-L, each evaluation within 1e-5 of the native one (above). DDIM's update
  // is linear in the prediction, and guidance 2 doubles a difference at most threefold
  // (|2 e_c - e_u|), so 3 steps can add a few times 1e-5 relative to the latents: 1e-4 bounds it
  // with margin. (The x0 clip is 1-Lipschitz.)
  CHECK(relative_l2(mixed, all_native) <= 1e-4);
  CHECK(relative_max(mixed, all_native) <= 1e-4);
  CHECK(relative_l2(mixed, noise) > 0.1); // it did sample
}

TEST_CASE("LibTorch adapter: a module without the named input is refused by name", "[libtorch]") {
  // The module calls its latents 'latents'.
  CHECK_THROWS_WITH(hostile("wrong_input_name"), Contains("Options::latents_input = 'x'") &&
                                                     Contains("(its inputs: latents, t, y)"));
  libtorch::Options o;
  o.timestep_input = "sigma";
  o.latents_input = "latents";
  CHECK_THROWS_AS(hostile("wrong_input_name", o), tstitch::invalid_argument);
  CHECK_THROWS_WITH(hostile("wrong_input_name", o), Contains("Options::timestep_input = 'sigma'"));
  o.timestep_input = "t";
  o.condition_input = "class_labels";
  CHECK_THROWS_WITH(hostile("wrong_input_name", o),
                    Contains("Options::condition_input = 'class_labels'"));
}

TEST_CASE("LibTorch adapter: inputs go by the names in the options, views without a copy",
          "[libtorch]") {
  libtorch::Options o;
  o.latents_input = "latents"; // returns latents * 0.5
  auto half = hostile("wrong_input_name", o);
  // The first channel of a 2-channel tensor: a view whose batch stride is twice its sample size,
  // which the adapter hands over as the tensor's first stride.
  Tensor wide(3, Shape{2, 32, 32});
  fill_initial_noise(wide, /*seed=*/3);
  const ConstView x = ConstView(wide.view()).channels(0, 1);
  Tensor out(3, image);
  half.predict(x, step_at(10), {0, 1, 2}, out.view());
  for (std::int64_t n = 0; n < 3; ++n)
    for (std::int64_t i = 0; i < 32; ++i)
      REQUIRE(out.view().at(n, 0, i, 31 - i) == 0.5f * x.at(n, 0, i, 31 - i));
}

TEST_CASE("LibTorch adapter: a missing method is refused by name", "[libtorch]") {
  libtorch::Options o;
  o.method = "denoise";
  CHECK_THROWS_WITH(hostile("wrong_output_shape", o),
                    Contains("Options::method = 'denoise'") && Contains("its methods: forward"));
}

TEST_CASE("LibTorch adapter: an output of the wrong shape, dtype or type is refused by name",
          "[libtorch]") {
  Tensor x(2, image), out(2, image);
  fill_initial_noise(x, 1);
  const std::vector<int> labels{0, 1};
  auto shape = hostile("wrong_output_shape");
  CHECK_THROWS_WITH(shape.predict(x.view(), step_at(5), labels, out.view()),
                    Contains("output shape = [2, 1, 16, 32]: expected [2, 1, 32, 32]"));
  auto dtype = hostile("wrong_output_dtype");
  CHECK_THROWS_AS(dtype.predict(x.view(), step_at(5), labels, out.view()), tstitch::runtime_error);
  CHECK_THROWS_WITH(dtype.predict(x.view(), step_at(5), labels, out.view()),
                    Contains("output dtype = Double: expected Float (Options::dtype f32)"));
  auto tuple = hostile("tuple_output");
  CHECK_THROWS_WITH(tuple.predict(x.view(), step_at(5), labels, out.view()),
                    Contains("method 'forward' returned (Tensor, Tensor): expected a Tensor"));
}

TEST_CASE("LibTorch adapter: Options::output picks an entry of a returned dict", "[libtorch]") {
  Tensor x(2, image), out(2, image);
  fill_initial_noise(x, 2);
  const std::vector<int> labels{0, 1};
  libtorch::Options o;
  o.output = "eps"; // {'eps': 0.5 x + t / 1000, 'aux': x}
  auto dict = hostile("dict_output", o);
  dict.predict(x.view(), step_at(250), labels, out.view());
  for (std::int64_t i = 0; i < x.numel(); i += 97)
    REQUIRE(out[i] == 0.5f * x[i] + 0.25f);
  o.output = "noise";
  auto wrong = hostile("dict_output", o);
  CHECK_THROWS_WITH(wrong.predict(x.view(), step_at(250), labels, out.view()),
                    Contains("Options::output = 'noise'") && Contains("'eps'") &&
                        Contains("'aux'"));
  auto plain = hostile("dict_output"); // no Options::output: a tensor is expected
  CHECK_THROWS_WITH(plain.predict(x.view(), step_at(250), labels, out.view()),
                    Contains("returned Dict(str, Tensor)"));
}

TEST_CASE("LibTorch adapter: a module failing on the input's shape or dtype names the inputs",
          "[libtorch]") {
  Tensor x(2, image), out(2, image);
  fill_initial_noise(x, 4);
  const std::vector<int> labels{0, 1};
  auto shape = hostile("wrong_input_shape"); // a linear layer over 3 channels
  CHECK_THROWS_AS(shape.predict(x.view(), step_at(5), labels, out.view()), tstitch::runtime_error);
  CHECK_THROWS_WITH(shape.predict(x.view(), step_at(5), labels, out.view()),
                    Contains("method 'forward' failed on") && Contains("x [2, 1, 32, 32] Float") &&
                        Contains("y [2] Long"));
  libtorch::Options as_loaded;
  as_loaded.convert_module = false; // float64 weights against float32 latents
  auto dtype = hostile("wrong_input_dtype", as_loaded);
  CHECK_THROWS_WITH(dtype.predict(x.view(), step_at(5), labels, out.view()),
                    Contains("failed on") && Contains("x [2, 1, 32, 32] Float") &&
                        Contains("Double"));
  // Converted to Options::dtype (the default), the same module runs: a 1x1 convolution by 1.
  auto converted = hostile("wrong_input_dtype");
  converted.predict(x.view(), step_at(5), labels, out.view());
  for (std::int64_t i = 0; i < x.numel(); ++i)
    REQUIRE(out[i] == x[i]);
}

TEST_CASE("LibTorch adapter: bf16 passes rounded latents and checks the output's dtype",
          "[libtorch]") {
  Tensor x(2, image), out(2, image);
  fill_initial_noise(x, 6);
  const std::vector<int> labels{0, 1};
  libtorch::Options o;
  o.dtype = libtorch::DType::bf16;
  auto identity = hostile("wrong_input_dtype", o); // converted to bf16: a 1x1 convolution by 1
  identity.predict(x.view(), step_at(5), labels, out.view());
  for (std::int64_t i = 0; i < x.numel(); ++i) // x rounded to bf16's 8 significant bits
    REQUIRE(std::abs(out[i] - x[i]) <= std::abs(x[i]) * 0x1p-8f);
  CHECK((out[0] != x[0] || out[1] != x[1] || out[2] != x[2])); // and rounded indeed
  auto f64 = hostile("wrong_output_dtype", o);
  CHECK_THROWS_WITH(f64.predict(x.view(), step_at(5), labels, out.view()),
                    Contains("output dtype = Double: expected BFloat16 (Options::dtype bf16)"));
}

TEST_CASE("LibTorch adapter: batch and label mismatches are refused before the module runs",
          "[libtorch]") {
  auto half = hostile("dict_output", [] {
    libtorch::Options o;
    o.output = "eps";
    return o;
  }());
  Tensor x(2, image), out(2, image), wrong(2, Shape{1, 16, 32});
  CHECK_THROWS_WITH(half.predict(x.view(), step_at(5), {0}, out.view()),
                    Contains("labels = 1: must be one per latent row (2)"));
  CHECK_THROWS_WITH(half.predict(wrong.view(), step_at(5), {0, 1}, out.view()),
                    Contains("x shape = [1, 16, 32]"));
  CHECK_THROWS_WITH(half.predict(x.view(), step_at(5), {0, 1}, wrong.view()),
                    Contains("out = [2, 1, 16, 32]"));
  libtorch::Options no_shape;
  CHECK_THROWS_WITH(
      TorchScriptDenoiser<>::load(torchscript_dir + "/hostile/dict_output.pt", no_shape),
      Contains("Options::latent_shape = [0, 0, 0]"));
  CHECK_THROWS_WITH(TorchScriptDenoiser<>::load(torchscript_dir + "/missing.pt",
                                                [] {
                                                  libtorch::Options o;
                                                  o.latent_shape = image;
                                                  return o;
                                                }()),
                    Contains("missing.pt' does not load"));
}

TEST_CASE("LibTorch adapter: the unconditional condition comes from the options", "[libtorch]") {
  libtorch::Options o;
  o.output = "eps";
  auto none = hostile("dict_output", o);
  CHECK_FALSE(none.unconditional({1, 2}).has_value());
  o.null_label = 10;
  auto labels = hostile("dict_output", o);
  CHECK(labels.unconditional({1, 2}) == std::optional<std::vector<int>>(std::vector<int>{10, 10}));
}

TEST_CASE("LibTorch adapter: a tensor condition is passed by name, one row per latent row",
          "[libtorch]") {
  libtorch::Options o;
  o.latent_shape = image;
  o.output = "eps"; // {'eps': 0.5 x + t / 1000}: the condition is passed and unused
  o.null_condition = torch::zeros({1, 4});
  auto dict =
      TorchScriptDenoiser<torch::Tensor>::load(torchscript_dir + "/hostile/dict_output.pt", o);
  Tensor x(2, image), out(2, image);
  fill_initial_noise(x, 8);
  dict.predict(x.view(), step_at(0), torch::ones({2, 4}), out.view());
  REQUIRE(out[5] == 0.5f * x[5]);
  const std::optional<torch::Tensor> null = dict.unconditional(torch::ones({2, 4}));
  REQUIRE(null.has_value());
  CHECK(null->sizes() == c10::IntArrayRef({2, 4}));
  CHECK_THROWS_WITH(dict.predict(x.view(), step_at(0), torch::ones({3, 4}), out.view()),
                    Contains("condition = [3, 4] Float: must be a tensor with one row per latent "
                             "row (2)"));
}

TEST_CASE("LibTorch adapter: an input the module requires and tstitch does not pass is refused",
          "[libtorch]") {
  libtorch::Options o;
  o.latent_shape = image;
  o.output = "eps";
  // NoCondition passes no 'y'; the module requires it.
  CHECK_THROWS_WITH(
      TorchScriptDenoiser<NoCondition>::load(torchscript_dir + "/hostile/dict_output.pt", o),
      Contains("method 'forward' requires input 'y', which tstitch does not pass "
               "(it passes x, t)"));
}

TEST_CASE("LibTorch adapter: float32 latents reach the module in tstitch's own buffer",
          "[libtorch]") {
  // The module doubles its input in place: the caller's latents change only if they were not
  // copied on the way in.
  Tensor x(2, image), out(2, image);
  fill_initial_noise(x, 9);
  const Tensor before = x;
  auto f32 = hostile("writes_input");
  f32.predict(x.view(), step_at(1), {0, 1}, out.view());
  for (std::int64_t i = 0; i < x.numel(); ++i)
    REQUIRE((x[i] == 2.0f * before[i] && out[i] == x[i]));
  libtorch::Options o;
  o.dtype = libtorch::DType::bf16; // converted, hence copied: the caller's latents stay
  auto bf16 = hostile("writes_input", o);
  x = before;
  bf16.predict(x.view(), step_at(1), {0, 1}, out.view());
  for (std::int64_t i = 0; i < x.numel(); ++i)
    REQUIRE(x[i] == before[i]);
}

TEST_CASE("LibTorch DiT-L in bf16 is the native DiT-L to bf16 precision", "[libtorch]") {
  dit::CpuModel large = native("fashion_dit_l.safetensors", "DiT-L");
  libtorch::Options o = options_for(large, "L bf16");
  o.dtype = libtorch::DType::bf16; // weights, latents and output in bf16; the model time float32
  auto torch_large = TorchScriptDenoiser<>::load(torchscript_dir + "/fashion_dit_l.pt", o);
  Tensor x(2, image), want(2, image), got(2, image);
  fill_initial_noise(x, 12);
  const std::vector<int> labels{3, 8};
  large.predict(x.view(), step_at(500), labels, want.view());
  torch_large.predict(x.view(), step_at(500), labels, got.view());
  // bf16 keeps 8 significant bits (2^-9 relative per rounding); through 6 blocks this measured
  // 0.7% relative L2 (LibTorch 1.13, AVX-512). 3% bounds it; a wrong conversion would be O(1).
  CHECK(relative_l2(got, want) <= 3e-2);
  CHECK(relative_l2(got, want) > 1e-4); // and it did run in bf16
}
