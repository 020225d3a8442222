// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/io/safetensors.hpp"

namespace tstitch::metrics {

/// Gaussian statistics of a feature set: mean and covariance (denominator count - 1), in double.
struct FeatureStats {
  Eigen::VectorXd mean;
  Eigen::MatrixXd covariance;
  std::int64_t count = 0; ///< how many samples they were computed from (0: given, not measured)

  [[nodiscard]] std::int64_t dims() const { return mean.size(); }
};

namespace detail {

inline void check_finite(const Eigen::MatrixXd& m, const std::string& what) {
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c)
      if (!std::isfinite(m(r, c)))
        throw_invalid_argument(tstitch::detail::concat(what, "(", r, ", ", c, ")"), m(r, c),
                               "must be finite");
}

inline void check_stats(const FeatureStats& s, const char* name) {
  const Eigen::Index k = s.mean.size();
  if (k < 1)
    throw_invalid_argument(tstitch::detail::concat(name, ".mean size"), k, "must be at least 1");
  if (s.covariance.rows() != k || s.covariance.cols() != k)
    throw_invalid_argument(tstitch::detail::concat(name, ".covariance shape"),
                           tstitch::detail::concat("[", s.covariance.rows(), ", ",
                                                   s.covariance.cols(), "]"),
                           tstitch::detail::concat("must be [", k, ", ", k, "], as the mean"));
  check_finite(s.mean, tstitch::detail::concat(name, ".mean"));
  check_finite(s.covariance, tstitch::detail::concat(name, ".covariance"));
  // A covariance is symmetric; a clearly asymmetric matrix means the caller passed something
  // else (a transposed feature matrix, a Cholesky factor), which the eigen-solver would silently
  // symmetrise.
  const double scale = std::max(1.0, s.covariance.cwiseAbs().maxCoeff());
  const double asymmetry = (s.covariance - s.covariance.transpose()).cwiseAbs().maxCoeff();
  if (asymmetry > 1e-6 * scale)
    throw_invalid_argument(tstitch::detail::concat(name, ".covariance asymmetry"), asymmetry,
                           "a covariance must be symmetric");
}

/// Images (N, C, H, W) as an N x pixels matrix of T, one flattened image per row; throws naming
/// the image and pixel of a NaN or Inf, or the shape when C*H*W != pixels (`consumer`: whose
/// input size that is, for the message).
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>
flatten_images(ConstView images, std::int64_t pixels, const char* consumer) {
  if (images.sample_numel() != pixels)
    throw_invalid_argument("image shape", shape_string(images),
                           tstitch::detail::concat("must have C*H*W = ", pixels,
                                                   " values per image, as ", consumer));
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x(images.batch(), pixels);
  for (std::int64_t n = 0; n < images.batch(); ++n) {
    const float* row = images.data() + n * images.batch_stride();
    for (std::int64_t p = 0; p < pixels; ++p) {
      if (!std::isfinite(row[p]))
        throw_invalid_argument(tstitch::detail::concat("image ", n, " pixel ", p), row[p],
                               "must be finite");
      x(n, p) = static_cast<T>(row[p]);
    }
  }
  return x;
}

/// The symmetric positive semi-definite square root, via the eigendecomposition; eigenvalues
/// below zero (rounding of a PSD matrix) are taken as zero.
inline Eigen::MatrixXd psd_sqrt(const Eigen::MatrixXd& m) {
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(m);
  const Eigen::VectorXd roots = eig.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  return eig.eigenvectors() * roots.asDiagonal() * eig.eigenvectors().transpose();
}

} // namespace detail

/// Mean and covariance of the rows of `features` (N samples x k features). Throws for N < 2
/// (no covariance) and for NaN/Inf entries, naming the row and column.
[[nodiscard]] inline FeatureStats feature_stats(const Eigen::MatrixXd& features) {
  if (features.rows() < 2)
    throw_invalid_argument("feature sample count", features.rows(),
                           "needs at least 2 samples for a covariance");
  if (features.cols() < 1)
    throw_invalid_argument("feature dimension", features.cols(), "must be at least 1");
  detail::check_finite(features, "features");
  FeatureStats s;
  s.count = features.rows();
  s.mean = features.colwise().mean().transpose();
  const Eigen::MatrixXd centred = features.rowwise() - s.mean.transpose();
  s.covariance = centred.transpose() * centred / static_cast<double>(features.rows() - 1);
  return s;
}

/// The Frechet distance between the Gaussians N(mu1, S1) and N(mu2, S2):
///     |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
/// The trace of the product's square root is computed as the sum of the square roots of the
/// eigenvalues of the symmetric matrix S1^1/2 S2 S1^1/2 (which has the eigenvalues of S1 S2), so
/// it stays real and accurate where the general matrix square root of S1 S2 (FID's usual
/// scipy.linalg.sqrtm) picks up imaginary rounding noise or fails on singular covariances.
[[nodiscard]] inline double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  detail::check_stats(a, "first");
  detail::check_stats(b, "second");
  if (a.dims() != b.dims())
    throw_invalid_argument("feature dimensions", tstitch::detail::concat(a.dims(), " vs ", b.dims()),
                           "the two statistics must have the same dimension");
  const Eigen::MatrixXd root_a = detail::psd_sqrt(a.covariance);
  Eigen::MatrixXd middle = root_a * b.covariance * root_a;
  middle = 0.5 * (middle + middle.transpose()); // exact symmetry for the self-adjoint solver
  const Eigen::VectorXd eigenvalues =
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(middle, Eigen::EigenvaluesOnly)
          .eigenvalues();
  const double trace_sqrt = eigenvalues.cwiseMax(0.0).cwiseSqrt().sum();
  const double fd = (a.mean - b.mean).squaredNorm() + a.covariance.trace() +
                    b.covariance.trace() - 2.0 * trace_sqrt;
  // The true value is >= 0; rounding can leave -1e-16 for identical inputs.
  return std::max(fd, 0.0);
}

/// A fixed linear feature space: f = components (x - pixel_mean), with the real data's feature
/// statistics, as written by tools/make_fd_stats.py (format "tstitch-fd-stats").
class PcaFeatures {
public:
  PcaFeatures(Eigen::VectorXd pixel_mean, Eigen::MatrixXd components, FeatureStats real)
      : pixel_mean_(std::move(pixel_mean)), components_(std::move(components)),
        real_(std::move(real)) {
    if (components_.cols() != pixel_mean_.size())
      throw_invalid_argument("PCA components columns", components_.cols(),
                             tstitch::detail::concat("must equal the pixel_mean size, ",
                                                     pixel_mean_.size()));
    if (real_.dims() != components_.rows())
      throw_invalid_argument("real feature statistics dimension", real_.dims(),
                             tstitch::detail::concat("must equal the number of components, ",
                                                     components_.rows()));
    detail::check_stats(real_, "real");
  }

  /// Reads a stats file; errors name the file and the tensor.
  [[nodiscard]] static PcaFeatures load(const std::filesystem::path& path) {
    io::SafetensorsFile file(path);
    const auto fail = [&](const std::string& what) -> void {
      throw runtime_error(tstitch::detail::concat("tstitch: FD stats file '", path.string(),
                                                  "': ", what));
    };
    const auto meta = file.metadata().find("format");
    if (meta == file.metadata().end() || meta->second != "tstitch-fd-stats")
      fail("metadata 'format' must be 'tstitch-fd-stats' (written by tools/make_fd_stats.py)");
    for (const char* name : {"pixel_mean", "components", "feature_mean", "feature_cov"})
      if (!file.contains(name))
        fail(tstitch::detail::concat("tensor '", name, "' is missing"));
    const auto& comp = file.info("components");
    if (comp.shape.size() != 2 || comp.shape[0] < 1 || comp.shape[1] < 1)
      fail(tstitch::detail::concat("tensor 'components' has shape ", io::shape_string(comp.shape),
                                   "; expected [k, pixels]"));
    const std::int64_t k = comp.shape[0], pixels = comp.shape[1];
    file.expect("pixel_mean", {pixels});
    file.expect("feature_mean", {k});
    file.expect("feature_cov", {k, k});

    PcaFeatures result(as_vector(file.read_f32("pixel_mean")),
                       as_matrix(file.read_f32("components"), k, pixels),
                       FeatureStats{as_vector(file.read_f32("feature_mean")),
                                    as_matrix(file.read_f32("feature_cov"), k, k), 0});
    // Stored in float32: symmetrise the covariance exactly (the file's rounding is symmetric
    // already, but this costs nothing and keeps check_stats' tolerance meaningful).
    result.real_.covariance = 0.5 * (result.real_.covariance + result.real_.covariance.transpose());
    if (file.contains("test_features")) {
      const auto& t = file.info("test_features");
      if (t.shape.size() != 2 || t.shape[1] != k)
        fail(tstitch::detail::concat("tensor 'test_features' has shape ",
                                     io::shape_string(t.shape), "; expected [T, ", k, "]"));
      result.test_features_ = as_matrix(file.read_f32("test_features"), t.shape[0], k);
    }
    return result;
  }

  [[nodiscard]] std::int64_t dims() const { return components_.rows(); }
  [[nodiscard]] std::int64_t pixels() const { return components_.cols(); }
  [[nodiscard]] const FeatureStats& real_stats() const { return real_; }
  [[nodiscard]] const Eigen::MatrixXd& components() const { return components_; }
  [[nodiscard]] const Eigen::VectorXd& pixel_mean() const { return pixel_mean_; }
  /// Features of held-out real images shipped with the statistics (rows; may be empty): their FD
  /// against real_stats() at a sample count N is the noise floor of FD at that N.
  [[nodiscard]] const Eigen::MatrixXd& test_features() const { return test_features_; }

  /// Features of a batch of images (N, C, H, W) with C * H * W = pixels(): an N x k matrix.
  [[nodiscard]] Eigen::MatrixXd project(ConstView images) const {
    const Eigen::MatrixXd x = detail::flatten_images<double>(images, pixels(), "the PCA components");
    return (x.rowwise() - pixel_mean_.transpose()) * components_.transpose();
  }

  /// FD of a batch of images (at least 2) against the real statistics.
  [[nodiscard]] double frechet_to_real(ConstView images) const {
    return frechet_distance(feature_stats(project(images)), real_);
  }

private:
  static Eigen::VectorXd as_vector(const std::vector<float>& v) {
    return Eigen::Map<const Eigen::VectorXf>(v.data(), static_cast<Eigen::Index>(v.size()))
        .cast<double>();
  }
  static Eigen::MatrixXd as_matrix(const std::vector<float>& v, std::int64_t rows,
                                   std::int64_t cols) {
    return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
               v.data(), rows, cols)
        .cast<double>();
  }

  Eigen::VectorXd pixel_mean_;
  Eigen::MatrixXd components_;
  FeatureStats real_;
  Eigen::MatrixXd test_features_;
};

} // namespace tstitch::metrics
