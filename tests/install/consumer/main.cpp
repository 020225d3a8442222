// SPDX-License-Identifier: Apache-2.0
// A consumer of the installed package: stitches two denoisers and samples a few steps.
#include <cmath>
#include <cstdint>
#include <cstdio>

#include <tstitch/tstitch.hpp>

static_assert(TSTITCH_VERSION_MAJOR == 0, "the installed tstitch is expected to be 0.x");

int main() {
  using namespace tstitch;
  const Shape shape{1, 2, 2};
  // Exact denoisers for standard normal data on a variance-preserving schedule: E[eps | x] =
  // sigma x, E[x0 | x] = alpha x.
  auto scaled = [](double (StepContext::*factor)() const) {
    return [factor](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
      const auto k = static_cast<float>((ctx.*factor)());
      for (std::int64_t n = 0; n < x.batch(); ++n)
        for (std::int64_t e = 0; e < x.sample_numel(); ++e)
          out.data()[n * out.batch_stride() + e] = k * x.data()[n * x.batch_stride() + e];
    };
  };
  auto small = make_denoiser(Prediction::epsilon, shape, scaled(&StepContext::sigma));
  auto large = make_denoiser(Prediction::sample, shape, scaled(&StepContext::alpha));
  TrajectoryStitcher stitcher(small, large, 0.5);
  Tensor x(2, shape);
  fill_initial_noise(x, 1);
  DDIM ddim;
  SampleOptions options;
  options.steps = 6;
  const SampleResult result = sample(stitcher, DiscreteSchedule{}, ddim, x, NoCondition{}, options);
  if (result.switches != 1 || result.records.size() != 6 || !std::isfinite(x[0])) {
    std::fprintf(stderr, "unexpected sampling result\n");
    return 1;
  }
  std::printf("consumer: sampled with tstitch %d.%d\n", TSTITCH_VERSION_MAJOR,
              TSTITCH_VERSION_MINOR);
  return 0;
}
