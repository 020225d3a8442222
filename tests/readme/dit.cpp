// SPDX-License-Identifier: Apache-2.0
// The README's DiT example, compiled and run in the source tree (models/ holds the shipped pair).
#include <cstdio>
#include <vector>

#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

int main() {
  using namespace tstitch;
  // clang-format off
  // README snippet begin
  dit::CpuModel small(dit::Weights::load("models/fashion_dit_s.safetensors"), "DiT-S");
  dit::CpuModel large(dit::Weights::load("models/fashion_dit_l.safetensors"), "DiT-L");
  TrajectoryStitcher stitcher(small, large, PaperTimestep(0.4));   // or a plain 0.4
  Tensor x(4, small.latent_shape());                               // 4 images of [1, 32, 32]
  fill_initial_noise(x, /*seed=*/42);
  std::vector<int> labels = {0, 1, 7, 9};    // T-shirt, trouser, sneaker, ankle boot
  SampleOptions options;
  options.guidance = Guidance::standard(1.25);  // every channel; Guidance::dit(s) for DiT's 4
  DDIM ddim;
  SampleResult result = sample(stitcher, DiscreteSchedule{}, ddim, x, labels, options);
  // README snippet end
  // clang-format on
  std::printf(
      "%zu steps, %d switch, small model served %zu\n", result.records.size(), result.switches,
      static_cast<std::size_t>(std::count_if(result.records.begin(), result.records.end(),
                                             [](const StepRecord& r) { return r.model == 0; })));
}
