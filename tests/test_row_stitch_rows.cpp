// SPDX-License-Identifier: Apache-2.0
// RowStitcher's Rows parameter (where sub-batches live, how rows move): HostRows given
// explicitly is the default, bit for bit, and a Rows of the user's own is what moves every row
// (the device's cuda::DeviceRows plugs in the same way).
#include <catch2/catch.hpp>

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/stitch/denoiser_ref.hpp"
#include "tstitch/stitch/row_policy.hpp"
#include "tstitch/stitch/row_stitcher.hpp"

using namespace tstitch;
using analytic::ExactDenoiser;
using analytic::Labels;
using testing::bit_identical;

namespace {

const Shape rows_shape{2, 4, 4};

ExactDenoiser rows_mixture(double offset, double spread) {
  return testing::two_component_mixture(rows_shape, offset, spread);
}

using Ref = DenoiserRef<Labels>;

/// HostRows that logs every gather and scatter (the rows it was given), through a pointer so
/// that the stitcher's copy of it logs into the test's vectors.
struct LoggedRows : HostRows {
  struct Log {
    std::vector<std::vector<std::int64_t>> gathers, scatters;
  };
  Log* log = nullptr;
  void gather(ConstView src, std::span<const std::int64_t> rows, View dst) const {
    log->gathers.emplace_back(rows.begin(), rows.end());
    HostRows::gather(src, rows, dst);
  }
  void scatter(ConstView src, std::span<const std::int64_t> rows, View dst) const {
    log->scatters.emplace_back(rows.begin(), rows.end());
    HostRows::scatter(src, rows, dst);
  }
};

Tensor run(auto& denoiser, const Labels& labels, const SampleOptions& options) {
  Tensor x(static_cast<std::int64_t>(labels.size()), rows_shape);
  fill_initial_noise(x.view(), options.seed);
  sample(denoiser, DiscreteSchedule{}, DDIM{}, x.view(), labels, options);
  return x;
}

} // namespace

TEST_CASE("RowStitcher: HostRows is the default Rows, and a given Rows moves every row",
          "[stitch][rows]") {
  static_assert(std::is_same_v<RowStitcher<Ref, PerRow<StepFraction>>,
                               RowStitcher<Ref, PerRow<StepFraction>, HostRows>>);
  ExactDenoiser small = rows_mixture(0.3, 0.8), large = rows_mixture(0.5, 1.0);
  const std::vector<double> fractions{0.0, 0.5, 1.0};
  const Labels labels{0, 1, 1};
  SampleOptions options;
  options.steps = 6;
  options.seed = 5;
  options.guidance = Guidance::standard(1.5);

  RowStitcher<Ref, PerRow<StepFraction>> by_default(row_fractions(fractions), {small, large});
  RowStitcher<Ref, PerRow<StepFraction>, HostRows> host(row_fractions(fractions), {small, large},
                                                        HostRows{});
  LoggedRows::Log log;
  LoggedRows logged;
  logged.log = &log;
  RowStitcher<Ref, PerRow<StepFraction>, LoggedRows> with_log(row_fractions(fractions),
                                                              {small, large}, logged);
  const Tensor want = run(by_default, labels, options);
  CHECK(bit_identical(run(host, labels, options), want));
  CHECK(bit_identical(run(with_log, labels, options), want));

  // Six DDIM steps, one evaluation each. Row 0 is always on the large model (1), row 2 always on
  // the small one (0), row 1 on the small one for the first 3 steps: {0, 1} / {2} then {0} /
  // {1, 2}. Each evaluation gathers each model's rows once and scatters them twice (the
  // conditional and the unconditional output of guidance), in model order.
  REQUIRE(log.gathers.size() == 12);
  REQUIRE(log.scatters.size() == 24);
  for (std::size_t step = 0; step < 6; ++step) {
    CAPTURE(step);
    const bool early = step < 3;
    const std::vector<std::int64_t> small_rows =
        early ? std::vector<std::int64_t>{1, 2} : std::vector<std::int64_t>{2};
    const std::vector<std::int64_t> large_rows =
        early ? std::vector<std::int64_t>{0} : std::vector<std::int64_t>{0, 1};
    CHECK(log.gathers[2 * step] == small_rows);
    CHECK(log.gathers[2 * step + 1] == large_rows);
    CHECK(log.scatters[4 * step] == small_rows);
    CHECK(log.scatters[4 * step + 1] == small_rows);
    CHECK(log.scatters[4 * step + 2] == large_rows);
    CHECK(log.scatters[4 * step + 3] == large_rows);
  }
}
