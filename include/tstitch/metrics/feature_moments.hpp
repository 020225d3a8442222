// SPDX-License-Identifier: Apache-2.0
#pragma once

// Feature statistics that add up: a count, the sum of the features and the sum of their outer
// products, in double. Accumulators over disjoint parts of a sample set merge by adding those
// three (an MPI_SUM reduction of packed()), so processes compute the Frechet distance of the whole
// set without gathering its features or images.

#include <cstdint>
#include <span>
#include <vector>

#include <Eigen/Core>

#include "tstitch/core/error.hpp"
#include "tstitch/metrics/frechet.hpp"

namespace tstitch::metrics {

/// The moments of a feature set, accumulated batch by batch and mergeable.
///
/// Features are summed relative to a fixed `shift` (zero by default): sum(x - shift) and
/// sum((x - shift)(x - shift)^T). The covariance is (S - s s^T / n) / (n - 1), which loses digits
/// to cancellation when the mean is large against the spread; a shift near the mean (the real
/// statistics' mean, known to every process before sampling) removes that. Accumulators merge
/// only with the same shift.
class FeatureMoments {
public:
  /// Moments of `dims` features about zero.
  explicit FeatureMoments(std::int64_t dims) : FeatureMoments(zero_shift(dims)) {}

  /// Moments about `shift`, whose size is the feature dimension; it must be finite.
  explicit FeatureMoments(Eigen::VectorXd shift) : shift_(std::move(shift)) {
    if (shift_.size() < 1)
      throw_invalid_argument("feature moments dimension", shift_.size(), "must be at least 1");
    detail::check_finite(shift_, "feature moments shift");
    sum_ = Eigen::VectorXd::Zero(shift_.size());
    outer_ = Eigen::MatrixXd::Zero(shift_.size(), shift_.size());
  }

  [[nodiscard]] std::int64_t dims() const { return shift_.size(); }
  [[nodiscard]] std::int64_t count() const { return count_; }
  [[nodiscard]] const Eigen::VectorXd& shift() const { return shift_; }
  /// sum over samples of (x - shift).
  [[nodiscard]] const Eigen::VectorXd& sum() const { return sum_; }
  /// sum over samples of (x - shift)(x - shift)^T (symmetric).
  [[nodiscard]] const Eigen::MatrixXd& outer() const { return outer_; }

  /// Adds a batch: one sample per row, dims() columns. Throws naming the row and column of a NaN
  /// or Inf, or the column count when it is not dims(); a rejected batch adds nothing.
  void add(const Eigen::MatrixXd& features) {
    if (features.rows() == 0)
      return;
    if (features.cols() != dims())
      throw_invalid_argument(
          "feature batch columns", features.cols(),
          tstitch::detail::concat("must equal the accumulator's dimension, ", dims()));
    detail::check_finite(features, "features");
    const Eigen::MatrixXd centred = features.rowwise() - shift_.transpose();
    sum_ += centred.colwise().sum().transpose();
    outer_.noalias() += centred.transpose() * centred;
    count_ += features.rows();
  }

  /// Adds another accumulator's samples (same dimension and shift, or it throws).
  void merge(const FeatureMoments& other) {
    check_compatible(other.shift_, "merged accumulator");
    count_ += other.count_;
    sum_ += other.sum_;
    outer_ += other.outer_;
  }

  /// The mean of the samples; throws with no samples.
  [[nodiscard]] Eigen::VectorXd mean() const {
    if (count_ < 1)
      throw_invalid_argument("feature moments count", count_, "needs at least 1 sample for a mean");
    return shift_ + sum_ / static_cast<double>(count_);
  }

  /// The covariance (denominator count - 1, as feature_stats); throws with fewer than 2 samples.
  [[nodiscard]] Eigen::MatrixXd covariance() const {
    if (count_ < 2)
      throw_invalid_argument("feature moments count", count_,
                             "needs at least 2 samples for a covariance");
    const auto n = static_cast<double>(count_);
    Eigen::MatrixXd cov = (outer_ - sum_ * sum_.transpose() / n) / (n - 1.0);
    return 0.5 * (cov + cov.transpose()); // exactly symmetric, as check_stats expects
  }

  /// Mean, covariance and count as FeatureStats, for frechet_distance.
  [[nodiscard]] FeatureStats stats() const { return FeatureStats{mean(), covariance(), count_}; }

  /// count, sum (dims()) and outer (dims() x dims(), column-major) as one buffer of doubles: an
  /// elementwise sum of the buffers of several accumulators (MPI_Allreduce with MPI_SUM) is the
  /// buffer of their merge. The count is exact in a double up to 2^53 samples.
  [[nodiscard]] std::vector<double> packed() const {
    std::vector<double> out(packed_size(dims()));
    out[0] = static_cast<double>(count_);
    Eigen::Map<Eigen::VectorXd>(out.data() + 1, dims()) = sum_;
    Eigen::Map<Eigen::MatrixXd>(out.data() + 1 + dims(), dims(), dims()) = outer_;
    return out;
  }

  /// The number of doubles packed() holds for `dims` features: 1 + dims + dims^2.
  [[nodiscard]] static std::size_t packed_size(std::int64_t dims) {
    const auto k = static_cast<std::size_t>(dims);
    return 1 + k + k * k;
  }

  /// The accumulator a packed() buffer (or a sum of them) describes, about `shift`.
  [[nodiscard]] static FeatureMoments unpack(std::span<const double> buffer,
                                             Eigen::VectorXd shift) {
    FeatureMoments m(std::move(shift));
    if (buffer.size() != packed_size(m.dims()))
      throw_invalid_argument("packed feature moments size", buffer.size(),
                             tstitch::detail::concat("must be 1 + k + k^2 = ",
                                                     packed_size(m.dims()), " for k = ", m.dims()));
    const double count = buffer[0];
    if (!(count >= 0.0 && count <= 9007199254740992.0) ||
        count != static_cast<double>(static_cast<std::int64_t>(count)))
      throw_invalid_argument("packed feature moments count", count,
                             "must be a whole number in [0, 2^53]");
    m.count_ = static_cast<std::int64_t>(count);
    m.sum_ = Eigen::Map<const Eigen::VectorXd>(buffer.data() + 1, m.dims());
    m.outer_ = Eigen::Map<const Eigen::MatrixXd>(buffer.data() + 1 + m.dims(), m.dims(), m.dims());
    detail::check_finite(m.sum_, "packed feature moments sum");
    detail::check_finite(m.outer_, "packed feature moments outer");
    return m;
  }
  /// unpack about zero.
  [[nodiscard]] static FeatureMoments unpack(std::span<const double> buffer, std::int64_t dims) {
    return unpack(buffer, zero_shift(dims));
  }

private:
  static Eigen::VectorXd zero_shift(std::int64_t dims) {
    if (dims < 1)
      throw_invalid_argument("feature moments dimension", dims, "must be at least 1");
    return Eigen::VectorXd::Zero(dims);
  }

  void check_compatible(const Eigen::VectorXd& shift, const char* what) const {
    if (shift.size() != dims())
      throw_invalid_argument(tstitch::detail::concat(what, " dimension"), shift.size(),
                             tstitch::detail::concat("must equal this accumulator's, ", dims()));
    if (shift != shift_)
      throw_invalid_argument(tstitch::detail::concat(what, " shift"),
                             (shift - shift_).cwiseAbs().maxCoeff(),
                             "differs from this accumulator's (largest difference shown); "
                             "moments merge only about the same shift");
  }

  Eigen::VectorXd shift_;
  Eigen::VectorXd sum_;
  Eigen::MatrixXd outer_;
  std::int64_t count_ = 0;
};

} // namespace tstitch::metrics
