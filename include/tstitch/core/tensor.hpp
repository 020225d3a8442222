// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"

namespace tstitch {

/// The shape of one latent sample, [C, H, W]. The batch size travels with the tensor, not with
/// the model: a denoiser declares the Shape it accepts and takes any batch of it.
struct Shape {
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;

  [[nodiscard]] constexpr std::int64_t numel() const { return channels * height * width; }
  [[nodiscard]] constexpr std::int64_t plane() const { return height * width; }
  friend constexpr bool operator==(const Shape&, const Shape&) = default;
  friend std::ostream& operator<<(std::ostream& out, const Shape& s) {
    return out << '[' << s.channels << ", " << s.height << ", " << s.width << ']';
  }
};

/// A non-owning view of a float32 batch [N, C, H, W] in any memory space (host or device).
///
/// Within one sample the C*H*W values are contiguous (channel-major). Consecutive samples are
/// `batch_stride()` floats apart; a channel slice of a wider tensor (e.g. the first C channels of a
/// 2C-channel learned-sigma output) is a view whose rows are contiguous but whose batch stride is
/// larger than its own C*H*W. That is the only kind of striding views ever need.
template <class T> class BasicView {
  static_assert(std::is_same_v<std::remove_const_t<T>, float>, "tstitch views hold float32");

public:
  BasicView() = default;
  BasicView(T* data, std::int64_t batch, Shape shape)
      : BasicView(data, batch, shape, shape.numel()) {}
  BasicView(T* data, std::int64_t batch, Shape shape, std::int64_t batch_stride)
      : data_(data), batch_(batch), shape_(shape), batch_stride_(batch_stride) {}

  /// A view of mutable data converts to a view of const data.
  template <class U>
  requires(std::is_const_v<T>&& std::is_same_v<U, float>)
      BasicView(const BasicView<U>& other) // NOLINT(google-explicit-constructor)
      : BasicView(other.data(), other.batch(), other.shape(), other.batch_stride()) {}

  [[nodiscard]] T* data() const { return data_; }
  [[nodiscard]] std::int64_t batch() const { return batch_; }
  [[nodiscard]] Shape shape() const { return shape_; }
  [[nodiscard]] std::int64_t batch_stride() const { return batch_stride_; }
  /// Values in one sample (C*H*W).
  [[nodiscard]] std::int64_t sample_numel() const { return shape_.numel(); }
  [[nodiscard]] std::int64_t numel() const { return batch_ * shape_.numel(); }
  [[nodiscard]] bool empty() const { return numel() == 0; }
  /// True when all N*C*H*W values are one contiguous block.
  [[nodiscard]] bool contiguous() const { return batch_ <= 1 || batch_stride_ == shape_.numel(); }

  [[nodiscard]] T& at(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) const {
    return data_[n * batch_stride_ + (c * shape_.height + h) * shape_.width + w];
  }
  /// Samples [first, first + count).
  [[nodiscard]] BasicView samples(std::int64_t first, std::int64_t count) const {
    if (first < 0 || count < 0 || first + count > batch_)
      throw_invalid_argument("samples(first, count)", detail::concat(first, ", ", count),
                             detail::concat("outside a batch of ", batch_));
    return BasicView(data_ + first * batch_stride_, count, shape_, batch_stride_);
  }
  /// Channels [first, first + count) of every sample.
  [[nodiscard]] BasicView channels(std::int64_t first, std::int64_t count) const {
    if (first < 0 || count < 0 || first + count > shape_.channels)
      throw_invalid_argument(
          "channels(first, count)", detail::concat(first, ", ", count),
          detail::concat("outside a tensor with ", shape_.channels, " channels"));
    return BasicView(data_ + first * shape_.plane(), batch_, {count, shape_.height, shape_.width},
                     batch_stride_);
  }

private:
  T* data_ = nullptr;
  std::int64_t batch_ = 0;
  Shape shape_{};
  std::int64_t batch_stride_ = 0;
};

using View = BasicView<float>;
using ConstView = BasicView<const float>;

/// Writes "[N, C, H, W]".
template <class T> std::string shape_string(const BasicView<T>& v) {
  return detail::concat('[', v.batch(), ", ", v.shape().channels, ", ", v.shape().height, ", ",
                        v.shape().width, ']');
}

/// A contiguous owning float32 batch [N, C, H, W] in host memory.
class Tensor {
public:
  Tensor() = default;
  Tensor(std::int64_t batch, Shape shape) : batch_(batch), shape_(shape) {
    require(batch >= 0, "batch", batch, "must not be negative");
    require(shape.channels >= 0 && shape.height >= 0 && shape.width >= 0, "shape", shape,
            "must not have negative extents");
    values_.assign(static_cast<std::size_t>(batch * shape.numel()), 0.0f);
  }

  [[nodiscard]] View view() { return {values_.data(), batch_, shape_}; }
  [[nodiscard]] ConstView view() const { return {values_.data(), batch_, shape_}; }
  operator View() { return view(); }            // NOLINT(google-explicit-constructor)
  operator ConstView() const { return view(); } // NOLINT(google-explicit-constructor)

  [[nodiscard]] float* data() { return values_.data(); }
  [[nodiscard]] const float* data() const { return values_.data(); }
  [[nodiscard]] std::int64_t batch() const { return batch_; }
  [[nodiscard]] Shape shape() const { return shape_; }
  [[nodiscard]] std::int64_t numel() const { return static_cast<std::int64_t>(values_.size()); }
  [[nodiscard]] float& at(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
    return view().at(n, c, h, w);
  }
  [[nodiscard]] float at(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) const {
    return view().at(n, c, h, w);
  }
  [[nodiscard]] float& operator[](std::int64_t i) { return values_[static_cast<std::size_t>(i)]; }
  [[nodiscard]] float operator[](std::int64_t i) const {
    return values_[static_cast<std::size_t>(i)];
  }

private:
  std::int64_t batch_ = 0;
  Shape shape_{};
  std::vector<float> values_;
};

} // namespace tstitch
