// SPDX-License-Identifier: Apache-2.0
// A consumer of the installed package: stitches two denoisers and samples a few steps.
#include <cmath>
#include <cstdio>

#include <tstitch/tstitch.hpp>

static_assert(TSTITCH_VERSION_MAJOR == 0, "the installed tstitch is expected to be 0.x");

int main() {
  using namespace tstitch;
  const Shape shape{1, 2, 2};
  analytic::DiagonalGaussian data{{0.1, 0.2, 0.3, 0.4}, {1.0, 1.0, 1.0, 1.0}};
  analytic::ExactDenoiser small(shape, data), large(shape, data, Prediction::v);
  TrajectoryStitcher stitcher(small, large, 0.5);
  Tensor x(2, shape);
  fill_initial_noise(x, 1);
  DDIM ddim;
  SampleOptions options;
  options.steps = 6;
  const SampleResult result = sample(stitcher, DiscreteSchedule{}, ddim, x, analytic::Labels{},
                                     options);
  if (result.switches != 1 || result.records.size() != 6 || !std::isfinite(x[0])) {
    std::fprintf(stderr, "unexpected sampling result\n");
    return 1;
  }
  std::printf("consumer: sampled with tstitch %d.%d\n", TSTITCH_VERSION_MAJOR,
              TSTITCH_VERSION_MINOR);
  return 0;
}
