// SPDX-License-Identifier: Apache-2.0
// The Frechet distance and the PCA feature space (include/tstitch/metrics/frechet.hpp).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <vector>

#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/metrics/frechet.hpp"

using namespace tstitch;
using metrics::FeatureStats;

namespace {

FeatureStats stats(Eigen::VectorXd mean, Eigen::MatrixXd cov) {
  return FeatureStats{std::move(mean), std::move(cov), 0};
}

Eigen::MatrixXd matrix3(std::initializer_list<double> v) {
  Eigen::MatrixXd m(3, 3);
  auto it = v.begin();
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c)
      m(r, c) = *it++;
  return m;
}

std::filesystem::path fd_temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("tstitch_test_fd_" + name + ".safetensors");
}

} // namespace

TEST_CASE("Frechet distance of diagonal Gaussians has the closed form", "[frechet]") {
  // For commuting (here diagonal) covariances tr((S1 S2)^1/2) = sum sqrt(a_i b_i), so
  // FD = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
  Eigen::VectorXd mu1(4), mu2(4), a(4), b(4);
  mu1 << 0.5, -1.0, 2.0, 0.0;
  mu2 << 0.0, 1.0, 2.5, -0.25;
  a << 1.0, 4.0, 0.25, 9.0;
  b << 2.0, 1.0, 0.25, 0.01;
  double expected = (mu1 - mu2).squaredNorm();
  for (int i = 0; i < 4; ++i)
    expected += std::pow(std::sqrt(a(i)) - std::sqrt(b(i)), 2);
  const double fd =
      metrics::frechet_distance(stats(mu1, a.asDiagonal()), stats(mu2, b.asDiagonal()));
  CHECK(fd == Approx(expected).epsilon(1e-12));
  // Symmetric in its arguments.
  CHECK(metrics::frechet_distance(stats(mu2, b.asDiagonal()), stats(mu1, a.asDiagonal())) ==
        Approx(expected).epsilon(1e-12));
}

TEST_CASE("Frechet distance of commuting non-diagonal covariances (same eigenvectors)",
          "[frechet]") {
  // S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T with a rotation Q: the closed form of the diagonal
  // case holds, while neither matrix is diagonal.
  const double t = 0.7;
  Eigen::MatrixXd q(2, 2);
  q << std::cos(t), -std::sin(t), std::sin(t), std::cos(t);
  Eigen::Vector2d a(3.0, 0.5), b(0.2, 2.0);
  const Eigen::MatrixXd s1 = q * a.asDiagonal() * q.transpose();
  const Eigen::MatrixXd s2 = q * b.asDiagonal() * q.transpose();
  const double expected =
      std::pow(std::sqrt(3.0) - std::sqrt(0.2), 2) + std::pow(std::sqrt(0.5) - std::sqrt(2.0), 2);
  CHECK(metrics::frechet_distance(stats(Eigen::Vector2d::Zero(), s1),
                                  stats(Eigen::Vector2d::Zero(), s2)) ==
        Approx(expected).epsilon(1e-12));
}

TEST_CASE("Frechet distance of general covariances matches scipy.linalg.sqrtm", "[frechet]") {
  // Values from SciPy 1.17.1 (scipy.linalg.sqrtm, the FID reference implementation's method):
  //   import numpy as np, scipy.linalg as sl
  //   S1 = np.array([[2.0, 0.5, 0.1], [0.5, 1.5, -0.3], [0.1, -0.3, 1.0]])
  //   S2 = np.array([[1.0, -0.4, 0.2], [-0.4, 2.5, 0.6], [0.2, 0.6, 0.8]])
  //   m1 = np.array([0.1, -0.2, 0.3]); m2 = np.array([0.4, 0.1, -0.5])
  //   np.sum((m1 - m2)**2) + np.trace(S1 + S2 - 2 * sl.sqrtm(S1 @ S2).real)  # 1.726952592946744
  //   A = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]]); S3 = A.T @ A          # rank 2
  //   np.trace(S3 + S2 - 2 * sl.sqrtm(S3 @ S2).real)                           # 2.41467979813647
  const Eigen::MatrixXd s1 = matrix3({2.0, 0.5, 0.1, 0.5, 1.5, -0.3, 0.1, -0.3, 1.0});
  const Eigen::MatrixXd s2 = matrix3({1.0, -0.4, 0.2, -0.4, 2.5, 0.6, 0.2, 0.6, 0.8});
  const Eigen::Vector3d m1(0.1, -0.2, 0.3), m2(0.4, 0.1, -0.5);
  CHECK(metrics::frechet_distance(stats(m1, s1), stats(m2, s2)) ==
        Approx(1.726952592946744).epsilon(1e-10));

  // A singular covariance: sqrtm of a singular product is itself only accurate to ~1e-8 (the
  // eigenvalue route, sum sqrt(eig(S3 S2)), gives 2.4146797857919466), hence the tolerance.
  Eigen::MatrixXd a(2, 3);
  a << 1.0, 2.0, 0.0, 0.5, -1.0, 1.0;
  const Eigen::MatrixXd s3 = a.transpose() * a;
  CHECK(metrics::frechet_distance(stats(Eigen::Vector3d::Zero(), s3),
                                  stats(Eigen::Vector3d::Zero(), s2)) ==
        Approx(2.41467979813647).epsilon(1e-7));
}

TEST_CASE("Frechet distance of a Gaussian to itself is zero", "[frechet]") {
  const Eigen::MatrixXd s = matrix3({2.0, 0.5, 0.1, 0.5, 1.5, -0.3, 0.1, -0.3, 1.0});
  const Eigen::Vector3d m(1, 2, 3);
  CHECK(metrics::frechet_distance(stats(m, s), stats(m, s)) == Approx(0.0).margin(1e-12));
}

TEST_CASE("feature_stats computes the unbiased mean and covariance", "[frechet]") {
  Eigen::MatrixXd f(4, 2);
  f << 1, 2, 3, 6, 5, 4, 7, 0;
  const FeatureStats s = metrics::feature_stats(f);
  CHECK(s.count == 4);
  CHECK(s.mean(0) == Approx(4.0));
  CHECK(s.mean(1) == Approx(3.0));
  // x: deviations -3,-1,1,3 -> sum of squares 20 / 3; y: -1,3,1,-3 -> 20 / 3;
  // cross: 3 - 3 + 1 - 9 = -8 -> -8 / 3.
  CHECK(s.covariance(0, 0) == Approx(20.0 / 3));
  CHECK(s.covariance(1, 1) == Approx(20.0 / 3));
  CHECK(s.covariance(0, 1) == Approx(-8.0 / 3));
  CHECK(s.covariance(1, 0) == Approx(-8.0 / 3));
}

TEST_CASE("Frechet distance from samples converges to the population value", "[frechet]") {
  // 20000 samples of N(mu, diag(a)) against the exact N(0, I): FD -> |mu|^2 + sum (sqrt a - 1)^2.
  const std::int64_t n = 20000;
  Tensor z(n, Shape{1, 1, 3});
  HostBackend{}.fill_normal(z, NoiseKey{11, 0, 0, 0});
  const Eigen::Vector3d mu(0.5, 0.0, -0.3), sd(2.0, 1.0, 0.5);
  Eigen::MatrixXd f(n, 3);
  for (std::int64_t i = 0; i < n; ++i)
    for (int d = 0; d < 3; ++d)
      f(i, d) = mu(d) + sd(d) * z[i * 3 + d];
  const double expected = mu.squaredNorm() + std::pow(2.0 - 1.0, 2) + std::pow(0.5 - 1.0, 2);
  const double fd = metrics::frechet_distance(
      metrics::feature_stats(f), stats(Eigen::Vector3d::Zero(), Eigen::Matrix3d::Identity()));
  // Standard error of this estimate is about 0.02 at n = 20000.
  CHECK(fd == Approx(expected).margin(0.08));
}

TEST_CASE("Frechet distance rejects bad input, naming it", "[frechet]") {
  const Eigen::Vector2d m = Eigen::Vector2d::Zero();
  const Eigen::Matrix2d i2 = Eigen::Matrix2d::Identity();
  CHECK_THROWS_WITH(metrics::frechet_distance(
                        stats(m, i2), stats(Eigen::Vector3d::Zero(), Eigen::Matrix3d::Identity())),
                    Catch::Contains("feature dimensions = 2 vs 3"));
  CHECK_THROWS_WITH(metrics::frechet_distance(stats(m, Eigen::Matrix3d::Identity()), stats(m, i2)),
                    Catch::Contains("first.covariance shape = [3, 3]"));
  Eigen::Matrix2d asym;
  asym << 1, 0.5, 0, 1;
  CHECK_THROWS_WITH(metrics::frechet_distance(stats(m, i2), stats(m, asym)),
                    Catch::Contains("second.covariance asymmetry = 0.5"));
  Eigen::Matrix2d nan = i2;
  nan(1, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(metrics::frechet_distance(stats(m, nan), stats(m, i2)),
                    Catch::Contains("first.covariance(1, 0) = nan"));
  CHECK_THROWS_AS(metrics::frechet_distance(stats(m, nan), stats(m, i2)),
                  tstitch::invalid_argument);

  CHECK_THROWS_WITH(metrics::feature_stats(Eigen::MatrixXd::Zero(1, 3)),
                    Catch::Contains("feature sample count = 1") &&
                        Catch::Contains("at least 2 samples"));
  Eigen::MatrixXd f = Eigen::MatrixXd::Zero(3, 2);
  f(2, 1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(metrics::feature_stats(f), Catch::Contains("features(2, 1) = inf"));
}

namespace {

/// A stats file for 2x2 single-channel images with k = 2 components.
std::filesystem::path write_stats(const std::string& name, std::vector<float> components,
                                  std::map<std::string, std::string> metadata = {
                                      {"format", "tstitch-fd-stats"}}) {
  std::vector<io::TensorData> tensors;
  tensors.push_back(io::f32_tensor("pixel_mean", {4}, std::vector<float>{0.5f, 0.0f, -0.5f, 1.0f}));
  tensors.push_back(io::f32_tensor(
      "components", {2, static_cast<std::int64_t>(components.size() / 2)}, components));
  tensors.push_back(io::f32_tensor("feature_mean", {2}, std::vector<float>{0.0f, 0.0f}));
  tensors.push_back(
      io::f32_tensor("feature_cov", {2, 2}, std::vector<float>{2.0f, 0.5f, 0.5f, 1.0f}));
  tensors.push_back(io::f32_tensor("test_features", {3, 2}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  const auto path = fd_temp_file(name);
  io::write_safetensors(path, tensors, metadata);
  return path;
}

} // namespace

TEST_CASE("PCA features project (x - mean) onto the stored components", "[frechet]") {
  const auto path = write_stats("good", {1, 0, 0, 0, /**/ 0, 0.6f, 0, 0.8f});
  const auto pca = metrics::PcaFeatures::load(path);
  CHECK(pca.dims() == 2);
  CHECK(pca.pixels() == 4);
  CHECK(pca.real_stats().covariance(0, 1) == Approx(0.5));
  REQUIRE(pca.test_features().rows() == 3);
  CHECK(pca.test_features()(2, 1) == Approx(6.0));

  Tensor images(2, Shape{1, 2, 2});
  const float values[] = {1.5f, 2.0f, 0.5f, 3.0f, /**/ 0.5f, -1.0f, 7.0f, 1.0f};
  std::copy(std::begin(values), std::end(values), images.data());
  const Eigen::MatrixXd f = pca.project(images);
  REQUIRE(f.rows() == 2);
  REQUIRE(f.cols() == 2);
  // Image 0: x - mean = (1, 2, 1, 2): f = (1, 0.6*2 + 0.8*2) = (1, 2.8).
  CHECK(f(0, 0) == Approx(1.0));
  CHECK(f(0, 1) == Approx(2.8));
  // Image 1: x - mean = (0, -1, 7.5, 0): f = (0, -0.6).
  CHECK(f(1, 0) == Approx(0.0).margin(1e-12));
  CHECK(f(1, 1) == Approx(-0.6));

  // frechet_to_real = FD(stats of those features, the file's statistics).
  const double direct = metrics::frechet_distance(metrics::feature_stats(f), pca.real_stats());
  CHECK(pca.frechet_to_real(images) == Approx(direct));

  Tensor wrong(2, Shape{1, 3, 3});
  CHECK_THROWS_WITH(pca.project(wrong),
                    Catch::Contains("image shape = [2, 1, 3, 3]") && Catch::Contains("C*H*W = 4"));
  images[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(pca.project(images), Catch::Contains("image 1 pixel 1 = nan"));
}

TEST_CASE("PCA stats files are validated, naming the file and the tensor", "[frechet]") {
  const auto wrong_format =
      write_stats("format", {1, 0, 0, 0, 0, 1, 0, 0}, {{"format", "something-else"}});
  CHECK_THROWS_WITH(metrics::PcaFeatures::load(wrong_format),
                    Catch::Contains("tstitch_test_fd_format") &&
                        Catch::Contains("'format' must be 'tstitch-fd-stats'"));
  // Components for 6 pixels against a 4-pixel mean.
  const auto wrong_width = write_stats("width", {1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0});
  CHECK_THROWS_WITH(metrics::PcaFeatures::load(wrong_width),
                    Catch::Contains("pixel_mean") && Catch::Contains("expected shape [6]"));
  CHECK_THROWS_WITH(metrics::PcaFeatures::load(fd_temp_file("does_not_exist")),
                    Catch::Contains("tstitch_test_fd_does_not_exist"));
}
