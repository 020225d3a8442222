// SPDX-License-Identifier: Apache-2.0
// The README's "Plug in your engine" example, compiled and run where the build exported DiT-L to
// TorchScript (fashion_dit_l.pt in the working directory, models/ beside it): the shipped DiT-S
// on tstitch's CPU DiT and DiT-L in LibTorch, stitched in one run.
#include <algorithm>
#include <cstdio>
#include <vector>

// clang-format off
// README snippet begin
#include "tstitch/adapters/libtorch.hpp"     // target tstitch::libtorch (Debian: libtorch-dev)
#include "tstitch/models/dit/cpu_model.hpp"  // target tstitch::dit
#include "tstitch/tstitch.hpp"
// README snippet end
// clang-format on

int main() {
  using namespace tstitch;
  // clang-format off
  // README snippet begin
  // DiT-S on tstitch's CPU DiT, DiT-L as a TorchScript module: forward(x, t, y) -> epsilon
  dit::CpuModel small(dit::Weights::load("models/fashion_dit_s.safetensors"), "DiT-S");
  libtorch::Options engine;
  engine.prediction = Prediction::epsilon;
  engine.latent_shape = small.latent_shape();     // [1, 32, 32]
  engine.name = "DiT-L (LibTorch)";               // inputs x, t, y; f32 on the CPU by default
  auto large = libtorch::TorchScriptDenoiser<>::load("fashion_dit_l.pt", engine);

  TrajectoryStitcher stitcher(small, large, 0.5);  // one run, two engines
  Tensor x(4, small.latent_shape());
  fill_initial_noise(x, /*seed=*/42);
  std::vector<int> labels = {0, 1, 7, 9};
  SampleOptions options;
  options.steps = 10;
  options.guidance = Guidance::standard(1.25);     // the null class from DiT-S's unconditional()
  DDIM ddim;
  SampleResult result = sample(stitcher, DiscreteSchedule{}, ddim, x, labels, options);
  // README snippet end
  // clang-format on
  const auto by_large = std::count_if(result.records.begin(), result.records.end(),
                                      [](const StepRecord& r) { return r.model == 1; });
  std::printf("%zu steps, %d switch, %s served %lld\n", result.records.size(), result.switches,
              stitcher.model_name(1).c_str(), static_cast<long long>(by_large));
}
