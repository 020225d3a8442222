// SPDX-License-Identifier: Apache-2.0
// PyTorch's generators (core/torch_rng.hpp) and the torch noise sources of the host backend.
//  - Always: a committed fixture of torch.randn bits, mt19937 and Philox known answers, the CUDA
//    layout's bookkeeping, and the backend drawing whole batches in sequence.
//  - [torch_oracle] (hidden; its own ctest entry): live against tools/torch_rng_oracle.py under
//    /usr/bin/python3 (TSTITCH_TORCH_PYTHON overrides it); prints "SKIPPED: ..." and passes where
//    that python cannot import torch. Noise is compared bit for bit; sampled results within a
//    float32 tolerance, since diffusers' arithmetic orders its float32 operations differently.
#include <catch2/catch.hpp>

#include "support/diffusers_harness.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/torch_rng.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/euler_ancestral.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

using namespace tstitch;
using torch_rng::CpuGenerator;
using torch_rng::CpuKernel;
using torch_rng::CudaDevice;
using torch_rng::CudaGenerator;

namespace {

template <class T> auto bits_of(T value) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  U bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

/// Index of the first element whose bits differ, or -1.
template <class T> std::int64_t first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size())
    return 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (bits_of(a[i]) != bits_of(b[i]))
      return static_cast<std::int64_t>(i);
  return -1;
}

std::string data_path(const std::string& name) {
  return std::string(TSTITCH_TEST_DATA_DIR) + "/" + name;
}

// ---- the live oracle -------------------------------------------------------------------------

std::string python() {
  const char* chosen = std::getenv("TSTITCH_TORCH_PYTHON");
  return chosen != nullptr && *chosen != '\0' ? chosen : "/usr/bin/python3";
}

/// Why the oracle cannot run here, or nothing when it can.
std::optional<std::string> oracle_unavailable() {
  const std::string command = python() + " -c 'import torch' >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0)
    return python() + " cannot import torch";
  return std::nullopt;
}

struct OracleRun {
  std::string capability; // ATen's CPU capability, as torch reports it
  std::vector<char> bytes;
};

/// Runs tools/torch_rng_oracle.py with `args` (and an optional environment prefix); `cuda`, when
/// given, receives what follows "cuda: " in its output.
OracleRun run_oracle(const std::string& args, const std::string& environment = "",
                     std::string* cuda = nullptr) {
  static int runs = 0;
  const std::string out =
      (std::filesystem::temp_directory_path() /
       ("tstitch_torch_rng_" + std::to_string(getpid()) + "_" + std::to_string(runs++) + ".bin"))
          .string();
  const std::string script =
      std::string(TSTITCH_TEST_DATA_DIR) + "/../../tools/torch_rng_oracle.py";
  const std::string command =
      environment + " " + python() + " " + script + " " + args + " --out " + out;
  OracleRun run;
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char line[256];
  while (std::fgets(line, sizeof line, pipe) != nullptr) {
    const std::string text(line);
    if (text.rfind("capability: ", 0) == 0)
      run.capability = text.substr(12, text.find_last_not_of("\r\n") - 11);
    if (cuda != nullptr && text.rfind("cuda: ", 0) == 0)
      *cuda = text.substr(6);
  }
  INFO(command);
  REQUIRE(pclose(pipe) == 0);
  std::ifstream file(out, std::ios::binary);
  run.bytes.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  std::remove(out.c_str());
  return run;
}

template <class T>
std::vector<T> values_of(const std::vector<char>& bytes, std::size_t first = 0,
                         std::size_t count = SIZE_MAX) {
  const std::size_t total = bytes.size() / sizeof(T);
  count = std::min(count, total - first);
  std::vector<T> values(count);
  std::memcpy(values.data(), bytes.data() + first * sizeof(T), count * sizeof(T));
  return values;
}

/// Whether this CPU has what ATen's AVX512 capability needs (AVX-512 F, VL, BW and DQ).
bool cpu_has_avx512_as_aten_asks() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

/// The kernel ATen runs for a capability: AVX2 and AVX512 share the vectorised one.
CpuKernel kernel_for(const std::string& capability) {
  return capability == "AVX2" || capability == "AVX512" ? CpuKernel::avx2 : CpuKernel::scalar;
}

#define SKIP_UNLESS_ORACLE()                                                                       \
  if (const auto why = oracle_unavailable()) {                                                     \
    WARN("SKIPPED: " << *why);                                                                     \
    return;                                                                                        \
  }

} // namespace

TEST_CASE("torch_rng: Mt19937 is the reference twister, seeded with the seed's low 32 bits",
          "[torch_rng]") {
  torch_rng::Mt19937 ours(5489);
  std::uint32_t value = 0;
  for (int i = 0; i < 10000; ++i)
    value = ours();
  CHECK(value == 4123659995u); // the C++ standard's required 10000th value of mt19937
  torch_rng::Mt19937 high((std::uint64_t{7} << 32) | 12345u);
  std::mt19937 reference(12345u);
  for (int i = 0; i < 1000; ++i)
    REQUIRE(high() == reference());
}

TEST_CASE("torch_rng: the committed torch.randn fixture, bit for bit", "[torch_rng]") {
  // Written by tools/torch_rng_oracle.py fixture: seed 42, randn(3), randn(17), then
  // randn(5, float64). randn(3) leaves the sine of its second Box-Muller pair in the generator,
  // which is the float64 call's first value: the cache outlives the call, as in torch.
  std::ifstream file(data_path("torch_rng/randn_seed42.txt"));
  REQUIRE(file);
  std::string header, line;
  std::getline(file, header);
  const CpuKernel kernel =
      header.find("capability DEFAULT") != std::string::npos ? CpuKernel::scalar : CpuKernel::avx2;
  CpuGenerator generator(42, kernel);
  for (const std::size_t size : {std::size_t{3}, std::size_t{17}}) {
    REQUIRE(std::getline(file, line));
    std::istringstream words(line);
    std::vector<float> expected;
    for (std::string word; words >> word;)
      expected.push_back(
          std::bit_cast<float>(static_cast<std::uint32_t>(std::stoul(word, nullptr, 16))));
    std::vector<float> got(size);
    generator.randn(got);
    CHECK(first_difference(got, expected) == -1);
  }
  REQUIRE(std::getline(file, line));
  std::istringstream words(line);
  std::vector<double> expected;
  for (std::string word; words >> word;)
    expected.push_back(
        std::bit_cast<double>(static_cast<std::uint64_t>(std::stoull(word, nullptr, 16))));
  std::vector<double> got(5);
  generator.randn(got);
  CHECK(first_difference(got, expected) == -1);
}

TEST_CASE("torch_rng: manual_seed restarts the sequence and drops the cached normal",
          "[torch_rng]") {
  CpuGenerator generator(7);
  std::vector<float> first(3), again(3), longer(40), longer_again(40);
  generator.randn(first); // leaves a cached partner
  generator.randn(longer);
  generator.manual_seed(7);
  generator.randn(again);
  generator.randn(longer_again);
  CHECK(first_difference(first, again) == -1);
  CHECK(first_difference(longer, longer_again) == -1);
  // Sizes of 16 or more redraw their last 16 uniforms when not a multiple of 16, so a randn of
  // 17 is not a prefix of a randn of 32.
  CpuGenerator a(1), b(1);
  std::vector<float> n17(17), n32(32);
  a.randn(n17);
  b.randn(n32);
  CHECK(std::equal(n17.begin(), n17.begin() + 1, n32.begin()));
  CHECK(bits_of(n17[16]) != bits_of(n32[16]));
}

TEST_CASE("torch_rng: CUDA Philox words are Random123's at torch's counter and key",
          "[torch_rng]") {
  // curand_init(seed, thread, offset) then curand4: counter {offset/4 + call, thread}, key seed.
  const Uint4 zero = CudaGenerator::philox_words(0, 0, 0, 0);
  CHECK(zero.v[0] == 0x6627e8d5u);
  CHECK(zero.v[1] == 0xe169c58du);
  CHECK(zero.v[2] == 0xbc57ac4cu);
  CHECK(zero.v[3] == 0x9b00dbd8u);
  const Uint4 ones =
      CudaGenerator::philox_words(~std::uint64_t{0}, ~std::uint64_t{0}, 0, ~std::uint64_t{0});
  CHECK(ones.v[0] == 0x408f276du);
  CHECK(ones.v[1] == 0x41c83b0eu);
  CHECK(ones.v[2] == 0xa20bc7c6u);
  CHECK(ones.v[3] == 0x6d5451fdu);
  // The offset moves the counter by offset / 4, the same words as later calls.
  const Uint4 later = CudaGenerator::philox_words(5, 3, 8, 1);
  const Uint4 direct = CudaGenerator::philox_words(5, 3, 0, 3);
  CHECK(std::memcmp(&later, &direct, sizeof later) == 0);
}

TEST_CASE("torch_rng: CUDA randn layout, offsets and values (host side)", "[torch_rng]") {
  CudaGenerator generator(11, CudaDevice{4, 2048}); // a grid of at most 32 blocks, 8192 threads
  CHECK(generator.grid(100) == 1);
  CHECK(generator.grid(1'000'000) == 32);
  CHECK(generator.offset_increment(100) == 4);
  CHECK(generator.offset_increment(8192 * 4) == 4);
  CHECK(generator.offset_increment(8192 * 4 + 1) == 8);
  // Every element comes from one (thread, call, lane), and randn puts that value there.
  const std::size_t count = 8192 * 4 + 1000;
  std::vector<float> values(count);
  generator.randn(values);
  CHECK(generator.offset() == 8);
  for (const std::size_t index :
       {std::size_t{0}, std::size_t{8191}, std::size_t{8192}, std::size_t{30000}, count - 1}) {
    const torch_rng::CudaSlot slot = generator.slot(index, count);
    const auto four =
        CudaGenerator::normal4(CudaGenerator::philox_words(11, slot.thread, 0, slot.call));
    CHECK(bits_of(values[index]) == bits_of(four[slot.lane]));
  }
  // The next call starts at the advanced offset; a reseed resets it.
  std::vector<float> next(16), fresh(16);
  generator.randn(next);
  const auto expect = CudaGenerator::normal4(CudaGenerator::philox_words(11, 5, 8, 0));
  CHECK(bits_of(next[5]) == bits_of(expect[0]));
  generator.manual_seed(11);
  generator.randn(fresh);
  CHECK(bits_of(fresh[0]) == bits_of(values[0]));
  // Box-Muller: roughly standard normal.
  double sum = 0, squares = 0;
  for (const float v : values) {
    sum += v;
    squares += static_cast<double>(v) * v;
  }
  CHECK(std::abs(sum / count) < 0.02);
  CHECK(std::abs(squares / count - 1) < 0.03);
  CHECK_THROWS_WITH(CudaGenerator(0, CudaDevice{0, 2048}),
                    Catch::Contains("CudaDevice::multiprocessors"));
}

TEST_CASE("torch noise sources: whole batches in sequence through the host backend",
          "[torch_rng]") {
  SECTION("the default is Philox, by NoiseKey") {
    const HostBackend backend;
    CHECK(backend.noise.counter_based());
    Tensor x(2, Shape{1, 4, 5});
    backend.fill_normal(x, NoiseKey{9, 3, 0, 0});
    std::vector<float> row(20);
    fill_normal(row.data(), row.size(), NoiseKey{9, 4, 0, 0});
    CHECK(std::memcmp(row.data(), x.data() + 20, sizeof(float) * 20) == 0);
  }
  SECTION("torch-cpu: one randn per call over the whole batch, strided or not") {
    HostBackend backend;
    backend.noise = NoiseSource::torch_cpu(5);
    const HostBackend copy = backend; // copies share the generator
    std::vector<float> wide(2 * 40, -1.0f);
    const View strided(wide.data(), 2, Shape{1, 4, 5}, 40);
    backend.fill_normal(strided, NoiseKey{});
    Tensor contiguous(2, Shape{1, 4, 5});
    copy.fill_normal(contiguous, NoiseKey{123, 7, 1, 1}); // the key does not matter

    CpuGenerator reference(5);
    std::vector<float> first(40), second(40);
    reference.randn(first);
    reference.randn(second);
    CHECK(std::memcmp(wide.data(), first.data(), 20 * sizeof(float)) == 0);
    CHECK(std::memcmp(wide.data() + 40, first.data() + 20, 20 * sizeof(float)) == 0);
    CHECK(wide[20] == -1.0f); // the gap between the strided rows is untouched
    CHECK(std::memcmp(contiguous.data(), second.data(), 40 * sizeof(float)) == 0);
  }
  SECTION("torch-cuda") {
    HostBackend backend;
    backend.noise = NoiseSource::torch_cuda(3);
    CHECK(to_string(backend.noise.kind()) == "torch-cuda");
    Tensor x(1, Shape{1, 4, 8});
    backend.fill_normal(x, NoiseKey{});
    CudaGenerator reference(3);
    std::vector<float> expected(32);
    reference.randn(expected);
    CHECK(std::memcmp(x.data(), expected.data(), sizeof(float) * 32) == 0);
    CHECK(backend.noise.cuda_generator()->offset() == 4);
  }
  SECTION("a Philox source refuses a sequential draw") {
    std::vector<float> v(4);
    CHECK_THROWS_WITH(NoiseSource{}.randn(v), Catch::Contains("philox"));
  }
}

namespace {

/// x_T and the final latents of a 5-step run on the diffusers dummy model with torch noise.
template <class SolverT>
std::pair<Tensor, Tensor> torch_seeded_run(SolverT solver, std::uint64_t seed, CpuKernel kernel,
                                           Shape shape, std::int64_t batch) {
  const DiscreteSchedule schedule{DiscreteScheduleOptions{}}; // diffusers' defaults, leading
  auto model = testing::harness_model(Prediction::epsilon, shape);
  HostBackend backend;
  backend.noise = NoiseSource::torch_cpu(seed, kernel);
  Tensor x(batch, shape);
  SampleOptions options;
  options.steps = 5;
  fill_initial_noise(x, options, backend);
  Tensor initial = x;
  Sampler<> sampler(backend);
  sampler.run(model, schedule, solver, x, NoCondition{}, nullptr, options);
  return {initial, x};
}

} // namespace

TEST_CASE("torch_rng oracle: randn sequences equal python3-torch's bit for bit",
          "[.][torch_oracle]") {
  SKIP_UNLESS_ORACLE();
  const std::vector<std::size_t> sizes{1, 3, 15, 16, 17, 31, 64, 1000, 4 * 4 * 32 * 32, 7, 16};
  std::string list;
  for (const std::size_t n : sizes)
    list += std::string(list.empty() ? "" : ",") + std::to_string(n);
  const std::vector<std::uint64_t> seeds{0, 42, (std::uint64_t{1} << 40) + 5};
  std::string seed_list;
  for (const std::uint64_t seed : seeds)
    seed_list += std::string(seed_list.empty() ? "" : ",") + std::to_string(seed);
  // Torch's own dispatch (AVX2 on x86-64 with AVX2), AVX512 where the CPU has it, then DEFAULT.
  // ATen takes ATEN_CPU_CAPABILITY=avx512 at its word: on a CPU without AVX-512 (AMD Zen 3, say)
  // its kernels would stop on an illegal instruction, so that run is left out there.
  std::vector<std::string> environments{"", "ATEN_CPU_CAPABILITY=default"};
  if (cpu_has_avx512_as_aten_asks())
    environments.insert(environments.begin() + 1, "ATEN_CPU_CAPABILITY=avx512");
  for (const std::string& environment : environments) {
    const OracleRun run =
        run_oracle("randn --seeds " + seed_list + " --sizes " + list, environment);
    std::size_t offset = 0; // in bytes
    for (const std::uint64_t seed : seeds) {
      INFO("seed " << seed << ", capability " << run.capability);
      CpuGenerator generator(seed, kernel_for(run.capability));
      std::vector<float> floats;
      for (const std::size_t n : sizes) {
        std::vector<float> part(n);
        generator.randn(part);
        floats.insert(floats.end(), part.begin(), part.end());
      }
      CHECK(first_difference(floats, values_of<float>(run.bytes, offset / 4, floats.size())) == -1);
      offset += floats.size() * 4;
      generator.manual_seed(seed);
      std::vector<double> doubles;
      for (const std::size_t n : sizes) {
        std::vector<double> part(n);
        generator.randn(part);
        doubles.insert(doubles.end(), part.begin(), part.end());
      }
      CHECK(first_difference(doubles, values_of<double>(run.bytes, offset / 8, doubles.size())) ==
            -1);
      offset += doubles.size() * 8;
    }
    CHECK(offset == run.bytes.size());
  }
}

TEST_CASE("torch_rng oracle: DDPM and Euler ancestral runs equal diffusers' loops on torch's "
          "generator",
          "[.][torch_oracle]") {
  SKIP_UNLESS_ORACLE();
  // The noise is compared bit for bit. The sampled values are float32 arithmetic in another order
  // (torch's tensor expressions against tstitch's combine, schedule tables in double): on
  // 2026-12-07 they differed by at most 4.2e-7 after 5 steps; 4e-6 leaves a 10x margin. One noise
  // draw out of order moves values by order 1 (checked below against the Philox run).
  constexpr double tolerance = 4e-6;
  const Shape shape{4, 8, 8};
  const std::int64_t batch = 2;
  const std::size_t count = static_cast<std::size_t>(batch * shape.numel());
  for (const std::string mode : {"ddpm", "euler_a"}) {
    const std::uint64_t seed = mode == "ddpm" ? 1234 : 77;
    const OracleRun run =
        run_oracle(mode + " --seed " + std::to_string(seed) + " --steps 5 --shape 2,4,8,8");
    const auto expected_initial = values_of<float>(run.bytes, 0, count);
    const auto expected_final = values_of<float>(run.bytes, count, count);
    const auto [initial, final_x] =
        mode == "ddpm"
            ? torch_seeded_run(DDPM(DDPMOptions{DDPMVariance::fixed_small, 1.0f}), seed,
                               kernel_for(run.capability), shape, batch)
            : torch_seeded_run(EulerAncestral{}, seed, kernel_for(run.capability), shape, batch);
    INFO(mode << ", capability " << run.capability);
    CHECK(first_difference(std::vector<float>(initial.data(), initial.data() + count),
                           expected_initial) == -1);
    double worst = 0;
    for (std::size_t i = 0; i < count; ++i)
      worst = std::max(worst, std::abs(static_cast<double>(final_x.data()[i]) - expected_final[i]));
    CAPTURE(worst);
    CHECK(worst < tolerance);
    // The same run on Philox noise is far away: the comparison sees the noise.
    const Tensor philox_final = [&] {
      const DiscreteSchedule schedule{DiscreteScheduleOptions{}};
      auto model = testing::harness_model(Prediction::epsilon, shape);
      Tensor x(batch, shape);
      SampleOptions options;
      options.steps = 5;
      options.seed = seed;
      fill_initial_noise(x, options);
      if (mode == "ddpm")
        sample(model, schedule, DDPM(DDPMOptions{DDPMVariance::fixed_small, 1.0f}), x,
               NoCondition{}, options);
      else
        sample(model, schedule, EulerAncestral{}, x, NoCondition{}, options);
      return x;
    }();
    double philox_gap = 0;
    for (std::size_t i = 0; i < count; ++i)
      philox_gap = std::max(
          philox_gap, std::abs(static_cast<double>(philox_final.data()[i]) - expected_final[i]));
    CHECK(philox_gap > 0.1);
  }
}

TEST_CASE("torch_rng oracle: CUDA randn equals torch's on a GPU", "[.][torch_cuda_oracle]") {
  SKIP_UNLESS_ORACLE();
  // Sizes below and above the grid's cap (an H100's is 270336 threads), so that both layouts
  // and the offsets of several calls are seen.
  const std::vector<std::size_t> sizes{3, 1000, 16384, 1'500'000, 17};
  std::string list;
  for (const std::size_t n : sizes)
    list += std::string(list.empty() ? "" : ",") + std::to_string(n);
  std::string report;
  const OracleRun run = run_oracle("cuda_randn --seeds 2024 --sizes " + list, "", &report);
  if (report.find("unavailable") != std::string::npos) {
    WARN("SKIPPED: torch sees no CUDA device (the CUDA generator's layout is checked on a GPU)");
    return;
  }
  std::istringstream fields(report);
  std::uint32_t multiprocessors = 0, threads = 0;
  std::uint64_t offset = 0;
  fields >> multiprocessors >> threads >> offset;
  INFO("cuda: " << report);
  CudaGenerator generator(2024, CudaDevice{multiprocessors, threads});
  std::vector<float> got;
  for (const std::size_t n : sizes) {
    std::vector<float> part(n);
    generator.randn(part);
    got.insert(got.end(), part.begin(), part.end());
  }
  CHECK(generator.offset() == offset);
  const auto expected = values_of<float>(run.bytes);
  REQUIRE(expected.size() == got.size());
  // The Philox words are exact; the GPU's Box-Muller uses the approximate __sincosf, the host's
  // sinf/cosf: about 1e-6 apart for |values| below 6 (unverified until run on a GPU).
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - expected[i]));
  CAPTURE(worst);
  CHECK(worst < 1e-5);
}
