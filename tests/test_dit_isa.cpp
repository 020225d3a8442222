// SPDX-License-Identifier: Apache-2.0
// The CPU DiT on every instruction set it claims. ctest runs these cases once as they are and
// again under each of oneDNN's caps (ONEDNN_MAX_CPU_ISA = AVX2, AVX, SSE41: tests/CMakeLists.txt),
// so that an AVX-512 machine also checks what an AVX2 or older CPU would run. Under every cap no
// operation may use one of oneDNN's reference kernels, and the output must agree with the Eigen
// path, which oneDNN's cap does not touch, within the tolerance of the GEMM tests.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "support/dit_fixtures.hpp"
#include "support/tensor_checks.hpp"
#include "tstitch/core/log.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;
using tstitch::testing::dit_forward;
using tstitch::testing::relative_l2;

namespace {

std::filesystem::path shipped_model(const char* name) {
  return std::filesystem::path(TSTITCH_MODELS_DIR) / name;
}

/// DiT-S/2's layer shapes (hidden 384, 6 heads of 64, 256 tokens) in two blocks: every shape of
/// the full model's forward but in a sixth of the time.
dit::Config dit_s2_shaped() {
  dit::Config c = dit::Config::preset("DiT-S/2");
  c.depth = 2;
  return c;
}

/// The CPU's instruction set as oneDNN sees it after the cap, for the test log.
std::string onednn_isa() {
#ifdef TSTITCH_HAS_ONEDNN
  switch (dnnl::get_effective_cpu_isa()) {
  case dnnl::cpu_isa::sse41:
    return "sse41";
  case dnnl::cpu_isa::avx:
    return "avx";
  case dnnl::cpu_isa::avx2:
    return "avx2";
  case dnnl::cpu_isa::avx2_vnni:
    return "avx2_vnni";
  case dnnl::cpu_isa::avx512_core:
    return "avx512_core";
  case dnnl::cpu_isa::avx512_core_vnni:
    return "avx512_core_vnni";
  case dnnl::cpu_isa::avx512_core_bf16:
    return "avx512_core_bf16";
  case dnnl::cpu_isa::avx512_core_amx:
    return "avx512_core_amx";
  default:
    return "other (" + std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa())) + ")";
  }
#else
  return "no oneDNN";
#endif
}

void require_no_reference_kernel(const dit::CpuModel& model) {
  const std::vector<dit::KernelChoice> kernels = model.kernels();
  REQUIRE(!kernels.empty());
  for (const dit::KernelChoice& k : kernels) {
    INFO(model.model_name(0) << ": " << k.operation << ": " << k.implementation);
    CHECK(!k.reference);
    CHECK(!k.implementation.starts_with("oneDNN ref"));
  }
}

} // namespace

TEST_CASE("CPU DiT: the cap on oneDNN's instruction set took effect", "[dit][isa]") {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  INFO("ONEDNN_MAX_CPU_ISA = " << (cap ? cap : "(unset)") << ", oneDNN runs " << onednn_isa());
#ifdef TSTITCH_HAS_ONEDNN
  if (cap != nullptr) {
    const std::string want(cap);
    const std::string got = onednn_isa();
    if (want == "SSE41")
      CHECK(got == "sse41");
    else if (want == "AVX")
      CHECK((got == "avx" || got == "sse41"));
    else if (want == "AVX2")
      CHECK((got == "avx2" || got == "avx" || got == "sse41"));
  }
#endif
  SUCCEED();
}

TEST_CASE("CPU DiT: no reference kernel and the Eigen path's output, at every batch and shape",
          "[dit][isa]") {
  struct Case {
    std::string name;
    std::function<dit::Weights()> weights; // loading again maps the same file
  };
  const Case cases[] = {
      {"Fashion small",
       [] { return dit::Weights::load(shipped_model("fashion_dit_s.safetensors")); }},
      {"Fashion large",
       [] { return dit::Weights::load(shipped_model("fashion_dit_l.safetensors")); }},
      {"DiT-S/2-shaped", [] { return dit::Weights::random(dit_s2_shaped(), 3); }}};
  for (const Case& c : cases) {
    INFO(c.name << ", oneDNN at " << onednn_isa());
    dit::CpuModel fast(c.weights(), c.name);
    dit::CpuModel eigen(c.weights(), c.name, dit::Gemm::eigen);
    // 1 and 3 images, and as many as the demo's attention chunks hold (several chunks).
    const std::vector<std::int64_t> batches = c.name == "DiT-S/2-shaped"
                                                  ? std::vector<std::int64_t>{1, 3}
                                                  : std::vector<std::int64_t>{1, 3, 24};
    for (const std::int64_t batch : batches) {
      INFO("batch " << batch);
      std::vector<int> labels(static_cast<std::size_t>(batch));
      for (std::size_t i = 0; i < labels.size(); ++i)
        labels[i] = static_cast<int>(i % 10);
      const Tensor got = dit_forward(fast, batch, 421, labels);
      const Tensor want = dit_forward(eigen, batch, 421, labels);
      CHECK(relative_l2(got, want) < 1e-5);
    }
    require_no_reference_kernel(fast);
  }
}

TEST_CASE("CPU DiT: stitched sampling of the shipped pair agrees with the Eigen path",
          "[dit][isa]") {
  const auto run = [&](dit::Gemm gemm) {
    dit::CpuModel small(dit::Weights::load(shipped_model("fashion_dit_s.safetensors")), "small",
                        gemm);
    dit::CpuModel large(dit::Weights::load(shipped_model("fashion_dit_l.safetensors")), "large",
                        gemm);
    TrajectoryStitcher stitcher(small, large, 0.4);
    Tensor x(4, small.latent_shape());
    fill_initial_noise(x, 11);
    SampleOptions options;
    options.steps = 5;
    options.guidance = Guidance::standard(1.25);
    DDIM ddim;
    sample(stitcher, DiscreteSchedule{}, ddim, x, {0, 3, 6, 9}, options);
    if (gemm != dit::Gemm::eigen) {
      require_no_reference_kernel(small);
      require_no_reference_kernel(large);
    }
    return x;
  };
  const Tensor want = run(dit::Gemm::eigen);
  INFO("oneDNN at " << onednn_isa());
  CHECK(relative_l2(run(dit::default_gemm()), want) < 1e-5);
}

TEST_CASE("CPU DiT: each kernel choice is logged once at debug level", "[dit][isa]") {
  std::vector<std::string> lines;
  set_log_sink([&](LogLevel level, std::string_view message) {
    if (level == LogLevel::debug)
      lines.emplace_back(message);
  });
  const LogLevel previous = log_level();
  set_log_level(LogLevel::debug);
  dit::CpuModel model(dit::Weights::random(testing::tiny_dit_config(), 5), "tiny");
  dit_forward(model, 2, 10, {1, 2});
  const std::size_t first = lines.size();
  dit_forward(model, 2, 20, {1, 2}); // the same shapes: nothing new to say
  set_log_level(previous);
  set_log_sink({});
  if (model.gemm() == dit::Gemm::eigen) {
    CHECK(lines.empty());
    return;
  }
  CHECK(lines.size() == first);
  CHECK(first == model.kernels().size());
  for (const dit::KernelChoice& k : model.kernels())
    CHECK(std::find_if(lines.begin(), lines.end(), [&](const std::string& line) {
            return line.find(k.operation) != std::string::npos &&
                   line.find(k.implementation) != std::string::npos;
          }) != lines.end());
}
