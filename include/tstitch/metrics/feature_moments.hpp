// SPDX-License-Identifier: Apache-2.0
#pragma once

// Feature statistics that add up: a count, the sum of the features and the sum of their outer
// products. Accumulators over disjoint parts of a sample set merge, so processes compute the
// Frechet distance of the whole set without gathering its features or images.
//
// The sums are kept in double-double (an unevaluated hi + lo pair, ~106 bits) with exact products
// (fma), so the order of the samples and of the merges changes them only around 2^-100 relative,
// and the rounded doubles they give are the same in practice whatever the split. That matters:
// real feature sets have dead (always zero) units, and the Frechet distance of singular
// covariances moves by ~sqrt(perturbation) (square roots of eigenvalues near zero), so a
// covariance that differs in its last bit can move FD in its sixth digit.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <Eigen/Core>

#include "tstitch/core/error.hpp"
#include "tstitch/metrics/frechet.hpp"

namespace tstitch::metrics {

namespace detail {

/// hi + lo with |lo| <= ulp(hi) / 2.
struct DoubleDouble {
  double hi = 0.0;
  double lo = 0.0;
};

/// s + e == a + b exactly (Knuth's TwoSum: any magnitudes).
inline DoubleDouble two_sum(double a, double b) {
  const double s = a + b;
  const double bb = s - a;
  return {s, (a - (s - bb)) + (b - bb)};
}

/// s + e == a + b exactly, for |a| >= |b| or a == 0 (Dekker's FastTwoSum).
inline DoubleDouble fast_two_sum(double a, double b) {
  const double s = a + b;
  return {s, b - (s - a)};
}

/// a + b in double-double (both operands double-double): error ~2^-104 of |a| + |b|.
inline DoubleDouble dd_add(DoubleDouble a, DoubleDouble b) {
  const DoubleDouble s = two_sum(a.hi, b.hi);
  const DoubleDouble t = two_sum(a.lo, b.lo);
  DoubleDouble u = fast_two_sum(s.hi, s.lo + t.hi);
  return fast_two_sum(u.hi, u.lo + t.lo);
}

/// a * b exactly as a double-double (the fma gives the product's rounding error). The product
/// passes through a volatile so that no compiler contracts it with a later add into an fma,
/// which would round differently and break the exact error term.
inline DoubleDouble two_product(double a, double b) {
  const volatile double rounded = a * b;
  const double p = rounded;
  return {p, std::fma(a, b, -p)};
}

/// a * b for double-doubles (the lo * lo term, ~2^-106 relative, is left out).
inline DoubleDouble dd_multiply(DoubleDouble a, DoubleDouble b) {
  const DoubleDouble p = two_product(a.hi, b.hi);
  return fast_two_sum(p.hi, p.lo + (a.hi * b.lo + a.lo * b.hi));
}

/// a / d for a double-double and a double.
inline DoubleDouble dd_divide(DoubleDouble a, double d) {
  const double q1 = a.hi / d;
  const double remainder = std::fma(-q1, d, a.hi) + a.lo; // a - q1 * d, exact in its hi part
  return fast_two_sum(q1, remainder / d);
}

} // namespace detail

/// The moments of a feature set, accumulated batch by batch and mergeable.
///
/// Features are summed relative to a fixed `shift` (zero by default): sum(x - shift) and
/// sum((x - shift)(x - shift)^T). A shift near the mean (the real statistics' mean, known to every
/// process before sampling) keeps the sums small; accumulators merge only with the same shift.
class FeatureMoments {
public:
  /// Moments of `dims` features about zero.
  explicit FeatureMoments(std::int64_t dims) : FeatureMoments(zero_shift(dims)) {}

  /// Moments about `shift`, whose size is the feature dimension; it must be finite.
  explicit FeatureMoments(Eigen::VectorXd shift) : shift_(std::move(shift)) {
    if (shift_.size() < 1)
      throw_invalid_argument("feature moments dimension", shift_.size(), "must be at least 1");
    detail::check_finite(shift_, "feature moments shift");
    const auto k = static_cast<std::size_t>(shift_.size());
    sum_.resize(k);
    outer_.resize(k * k);
  }

  [[nodiscard]] std::int64_t dims() const { return shift_.size(); }
  [[nodiscard]] std::int64_t count() const { return count_; }
  [[nodiscard]] const Eigen::VectorXd& shift() const { return shift_; }

  /// sum over samples of (x - shift), rounded to double.
  [[nodiscard]] Eigen::VectorXd sum() const {
    Eigen::VectorXd s(dims());
    for (Eigen::Index i = 0; i < dims(); ++i)
      s(i) = sum_[static_cast<std::size_t>(i)].hi;
    return s;
  }

  /// sum over samples of (x - shift)(x - shift)^T, rounded to double (symmetric).
  [[nodiscard]] Eigen::MatrixXd outer() const {
    Eigen::MatrixXd m(dims(), dims());
    for (Eigen::Index i = 0; i < dims(); ++i)
      for (Eigen::Index j = 0; j <= i; ++j)
        m(i, j) = m(j, i) = outer_at(i, j).hi;
    return m;
  }

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
    const auto k = static_cast<std::size_t>(dims());
    std::vector<double> c(k);
    for (Eigen::Index r = 0; r < features.rows(); ++r) {
      for (std::size_t i = 0; i < k; ++i) {
        c[i] = features(r, static_cast<Eigen::Index>(i)) - shift_(static_cast<Eigen::Index>(i));
        sum_[i] = detail::dd_add(sum_[i], {c[i], 0.0});
      }
      // The lower triangle only; outer() and packed() mirror it.
      for (std::size_t i = 0; i < k; ++i)
        for (std::size_t j = 0; j <= i; ++j)
          outer_[i * k + j] = detail::dd_add(outer_[i * k + j], detail::two_product(c[i], c[j]));
    }
    count_ += features.rows();
  }

  /// Adds another accumulator's samples (same dimension and shift, or it throws).
  void merge(const FeatureMoments& other) {
    check_compatible(other.shift_, "merged accumulator");
    count_ += other.count_;
    for (std::size_t i = 0; i < sum_.size(); ++i)
      sum_[i] = detail::dd_add(sum_[i], other.sum_[i]);
    for (std::size_t i = 0; i < outer_.size(); ++i)
      outer_[i] = detail::dd_add(outer_[i], other.outer_[i]);
  }

  /// The mean of the samples; throws with no samples.
  [[nodiscard]] Eigen::VectorXd mean() const {
    if (count_ < 1)
      throw_invalid_argument("feature moments count", count_, "needs at least 1 sample for a mean");
    Eigen::VectorXd m(dims());
    for (Eigen::Index i = 0; i < dims(); ++i) {
      const detail::DoubleDouble q =
          detail::dd_divide(sum_[static_cast<std::size_t>(i)], static_cast<double>(count_));
      m(i) = detail::dd_add({shift_(i), 0.0}, q).hi;
    }
    return m;
  }

  /// The covariance (denominator count - 1, as feature_stats); throws with fewer than 2 samples.
  /// (S - s s^T / n) is formed in double-double and rounded once, so the cancellation of a mean
  /// far from the shift costs no digits.
  [[nodiscard]] Eigen::MatrixXd covariance() const {
    if (count_ < 2)
      throw_invalid_argument("feature moments count", count_,
                             "needs at least 2 samples for a covariance");
    const auto n = static_cast<double>(count_);
    Eigen::MatrixXd cov(dims(), dims());
    for (Eigen::Index i = 0; i < dims(); ++i)
      for (Eigen::Index j = 0; j <= i; ++j) {
        const detail::DoubleDouble correction =
            detail::dd_divide(detail::dd_multiply(sum_[static_cast<std::size_t>(i)],
                                                  sum_[static_cast<std::size_t>(j)]),
                              n);
        const detail::DoubleDouble centred =
            detail::dd_add(outer_at(i, j), {-correction.hi, -correction.lo});
        cov(i, j) = cov(j, i) = detail::dd_divide(centred, n - 1.0).hi;
      }
    return cov;
  }

  /// Mean, covariance and count as FeatureStats, for frechet_distance.
  [[nodiscard]] FeatureStats stats() const { return FeatureStats{mean(), covariance(), count_}; }

  // --- Reduction across processes -------------------------------------------------------------

  /// The accumulator as (hi, lo) pairs of doubles: the count, the sums (dims()), the outer
  /// products (dims() x dims(), column-major); 2 * packed_pairs(dims()) doubles. Reduce buffers
  /// pair by pair with add_packed (an MPI user operation over a 2-double type, or gathered and
  /// added in order): a plain elementwise double sum would lose the lo parts' purpose.
  [[nodiscard]] std::vector<double> packed() const {
    const auto k = static_cast<std::size_t>(dims());
    std::vector<double> out;
    out.reserve(2 * packed_pairs(dims()));
    const auto put = [&](detail::DoubleDouble v) {
      out.push_back(v.hi);
      out.push_back(v.lo);
    };
    put({static_cast<double>(count_), 0.0});
    for (const detail::DoubleDouble& v : sum_)
      put(v);
    for (std::size_t j = 0; j < k; ++j)
      for (std::size_t i = 0; i < k; ++i)
        put(outer_at(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)));
    return out;
  }

  /// The number of (hi, lo) pairs packed() holds for `dims` features: 1 + dims + dims^2.
  [[nodiscard]] static std::size_t packed_pairs(std::int64_t dims) {
    const auto k = static_cast<std::size_t>(dims);
    return 1 + k + k * k;
  }

  /// inout[p] += in[p] for `pairs` (hi, lo) pairs, in double-double: the merge of two packed()
  /// buffers. Its signature suits an MPI_User_function wrapper (the operation is commutative).
  static void add_packed(const double* in, double* inout, std::size_t pairs) {
    for (std::size_t p = 0; p < pairs; ++p) {
      const detail::DoubleDouble s =
          detail::dd_add({in[2 * p], in[2 * p + 1]}, {inout[2 * p], inout[2 * p + 1]});
      inout[2 * p] = s.hi;
      inout[2 * p + 1] = s.lo;
    }
  }

  /// The accumulator a packed() buffer (or a reduction of several) describes, about `shift`.
  [[nodiscard]] static FeatureMoments unpack(std::span<const double> buffer,
                                             Eigen::VectorXd shift) {
    FeatureMoments m(std::move(shift));
    const auto k = static_cast<std::size_t>(m.dims());
    if (buffer.size() != 2 * packed_pairs(m.dims()))
      throw_invalid_argument("packed feature moments size", buffer.size(),
                             tstitch::detail::concat("must be 2 (1 + k + k^2) = ",
                                                     2 * packed_pairs(m.dims()), " for k = ", k));
    for (std::size_t i = 0; i < buffer.size(); ++i)
      if (!std::isfinite(buffer[i]))
        throw_invalid_argument(tstitch::detail::concat("packed feature moments [", i, "]"),
                               buffer[i], "must be finite");
    const double count = buffer[0] + buffer[1];
    if (!(count >= 0.0 && count <= 9007199254740992.0) ||
        count != static_cast<double>(static_cast<std::int64_t>(count)))
      throw_invalid_argument("packed feature moments count", count,
                             "must be a whole number in [0, 2^53]");
    m.count_ = static_cast<std::int64_t>(count);
    const auto get = [&](std::size_t pair) {
      return detail::DoubleDouble{buffer[2 * pair], buffer[2 * pair + 1]};
    };
    for (std::size_t i = 0; i < k; ++i)
      m.sum_[i] = get(1 + i);
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t j = 0; j <= i; ++j)
        m.outer_[i * k + j] = get(1 + k + j * k + i); // column-major (i, j)
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

  /// Element (i, j) of the symmetric outer-product sum (stored in the lower triangle).
  [[nodiscard]] const detail::DoubleDouble& outer_at(Eigen::Index i, Eigen::Index j) const {
    const auto k = static_cast<std::size_t>(dims());
    const auto r = static_cast<std::size_t>(std::max(i, j));
    const auto c = static_cast<std::size_t>(std::min(i, j));
    return outer_[r * k + c];
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
  std::vector<detail::DoubleDouble> sum_;   // dims()
  std::vector<detail::DoubleDouble> outer_; // dims() x dims(), lower triangle used
  std::int64_t count_ = 0;
};

} // namespace tstitch::metrics
