// SPDX-License-Identifier: Apache-2.0
// Mergeable feature moments (metrics/feature_moments.hpp): accumulators over disjoint parts of a
// feature set, merged or reduced as packed buffers, give the Frechet distance of the whole set.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <vector>

#include <Eigen/Core>

#include "tstitch/metrics/classifier.hpp"
#include "tstitch/metrics/feature_moments.hpp"
#include "tstitch/metrics/frechet.hpp"

using namespace tstitch;
using Catch::Contains;

namespace {

/// ReLU-like features with a non-zero mean and correlated columns, as a classifier's are.
Eigen::MatrixXd make_features(Eigen::Index rows, Eigen::Index cols, double offset,
                              std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Eigen::MatrixXd mix(cols, cols);
  for (Eigen::Index i = 0; i < mix.size(); ++i)
    mix.data()[i] = normal(rng) / std::sqrt(static_cast<double>(cols));
  Eigen::MatrixXd z(rows, cols);
  for (Eigen::Index i = 0; i < z.size(); ++i)
    z.data()[i] = normal(rng);
  return ((z * mix).array().max(0.0) + offset).matrix();
}

/// Accumulators over consecutive row blocks of the given sizes, merged in order.
metrics::FeatureMoments merged(const Eigen::MatrixXd& features,
                               const std::vector<Eigen::Index>& sizes,
                               const Eigen::VectorXd& shift) {
  metrics::FeatureMoments total(shift);
  Eigen::Index at = 0;
  for (const Eigen::Index size : sizes) {
    metrics::FeatureMoments part(shift);
    part.add(features.middleRows(at, size));
    total.merge(part);
    at += size;
  }
  REQUIRE(at == features.rows());
  return total;
}

double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

double max_relative(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
}

} // namespace

TEST_CASE("FD from merged partial moments equals FD from all the features at once",
          "[frechet][moments]") {
  const Eigen::MatrixXd features = make_features(600, 16, 0.5, 1);
  const Eigen::MatrixXd reference = make_features(800, 16, 0.7, 2);
  const metrics::FeatureStats real = metrics::feature_stats(reference);
  const metrics::FeatureStats whole = metrics::feature_stats(features);
  const double fd_whole = metrics::frechet_distance(whole, real);
  REQUIRE(fd_whole > 0.01);

  const std::vector<std::vector<Eigen::Index>> splits{
      {600}, {1, 599}, {300, 300}, {7, 100, 0, 493}, {2, 3, 5, 7, 11, 13, 17, 542}};
  for (const Eigen::VectorXd& shift : {Eigen::VectorXd(Eigen::VectorXd::Zero(16)), real.mean}) {
    for (const auto& split : splits) {
      INFO("split into " << split.size() << " parts, shift norm " << shift.norm());
      const metrics::FeatureMoments m = merged(features, split, shift);
      CHECK(m.count() == 600);
      CHECK(max_relative(m.mean(), whole.mean) < 1e-12);
      CHECK(max_relative(m.covariance(), whole.covariance) < 1e-12);
      CHECK(m.stats().count == 600);
      CHECK(relative(metrics::frechet_distance(m.stats(), real), fd_whole) < 1e-9);
    }
  }
}

TEST_CASE("Packed buffers reduced pair by pair are the merge, as an MPI reduction gives",
          "[frechet][moments]") {
  const Eigen::MatrixXd features = make_features(90, 5, 0.2, 3);
  const Eigen::VectorXd shift = Eigen::VectorXd::Constant(5, 0.4);
  metrics::FeatureMoments a(shift), b(shift), c(shift);
  a.add(features.topRows(30));
  b.add(features.middleRows(30, 45));
  c.add(features.bottomRows(15));
  std::vector<double> sum(2 * metrics::FeatureMoments::packed_pairs(5), 0.0);
  REQUIRE(sum.size() == 2 * (1 + 5 + 25));
  for (const auto* m : {&a, &b, &c}) {
    const std::vector<double> p = m->packed();
    REQUIRE(p.size() == sum.size());
    metrics::FeatureMoments::add_packed(p.data(), sum.data(), p.size() / 2);
  }
  const metrics::FeatureMoments reduced = metrics::FeatureMoments::unpack(sum, shift);
  metrics::FeatureMoments merged_in_order(shift);
  merged_in_order.merge(a);
  merged_in_order.merge(b);
  merged_in_order.merge(c);
  CHECK(reduced.count() == 90);
  CHECK(reduced.sum() == merged_in_order.sum());
  CHECK(reduced.outer() == merged_in_order.outer());
  CHECK(max_relative(reduced.covariance(), metrics::feature_stats(features).covariance) < 1e-12);
}

TEST_CASE("A shift near the mean keeps the covariance accurate far from the origin",
          "[frechet][moments]") {
  // Unit-scale spread around 1e6: sums of squares about zero cancel ~12 digits.
  const Eigen::MatrixXd features = make_features(400, 8, 1e6, 4);
  const metrics::FeatureStats exact = metrics::feature_stats(features);
  metrics::FeatureMoments shifted(Eigen::VectorXd::Constant(8, 1e6));
  shifted.add(features.topRows(123));
  shifted.add(features.bottomRows(277));
  CHECK(max_relative(shifted.covariance(), exact.covariance) < 1e-9);
  CHECK(max_relative(shifted.mean(), exact.mean) < 1e-14);
}

TEST_CASE("FD of the classifier's held-out features is the same from any split",
          "[frechet][moments]") {
  const std::filesystem::path path =
      std::filesystem::path(TSTITCH_MODELS_DIR) / "fashion_classifier.safetensors";
  if (!std::filesystem::exists(path)) {
    WARN("skipped: " << path.string() << " is missing");
    return;
  }
  const auto classifier = metrics::MlpClassifier::load(path);
  const Eigen::MatrixXd& features = classifier.test_features();
  const metrics::FeatureStats& real = classifier.real_stats();
  REQUIRE(features.rows() >= 1000);
  const Eigen::Index n = features.rows();
  // Dead units make both covariances singular, where FD moves by ~sqrt of a perturbation: only
  // sums that do not depend on the split give the same FD (double-double makes them so).
  metrics::FeatureMoments all_at_once(real.mean);
  all_at_once.add(features);
  const double fd_whole = metrics::frechet_distance(all_at_once.stats(), real);
  for (const std::vector<Eigen::Index>& split :
       {std::vector<Eigen::Index>{n / 3, 1, n / 3, n - 2 * (n / 3) - 1},
        std::vector<Eigen::Index>{1, 2, 3, 5, 8, 13, 21, 34, 55, n - 142},
        std::vector<Eigen::Index>{n - 1, 1}}) {
    INFO("split into " << split.size() << " parts");
    const double fd = metrics::frechet_distance(merged(features, split, real.mean).stats(), real);
    CHECK(relative(fd, fd_whole) < 1e-9);
  }
  // Against the two-pass feature_stats, element by element (its FD differs in the sixth digit:
  // the two-pass covariance's own rounding, amplified as above).
  const metrics::FeatureStats two_pass = metrics::feature_stats(features);
  CHECK(max_relative(all_at_once.covariance(), two_pass.covariance) < 1e-12);
  CHECK(max_relative(all_at_once.mean(), two_pass.mean) < 1e-12);
}

TEST_CASE("FeatureMoments refuses mismatched input, naming it", "[frechet][moments]") {
  metrics::FeatureMoments m(3);
  CHECK_THROWS_WITH(metrics::FeatureMoments(0), Contains("feature moments dimension = 0"));
  CHECK_THROWS_WITH(m.add(Eigen::MatrixXd::Zero(2, 4)), Contains("feature batch columns = 4"));
  Eigen::MatrixXd bad = Eigen::MatrixXd::Zero(3, 3);
  bad(2, 1) = std::nan("");
  CHECK_THROWS_WITH(m.add(bad), Contains("features(2, 1)"));
  CHECK(m.count() == 0); // a rejected batch adds nothing
  CHECK_THROWS_WITH(m.mean(), Contains("feature moments count = 0"));
  m.add(Eigen::MatrixXd::Ones(1, 3));
  CHECK_THROWS_WITH(m.covariance(), Contains("feature moments count = 1"));
  CHECK_THROWS_WITH(m.merge(metrics::FeatureMoments(4)),
                    Contains("merged accumulator dimension = 4"));
  CHECK_THROWS_WITH(m.merge(metrics::FeatureMoments(Eigen::VectorXd::Constant(3, 0.5))),
                    Contains("merged accumulator shift = 0.5"));
  const std::vector<double> short_buffer(5);
  CHECK_THROWS_WITH(metrics::FeatureMoments::unpack(short_buffer, 3),
                    Contains("packed feature moments size = 5"));
  std::vector<double> fractional(2 * metrics::FeatureMoments::packed_pairs(3), 0.0);
  fractional[0] = 2.5;
  CHECK_THROWS_WITH(metrics::FeatureMoments::unpack(fractional, 3),
                    Contains("packed feature moments count = 2.5"));
}
