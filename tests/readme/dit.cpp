// SPDX-License-Identifier: Apache-2.0
// The README's DiT examples, compiled and run in the source tree (models/ holds the shipped pair):
// the tour over official checkpoints (run on small stand-ins written under their names in a
// scratch directory, unless the converted checkpoints are in the working directory), then the
// shipped Fashion-MNIST pair.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

// clang-format off
// README snippet begin
#include "tstitch/models/dit/cpu_model.hpp"  // dit::CpuModel, dit::Weights: target tstitch::dit
#include "tstitch/tstitch.hpp"               // stitching, schedules, solvers, sample()
// README snippet end
// clang-format on

namespace {

using namespace tstitch;

/// The tour, as in the README: two converted checkpoints, stitched, sampled with DiT's guidance.
void official_tour() {
  // clang-format off
  // README snippet begin
  dit::CpuModel small(dit::Weights::load("dit_s_2_256.safetensors"), "DiT-S/2");  // config: metadata
  dit::CpuModel large(dit::Weights::load("dit_xl_2_256.safetensors"), "DiT-XL/2");
  TrajectoryStitcher stitcher(small, large, 0.4);    // DiT-S/2 serves the first 40% of the steps
  Tensor x(8, large.latent_shape());                 // 8 latents of [4, 32, 32]: 256x256 images
  fill_initial_noise(x, /*seed=*/0);
  std::vector<int> labels = {207, 360, 387, 974, 88, 979, 417, 279};  // DiT's sample.py classes
  SampleOptions options;
  options.guidance = Guidance::dit(4.0);             // guides 3 of the 4 channels, as DiT does
  DDIM ddim;
  SampleResult result = sample(stitcher, DiscreteSchedule{}, ddim, x, labels, options);
  // README snippet end
  // clang-format on
  std::printf("tour: %lld images, %zu steps, %d switch, finite %s\n",
              static_cast<long long>(x.batch()), result.records.size(), result.switches,
              std::all_of(x.data(), x.data() + x.numel(), [](float v) { return std::isfinite(v); })
                  ? "yes"
                  : "no");
}

/// Small DiTs with the official checkpoints' latent shape and class count (DiT-S/2 and DiT-XL/2
/// would be 130 MB and 2.7 GB), written by the converter's format under the tour's file names.
void write_stand_ins() {
  dit::Config c;
  c.input_size = 32;
  c.patch_size = 8;
  c.in_channels = 4;
  c.hidden_size = 32;
  c.depth = 1;
  c.num_heads = 2;
  c.num_classes = 1000;
  c.learn_sigma = true;
  dit::Weights::random(c, 1).save("dit_s_2_256.safetensors");
  dit::Weights::random(c, 2).save("dit_xl_2_256.safetensors");
}

} // namespace

int main() {
  namespace fs = std::filesystem;
  {
    const fs::path here = fs::current_path();
    const bool converted =
        fs::exists("dit_s_2_256.safetensors") && fs::exists("dit_xl_2_256.safetensors");
    const fs::path scratch = fs::temp_directory_path() /
                             ("tstitch_readme_dit_tour_" + std::to_string(std::random_device{}()));
    if (!converted) {
      fs::create_directories(scratch);
      fs::current_path(scratch);
      write_stand_ins();
    }
    official_tour();
    fs::current_path(here);
    if (!converted)
      fs::remove_all(scratch);
  }

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
