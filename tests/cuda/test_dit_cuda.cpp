// SPDX-License-Identifier: Apache-2.0
// The CUDA DiT against the CPU DiT (the reference, itself checked against diffusers to 1e-6) and
// against the golden files; bf16 weights and GEMM inputs give relative L2 errors of a few 1e-3,
// hence a 1e-2 bound. Plain C++: it uses the CUDA DiT through cuda/dit.hpp only,
// which is also the proof that a translation unit without nvcc can drive it.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "tstitch/cuda/dit.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

using namespace tstitch;

namespace {

/// Relative L2 error of `got` against `want`; prints the worst element to make a failure
/// diagnosable from the log alone.
double relative_l2(const std::vector<float>& got, const std::vector<float>& want,
                   const char* what) {
  REQUIRE(got.size() == want.size());
  double diff = 0, norm = 0, worst = -1;
  std::size_t worst_at = 0, nonfinite = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (nonfinite++ == 0)
        std::printf("  %s: first non-finite output at flat index %zu\n", what, i);
      continue;
    }
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    norm += static_cast<double>(want[i]) * want[i];
    if (std::abs(d) > worst) {
      worst = std::abs(d);
      worst_at = i;
    }
  }
  const double rel = nonfinite > 0 ? INFINITY : std::sqrt(diff / norm);
  std::printf("  %s: rel L2 %.3e, max |diff| %.3e at flat index %zu (got %.6f, want %.6f)%s\n",
              what, rel, worst, worst_at, static_cast<double>(got[worst_at]),
              static_cast<double>(want[worst_at]), nonfinite > 0 ? ", NON-FINITE" : "");
  return rel;
}

std::vector<float> random_latents(std::int64_t count, std::uint64_t seed) {
  std::vector<float> x(static_cast<std::size_t>(count));
  fill_normal(x.data(), x.size(), NoiseKey{seed, 0, 0, 0});
  return x;
}

struct Outputs {
  std::vector<float> cpu, gpu;
};

} // namespace

TEST_CASE("CUDA DiT matches the golden files and the CPU DiT", "[cuda][dit]") {
  const std::filesystem::path dir = std::filesystem::path(TSTITCH_TEST_DATA_DIR) / "dit";
  for (const char* name : {"tiny_dit", "tiny_dit_p4"}) {
    SECTION(name) {
      const std::string stem = name;
      dit::CpuModel cpu(dit::Weights::load(dir / (stem + ".safetensors")));
      cuda::DitModel gpu(dit::Weights::load(dir / (stem + ".safetensors")), stem);
      const io::SafetensorsFile golden(dir / (stem + "_golden.safetensors"));
      const dit::Config& c = cpu.config();
      const std::vector<float> x = golden.read_f32("x"), t = golden.read_f32("t"),
                               y = golden.read_f32("y"), expected = golden.read_f32("out");
      const auto batch = static_cast<std::int64_t>(t.size());
      const Shape out_shape{c.out_channels(), c.input_size, c.input_size};
      const std::int64_t in_numel = c.latent_shape().numel(), out_numel = out_shape.numel();

      cuda::DeviceTensor x_dev(1, c.latent_shape()), out_dev(1, out_shape);
      std::vector<float> got(expected.size()), cpu_out(expected.size());
      for (std::int64_t row = 0; row < batch; ++row) {
        StepContext ctx;
        ctx.point.timestep = t[static_cast<std::size_t>(row)];
        const std::vector<int> label{static_cast<int>(y[static_cast<std::size_t>(row)])};
        cuda::upload(x_dev.view(), ConstView(x.data() + row * in_numel, 1, c.latent_shape()));
        gpu.predict(x_dev.view(), ctx, label, out_dev.view());
        cuda::download(View(got.data() + row * out_numel, 1, out_shape), out_dev.view());
        cpu.predict(ConstView(x.data() + row * in_numel, 1, c.latent_shape()), ctx, label,
                    View(cpu_out.data() + row * out_numel, 1, out_shape));
      }
      std::printf("%s (attention %s):\n", name, std::string(to_string(gpu.attention())).c_str());
      CHECK(relative_l2(got, expected, "CUDA vs golden") < 1e-2);
      CHECK(relative_l2(got, cpu_out, "CUDA vs CPU") < 1e-2);
    }
  }
}

namespace {

/// Runs a batch through both models at one timestep; returns {gpu, cpu} outputs.
Outputs compare_batch(dit::CpuModel& cpu, cuda::DitModel& gpu, double t,
                      const std::vector<int>& labels, std::uint64_t seed) {
  const dit::Config& c = cpu.config();
  const auto n = static_cast<std::int64_t>(labels.size());
  const Shape out_shape{c.out_channels(), c.input_size, c.input_size};
  std::vector<float> x = random_latents(n * c.latent_shape().numel(), seed);
  Outputs o{std::vector<float>(static_cast<std::size_t>(n * out_shape.numel())),
            std::vector<float>(static_cast<std::size_t>(n * out_shape.numel()))};
  StepContext ctx;
  ctx.point.timestep = t;
  cpu.predict(ConstView(x.data(), n, c.latent_shape()), ctx, labels,
              View(o.cpu.data(), n, out_shape));
  cuda::DeviceTensor x_dev(n, c.latent_shape()), out_dev(n, out_shape);
  cuda::upload(x_dev.view(), ConstView(x.data(), n, c.latent_shape()));
  gpu.predict(x_dev.view(), ctx, labels, out_dev.view());
  cuda::download(View(o.gpu.data(), n, out_shape), out_dev.view());
  return o;
}

dit::Config dit_s2() { return dit::Config::preset("DiT-S/2"); }

/// Random weights under which attention visibly shapes the output. With Weights::random alone
/// the attention scores are so small that the softmax is nearly uniform and the gates nearly
/// zero: a forward whose attention ignored Q K^T entirely would still be within about 1e-3 of
/// the CPU, far inside the 1e-2 bound. Scaling the query and key rows of qkv by 4 and the adaLN
/// modulations by 4 changes that (DiT-S/2, tools/dit_attention_sensitivity.py, two draws):
/// uniform attention then moves the output by 5-6e-2 and a softmax scale off by a factor 8 by
/// 4-5e-2, while the bf16 rounding of this backend, emulated there, stays at 2.6-2.9e-3.
dit::Weights attention_sensitive_weights(const dit::Config& c, std::uint64_t seed) {
  dit::Weights w = dit::Weights::random(c, seed);
  // random() owns its values (no file mapping behind them), so writing through the views is sound.
  const auto scale_first = [](const dit::Param& p, std::int64_t count, float factor) {
    float* values = const_cast<float*>(p.data);
    for (std::int64_t i = 0; i < count; ++i)
      values[i] *= factor;
  };
  const std::int64_t d = c.hidden_size;
  for (const dit::BlockWeights& b : w.blocks) {
    scale_first(b.qkv_weight, 2 * d * d, 4.0f); // rows [0, 2D): query and key
    scale_first(b.qkv_bias, 2 * d, 4.0f);
    scale_first(b.ada_weight, b.ada_weight.rows * b.ada_weight.cols, 4.0f);
    scale_first(b.ada_bias, b.ada_bias.rows * b.ada_bias.cols, 4.0f);
  }
  return w;
}

} // namespace

TEST_CASE("CUDA DiT-S/2 with random weights matches the CPU DiT", "[cuda][dit]") {
  const dit::Config c = dit_s2();
  dit::CpuModel cpu(attention_sensitive_weights(c, 7));
  cuda::DitModel gpu(attention_sensitive_weights(c, 7), "DiT-S/2");
  const std::vector<int> labels{3, 1000, 999};
  for (double t : {999.0, 500.0, 1.0}) {
    const Outputs o = compare_batch(cpu, gpu, t, labels, 21);
    CAPTURE(t);
    CHECK(relative_l2(o.gpu, o.cpu, "DiT-S/2 CUDA vs CPU") < 1e-2);
  }
  SECTION("graphs off gives the same numbers as graph replay") {
    const Outputs with_graphs = compare_batch(cpu, gpu, 250.0, labels, 5);
    gpu.set_graphs(false);
    const Outputs direct = compare_batch(cpu, gpu, 250.0, labels, 5);
    CHECK(relative_l2(direct.gpu, with_graphs.gpu, "graphs off vs on") < 1e-6);
  }
  SECTION("the reference attention path agrees with the flash path") {
    const Outputs flash = compare_batch(cpu, gpu, 400.0, labels, 6);
    gpu.set_attention(cuda::AttentionPath::reference);
    const Outputs reference = compare_batch(cpu, gpu, 400.0, labels, 6);
    CHECK(relative_l2(reference.gpu, reference.cpu, "reference path vs CPU") < 1e-2);
    CHECK(relative_l2(flash.gpu, reference.gpu, "flash vs reference path") < 1e-2);
  }
  SECTION("the cuDNN attention path (where available) agrees with the CPU and flash") {
    if (cuda::kernels::attention_supported(cuda::AttentionPath::cudnn, 64)) {
      const Outputs flash = compare_batch(cpu, gpu, 600.0, labels, 8);
      gpu.set_attention(cuda::AttentionPath::cudnn);
      const Outputs cudnn = compare_batch(cpu, gpu, 600.0, labels, 8);
      CHECK(relative_l2(cudnn.gpu, cudnn.cpu, "cudnn path vs CPU") < 1e-2);
      CHECK(relative_l2(flash.gpu, cudnn.gpu, "flash vs cudnn path") < 1e-2);
    } else {
      CHECK_THROWS_WITH(gpu.set_attention(cuda::AttentionPath::cudnn), Catch::Contains("cudnn"));
    }
  }
  SECTION("prepare() does a batch size's first-call work ahead, without changing the numbers") {
    cuda::DitModel prepared(attention_sensitive_weights(c, 7), "DiT-S/2, prepared");
    const std::int64_t before = prepared.memory().activations;
    prepared.prepare(static_cast<int>(labels.size()));
    const std::int64_t after = prepared.memory().activations;
    CHECK(after > before);
    prepared.prepare(static_cast<int>(labels.size())); // a prepared size: nothing to do
    const Outputs o = compare_batch(cpu, prepared, 700.0, labels, 9);
    CHECK(prepared.memory().activations == after); // predict found its batch size ready
    CHECK(relative_l2(o.gpu, o.cpu, "prepared DiT-S/2 vs CPU") < 1e-2);
    prepared.set_graphs(false);
    prepared.prepare(2); // without graphs: activations and GEMM timing only
    CHECK(prepared.memory().activations > after);
    CHECK_THROWS_AS(prepared.prepare(0), invalid_argument);
    CHECK_THROWS_WITH(prepared.prepare(0), Catch::Contains("prepare batch = 0"));
  }
  SECTION("launch_gemms_only replays a prepared batch's GEMMs and refuses an unprepared one") {
    gpu.prepare(2);
    gpu.launch_gemms_only(2);
    TSTITCH_CUDA_CHECK(cudaStreamSynchronize(gpu.stream()));
    CHECK_THROWS_AS(gpu.launch_gemms_only(5), invalid_argument);
    CHECK_THROWS_WITH(gpu.launch_gemms_only(5), Catch::Contains("launch_gemms_only batch = 5"));
    // The GEMMs alone leave the activations meaningless, never the next forward's result.
    const Outputs o = compare_batch(cpu, gpu, 700.0, labels, 9);
    CHECK(relative_l2(o.gpu, o.cpu, "DiT-S/2 after launch_gemms_only vs CPU") < 1e-2);
  }
  SECTION("memory report") {
    const cuda::MemoryReport m = gpu.memory();
    std::printf("DiT-S/2 memory: weights %lld B, activations %lld B, workspace %lld B\n",
                static_cast<long long>(m.weights), static_cast<long long>(m.activations),
                static_cast<long long>(m.workspace));
    // bf16 weights: about 2 bytes per parameter (plus fp32 tables and biases).
    CHECK(m.weights > 2 * 30'000'000);
    CHECK(m.weights < 4 * 34'000'000);
    CHECK(m.activations > 0);
  }
}

TEST_CASE("CUDA DiT writes into a channel slice of a wider output", "[cuda][dit]") {
  const std::filesystem::path dir = std::filesystem::path(TSTITCH_TEST_DATA_DIR) / "dit";
  const dit::Weights weights = dit::Weights::load(dir / "tiny_dit.safetensors");
  cuda::DitModel gpu(weights);
  const dit::Config& c = weights.config();
  const Shape out_shape{c.out_channels(), c.input_size, c.input_size};
  const Shape wide{c.out_channels() + 3, c.input_size, c.input_size};
  std::vector<float> x = random_latents(2 * c.latent_shape().numel(), 3);
  cuda::DeviceTensor x_dev(2, c.latent_shape()), dense(2, out_shape), wide_dev(2, wide);
  cuda::upload(x_dev.view(), ConstView(x.data(), 2, c.latent_shape()));
  StepContext ctx;
  ctx.point.timestep = 321;
  gpu.predict(x_dev.view(), ctx, {1, 2}, dense.view());
  gpu.predict(x_dev.view(), ctx, {1, 2}, wide_dev.view().channels(1, c.out_channels()));
  std::vector<float> a(static_cast<std::size_t>(2 * out_shape.numel()));
  std::vector<float> b(a.size());
  cuda::download(View(a.data(), 2, out_shape), dense.view());
  cuda::download(View(b.data(), 2, out_shape),
                 ConstView(wide_dev.view()).channels(1, c.out_channels()));
  CHECK(a == b);
}

TEST_CASE("CUDA DiT refuses at construction a model its kernels cannot run",
          "[cuda][dit][errors]") {
  dit::Config c = dit::Config::preset("DiT-S/2");
  c.depth = 1;
  c.input_size = 8;
  c.hidden_size = 576;
  c.num_heads = 2; // head dim 288: beyond the flash (128) and the reference (256) paths
  CHECK_THROWS_AS(cuda::DitModel(dit::Weights::random(c, 3)), invalid_argument);
  CHECK_THROWS_WITH(cuda::DitModel(dit::Weights::random(c, 3)),
                    Catch::Contains("head dimension = 288"));
}

TEST_CASE("CUDA DiT rejects bad inputs, naming them", "[cuda][dit][errors]") {
  const std::filesystem::path dir = std::filesystem::path(TSTITCH_TEST_DATA_DIR) / "dit";
  cuda::DitModel gpu(dit::Weights::load(dir / "tiny_dit.safetensors"));
  const dit::Config& c = gpu.config();
  const Shape out_shape{c.out_channels(), c.input_size, c.input_size};
  cuda::DeviceTensor x(2, c.latent_shape()), out(2, out_shape), wrong(2, Shape{3, 8, 8});
  StepContext ctx;
  ctx.point.timestep = 10;
  CHECK_THROWS_WITH(gpu.predict(wrong.view(), ctx, {1, 2}, out.view()),
                    Catch::Contains("CUDA DiT input shape"));
  CHECK_THROWS_WITH(gpu.predict(x.view(), ctx, {1}, out.view()), Catch::Contains("labels.size()"));
  CHECK_THROWS_WITH(gpu.predict(x.view(), ctx, {1, 11}, out.view()),
                    Catch::Contains("labels[1] = 11"));
  ctx.point.timestep = NAN;
  CHECK_THROWS_WITH(gpu.predict(x.view(), ctx, {1, 2}, out.view()), Catch::Contains("timestep"));
  // The cuDNN path: refused where it cannot run, else it gives the numbers of the default path
  // through a freshly captured graph (its plan is built inside the capture).
  const int head_dim = static_cast<int>(c.head_dim());
  if (!cuda::kernels::attention_supported(cuda::AttentionPath::cudnn, head_dim)) {
    CHECK_THROWS_AS(gpu.set_attention(cuda::AttentionPath::cudnn), invalid_argument);
    CHECK_THROWS_WITH(gpu.set_attention(cuda::AttentionPath::cudnn), Catch::Contains("cudnn"));
  } else {
    const std::vector<float> xs = random_latents(2 * c.latent_shape().numel(), 17);
    cuda::upload(x.view(), ConstView(xs.data(), 2, c.latent_shape()));
    ctx.point.timestep = 10;
    const cuda::AttentionPath before = gpu.attention(); // flash (reference if flash cannot)
    std::vector<float> want(static_cast<std::size_t>(2 * out_shape.numel()));
    std::vector<float> got(want.size());
    gpu.predict(x.view(), ctx, {1, 2}, out.view());
    cuda::download(View(want.data(), 2, out_shape), out.view());
    gpu.set_attention(cuda::AttentionPath::cudnn);
    CHECK(gpu.attention() == cuda::AttentionPath::cudnn);
    gpu.predict(x.view(), ctx, {1, 2}, out.view());
    cuda::download(View(got.data(), 2, out_shape), out.view());
    const std::string what = "cudnn vs " + std::string(to_string(before)) + " attention";
    CHECK(relative_l2(got, want, what.c_str()) < 1e-2);
  }
}

TEST_CASE("CUDA DiT: a batch too large for the card names the model, the buffer and the bytes",
          "[cuda][dit][errors]") {
  const std::filesystem::path dir = std::filesystem::path(TSTITCH_TEST_DATA_DIR) / "dit";
  cuda::DitModel gpu(dit::Weights::load(dir / "tiny_dit.safetensors"), "tiny");
  const dit::Config& c = gpu.config();
  // Two billion samples: terabytes of activations, more than any card holds.
  constexpr int huge = 2'000'000'000;
  const std::int64_t x_in_bytes = c.latent_shape().numel(huge) * 4;
  CHECK_THROWS_AS(gpu.prepare(huge), runtime_error);
  CHECK_THROWS_WITH(gpu.prepare(huge),
                    Catch::Contains("cannot allocate CUDA DiT 'tiny' activations for batch "
                                    "2000000000: x_in") &&
                        Catch::Contains(std::to_string(x_in_bytes) + " bytes"));
  // Nothing of the failed batch is kept: the model still runs, and reports no activations.
  CHECK(gpu.memory().activations == 0);
  gpu.prepare(2);
  CHECK(gpu.memory().activations > 0);
}
