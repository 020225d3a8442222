// SPDX-License-Identifier: Apache-2.0
// Per-sample stitching on the CPU DiT: with set_batch_invariant an image's bits do not depend on
// the batch it is in, so each row of a mixed batch must equal that image sampled alone with its
// own small-model fraction, through DiT's 3-channel guidance and a stochastic solver.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "support/tensor_checks.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/stitch/denoiser_ref.hpp"
#include "tstitch/stitch/row_policy.hpp"
#include "tstitch/stitch/row_stitcher.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/dit_fixtures.hpp"

using namespace tstitch;

TEST_CASE("RowStitcher with batch-invariant DiTs: each row equals its image alone",
          "[dit][stitch][rows]") {
  const dit::Config small_config = testing::tiny_dit_config();
  dit::Config large_config = small_config;
  large_config.depth = 3;
  dit::CpuModel small(dit::Weights::random(small_config, 61), "DiT-S");
  dit::CpuModel large(dit::Weights::random(large_config, 62), "DiT-L");
  small.set_batch_invariant(true);
  large.set_batch_invariant(true);
  const std::vector<double> fractions{0.0, 0.4, 0.4, 0.8};
  const std::vector<int> labels{3, 1, 4, 1};
  RowStitcher<DenoiserRef<std::vector<int>>, PerRow<StepFraction>> rows(row_fractions(fractions),
                                                                        {small, large});
  SampleOptions options;
  options.steps = 5;
  options.seed = 9;
  options.guidance = Guidance::dit(3.0);

  const auto check = [&](auto solver) {
    Tensor batch(4, small.latent_shape());
    fill_initial_noise(batch, options.seed, 0);
    const SampleResult result =
        sample(rows, DiscreteSchedule{}, solver, batch.view(), labels, options);
    CHECK(HostBackend{}.find_nonfinite(batch) == -1);
    CHECK(result.records[2].rows == std::vector<std::size_t>{1, 1, 1, 0});
    for (std::uint32_t r = 0; r < 4; ++r) {
      CAPTURE(r);
      TrajectoryStitcher alone(small, large, fractions[r]);
      Tensor one(1, small.latent_shape());
      fill_initial_noise(one, options.seed, r);
      SampleOptions o = options;
      o.first_sample = r;
      sample(alone, DiscreteSchedule{}, solver, one.view(), std::vector<int>{labels[r]}, o);
      CHECK(testing::bit_identical(one, testing::copy_samples(batch, r, 1)));
    }
  };
  SECTION("DDPM") { check(DDPM{}); }
  SECTION("DPM-Solver++ multistep") { check(DPMSolverMultistep{}); }
}
