// SPDX-License-Identifier: Apache-2.0
// cuda::Backend against HostBackend, and device sampling against host sampling with the same
// Philox noise. Expectations: combine, copy, fill, fill_normal and find_nonfinite are bit-identical
// to the host (see backend.cuh for why); map with a functor that has a product feeding a sum may
// differ by an ulp or so (nvcc contracts it to an fma), so those compare by relative L2; whole
// sampling runs compare by relative L2 < 1e-5 (guidance, learned-range exp and fma contraction
// in solver functors each add ulps). Every failure prints the first mismatching flat index.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "../support/sample_variant.hpp"
#include "device_buffers.hpp"
#include "tstitch/cuda/device/backend.cuh"
#include "tstitch/cuda/device/sampling.cuh"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/flow.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;

namespace {

Tensor random_tensor(std::int64_t batch, Shape shape, std::uint32_t seed) {
  Tensor t(batch, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t[i] = normal(rng);
  return t;
}

cuda::DeviceTensor to_device(const Tensor& host) {
  cuda::DeviceTensor d(host.batch(), host.shape());
  cuda::upload(d.view(), host.view());
  return d;
}

using test::to_host;

/// Compares two host views of equal extent element by element (flat index n * C*H*W + e).
struct Comparison {
  std::int64_t count = 0;
  std::int64_t mismatches = 0; ///< bitwise when tolerance is 0, else |d - h| > tolerance * rms
  std::int64_t first = -1;     ///< first mismatching flat index
  float first_host = 0, first_device = 0;
  double max_abs = 0;
  std::int64_t max_index = -1;
  double rel_l2 = 0;

  [[nodiscard]] std::string describe() const {
    std::ostringstream out;
    out.precision(9);
    out << count << " values, " << mismatches << " mismatches, rel L2 " << rel_l2 << ", max |d-h| "
        << max_abs << " at " << max_index;
    if (first >= 0)
      out << "; first mismatch at flat index " << first << ": host " << first_host << ", device "
          << first_device;
    return out.str();
  }
};

Comparison compare(ConstView host, ConstView device, double tolerance = 0) {
  REQUIRE(host.batch() == device.batch());
  REQUIRE(host.shape() == device.shape());
  Comparison c;
  double diff2 = 0, ref2 = 0;
  const std::int64_t per = host.sample_numel();
  for (std::int64_t n = 0; n < host.batch(); ++n)
    for (std::int64_t e = 0; e < per; ++e)
      ref2 += double(host.data()[n * host.batch_stride() + e]) *
              host.data()[n * host.batch_stride() + e];
  const double rms = std::sqrt(ref2 / double(std::max<std::int64_t>(1, host.numel())));
  for (std::int64_t n = 0; n < host.batch(); ++n)
    for (std::int64_t e = 0; e < per; ++e) {
      const float h = host.data()[n * host.batch_stride() + e];
      const float d = device.data()[n * device.batch_stride() + e];
      const double diff = std::abs(double(d) - double(h));
      const bool bad = tolerance == 0 ? std::memcmp(&h, &d, sizeof h) != 0
                                      : !(diff <= tolerance * std::max(rms, 1e-30));
      ++c.count;
      diff2 += diff * diff;
      if (diff > c.max_abs || (std::isnan(diff) && c.max_index < 0)) {
        c.max_abs = diff;
        c.max_index = n * per + e;
      }
      if (bad && c.mismatches++ == 0) {
        c.first = n * per + e;
        c.first_host = h;
        c.first_device = d;
      }
    }
  c.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return c;
}

#define CHECK_BITWISE(host_view, device_view)                                                      \
  do {                                                                                             \
    const Comparison cmp_ = compare((host_view), (device_view));                                   \
    INFO(cmp_.describe());                                                                         \
    CHECK(cmp_.mismatches == 0);                                                                   \
  } while (false)

constexpr Shape shape{4, 5, 7}; // 140 values per sample: rows are not multiples of 32 or 256
constexpr std::int64_t batch = 3;

/// Host and device operands of one test: a contiguous tensor, and channel slices [C, 2C) of wider
/// [batch, 2C + 1, H, W] tensors (rows contiguous, batch stride (2C + 1) H W).
struct Pair {
  Tensor host;
  cuda::DeviceTensor device;
  View h() { return host.view(); }
  View d() { return device.view(); }
};

Pair contiguous(std::uint32_t seed) {
  Tensor h = random_tensor(batch, shape, seed);
  cuda::DeviceTensor d = to_device(h);
  return {std::move(h), std::move(d)};
}

struct SlicePair {
  Tensor host;
  cuda::DeviceTensor device;
  View h() { return host.view().channels(shape.channels, shape.channels); }
  View d() { return device.view().channels(shape.channels, shape.channels); }
};

SlicePair sliced(std::uint32_t seed) {
  const Shape wide{2 * shape.channels + 1, shape.height, shape.width};
  Tensor h = random_tensor(batch, wide, seed);
  cuda::DeviceTensor d = to_device(h);
  return {std::move(h), std::move(d)};
}

/// Compares the whole wide tensors too, so writes outside the slice are caught.
void check_slice(SlicePair& p) {
  const Tensor d = to_host(p.device.view());
  CHECK_BITWISE(p.host.view(), d.view());
}

} // namespace

TEST_CASE("cuda::Backend::combine matches HostBackend bit for bit", "[cuda][backend]") {
  const HostBackend host;
  const cuda::Backend device;
  const float c0 = 0.7310586f, c1 = -1.2345678f, c2 = 3.1415927e-3f, c3 = 0.99999994f;

  SECTION("contiguous operands, 1 to 4 terms") {
    for (int terms = 1; terms <= 4; ++terms) {
      INFO("terms " << terms);
      Pair a = contiguous(1), b = contiguous(2), c = contiguous(3), d = contiguous(4);
      Pair out = contiguous(5);
      auto run = [&](const auto& be, View o, ConstView x0, ConstView x1, ConstView x2,
                     ConstView x3) {
        switch (terms) {
        case 1:
          be.combine(o, Term{c0, x0});
          break;
        case 2:
          be.combine(o, Term{c0, x0}, Term{c1, x1});
          break;
        case 3:
          be.combine(o, Term{c0, x0}, Term{c1, x1}, Term{c2, x2});
          break;
        default:
          be.combine(o, Term{c0, x0}, Term{c1, x1}, Term{c2, x2}, Term{c3, x3});
        }
      };
      run(host, out.h(), a.h(), b.h(), c.h(), d.h());
      run(device, out.d(), a.d(), b.d(), c.d(), d.d());
      CHECK_BITWISE(out.h(), to_host(out.d()).view());
    }
  }
  SECTION("channel-slice operands and output, output aliasing an input") {
    SlicePair a = sliced(11), b = sliced(12), c = sliced(13);
    Pair d = contiguous(14);
    host.combine(a.h(), Term{c0, ConstView(a.h())}, Term{c1, b.h()}, Term{c2, c.h()},
                 Term{c3, d.h()});
    device.combine(a.d(), Term{c0, ConstView(a.d())}, Term{c1, b.d()}, Term{c2, c.d()},
                   Term{c3, d.d()});
    check_slice(a);
    Pair out = contiguous(15);
    host.combine(out.h(), Term{c1, b.h()}, Term{c0, c.h()});
    device.combine(out.d(), Term{c1, b.d()}, Term{c0, c.d()});
    CHECK_BITWISE(out.h(), to_host(out.d()).view());
  }
  SECTION("shape mismatch throws naming both shapes") {
    Pair a = contiguous(1);
    cuda::DeviceTensor other(batch, Shape{3, 5, 7});
    CHECK_THROWS_WITH(device.combine(a.d(), Term{1.0f, other.view()}),
                      Catch::Contains("[3, 3, 5, 7]") && Catch::Contains("[3, 4, 5, 7]"));
  }
}

namespace {
// No product feeds a sum: nothing for nvcc to contract, so bit-identical to the host.
struct ClampScaleOp {
  float s;
  TSTITCH_HOST_DEVICE float operator()(float v) const {
    return (v < -s ? -s : (v > s ? s : v)) / s;
  }
};
struct ProductOp {
  TSTITCH_HOST_DEVICE float operator()(float a, float b, float c) const { return (a * b) * c; }
};
} // namespace

TEST_CASE("cuda::Backend::map matches HostBackend", "[cuda][backend]") {
  const HostBackend host;
  const cuda::Backend device;
  SECTION("functors without a multiply-add: bit for bit, contiguous and sliced") {
    Pair a = contiguous(21);
    SlicePair s = sliced(22), t = sliced(23);
    host.map(a.h(), ClampScaleOp{0.75f}, ConstView(a.h()));
    device.map(a.d(), ClampScaleOp{0.75f}, ConstView(a.d()));
    CHECK_BITWISE(a.h(), to_host(a.d()).view());
    host.map(s.h(), ProductOp{}, ConstView(s.h()), ConstView(t.h()), ConstView(a.h()));
    device.map(s.d(), ProductOp{}, ConstView(s.d()), ConstView(t.d()), ConstView(a.d()));
    check_slice(s);
  }
  SECTION("ClippedCombination (a multiply-add nvcc may fuse): relative L2 < 1e-6") {
    Pair x0 = contiguous(31), eps = contiguous(32), z = contiguous(33);
    SlicePair out = sliced(34);
    const ClippedCombination f{0.81f, -0.37f, 0.123f, 1.5f};
    host.map(out.h(), f, ConstView(x0.h()), ConstView(eps.h()), ConstView(z.h()));
    device.map(out.d(), f, ConstView(x0.d()), ConstView(eps.d()), ConstView(z.d()));
    const Comparison c = compare(out.h(), to_host(out.d()).view(), 1e-6);
    INFO(c.describe());
    CHECK(c.rel_l2 < 1e-6);
    CHECK(c.mismatches == 0);
  }
}

TEST_CASE("cuda::Backend::copy and fill match HostBackend bit for bit", "[cuda][backend]") {
  const HostBackend host;
  const cuda::Backend device;
  SlicePair s = sliced(41);
  Pair a = contiguous(42);
  host.copy(s.h(), a.h());
  device.copy(s.d(), a.d());
  check_slice(s);
  host.copy(a.h(), sliced(43).h());
  SlicePair src = sliced(43);
  device.copy(a.d(), src.d());
  CHECK_BITWISE(a.h(), to_host(a.d()).view());
  device.copy(a.d(), a.d()); // the same view: nothing to do
  CHECK_BITWISE(a.h(), to_host(a.d()).view());
  CHECK_THROWS_AS(device.copy(a.d().samples(1, 2), ConstView(a.d().samples(0, 2))),
                  tstitch::invalid_argument);

  SlicePair f = sliced(44);
  host.fill(f.h(), -2.5f);
  device.fill(f.d(), -2.5f);
  check_slice(f);
}

TEST_CASE("cuda::Backend::fill_normal is bit-identical to the host's Philox noise",
          "[cuda][backend][philox]") {
  const HostBackend host;
  const cuda::Backend device;
  const NoiseKey keys[] = {{0, 0, 0, stream_initial_latents},
                           {42, 7, 3, stream_solver},
                           {0xdeadbeefcafef00dULL, 0xfffffffeu, 999, 5}}; // sample wraps at 2^32
  const Shape shapes[] = {{1, 1, 1}, {1, 1, 3}, {1, 1, 5}, {3, 3, 3}, {4, 32, 32}, {1, 7, 143}};
  for (const NoiseKey& key : keys)
    for (const Shape& s : shapes)
      for (std::int64_t b : {1, 3}) {
        INFO("key (" << key.seed << ", " << key.sample << ", " << key.step << ", " << key.stream
                     << "), batch " << b << ", shape " << s);
        Tensor h(b, s);
        cuda::DeviceTensor d(b, s);
        host.fill_normal(h.view(), key);
        device.fill_normal(d.view(), key);
        CHECK_BITWISE(h.view(), to_host(d.view()).view());
      }
  SECTION("channel slices: each row keeps its own stream") {
    SlicePair s = sliced(51);
    host.fill_normal(s.h(), keys[1]);
    device.fill_normal(s.d(), keys[1]);
    check_slice(s);
  }
}

TEST_CASE("cuda::Backend::find_nonfinite finds the first NaN or Inf like the host",
          "[cuda][backend]") {
  const HostBackend host;
  const cuda::Backend device;
  SlicePair s = sliced(61);
  CHECK(device.find_nonfinite(s.d()) == -1);
  CHECK(host.find_nonfinite(s.h()) == -1);
  // Poison values inside the slice (rows 1 and 2) and one outside it, which must be ignored.
  const std::int64_t wide_stride = s.host.view().batch_stride();
  const std::int64_t slice_offset = shape.channels * shape.plane();
  s.host[0 * wide_stride + 3] = NAN; // channel 0 of sample 0: outside the slice
  s.host[2 * wide_stride + slice_offset + 17] = INFINITY;
  s.host[1 * wide_stride + slice_offset + 101] = -INFINITY;
  s.host[1 * wide_stride + slice_offset + 139] = NAN;
  cuda::upload(s.device.view(), s.host.view());
  const std::int64_t expected = 1 * shape.numel() + 101;
  CHECK(host.find_nonfinite(s.h()) == expected);
  CHECK(device.find_nonfinite(s.d()) == expected);
  Pair a = contiguous(62);
  a.host[2 * shape.numel() + 139] = NAN;
  cuda::upload(a.d(), a.h());
  CHECK(device.find_nonfinite(a.d()) == 2 * shape.numel() + 139);
}

TEST_CASE("cuda::Backend::allocate zero-fills and counts; host_view downloads", "[cuda][backend]") {
  const cuda::Backend device;
  const std::int64_t before = device.allocations();
  cuda::DeviceTensor t = device.allocate(batch, shape);
  CHECK(device.allocations() == before + 1);
  const cuda::Backend copy = device; // copies share the count
  CHECK(copy.allocations() == before + 1);
  Tensor zeros(batch, shape);
  CHECK_BITWISE(zeros.view(), to_host(t.view()).view());

  SlicePair s = sliced(71);
  const ConstView hv = device.host_view(s.d());
  CHECK(hv.contiguous());
  CHECK_BITWISE(s.h(), hv);
}

// --- device sampling against host sampling -----------------------------------------------------

namespace {

constexpr int num_classes = 10; // label num_classes is the null class of guidance
constexpr Shape latent{4, 6, 5};

/// What a test model computes: eps = a(t) x + 0.01 (label + 1) on the latent channels and, for a
/// learned-sigma model, v = clamp(0.3 x, -1, 1) on the extra channels. a(t) is rounded to float
/// on the host once, so host and device twins use the same coefficient.
struct LinearSpec {
  double a0, a1;
  bool learned_sigma = false;
  /// The output is an x0 prediction instead of epsilon: a flow schedule starts at alpha = 0,
  /// where epsilon says nothing about x0.
  bool predicts_sample = false;
  [[nodiscard]] Prediction prediction() const {
    return predicts_sample
               ? Prediction::sample
               : (learned_sigma ? Prediction::epsilon_learned_sigma : Prediction::epsilon);
  }
  [[nodiscard]] float a(double timestep) const {
    return static_cast<float>(a0 + a1 * timestep / 1000.0);
  }
};

constexpr int max_rows = 16;
struct RowBias {
  float b[max_rows];
};

float bias_of(int label) { return 0.01f * static_cast<float>(label + 1); }

// __fmul_rn / __fadd_rn: the host twin's a * x + b without contraction.
__global__ void linear_model_kernel(const float* x, std::int64_t x_stride, float* out,
                                    std::int64_t out_stride, std::int64_t per_sample,
                                    std::int64_t rows, float a, RowBias bias, bool learned_sigma,
                                    std::int64_t nan_index) {
  const std::int64_t n = blockIdx.y;
  if (n >= rows)
    return;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < per_sample; e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[n * x_stride + e];
    float eps = __fadd_rn(__fmul_rn(a, v), bias.b[n]);
    if (n * per_sample + e == nan_index)
      eps = NAN;
    out[n * out_stride + e] = eps;
    if (learned_sigma) {
      const float s = __fmul_rn(0.3f, v);
      out[n * out_stride + per_sample + e] = s < -1.0f ? -1.0f : (s > 1.0f ? 1.0f : s);
    }
  }
}

class DeviceLinear {
public:
  using condition_type = std::vector<int>;
  DeviceLinear(LinearSpec spec, std::string name, cudaStream_t stream = cuda::default_stream())
      : spec_(spec), name_(std::move(name)), stream_(stream) {}

  [[nodiscard]] Prediction prediction() const { return spec_.prediction(); }
  [[nodiscard]] Shape latent_shape() const { return latent; }
  [[nodiscard]] std::string model_name(std::size_t) const { return name_; }
  [[nodiscard]] condition_type unconditional(const condition_type& c) const {
    return condition_type(c.size(), num_classes);
  }
  [[nodiscard]] cudaStream_t stream() const { return stream_; }
  /// Writes NaN into eps at this flat index at this step (find_nonfinite through the loop).
  void poison(int step, std::int64_t index) {
    nan_step_ = step;
    nan_index_ = index;
  }

  void predict(ConstView x, const StepContext& ctx, const condition_type& labels, View out) {
    REQUIRE(x.batch() <= max_rows);
    REQUIRE(static_cast<std::int64_t>(labels.size()) == x.batch());
    RowBias bias{};
    for (std::size_t n = 0; n < labels.size(); ++n)
      bias.b[n] = bias_of(labels[n]);
    const dim3 grid(static_cast<unsigned>((x.sample_numel() + 127) / 128),
                    static_cast<unsigned>(x.batch()));
    linear_model_kernel<<<grid, 128, 0, stream()>>>(
        x.data(), x.batch_stride(), out.data(), out.batch_stride(), x.sample_numel(), x.batch(),
        spec_.a(ctx.point.timestep), bias, spec_.learned_sigma,
        ctx.step == nan_step_ ? nan_index_ : -1);
    TSTITCH_CUDA_CHECK(cudaGetLastError());
  }

private:
  LinearSpec spec_;
  std::string name_;
  cudaStream_t stream_;
  int nan_step_ = -1;
  std::int64_t nan_index_ = -1;
};

class HostLinear {
public:
  using condition_type = std::vector<int>;
  explicit HostLinear(LinearSpec spec) : spec_(spec) {}

  [[nodiscard]] Prediction prediction() const { return spec_.prediction(); }
  [[nodiscard]] Shape latent_shape() const { return latent; }
  [[nodiscard]] condition_type unconditional(const condition_type& c) const {
    return condition_type(c.size(), num_classes);
  }
  void predict(ConstView x, const StepContext& ctx, const condition_type& labels, View out) {
    const float a = spec_.a(ctx.point.timestep);
    const std::int64_t per = x.sample_numel();
    for (std::int64_t n = 0; n < x.batch(); ++n) {
      const float b = bias_of(labels[static_cast<std::size_t>(n)]);
      for (std::int64_t e = 0; e < per; ++e) {
        const float v = x.data()[n * x.batch_stride() + e];
        const float ax = a * v; // stored first: never contracted with the sum
        out.data()[n * out.batch_stride() + e] = ax + b;
        if (spec_.learned_sigma) {
          const float s = 0.3f * v;
          out.data()[n * out.batch_stride() + per + e] = s < -1.0f ? -1.0f : (s > 1.0f ? 1.0f : s);
        }
      }
    }
  }

private:
  LinearSpec spec_;
};

const LinearSpec small_spec{0.05, 0.10};
const LinearSpec large_spec{0.08, 0.12};

struct DeviceCase {
  const char* name;
  cuda::DeviceSolver solver;
  Guidance guidance{};
  bool learned_sigma = false;
  AnySchedule schedule = DiscreteSchedule{};
  AnyPolicy rule = StepFraction({0.4, 0.6});
  int steps = 20;
  bool predicts_sample = false;
};

/// Runs the two-model stitch on the host (BasicStitcher + sample()) and on the device
/// (DeviceStitcher in sample_stitched_impl) from the same Philox x_T, and compares.
void check_device_sampling(const DeviceCase& c, cuda::SamplingWorkspace& workspace) {
  INFO("case: " << c.name);
  LinearSpec ss = small_spec, ls = large_spec;
  ss.learned_sigma = ls.learned_sigma = c.learned_sigma;
  ss.predicts_sample = ls.predicts_sample = c.predicts_sample;
  HostLinear hs(ss), hl(ls);
  DeviceLinear ds(ss, "small"), dl(ls, "large");
  const std::vector<int> labels{3, 0, 9};
  SampleOptions options;
  options.steps = c.steps;
  options.seed = 20261126;
  options.guidance = c.guidance;
  options.check_finite = false;

  Tensor xh(static_cast<std::int64_t>(labels.size()), latent);
  fill_initial_noise(xh.view(), options.seed);
  BasicStitcher<AnyPolicy, HostLinear, HostLinear> host_stitch(c.rule, hs, hl);
  const SampleResult host_result =
      testing::sample_with(host_stitch, c.schedule, c.solver, xh.view(), labels, options);

  cuda::DeviceTensor xd(xh.batch(), latent);
  fill_initial_noise(xd.view(), options.seed, 0, workspace.backend);
  {
    Tensor x_t(xh.batch(), latent);
    fill_initial_noise(x_t.view(), options.seed);
    INFO("initial noise x_T");
    CHECK_BITWISE(x_t.view(), to_host(xd.view()).view());
  }
  int switches_seen = 0;
  cuda::DeviceStitcher device_stitch(c.rule, {ds, dl});
  device_stitch.on_switch([&](const SwitchEvent&) { ++switches_seen; });
  const SampleResult device_result = cuda::sample_stitched_impl(
      workspace, device_stitch, c.schedule, c.solver, xd.view(), labels, options);
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(workspace.backend.stream()));

  REQUIRE(device_result.records.size() == host_result.records.size());
  CHECK(host_result.switches == 1);
  CHECK(device_result.switches == 1);
  CHECK(switches_seen == 1);
  for (std::size_t i = 0; i < host_result.records.size(); ++i) {
    INFO("step " << i);
    CHECK(device_result.records[i].model == host_result.records[i].model);
    CHECK(device_result.records[i].evaluations == host_result.records[i].evaluations);
  }
  const Tensor result = to_host(xd.view());
  const Comparison cmp = compare(xh.view(), result.view(), 1e-5);
  INFO(cmp.describe());
  WARN(c.name << ": device vs host final latents: " << cmp.describe());
  CHECK(cmp.rel_l2 < 1e-5);
  CHECK(std::isfinite(cmp.rel_l2));
}

} // namespace

TEST_CASE("device stitched sampling matches host sampling with the same Philox noise",
          "[cuda][sampling]") {
  cuda::SamplingWorkspace workspace(cuda::default_stream());
  const DeviceCase cases[] = {
      {"DDIM eta=0", DDIM{}},
      {"DDIM eta=1 (device noise)", DDIM{DDIMOptions{1.0, std::nullopt}}},
      {"DDPM fixed_small", DDPM{}},
      {"DPM-Solver++ 2M, guidance 4 (DiT's 3 channels)", DPMSolverMultistep{}, Guidance::dit(4.0)},
      {"DDPM learned_range, guidance 1.5 (DiT's sampler)",
       DDPM{DDPMOptions{DDPMVariance::learned_range, std::nullopt}}, Guidance::dit(1.5), true},
      {"DDIM eta=0, standard guidance 2, learned sigma", DDIM{}, Guidance::standard(2.0), true},
      {"Euler", Euler{}},
      {"Euler ancestral (device noise), guidance 3", EulerAncestral{}, Guidance::dit(3.0)},
      {"Heun (two evaluations per step)", Heun{}},
      {"Heun, PaperTimestep(0.4)", Heun{}, Guidance{}, false, DiscreteSchedule{},
       PaperTimestep(0.4)},
      {"DPM-Solver++ 3M, history reset", DPMSolverMultistep{[] {
         DPMSolverMultistepOptions o;
         o.solver_order = 3;
         o.history = HistoryPolicy::reset;
         return o;
       }()}},
      {"SDE-DPM-Solver++ 2M (device noise)", DPMSolverMultistep{[] {
         DPMSolverMultistepOptions o;
         o.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
         return o;
       }()}},
      {"UniPC bh2, order 2, guidance 2", UniPC{}, Guidance::standard(2.0)},
      {"LCM on its schedule (device noise)", LCM{}, Guidance{}, false, LCMSchedule{},
       StepFraction({0.5, 0.5}), 4},
      {"Euler on a flow-matching schedule, shift 3, sigma threshold", Euler{}, Guidance{}, false,
       FlowMatchSchedule(FlowMatchScheduleOptions{.shift = 3.0}), SigmaThreshold(2.0), 20, true},
      {"DDIM, timestep threshold 600", DDIM{}, Guidance{}, false, DiscreteSchedule{},
       TimestepThreshold(600.0)},
      {"PNDM with the PRK warm-up (4 evaluations per step)", PNDM{}},
      {"PLMS (PNDM skip_prk_steps), guidance 2", PNDM{[] {
         PNDMOptions o;
         o.skip_prk_steps = true;
         return o;
       }()},
       Guidance::standard(2.0)},
      {"IPNDM on its schedule", IPNDM{}, Guidance{}, false, IPNDMSchedule{}},
      {"LMS order 4", LMS{}},
      {"DEIS order 3, history reset", DEIS{[] {
         DEISOptions o;
         o.solver_order = 3;
         o.history = HistoryPolicy::reset;
         return o;
       }()}},
      {"KDPM2 (log-midpoint evaluations)", KDPM2{}},
      {"KDPM2 ancestral (device noise)", KDPM2Ancestral{}},
      {"TCD gamma 0.3 on its schedule (device noise)", TCD{}, Guidance{}, false, TCDSchedule{},
       StepFraction({0.5, 0.5}), 4},
      {"CM stochastic iterative on its Karras grid (device noise)", CMStochasticIterative{},
       Guidance{}, false, CMKarrasSchedule{}, StepFraction({0.5, 0.5}), 4, true},
  };
  for (const DeviceCase& c : cases)
    check_device_sampling(c, workspace);
}

TEST_CASE("a reused device workspace allocates nothing after the first run", "[cuda][sampling]") {
  cuda::SamplingWorkspace workspace(cuda::default_stream());
  DeviceLinear ds(small_spec, "small"), dl(large_spec, "large");
  std::vector<DeviceLinear*> models{&ds, &dl};
  const std::vector<int> labels(8, 1);
  cuda::DeviceTensor x(8, latent);
  SampleOptions options;
  options.steps = 12;
  options.guidance = Guidance::dit(3.0);
  options.check_finite = false;
  const DiscreteSchedule schedule;

  for (const cuda::DeviceSolver& solver : {cuda::DeviceSolver(DDIM{DDIMOptions{1.0, std::nullopt}}),
                                           cuda::DeviceSolver(DPMSolverMultistep{})}) {
    auto run = [&] {
      fill_initial_noise(x.view(), 7, 0, workspace.backend);
      // A fresh copy of the solver each time, as a caller would pass: equal options keep the
      // workspace's solver and its device buffers.
      const cuda::DeviceSolver fresh = solver;
      (void)cuda::sample_stitched_impl<DeviceLinear>(
          workspace, std::span<DeviceLinear* const>(models), StepFraction({0.5, 0.5}), schedule,
          fresh, x.view(), labels, options);
      TSTITCH_CUDA_CHECK(cudaStreamSynchronize(workspace.backend.stream()));
    };
    run();
    const std::int64_t allocations = workspace.backend.allocations();
    std::size_t free_before = 0, free_after = 0, total = 0;
    TSTITCH_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
    run();
    run();
    TSTITCH_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
    INFO("solver index " << solver.index() << ": allocations after the first run " << allocations
                         << ", after two more " << workspace.backend.allocations()
                         << "; free device memory " << free_before << " -> " << free_after);
    CHECK(workspace.backend.allocations() == allocations);
    CHECK(free_after >= free_before);
  }
}

TEST_CASE("device sampling with check_finite names the step and index of a NaN",
          "[cuda][sampling]") {
  cuda::SamplingWorkspace workspace(cuda::default_stream());
  DeviceLinear ds(small_spec, "small"), dl(large_spec, "large");
  const std::int64_t index = latent.numel() + 17; // sample 1, element 17
  dl.poison(15, index);
  std::vector<DeviceLinear*> models{&ds, &dl};
  const std::vector<int> labels{2, 4};
  cuda::DeviceTensor x(2, latent);
  fill_initial_noise(x.view(), 3, 0, workspace.backend);
  SampleOptions options;
  options.steps = 20;
  options.check_finite = true;
  CHECK_THROWS_WITH(cuda::sample_stitched_impl<DeviceLinear>(
                        workspace, std::span<DeviceLinear* const>(models), StepFraction({0.4, 0.6}),
                        DiscreteSchedule{}, DDIM{}, x.view(), labels, options),
                    Catch::Contains("after step 15") && Catch::Contains("large") &&
                        Catch::Contains(detail::concat("flat index ", index)));
}

TEST_CASE("device sampling rejects what it cannot do", "[cuda][sampling]") {
  cuda::SamplingWorkspace workspace(cuda::default_stream());
  DeviceLinear ds(small_spec, "small"), dl(large_spec, "large");
  std::vector<DeviceLinear*> models{&ds, &dl};
  const std::vector<int> labels{2};
  cuda::DeviceTensor x(1, latent);
  SampleOptions options;
  options.check_finite = false;
  DPMSolverMultistepOptions thresholded;
  thresholded.thresholding = DynamicThresholding{};
  CHECK_THROWS_WITH(cuda::sample_stitched_impl<DeviceLinear>(
                        workspace, std::span<DeviceLinear* const>(models), StepFraction({0.4, 0.6}),
                        DiscreteSchedule{}, DPMSolverMultistep(thresholded), x.view(), labels,
                        options),
                    Catch::Contains("thresholding"));
  CHECK_THROWS_WITH(
      cuda::sample_stitched_impl<DeviceLinear>(workspace, std::span<DeviceLinear* const>(models),
                                               StepFraction({0.2, 0.3, 0.5}), DiscreteSchedule{},
                                               DDIM{}, x.view(), labels, options),
      Catch::Contains("number of models"));

  UniPCOptions unipc_thresholded;
  unipc_thresholded.thresholding = DynamicThresholding{};
  cuda::DeviceStitcher stitcher(StepFraction({0.4, 0.6}), {ds, dl});
  CHECK_THROWS_WITH(cuda::sample_stitched_impl(workspace, stitcher, DiscreteSchedule{},
                                               UniPC(unipc_thresholded), x.view(), labels, options),
                    Catch::Contains("thresholding"));
  CHECK_THROWS_WITH(cuda::DeviceStitcher(PaperTimestep(0.4), {ds, dl, ds}),
                    Catch::Contains("PaperTimestep stitches exactly 2"));

  std::vector<DeviceLinear*> with_null{&ds, nullptr};
  CHECK_THROWS_WITH(
      cuda::sample_stitched_impl<DeviceLinear>(workspace, std::span<DeviceLinear* const>(with_null),
                                               StepFraction({0.4, 0.6}), DiscreteSchedule{}, DDIM{},
                                               x.view(), labels, options),
      Catch::Contains("models[1]") && Catch::Contains("null"));

  cudaStream_t other = nullptr;
  TSTITCH_CUDA_CHECK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  DeviceLinear elsewhere(large_spec, "elsewhere", other);
  cuda::DeviceStitcher mixed(StepFraction({0.4, 0.6}), {ds, elsewhere});
  CHECK_THROWS_WITH(cuda::sample_stitched_impl(workspace, mixed, DiscreteSchedule{}, DDIM{},
                                               x.view(), labels, options),
                    Catch::Contains("stream of elsewhere") &&
                        Catch::Contains("must be the sampler's stream"));
  TSTITCH_CUDA_CHECK(cudaStreamDestroy(other));
}

TEST_CASE("Sampler<cuda::Backend> with one device model matches the host sampler",
          "[cuda][sampling]") {
  DeviceLinear device_model(large_spec, "large");
  HostLinear host_model(large_spec);
  const std::vector<int> labels{1, 5};
  const std::vector<int> uncond = host_model.unconditional(labels);
  SampleOptions options;
  options.steps = 10;
  options.seed = 99;
  options.guidance = Guidance::standard(1.5);

  Tensor xh(2, latent);
  fill_initial_noise(xh.view(), options.seed);
  DPMSolverMultistep host_solver;
  Sampler<> host_sampler;
  (void)host_sampler.run(host_model, DiscreteSchedule{}, host_solver, xh.view(), labels, &uncond,
                         options);

  cuda::DeviceTensor xd(2, latent);
  fill_initial_noise<cuda::Backend>(xd.view(), options.seed); // the default backend
  DPMSolverMultistep device_solver;
  Sampler<cuda::Backend> device_sampler; // default stream
  (void)device_sampler.run(device_model, DiscreteSchedule{}, device_solver, xd.view(), labels,
                           &uncond, options);
  const Comparison cmp = compare(xh.view(), to_host(xd.view()).view(), 1e-5);
  INFO(cmp.describe());
  CHECK(cmp.rel_l2 < 1e-5);
}
