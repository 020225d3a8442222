// SPDX-License-Identifier: Apache-2.0
// The condition's batch contract through the sampling loop: labels for 1 image with a batch of 2
// is refused by the DiT (alone, stitched, guided), naming both counts, before any step runs.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

using namespace tstitch;

TEST_CASE("DiT labels must cover the batch, also through sample() and a stitcher",
          "[dit][sample][errors]") {
  const std::string path = std::string(TSTITCH_TEST_DATA_DIR) + "/dit/tiny_dit_p4.safetensors";
  dit::CpuModel small(dit::Weights::load(path), "small");
  dit::CpuModel large(dit::Weights::load(path), "large");
  small.set_threads(1);
  large.set_threads(1);
  Tensor x(2, small.latent_shape());
  fill_initial_noise(x, 3);
  const std::vector<int> one_label = {1};
  DDIM ddim;
  SampleOptions options;
  options.steps = 2;
  CHECK_THROWS_WITH(sample(small, DiscreteSchedule{}, ddim, x, one_label, options),
                    Catch::Contains("labels.size() = 1") &&
                        Catch::Contains("batch, 2 (one label per image)"));
  TrajectoryStitcher stitcher(small, large, 0.5);
  CHECK_THROWS_WITH(sample(stitcher, DiscreteSchedule{}, ddim, x, one_label, options),
                    Catch::Contains("labels.size() = 1") &&
                        Catch::Contains("batch, 2 (one label per image)"));
  options.guidance = Guidance::standard(2.0); // the unconditional branch is as long
  CHECK_THROWS_WITH(sample(stitcher, DiscreteSchedule{}, ddim, x, one_label, options),
                    Catch::Contains("labels.size() = 1") &&
                        Catch::Contains("batch, 2 (one label per image)"));
  const std::vector<int> two_labels = {1, 2};
  CHECK_NOTHROW(sample(stitcher, DiscreteSchedule{}, ddim, x, two_labels, options));
}
