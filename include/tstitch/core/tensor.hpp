// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"

namespace tstitch {

namespace detail {

/// The product of `extents`, or nothing when the product of the non-zero ones does not fit in
/// int64. A 0 does not excuse the others ([0, 2^62, 4] is refused): multiplied in another order
/// they overflow, which for int64 is undefined behaviour, not a wrap-around.
[[nodiscard]] constexpr std::optional<std::int64_t>
checked_extent_product(std::initializer_list<std::int64_t> extents) {
  constexpr auto int64_max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t magnitude = 1; // of the non-zero extents; stays <= int64_max
  bool negative = false;
  bool zero = false;
  for (const std::int64_t extent : extents) {
    if (extent == 0) {
      zero = true;
      continue;
    }
    const std::uint64_t size = extent < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(extent)
                                          : static_cast<std::uint64_t>(extent);
    if (magnitude > int64_max / size)
      return std::nullopt;
    magnitude *= size;
    negative = negative != (extent < 0);
  }
  if (zero)
    return 0;
  const auto product = static_cast<std::int64_t>(magnitude);
  return negative ? -product : product;
}

} // namespace detail

/// The shape of one latent sample, [C, H, W]. The batch size travels with the tensor, not with
/// the model: a denoiser declares the Shape it accepts and takes any batch of it.
struct Shape {
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;

  /// C*H*W; throws tstitch::invalid_argument naming the shape if that does not fit in int64.
  [[nodiscard]] constexpr std::int64_t numel() const {
    const std::optional<std::int64_t> product =
        detail::checked_extent_product({channels, height, width});
    if (!product)
      throw_invalid_argument("shape", *this, "has more elements than int64 can count");
    return *product;
  }
  /// batch*C*H*W, checked like numel().
  [[nodiscard]] constexpr std::int64_t numel(std::int64_t batch) const {
    const std::optional<std::int64_t> product =
        detail::checked_extent_product({batch, channels, height, width});
    if (!product)
      throw_invalid_argument("batch x shape", detail::concat(batch, " x ", *this),
                             "has more elements than int64 can count");
    return *product;
  }
  /// H*W, checked like numel().
  [[nodiscard]] constexpr std::int64_t plane() const {
    const std::optional<std::int64_t> product = detail::checked_extent_product({height, width});
    if (!product)
      throw_invalid_argument("shape", *this, "has more elements per channel than int64 can count");
    return *product;
  }
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
  [[nodiscard]] std::int64_t numel() const { return shape_.numel(batch_); }
  [[nodiscard]] bool empty() const { return numel() == 0; }
  /// True when all N*C*H*W values are one contiguous block.
  [[nodiscard]] bool contiguous() const { return batch_ <= 1 || batch_stride_ == shape_.numel(); }

  [[nodiscard]] T& at(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) const {
    return data_[n * batch_stride_ + (c * shape_.height + h) * shape_.width + w];
  }
  /// Samples [first, first + count).
  [[nodiscard]] BasicView samples(std::int64_t first, std::int64_t count) const {
    if (first < 0 || count < 0 || first > batch_ || count > batch_ - first) // no overflow
      throw_invalid_argument("samples(first, count)", detail::concat(first, ", ", count),
                             detail::concat("outside a batch of ", batch_));
    return BasicView(data_ + first * batch_stride_, count, shape_, batch_stride_);
  }
  /// Channels [first, first + count) of every sample.
  [[nodiscard]] BasicView channels(std::int64_t first, std::int64_t count) const {
    if (first < 0 || count < 0 || first > shape_.channels || count > shape_.channels - first)
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
    values_.assign(static_cast<std::size_t>(shape.numel(batch)), 0.0f);
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

/// An owning tensor of any backend (Tensor, cuda::DeviceTensor, ...), type-erased so that one
/// solver type keeps its workspace on whatever backend it runs with: solvers assign
/// `backend.allocate(batch, shape)` to AnyTensor members and use view(), batch(), shape().
///
/// Any type with `View view()`, `batch()` and `shape()` converts implicitly. The held tensor lives
/// on the heap, so its view (cached at construction) stays valid when the AnyTensor moves.
/// Copying copies the held tensor when its type is copyable (Tensor); a move-only tensor (device
/// memory) copies as an empty AnyTensor, which a solver's next begin() re-allocates - workspace
/// is never shared between two copies. holds<T>() tells which type is held, so a solver reused
/// with another backend re-allocates instead of handing host memory to device kernels.
class AnyTensor {
public:
  AnyTensor() = default;

  template <class T>
  requires(!std::is_same_v<std::remove_cvref_t<T>, AnyTensor> &&
           requires(std::remove_cvref_t<T> & t) {
             { t.view() } -> std::same_as<View>;
             { t.batch() } -> std::convertible_to<std::int64_t>;
             { t.shape() } -> std::same_as<Shape>;
           }) AnyTensor(T&& tensor) // NOLINT(google-explicit-constructor)
      : tag_(&tag_of<std::remove_cvref_t<T>>) {
    using Held = std::remove_cvref_t<T>;
    auto held = std::make_unique<Held>(std::forward<T>(tensor));
    view_ = held->view();
    if constexpr (std::is_copy_constructible_v<Held>)
      clone_ = [](const AnyTensor& from) {
        return AnyTensor(Held(*static_cast<const Held*>(from.owner_.get())));
      };
    owner_ = std::shared_ptr<void>(std::move(held));
  }

  AnyTensor(const AnyTensor& other) : AnyTensor(other.clone_ ? other.clone_(other) : AnyTensor()) {}
  AnyTensor& operator=(const AnyTensor& other) {
    if (this != &other)
      *this = AnyTensor(other);
    return *this;
  }
  AnyTensor(AnyTensor&& other) noexcept
      : owner_(std::move(other.owner_)), view_(std::exchange(other.view_, View{})),
        tag_(std::exchange(other.tag_, nullptr)), clone_(std::exchange(other.clone_, nullptr)) {}
  AnyTensor& operator=(AnyTensor&& other) noexcept {
    owner_ = std::move(other.owner_);
    view_ = std::exchange(other.view_, View{});
    tag_ = std::exchange(other.tag_, nullptr);
    clone_ = std::exchange(other.clone_, nullptr);
    return *this;
  }
  ~AnyTensor() = default;

  [[nodiscard]] View view() { return view_; }
  [[nodiscard]] ConstView view() const { return view_; }
  [[nodiscard]] std::int64_t batch() const { return view_.batch(); }
  [[nodiscard]] Shape shape() const { return view_.shape(); }
  [[nodiscard]] bool empty() const { return owner_ == nullptr; }

  /// Whether the held tensor is a T (false when empty).
  template <class T> [[nodiscard]] bool holds() const { return tag_ == &tag_of<T>; }

private:
  // One address per held type: an inline variable template is one object across translation
  // units, so comparing addresses identifies the type without RTTI.
  template <class T> static constexpr char tag_of = 0;

  // shared_ptr<void> for its type-erased deleter; it is never shared (see the copy constructor).
  std::shared_ptr<void> owner_;
  View view_{};
  const void* tag_ = nullptr;
  AnyTensor (*clone_)(const AnyTensor&) = nullptr;
};

} // namespace tstitch
