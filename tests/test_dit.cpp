// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support/dit_fixtures.hpp"
#include "support/tensor_checks.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/io/half.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;
using tstitch::testing::available_gemms;
using tstitch::testing::dit_forward;
using tstitch::testing::relative_l2;
using tstitch::testing::tiny_dit_config;

// Heap allocations through operator new, counted for the whole test binary (the counter costs an
// atomic increment); the DiT tests read it around a forward.
namespace {
std::atomic<long> heap_allocations{0};
} // namespace

// g++ 12 pairs the malloc inside this operator new with the free inside this operator delete
// after inlining and reports a mismatch that is not one.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t size) {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size))
    return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
// The aligned forms too: the DiT's activation buffers are allocated with them (deterministic.hpp).
void* operator new(std::size_t size, std::align_val_t alignment) {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  const auto align = static_cast<std::size_t>(alignment);
  if (void* p = std::aligned_alloc(align, (size + align - 1) / align * align + (size == 0) * align))
    return p;
  throw std::bad_alloc();
}
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("tstitch_test_dit_" + name + ".safetensors");
}

/// Rewrites a weight file with `edit` applied to its tensor list.
template <class Edit>
std::filesystem::path edited_copy(const std::filesystem::path& source, const std::string& name,
                                  Edit edit, std::map<std::string, std::string> metadata = {}) {
  io::SafetensorsFile file(source);
  std::vector<io::TensorData> tensors;
  for (const std::string& tensor : file.names()) {
    const io::TensorInfo& info = file.info(tensor);
    tensors.push_back({tensor, info.dtype, info.shape,
                       std::vector<std::byte>(info.bytes.begin(), info.bytes.end())});
  }
  edit(tensors);
  if (metadata.empty())
    metadata = file.metadata();
  const std::filesystem::path path = temp_file(name);
  io::write_safetensors(path, tensors, metadata);
  return path;
}

} // namespace

static_assert(Denoiser<dit::CpuModel>);

TEST_CASE("DiT presets and their cost", "[dit]") {
  const dit::Config s = dit::Config::preset("DiT-S/2"), xl = dit::Config::preset("DiT-XL/2");
  CHECK(s.depth == 12);
  CHECK(s.hidden_size == 384);
  CHECK(xl.num_heads == 16);
  // The paper's figures: DiT-S/2 6.06 GFLOPs (MACs), DiT-XL/2 118.6 at 256x256.
  CHECK(s.macs() / 1e9 == Approx(6.06).margin(0.01));
  CHECK(xl.macs() / 1e9 == Approx(118.6).margin(0.1));
  CHECK(dit::Config::preset("DiT-B/4").patch_size == 4);
  CHECK_THROWS_WITH(dit::Config::preset("DiT-M/2"), Catch::Contains("DiT-M/2"));
  dit::Config bad = s;
  bad.num_heads = 5;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("hidden_size = 384"));
}

TEST_CASE("DiT sin-cos position embedding", "[dit]") {
  // Token (row 1, column 2) of a 4x4 grid, D = 8: [sin(2 w), cos(2 w), sin(1 w), cos(1 w)] with
  // w = (1, 1/100).
  const std::vector<float> table = dit::sincos_position_embedding(8, 4);
  const float* token = &table[(1 * 4 + 2) * 8];
  CHECK(token[0] == Approx(std::sin(2.0)));
  CHECK(token[1] == Approx(std::sin(0.02)));
  CHECK(token[2] == Approx(std::cos(2.0)));
  CHECK(token[4] == Approx(std::sin(1.0)));
  CHECK(token[7] == Approx(std::cos(0.01)));
}

TEST_CASE("DiT weights round-trip through safetensors and load mapped", "[dit]") {
  const dit::Config c = tiny_dit_config();
  dit::CpuModel random(dit::Weights::random(c, 11));
  const std::filesystem::path path = temp_file("roundtrip");
  random.weights().save(path);

  dit::CpuModel loaded(dit::Weights::load(path));
  CHECK(loaded.config() == c);
  CHECK(loaded.weights().copied_parameters() == 0); // every F32 tensor is used in place
  CHECK(loaded.weights().parameter_count() == random.weights().parameter_count());
  const Tensor a = dit_forward(random, 3, 500.5, {0, 4, 10});
  const Tensor b = dit_forward(loaded, 3, 500.5, {0, 4, 10});
  CHECK(std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.numel())) == 0);

  // The output really depends on the inputs it is given.
  const Tensor other_t = dit_forward(random, 3, 20, {0, 4, 10});
  const Tensor other_y = dit_forward(random, 3, 500.5, {1, 4, 10});
  CHECK(relative_l2(a.data(), other_t.data(), a.numel()) > 1e-3);
  CHECK(relative_l2(a.data(), other_y.data(), a.numel() / 3) > 1e-3);
}

TEST_CASE("DiT loads F16 and BF16 weights", "[dit]") {
  const dit::Config c = tiny_dit_config();
  dit::CpuModel reference(dit::Weights::random(c, 12));
  const std::filesystem::path path = temp_file("f32");
  reference.weights().save(path);
  for (io::DType dtype : {io::DType::F16, io::DType::BF16}) {
    const auto converted = edited_copy(path, "half", [&](std::vector<io::TensorData>& tensors) {
      for (io::TensorData& t : tensors) {
        std::vector<float> values(t.bytes.size() / 4);
        std::memcpy(values.data(), t.bytes.data(), t.bytes.size());
        t = dtype == io::DType::F16 ? io::f16_tensor(t.name, t.shape, values)
                                    : io::bf16_tensor(t.name, t.shape, values);
      }
    });
    dit::CpuModel half(dit::Weights::load(converted));
    CHECK(half.weights().copied_parameters() == half.weights().parameter_count());
    const Tensor a = dit_forward(reference, 2, 999, {3, 10});
    const Tensor b = dit_forward(half, 2, 999, {3, 10});
    INFO("dtype " << dtype);
    CHECK(relative_l2(b.data(), a.data(), a.numel()) < (dtype == io::DType::F16 ? 5e-3 : 3e-2));
  }
}

TEST_CASE("DiT weight files that do not match are rejected, naming file and tensor",
          "[dit][errors]") {
  const dit::Config c = tiny_dit_config();
  const std::filesystem::path path = temp_file("good");
  dit::Weights::random(c, 13).save(path);

  const auto missing = edited_copy(path, "missing", [](std::vector<io::TensorData>& t) {
    std::erase_if(t, [](const io::TensorData& d) { return d.name == "blocks.1.mlp.fc2.bias"; });
  });
  CHECK_THROWS_AS(dit::Weights::load(missing), tstitch::runtime_error);
  CHECK_THROWS_WITH(dit::Weights::load(missing),
                    Catch::Contains("blocks.1.mlp.fc2.bias") && Catch::Contains(missing.string()));

  const auto unexpected = edited_copy(path, "unexpected", [](std::vector<io::TensorData>& t) {
    t.push_back(io::f32_tensor("blocks.2.attn.qkv.weight", {1}, std::vector<float>{1.0f}));
  });
  CHECK_THROWS_WITH(dit::Weights::load(unexpected),
                    Catch::Contains("blocks.2.attn.qkv.weight") && Catch::Contains("unexpected"));

  const auto wrong_shape = edited_copy(path, "shape", [](std::vector<io::TensorData>& t) {
    for (io::TensorData& d : t)
      if (d.name == "blocks.0.attn.proj.weight")
        d.shape = {32, 128};
  });
  CHECK_THROWS_WITH(dit::Weights::load(wrong_shape), Catch::Contains("blocks.0.attn.proj.weight") &&
                                                         Catch::Contains("[64, 64]") &&
                                                         Catch::Contains("[32, 128]"));

  // Metadata that disagrees with the tensors: 3 blocks announced, 2 present.
  io::SafetensorsFile file(path);
  auto metadata = file.metadata();
  metadata["depth"] = "3";
  const auto deeper = edited_copy(
      path, "depth", [](auto&) {}, metadata);
  CHECK_THROWS_WITH(dit::Weights::load(deeper), Catch::Contains("blocks.2."));
  metadata["depth"] = "two";
  const auto garbled = edited_copy(
      path, "garbled", [](auto&) {}, metadata);
  CHECK_THROWS_WITH(dit::Weights::load(garbled), Catch::Contains("'depth' = 'two'"));
  metadata.erase("depth");
  const auto no_depth = edited_copy(
      path, "nodepth", [](auto&) {}, metadata);
  CHECK_THROWS_WITH(dit::Weights::load(no_depth), Catch::Contains("lacks 'depth'"));

  // An explicit config that disagrees with the file.
  dit::Config wider = c;
  wider.hidden_size = 128;
  CHECK_THROWS_WITH(dit::Weights::load(path, wider), Catch::Contains("x_embedder.proj.weight"));
}

TEST_CASE("DiT configs are bounded so that no derived size overflows", "[dit][errors]") {
  // The largest published models pass, at 512x512 (latents 64x64) too.
  for (const char* name : {"DiT-XL/2", "DiT-L/2", "DiT-S/8"}) {
    dit::Config c = dit::Config::preset(name);
    CHECK_NOTHROW(c.validate());
    c.input_size = 64;
    CHECK_NOTHROW(c.validate());
  }
  dit::Config c = dit::Config::preset("DiT-XL/2");
  c.input_size = std::int64_t{1} << 33;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("input_size = 8589934592"));
  c.input_size = 4096; // 2^22 tokens x 1152
  CHECK_THROWS_WITH(c.validate(),
                    Catch::Contains("input_size = 4096") && Catch::Contains("4194304 tokens"));
  c = dit::Config::preset("DiT-S/2");
  c.hidden_size = 4;
  c.num_heads = 1;
  c.patch_size = 1;
  c.input_size = 512; // 2^18 tokens of hidden 4: small activations, but 2^36 scores per head
  CHECK_THROWS_WITH(c.validate(),
                    Catch::Contains("input_size = 512") && Catch::Contains("262144 tokens"));
  c = dit::Config::preset("DiT-XL/2");
  c.hidden_size = std::int64_t{1} << 40;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("hidden_size = 1099511627776"));
  c = dit::Config::preset("DiT-XL/2");
  c.num_classes = std::int64_t{1} << 62;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("num_classes = 4611686018427387904"));
  CHECK_THROWS_WITH(dit::sincos_position_embedding(1152, std::int64_t{1} << 32),
                    Catch::Contains("grid = 4294967296"));

  // From a file's metadata: an input size whose grid x grid x hidden overflows int64 (it
  // segfaulted), and one that only exhausts memory (std::bad_alloc): both named errors now.
  const std::filesystem::path path = temp_file("bounds");
  dit::Weights::random(tiny_dit_config(), 15).save(path);
  auto metadata = io::SafetensorsFile(path).metadata();
  for (const char* input_size : {"8589934592", "1000000"}) {
    metadata["input_size"] = input_size;
    const auto huge = edited_copy(
        path, "huge_input", [](auto&) {}, metadata);
    CHECK_THROWS_AS(dit::Weights::load(huge), tstitch::invalid_argument);
    CHECK_THROWS_WITH(dit::Weights::load(huge),
                      Catch::Contains(std::string("input_size = ") + input_size));
  }
}

TEST_CASE("DiT rejects bad inputs", "[dit][errors]") {
  dit::CpuModel model(dit::Weights::random(tiny_dit_config(), 14));
  Tensor x(2, Shape{4, 8, 8}), out(2, Shape{8, 8, 8});
  StepContext ctx;
  CHECK_THROWS_WITH(model.predict(x, ctx, {1, 11}, out), Catch::Contains("labels[1] = 11"));
  CHECK_THROWS_WITH(model.predict(x, ctx, {1}, out), Catch::Contains("labels.size() = 1"));
  Tensor small(2, Shape{4, 4, 4});
  CHECK_THROWS_WITH(model.predict(small, ctx, {1, 2}, out), Catch::Contains("[2, 4, 4, 4]"));
  Tensor narrow(2, Shape{4, 8, 8});
  CHECK_THROWS_WITH(model.predict(x, ctx, {1, 2}, narrow), Catch::Contains("DiT output shape"));
}

TEST_CASE("Two DiTs stitch and sample with DiT's guidance", "[dit]") {
  dit::CpuModel small(dit::Weights::random(tiny_dit_config(), 21), "DiT-S");
  dit::Config large_config = tiny_dit_config();
  large_config.depth = 3;
  dit::CpuModel large(dit::Weights::random(large_config, 22), "DiT-L");
  TrajectoryStitcher stitcher(small, large, 0.4);
  Tensor x(2, small.latent_shape());
  fill_initial_noise(x, 1);
  DDIM ddim;
  SampleOptions options;
  options.steps = 10;
  options.guidance = Guidance::dit(4.0);
  const SampleResult result = sample(stitcher, DiscreteSchedule{}, ddim, x, {3, 7}, options);
  CHECK(result.records.size() == 10);
  CHECK(result.records[3].model == 0);
  CHECK(result.records[4].model == 1);
  CHECK(result.records[4].evaluations == 2);
  CHECK(HostBackend{}.find_nonfinite(x) == -1);
  // The activation buffers were sized once, for the batch: no growth during sampling.
  CHECK(small.activation_bytes() > 0);
}

namespace {

/// Runs a converted checkpoint on the inputs of a golden file written by tools/make_dit_golden.py
/// (diffusers' DiTTransformer2DModel with the same weights) and returns the relative L2 error.
double golden_error(const std::string& weights_file, const std::string& golden_file,
                    dit::Gemm gemm) {
  const std::filesystem::path dir = std::filesystem::path(TSTITCH_TEST_DATA_DIR) / "dit";
  dit::CpuModel model(dit::Weights::load(dir / weights_file), "DiT", gemm);
  const io::SafetensorsFile golden(dir / golden_file);
  const dit::Config& c = model.config();
  const std::vector<float> x = golden.read_f32("x"), t = golden.read_f32("t"),
                           y = golden.read_f32("y"), expected = golden.read_f32("out");
  const auto batch = static_cast<std::int64_t>(t.size());
  golden.expect("x", {batch, c.in_channels, c.input_size, c.input_size});
  golden.expect("out", {batch, c.out_channels(), c.input_size, c.input_size});
  // The model takes one timestep per call (a sampling step); the golden rows have their own.
  std::vector<float> output(expected.size());
  const std::int64_t in_numel = c.latent_shape().numel();
  const std::int64_t out_numel = c.out_channels() * c.input_size * c.input_size;
  for (std::int64_t row = 0; row < batch; ++row) {
    ConstView xin(x.data() + row * in_numel, 1, c.latent_shape());
    View out(output.data() + row * out_numel, 1,
             Shape{c.out_channels(), c.input_size, c.input_size});
    StepContext ctx;
    ctx.point.timestep = t[static_cast<std::size_t>(row)];
    model.predict(xin, ctx, {static_cast<int>(y[static_cast<std::size_t>(row)])}, out);
  }
  return relative_l2(output.data(), expected.data(), static_cast<std::int64_t>(expected.size()));
}

} // namespace

TEST_CASE("DiT matches diffusers' DiTTransformer2DModel on golden files", "[dit][parity]") {
  // Random non-zero values in every tensor, several timesteps (one fractional) and labels (one
  // the null class); tools/make_dit_golden.py regenerates them. Every GEMM library built in.
  for (const dit::Gemm gemm : available_gemms()) {
    INFO("gemm " << dit::to_string(gemm));
    // depth 2, hidden 64, 4 heads, patch 2, 8x8x4, 10 classes, learn_sigma
    CHECK(golden_error("tiny_dit.safetensors", "tiny_dit_golden.safetensors", gemm) < 1e-5);
    // depth 1, hidden 40, 5 heads, patch 4, 16x16x3, 7 classes, no learn_sigma
    CHECK(golden_error("tiny_dit_p4.safetensors", "tiny_dit_p4_golden.safetensors", gemm) < 1e-5);
  }
}

TEST_CASE("DiT linear layers: every epilogue of every GEMM library against a double loop",
          "[dit][linear]") {
  // Odd sizes (no multiple of a vector width), 3 samples of 5 rows, gate rows 2 * out apart.
  const std::int64_t samples = 3, per_sample = 5, rows = samples * per_sample, in = 13, out = 9;
  const std::int64_t gate_stride = 2 * out;
  auto values = [](std::int64_t count, float scale, std::uint64_t seed) {
    std::vector<float> v(static_cast<std::size_t>(count));
    Tensor noise(1, Shape{count, 1, 1});
    HostBackend{}.fill_normal(noise, NoiseKey{seed, 0, 0, 0});
    for (std::int64_t i = 0; i < count; ++i)
      v[static_cast<std::size_t>(i)] = scale * noise.data()[i];
    return v;
  };
  const std::vector<float> x = values(rows * in, 1.0f, 1), w = values(out * in, 0.5f, 2),
                           b = values(out, 1.0f, 3), gate = values(samples * gate_stride, 1.0f, 4),
                           residual = values(rows * out, 1.0f, 5);
  const dit::Param weight{w.data(), out, in}, bias{b.data(), 1, out};
  auto reference = [&](std::int64_t r, std::int64_t o) {
    double acc = b[static_cast<std::size_t>(o)];
    for (std::int64_t k = 0; k < in; ++k)
      acc += static_cast<double>(x[static_cast<std::size_t>(r * in + k)]) *
             w[static_cast<std::size_t>(o * in + k)];
    return acc;
  };
  for (const dit::Gemm gemm : available_gemms()) {
    INFO("gemm " << dit::to_string(gemm));
    dit::LinearLayers linear(gemm);
    std::vector<float> y(static_cast<std::size_t>(rows * out)), scratch(y.size());
    for (const auto kind : {dit::Epilogue::Kind::store, dit::Epilogue::Kind::gelu_tanh,
                            dit::Epilogue::Kind::gated_residual}) {
      INFO("epilogue " << static_cast<int>(kind));
      dit::Epilogue epilogue{kind};
      if (kind == dit::Epilogue::Kind::gated_residual) {
        epilogue = dit::Epilogue::gated(gate.data() + 1, gate_stride, per_sample);
        y = residual;
      }
      for (int call = 0; call < 2; ++call) { // the second call reuses the cached primitive
        if (kind == dit::Epilogue::Kind::gated_residual)
          y = residual;
        linear.run(x.data(), rows, weight, bias, y.data(), epilogue, scratch.data());
        double worst = 0;
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t o = 0; o < out; ++o) {
            const double v = reference(r, o);
            double expected = v;
            if (kind == dit::Epilogue::Kind::gelu_tanh)
              expected = 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            if (kind == dit::Epilogue::Kind::gated_residual)
              expected = residual[static_cast<std::size_t>(r * out + o)] +
                         gate[static_cast<std::size_t>(1 + (r / per_sample) * gate_stride + o)] * v;
            worst = std::max(worst, std::abs(y[static_cast<std::size_t>(r * out + o)] - expected) /
                                        (1 + std::abs(expected)));
          }
        CHECK(worst < 2e-6);
      }
    }
    // A gate row per 4 rows does not divide 15 rows.
    CHECK_THROWS_WITH(linear.run(x.data(), rows, weight, bias, y.data(),
                                 dit::Epilogue::gated(gate.data(), gate_stride, 4), scratch.data()),
                      Catch::Contains("rows = 15") && Catch::Contains("rows_per_sample = 4"));
  }
}

TEST_CASE("DiT attention of every GEMM library against a double loop", "[dit]") {
  struct Case {
    std::int64_t samples, tokens, heads, head_dim;
    float spread; // standard deviation of q, k, v; 3 gives scores of deviation 9: a sharp softmax
  };
  // Odd and ragged token counts, small and odd head dims, sharp softmaxes, and DiT's own shapes
  // (Fashion small / large, S/2, XL/2).
  const Case cases[] = {{2, 1, 1, 8, 1.0f},    {2, 7, 2, 8, 1.0f},    {3, 50, 2, 24, 1.0f},
                        {2, 33, 1, 40, 3.0f},  {2, 64, 3, 16, 1.0f},  {1, 64, 4, 32, 3.0f},
                        {2, 256, 2, 64, 1.0f}, {1, 256, 2, 72, 1.0f}, {2, 30, 2, 12, 1.0f}};
  for (const Case& c : cases) {
    const std::int64_t d = c.heads * c.head_dim;
    std::vector<float> qkv(static_cast<std::size_t>(c.samples * c.tokens * 3 * d));
    fill_normal(qkv.data(), qkv.size(), NoiseKey{77, 0, 0, 0});
    for (float& v : qkv)
      v *= c.spread;
    // The reference: softmax(q k^T / sqrt(hd)) v in double, one (sample, head, query) at a time.
    std::vector<double> want(static_cast<std::size_t>(c.samples * c.tokens * d));
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    for (std::int64_t n = 0; n < c.samples; ++n)
      for (std::int64_t h = 0; h < c.heads; ++h)
        for (std::int64_t i = 0; i < c.tokens; ++i) {
          const float* base = qkv.data() + n * c.tokens * 3 * d + h * c.head_dim;
          std::vector<double> w(static_cast<std::size_t>(c.tokens));
          double top = -INFINITY, sum = 0;
          for (std::int64_t j = 0; j < c.tokens; ++j) {
            double dot = 0;
            for (std::int64_t e = 0; e < c.head_dim; ++e)
              dot += static_cast<double>(base[i * 3 * d + e]) * base[j * 3 * d + d + e];
            w[static_cast<std::size_t>(j)] = dot * scale;
            top = std::max(top, dot * scale);
          }
          for (double& x : w)
            sum += (x = std::exp(x - top));
          for (std::int64_t e = 0; e < c.head_dim; ++e) {
            double acc = 0;
            for (std::int64_t j = 0; j < c.tokens; ++j)
              acc += w[static_cast<std::size_t>(j)] * base[j * 3 * d + 2 * d + e];
            want[static_cast<std::size_t>((n * c.tokens + i) * d + h * c.head_dim + e)] = acc / sum;
          }
        }
    std::vector<float> want_f(want.begin(), want.end());
    const auto check = [&](dit::SelfAttention& attention, const std::string& what) {
      std::vector<float> got(want.size(), NAN);
      attention.run(qkv.data(), c.samples, c.tokens, c.heads, c.head_dim, got.data());
      INFO(what << ": " << c.samples << " samples x " << c.heads << " heads of [" << c.tokens
                << ", " << c.head_dim << "], spread " << c.spread);
      CHECK(relative_l2(got.data(), want_f.data(), static_cast<std::int64_t>(got.size())) < 2e-6);
    };
    for (const dit::Gemm gemm : available_gemms()) {
      dit::SelfAttention attention(gemm);
      check(attention, dit::to_string(gemm));
    }
  }
}

TEST_CASE("DiT Eigen linear layers compute every output column for any thread count",
          "[dit][linear]") {
  // The Eigen path shares tiles of 64 output columns among the OpenMP threads: output widths
  // below one tile, off a multiple of it and of several tiles, each with enough work to run
  // threaded. Every thread count must also give the same bits as one thread.
  const std::int64_t rows = 1024, in = 128;
  Tensor noise(1, Shape{rows * in + 384 * in + 384, 1, 1});
  HostBackend{}.fill_normal(noise, NoiseKey{9, 0, 0, 0});
  const float* x = noise.data();
  const float* w = x + rows * in;
  const float* b = w + 384 * in;
#ifdef _OPENMP
  const int previous_threads = omp_get_max_threads();
  const std::vector<int> thread_counts{1, 2, 3, 17, 32, 33};
#else
  const std::vector<int> thread_counts{1};
#endif
  dit::LinearLayers linear(dit::Gemm::eigen);
  for (const std::int64_t out : {16, 100, 288, 384}) {
    std::vector<double> reference(static_cast<std::size_t>(rows * out));
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t o = 0; o < out; ++o) {
        double acc = b[o];
        for (std::int64_t k = 0; k < in; ++k)
          acc += static_cast<double>(x[r * in + k]) * w[o * in + k];
        reference[static_cast<std::size_t>(r * out + o)] = acc;
      }
    std::vector<float> one_thread;
    for (const int threads : thread_counts) {
      INFO("out " << out << ", threads " << threads);
#ifdef _OPENMP
      omp_set_num_threads(threads);
#endif
      std::vector<float> y(static_cast<std::size_t>(rows * out), std::nanf(""));
      linear.run(x, rows, dit::Param{w, out, in}, dit::Param{b, 1, out}, y.data(), {});
      std::int64_t wrong = 0;
      for (std::size_t i = 0; i < y.size(); ++i)
        wrong += !(std::abs(y[i] - reference[i]) <= 1e-4 * (1 + std::abs(reference[i])));
      CHECK(wrong == 0);
      if (one_thread.empty())
        one_thread = y;
      CHECK(std::memcmp(y.data(), one_thread.data(), sizeof(float) * y.size()) == 0);
    }
  }
#ifdef _OPENMP
  omp_set_num_threads(previous_threads);
#endif
}

TEST_CASE("DiT: oneDNN and Eigen give the same model; an unbuilt GEMM is refused",
          "[dit][linear]") {
  if (!dit::gemm_available(dit::Gemm::onednn)) {
    CHECK_THROWS_WITH(dit::LinearLayers(dit::Gemm::onednn), Catch::Contains("oneDNN"));
    return;
  }
  // Batch 3 (the golden files run one row per call): gates broadcast per sample; a moved model
  // keeps its primitives.
  dit::CpuModel eigen(dit::Weights::random(tiny_dit_config(), 31), "DiT", dit::Gemm::eigen);
  dit::CpuModel onednn(dit::Weights::random(tiny_dit_config(), 31), "DiT", dit::Gemm::onednn);
  CHECK(onednn.gemm() == dit::Gemm::onednn);
  const Tensor a = dit_forward(eigen, 3, 321, {0, 9, 10});
  const Tensor b = dit_forward(onednn, 3, 321, {0, 9, 10});
  CHECK(relative_l2(b.data(), a.data(), a.numel()) < 1e-6);
  dit::CpuModel moved = std::move(onednn);
  const Tensor c = dit_forward(moved, 3, 321, {0, 9, 10});
  CHECK(std::memcmp(b.data(), c.data(), sizeof(float) * static_cast<std::size_t>(b.numel())) == 0);

  // 256 tokens and 2 heads: 512 KiB of attention scores per sample, so oneDNN's attention takes
  // the batch of 3 in chunks of 2 and 1 (attention.hpp).
  dit::Config wide = tiny_dit_config();
  wide.input_size = 32;
  wide.hidden_size = 32;
  wide.num_heads = 2;
  wide.depth = 1;
  dit::CpuModel wide_eigen(dit::Weights::random(wide, 32), "DiT", dit::Gemm::eigen);
  dit::CpuModel wide_onednn(dit::Weights::random(wide, 32), "DiT", dit::Gemm::onednn);
  const Tensor d = dit_forward(wide_eigen, 3, 40, {2, 5, 10});
  const Tensor e = dit_forward(wide_onednn, 3, 40, {2, 5, 10});
  CHECK(relative_l2(e.data(), d.data(), d.numel()) < 1e-6);
}

TEST_CASE("DiT forward: no heap allocation after the first call with a batch size", "[dit]") {
  for (const dit::Gemm gemm : available_gemms()) {
    // 2 images: each layer threaded; 8 images on 2 threads: with oneDNN, per-thread slices.
    for (const std::int64_t batch : {2, 8}) {
      INFO("gemm " << dit::to_string(gemm) << ", batch " << batch);
      dit::CpuModel model(dit::Weights::random(tiny_dit_config(), 41), "DiT", gemm);
      model.set_threads(2);
      Tensor x(batch, model.latent_shape()), out(batch, Shape{8, 8, 8});
      HostBackend{}.fill_normal(x, NoiseKey{6, 0, 0, 0});
      StepContext ctx;
      ctx.point.timestep = 100;
      std::vector<int> labels(static_cast<std::size_t>(batch), 10);
      labels[0] = 1;
      for (const bool invariant : {false, true}) {
        INFO("batch invariant " << invariant);
        model.set_batch_invariant(invariant); // one image's rows at a time: other GEMM shapes
        model.predict(x, ctx, labels, out);   // sizes the buffers, builds the primitives
        const long before = heap_allocations.load();
        model.predict(x, ctx, labels, out);
        const long allocations = heap_allocations.load() - before;
        if (gemm == dit::Gemm::eigen) {
          CHECK(allocations == 0);
        } else {
          // oneDNN's per-call bookkeeping (gemm.hpp): small, and bounded per block and call.
          CHECK(allocations <= 100 * static_cast<long>(model.config().depth + 1) * x.batch());
        }
      }
    }
  }
}
