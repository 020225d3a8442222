// SPDX-License-Identifier: Apache-2.0
#pragma once

// What the multistep exponential integrators (DPM-Solver++, UniPC) share: the half log-SNR they
// step in, a fixed-capacity history of data predictions, dynamic thresholding, and the tiny
// linear solve of UniPC. Everything here is allocated in a solver's begin(), never per step.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

/// Dynamic thresholding of the data prediction (Saharia et al. 2022; diffusers'
/// `thresholding=True`): per sample, s = clamp(quantile(|x0|, ratio), min 1, max
/// sample_max_value) and x0 <- clamp(x0, -s, s) / s.
///
/// The clamp follows torch.clamp, which applies min first and max last: with sample_max_value < 1
/// every s is sample_max_value, whatever the quantile (diffusers' behaviour; parity doc §2.6).
struct DynamicThresholding {
  double ratio = 0.995;          ///< diffusers' dynamic_thresholding_ratio, in (0, 1)
  double sample_max_value = 1.0; ///< the largest s, > 0

  friend bool operator==(const DynamicThresholding&, const DynamicThresholding&) = default;
};

namespace multistep {

/// lambda = log(alpha) - log(sigma), half the log-SNR: the time variable of DPM-Solver and UniPC.
/// +inf at a clean point (sigma = 0), -inf at pure noise (alpha = 0); IEEE arithmetic on these
/// infinities is what reproduces diffusers' final steps (parity doc §2.5).
[[nodiscard]] inline double lambda(const TimePoint& p) {
  return std::log(p.alpha) - std::log(p.sigma);
}

/// Checks the options shared by the multistep solvers; `owner` prefixes the parameter names.
inline void validate(const char* owner, int solver_order,
                     const std::optional<DynamicThresholding>& thresholding) {
  require(solver_order >= 1 && solver_order <= 3, detail::concat(owner, "::solver_order"),
          solver_order, "must be 1, 2 or 3");
  if (!thresholding)
    return;
  require(thresholding->ratio > 0 && thresholding->ratio < 1,
          detail::concat(owner, "::thresholding->ratio"), thresholding->ratio,
          "must lie in (0, 1)");
  require(thresholding->sample_max_value > 0 && std::isfinite(thresholding->sample_max_value),
          detail::concat(owner, "::thresholding->sample_max_value"), thresholding->sample_max_value,
          "must be positive and finite");
}

/// The data predictions of the latest evaluations, newest first, each with the point it was made
/// at. The tensors are allocated once (reserve); a push only moves the index of the newest slot,
/// so the history rotates without copying.
class History {
public:
  static constexpr int max_capacity = 4;

  /// Allocates `capacity` slots for (batch, shape), reusing them if they already fit, and empties
  /// the history.
  template <class Backend>
  void reserve(Backend& backend, int capacity, std::int64_t batch, Shape shape) {
    require(capacity >= 1 && capacity <= max_capacity, "history capacity", capacity,
            "must lie in [1, 4]");
    for (int k = 0; k < capacity; ++k)
      ensure_workspace(backend, slots_[static_cast<std::size_t>(k)], batch, shape);
    capacity_ = capacity;
    clear();
  }

  void clear() {
    size_ = 0;
    newest_ = capacity_ - 1; // so the first push fills slot 0
  }

  [[nodiscard]] int size() const { return size_; }

  /// The slot the next push() turns into the newest entry: write the prediction here, then push.
  /// When the history is full this is the oldest entry's slot, which stays readable until then.
  [[nodiscard]] View incoming() { return slots_[slot_index(-1)].view(); }

  /// Makes incoming() the newest entry, made at `point`.
  void push(const TimePoint& point) {
    newest_ = static_cast<int>(slot_index(-1));
    points_[static_cast<std::size_t>(newest_)] = point;
    size_ = std::min(size_ + 1, capacity_);
  }

  /// Entry k, 0 the newest; k < size().
  [[nodiscard]] ConstView operator[](int k) const { return slots_[slot_index(k)].view(); }
  [[nodiscard]] const TimePoint& point(int k) const { return points_[slot_index(k)]; }
  [[nodiscard]] double lambda(int k) const { return multistep::lambda(point(k)); }

private:
  /// Slot of entry k; k = -1 is the incoming slot.
  [[nodiscard]] std::size_t slot_index(int k) const {
    return static_cast<std::size_t>(((newest_ - k) % capacity_ + capacity_) % capacity_);
  }

  std::array<AnyTensor, max_capacity> slots_{};
  std::array<TimePoint, max_capacity> points_{};
  int capacity_ = 1;
  int size_ = 0;
  int newest_ = 0;
};

/// Writes the thresholded copy of a data prediction (see DynamicThresholding). The quantile needs
/// the values of a whole sample, so they are read through `backend.host_view` into a scratch
/// buffer sized once by reserve(); the clamp itself runs on the backend.
class Thresholder {
public:
  void reserve(std::int64_t sample_numel) {
    scratch_.resize(static_cast<std::size_t>(sample_numel));
  }

  template <class Backend>
  void apply(Backend& backend, const DynamicThresholding& options, ConstView in, View out) {
    for (std::int64_t n = 0; n < in.batch(); ++n) {
      const ConstView row = in.samples(n, 1);
      const float s = threshold(options, backend.host_view(row));
      backend.map(out.samples(n, 1), ClampScale{s}, row);
    }
  }

  // Element-wise functors passed to backend.map. Public only because nvcc cannot instantiate a
  // kernel template (cuda::Backend::map) with a private nested type; not part of the API.
  struct ClampScale {
    float s;
    TSTITCH_HOST_DEVICE float operator()(float v) const {
      return (v < -s ? -s : (v > s ? s : v)) / s;
    }
  };

private:
  /// s for one sample: torch.quantile's linear interpolation between order statistics, then
  /// torch.clamp(q, min=1, max=sample_max_value).
  float threshold(const DynamicThresholding& options, ConstView row) {
    const std::size_t count = scratch_.size();
    const float* values = row.data();
    for (std::size_t e = 0; e < count; ++e)
      scratch_[e] = std::abs(values[e]);
    const double rank = options.ratio * static_cast<double>(count - 1);
    const auto below_index = static_cast<std::size_t>(rank);
    const double weight = rank - static_cast<double>(below_index);
    const auto below_it = scratch_.begin() + static_cast<std::ptrdiff_t>(below_index);
    std::nth_element(scratch_.begin(), below_it, scratch_.end());
    const double below = *below_it;
    const double above =
        below_index + 1 < count ? *std::min_element(below_it + 1, scratch_.end()) : below;
    const double q = below + weight * (above - below);
    return static_cast<float>(std::min(std::max(q, 1.0), options.sample_max_value));
  }

  std::vector<float> scratch_;
};

/// out = sum of the first `count` terms (1 to 5), in float32 and left to right as
/// Backend::combine evaluates them; a fifth term is added in a second pass. `out` may alias any
/// input.
template <class Backend>
void combine(Backend& backend, View out, const std::array<Term, 5>& t, int count) {
  switch (count) {
  case 1:
    backend.combine(out, t[0]);
    return;
  case 2:
    backend.combine(out, t[0], t[1]);
    return;
  case 3:
    backend.combine(out, t[0], t[1], t[2]);
    return;
  case 4:
    backend.combine(out, t[0], t[1], t[2], t[3]);
    return;
  default:
    backend.combine(out, t[0], t[1], t[2], t[3]);
    backend.combine(out, Term{1.0f, out}, t[4]);
    return;
  }
}

/// Solves the k x k system a x = b (k <= 3) by Gaussian elimination with partial pivoting, in
/// double (torch.linalg.solve in UniPC). A singular system leaves NaN or Inf in x; callers only
/// pass systems whose nodes r_j are distinct, finite and non-zero.
template <std::size_t N>
[[nodiscard]] std::array<double, N> solve(std::array<std::array<double, N>, N> a,
                                          std::array<double, N> b, std::size_t k) {
  for (std::size_t col = 0; col < k; ++col) {
    std::size_t pivot = col;
    for (std::size_t r = col + 1; r < k; ++r)
      if (std::abs(a[r][col]) > std::abs(a[pivot][col]))
        pivot = r;
    std::swap(a[col], a[pivot]);
    std::swap(b[col], b[pivot]);
    for (std::size_t r = col + 1; r < k; ++r) {
      const double f = a[r][col] / a[col][col];
      for (std::size_t c = col; c < k; ++c)
        a[r][c] -= f * a[col][c];
      b[r] -= f * b[col];
    }
  }
  std::array<double, N> x{};
  for (std::size_t r = k; r-- > 0;) {
    double acc = b[r];
    for (std::size_t c = r + 1; c < k; ++c)
      acc -= a[r][c] * x[c];
    x[r] = acc / a[r][r];
  }
  return x;
}

} // namespace multistep
} // namespace tstitch
