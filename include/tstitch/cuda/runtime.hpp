// SPDX-License-Identifier: Apache-2.0
#pragma once

// The CUDA backend's plain C++ side: error checks, the stream the backend runs on, and an owning
// device tensor. Only the CUDA runtime's C API header is needed, which any C++ compiler reads:
// a renderer's own translation units include this (and cuda/dit.hpp) without nvcc, and the
// kernels are compiled once, in src/cuda/tstitch_cuda.cu.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"

namespace tstitch::cuda {

/// Throws tstitch::runtime_error naming the call, the CUDA error and where it happened.
inline void check(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess)
    throw runtime_error(tstitch::detail::concat("tstitch: CUDA error in ", what, " (", file, ":",
                                                line, "): ", cudaGetErrorName(status), ": ",
                                                cudaGetErrorString(status)));
}

#define TSTITCH_CUDA_CHECK(call) ::tstitch::cuda::check((call), #call, __FILE__, __LINE__)

/// Whether a CUDA device can be used (driver present and at least one device).
[[nodiscard]] inline bool device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError(); // clear the sticky "no driver" error for later calls
    return false;
  }
  return count > 0;
}

/// The name and size of the current device, for reports.
struct DeviceInfo {
  std::string name;
  int multiprocessors = 0;
  int compute_major = 0;
  int compute_minor = 0;
  std::int64_t memory_bytes = 0;
};

[[nodiscard]] inline DeviceInfo device_info() {
  int device = 0;
  TSTITCH_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  TSTITCH_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return {prop.name, prop.multiProcessorCount, prop.major, prop.minor,
          static_cast<std::int64_t>(prop.totalGlobalMem)};
}

/// The stream tstitch's CUDA work runs on unless told otherwise: one non-blocking stream per
/// process, created on first use. Models and the sampling backend share it, so their work is
/// ordered without events; graph capture needs a non-default stream anyway.
[[nodiscard]] inline cudaStream_t default_stream() {
  static const cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    TSTITCH_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

namespace detail {

/// count * element_size, the bytes of a device allocation; throws tstitch::invalid_argument
/// naming `what` when the count is negative or the bytes do not fit in int64 (a batch too large
/// to count is refused here, before any CUDA call, instead of wrapping around).
[[nodiscard]] inline std::int64_t device_bytes(std::int64_t count, std::size_t element_size,
                                               std::string_view what) {
  require(count >= 0, tstitch::detail::concat(what, " size"), count, "must not be negative");
  const std::optional<std::int64_t> bytes =
      tstitch::detail::checked_extent_product({count, static_cast<std::int64_t>(element_size)});
  if (!bytes)
    throw_invalid_argument(tstitch::detail::concat(what, " size"), count,
                           tstitch::detail::concat("values of ", element_size,
                                                   " bytes each: more bytes than int64 can count"));
  return *bytes;
}

/// cudaMalloc that names what failed: a batch too large for the card reads "cannot allocate
/// <what>: <bytes> bytes ..." with the CUDA error and the device's free memory, not a bare
/// cudaErrorMemoryAllocation.
inline void* device_malloc(std::int64_t bytes, std::string_view what) {
  void* pointer = nullptr;
  const cudaError_t status = cudaMalloc(&pointer, static_cast<std::size_t>(bytes));
  if (status == cudaSuccess)
    return pointer;
  (void)cudaGetLastError(); // an allocation failure is not sticky; clear it for later calls
  std::size_t free_bytes = 0, total_bytes = 0;
  std::string memory = "device memory unknown";
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
    memory = tstitch::detail::concat(free_bytes, " of ", total_bytes, " bytes free on the device");
  else
    (void)cudaGetLastError();
  throw runtime_error(tstitch::detail::concat("tstitch: cannot allocate ", what, ": cudaMalloc of ",
                                              bytes, " bytes (", (bytes + (1 << 20) - 1) >> 20,
                                              " MiB) failed: ", cudaGetErrorName(status), ": ",
                                              cudaGetErrorString(status), " (", memory, ")"));
}

} // namespace detail

/// Owning device memory for `count` values of T (no construction: device memory is raw).
/// `what` names the buffer in the errors of a refused size or a failed allocation.
template <class T> class DeviceBuffer {
public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::int64_t count, std::string_view what = "device buffer")
      : count_(count) {
    const std::int64_t bytes = detail::device_bytes(count, sizeof(T), what);
    if (count > 0)
      data_ = static_cast<T*>(detail::device_malloc(bytes, what));
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  [[nodiscard]] T* data() const { return data_; }
  [[nodiscard]] std::int64_t size() const { return count_; }
  [[nodiscard]] std::int64_t bytes() const { return count_ * static_cast<std::int64_t>(sizeof(T)); }

private:
  void release() noexcept {
    if (data_ != nullptr)
      (void)cudaFree(data_); // never throw from a destructor; a failed free leaks
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  std::int64_t count_ = 0;
};

/// A float32 batch [N, C, H, W] in device memory: what the CUDA backend samples in place.
class DeviceTensor {
public:
  DeviceTensor() = default;
  /// Throws tstitch::invalid_argument for a negative batch or a batch x shape whose values or
  /// bytes int64 cannot count, and tstitch::runtime_error naming the bytes when cudaMalloc fails.
  DeviceTensor(std::int64_t batch, Shape shape)
      : batch_(batch), shape_(shape), memory_(values(batch, shape), "device tensor") {}

  [[nodiscard]] View view() { return {memory_.data(), batch_, shape_}; }
  [[nodiscard]] ConstView view() const { return {memory_.data(), batch_, shape_}; }
  [[nodiscard]] std::int64_t batch() const { return batch_; }
  [[nodiscard]] Shape shape() const { return shape_; }
  [[nodiscard]] std::int64_t numel() const { return shape_.numel(batch_); }
  [[nodiscard]] float* data() { return memory_.data(); }
  [[nodiscard]] const float* data() const { return memory_.data(); }

private:
  static std::int64_t values(std::int64_t batch, Shape shape) {
    require(batch >= 0, "device tensor batch", batch, "must not be negative");
    return shape.numel(batch);
  }

  std::int64_t batch_ = 0;
  Shape shape_{};
  DeviceBuffer<float> memory_;
};

namespace detail {
inline void check_extent(ConstView device, ConstView host, const char* what) {
  if (device.batch() != host.batch() || device.shape() != host.shape())
    throw_invalid_argument(
        tstitch::detail::concat(what, " host shape"), shape_string(host),
        tstitch::detail::concat("must equal the device shape ", shape_string(device)));
}
} // namespace detail

/// Host -> device copy of a whole batch (synchronous: for set-up, never inside the loop).
inline void upload(View device, ConstView host, cudaStream_t stream = default_stream()) {
  detail::check_extent(device, host, "upload");
  for (std::int64_t n = 0; n < host.batch(); ++n)
    TSTITCH_CUDA_CHECK(cudaMemcpyAsync(
        device.data() + n * device.batch_stride(), host.data() + n * host.batch_stride(),
        static_cast<std::size_t>(host.sample_numel()) * sizeof(float), cudaMemcpyHostToDevice,
        stream));
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
}

/// Device -> host copy of a whole batch; waits for the stream's work first.
inline void download(View host, ConstView device, cudaStream_t stream = default_stream()) {
  detail::check_extent(device, host, "download");
  for (std::int64_t n = 0; n < host.batch(); ++n)
    TSTITCH_CUDA_CHECK(cudaMemcpyAsync(
        host.data() + n * host.batch_stride(), device.data() + n * device.batch_stride(),
        static_cast<std::size_t>(host.sample_numel()) * sizeof(float), cudaMemcpyDeviceToHost,
        stream));
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
}

} // namespace tstitch::cuda
