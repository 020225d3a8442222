// SPDX-License-Identifier: Apache-2.0
#pragma once

// AttentionPath::cudnn: cuDNN's fused flash-attention forward, reached through cuDNN 9's graph
// (backend) API. Included by src/cuda/attention.cuh, which dispatches to the two functions at
// the end of this file (cudnn_attention_supported, cudnn_attention).
//
// Built only with TSTITCH_HAS_CUDNN (CMake defines it when it finds cudnn_graph.h; the headers
// alone are enough). libcudnn is NOT linked: it is opened at run time with dlopen, first the path
// in the environment variable TSTITCH_CUDNN_LIBRARY, then "libcudnn.so.9", then "libcudnn.so",
// so a program built with this path still runs, with the flash path, where cuDNN is missing (or
// where it is only a Python wheel: nvidia/cudnn/lib/libcudnn.so.9). Only the twelve entry points
// below are resolved.
//
// The operation graph is the one cudnn-frontend's SDPA node (CompositeSDPANode, inference, no
// mask, no dropout) emits, which is the pattern the fused attention engines recognise:
//
//   S  = matmul(Q, K^T)                      fp32, virtual              (B, H, T, T)
//   Ss = S * scale                           fp32, virtual; scale = 1/sqrt(D), by value
//   M  = reduce_max(Ss) over keys            fp32, virtual              (B, H, T, 1)
//   E  = exp(Ss - M)                         fp32, virtual (sub, exp)
//   Z  = reduce_add(E) over keys             fp32, virtual              (B, H, T, 1)
//   L  = M + log(Z)                          fp32, virtual: softmax stats, not written
//   P  = E / Z                               bf16, virtual (bmm2 reads P as its input type)
//   O  = matmul(P, V)                        bf16                       (B, H, T, D)
//
// Q, K and V are strided views of qkv [B, T, 3, H, D] (three separate variant-pack pointers),
// O a strided view of out [B, T, H, D]. Finalized plans are cached per (device, stream, batch,
// tokens, heads, head_dim) with a device workspace allocated when the plan is made, so a call
// with a known shape allocates no device memory and can be captured into a CUDA graph. Cached
// plans and their workspaces live until the process ends: a captured graph keeps using them.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "tstitch/core/error.hpp"
#include "tstitch/cuda/runtime.hpp"

#if defined(TSTITCH_HAS_CUDNN)
#include <cudnn_graph.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#endif

namespace tstitch::cuda::detail {

inline constexpr int kCudnnMinHeadDim = 8;
inline constexpr int kCudnnMaxHeadDim =
    128; // sm_80 with cuDNN <= 9.9 stops at 128 (cudnn-frontend)

#if defined(TSTITCH_HAS_CUDNN)

namespace cudnn {

// ---------------------------------------------------------------------------------------------
// The library, opened once per process.
// ---------------------------------------------------------------------------------------------
struct Api {
  std::string path;    ///< the library that was opened (empty: none)
  std::string failure; ///< why none was, or why it cannot be used
  std::size_t version = 0;
  decltype(&cudnnCreate) create = nullptr;
  decltype(&cudnnDestroy) destroy = nullptr;
  decltype(&cudnnSetStream) set_stream = nullptr;
  decltype(&cudnnGetErrorString) error_string = nullptr;
  decltype(&cudnnGetLastErrorString) last_error_string = nullptr; // optional
  decltype(&cudnnGetVersion) get_version = nullptr;
  decltype(&cudnnBackendCreateDescriptor) create_descriptor = nullptr;
  decltype(&cudnnBackendDestroyDescriptor) destroy_descriptor = nullptr;
  decltype(&cudnnBackendSetAttribute) set_attribute = nullptr;
  decltype(&cudnnBackendGetAttribute) get_attribute = nullptr;
  decltype(&cudnnBackendFinalize) finalize = nullptr;
  decltype(&cudnnBackendExecute) execute = nullptr;

  [[nodiscard]] bool loaded() const { return failure.empty(); }
};

// Resolves every entry point from `library`; returns the first missing name, or "".
inline std::string resolve(void* library, Api& api) {
  const auto find = [library](auto& function, const char* name) {
    function = reinterpret_cast<std::remove_reference_t<decltype(function)>>(dlsym(library, name));
    return function != nullptr;
  };
  if (!find(api.create, "cudnnCreate"))
    return "cudnnCreate";
  if (!find(api.destroy, "cudnnDestroy"))
    return "cudnnDestroy";
  if (!find(api.set_stream, "cudnnSetStream"))
    return "cudnnSetStream";
  if (!find(api.error_string, "cudnnGetErrorString"))
    return "cudnnGetErrorString";
  if (!find(api.get_version, "cudnnGetVersion"))
    return "cudnnGetVersion";
  if (!find(api.create_descriptor, "cudnnBackendCreateDescriptor"))
    return "cudnnBackendCreateDescriptor";
  if (!find(api.destroy_descriptor, "cudnnBackendDestroyDescriptor"))
    return "cudnnBackendDestroyDescriptor";
  if (!find(api.set_attribute, "cudnnBackendSetAttribute"))
    return "cudnnBackendSetAttribute";
  if (!find(api.get_attribute, "cudnnBackendGetAttribute"))
    return "cudnnBackendGetAttribute";
  if (!find(api.finalize, "cudnnBackendFinalize"))
    return "cudnnBackendFinalize";
  if (!find(api.execute, "cudnnBackendExecute"))
    return "cudnnBackendExecute";
  (void)find(api.last_error_string, "cudnnGetLastErrorString"); // cuDNN >= 9.0; optional
  return "";
}

inline Api load_api() {
  Api api;
  std::vector<std::string> candidates;
  const char* configured = std::getenv("TSTITCH_CUDNN_LIBRARY");
  if (configured != nullptr && *configured != '\0')
    candidates.emplace_back(configured);
  candidates.emplace_back("libcudnn.so.9");
  candidates.emplace_back("libcudnn.so");
  std::string tried;
  for (const std::string& candidate : candidates) {
    (void)dlerror();
    // RTLD_LOCAL: cuDNN's symbols stay out of the global namespace; the library finds its
    // sub-libraries (libcudnn_graph.so.9, the engines) through its own RUNPATH ($ORIGIN).
    void* library = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      const char* why = dlerror();
      tried += tstitch::detail::concat(tried.empty() ? "" : "; ",
                                       why != nullptr ? why : candidate.c_str());
      continue;
    }
    const std::string missing = resolve(library, api);
    if (!missing.empty()) {
      tried +=
          tstitch::detail::concat(tried.empty() ? "" : "; ", candidate, ": no symbol ", missing);
      (void)dlclose(library);
      api = Api{};
      continue;
    }
    api.path = candidate;
    api.version = api.get_version();
    // Never dlclose'd: plans and handles made from it live until the process ends.
    if (api.version < 90000) {
      api.failure = tstitch::detail::concat(candidate, " is cuDNN ", api.version,
                                            "; the graph API path needs cuDNN 9");
    } else if (api.version == 91000 || api.version == 91001) {
      // cudnn-frontend refuses bf16/fp16 SDPA forward on these two releases (known bugs).
      api.failure =
          tstitch::detail::concat(candidate, " is cuDNN ", api.version,
                                  ", whose SDPA forward has known bugs (use 9.10.2 or newer)");
    }
    return api;
  }
  api.failure = tstitch::detail::concat(
      "libcudnn could not be loaded (",
      configured != nullptr && *configured != '\0' ? "" : "TSTITCH_CUDNN_LIBRARY is not set; ",
      tried, ")");
  return api;
}

inline const Api& api() {
  static const Api instance = load_api(); // thread-safe initialisation, once
  return instance;
}

// "CUDNN_STATUS_...: <cuDNN's last error message>"; the message is per thread in cuDNN.
inline std::string status_text(cudnnStatus_t status) {
  const Api& a = api();
  std::string text = a.error_string != nullptr ? a.error_string(status) : "cuDNN error";
  text += tstitch::detail::concat(" (", static_cast<int>(status), ")");
  if (a.last_error_string != nullptr) {
    std::array<char, 1024> message{};
    a.last_error_string(message.data(), message.size());
    message.back() = '\0';
    if (message[0] != '\0')
      text += tstitch::detail::concat(": ", message.data());
  }
  return text;
}

/// A failed cuDNN call: tstitch::runtime_error naming the call and cuDNN's status (the message
/// follows TSTITCH_CUBLAS_CHECK); the status lets plan building tell a rejection from a fault.
class CudnnError : public runtime_error {
public:
  CudnnError(cudnnStatus_t status, std::string_view what, const char* file, int line)
      : runtime_error(tstitch::detail::concat("tstitch: cuDNN error in ", what, " (", file, ":",
                                              line, "): ", status_text(status))),
        status_(status) {}
  [[nodiscard]] cudnnStatus_t status() const { return status_; }
  /// BAD_PARAM (2xxx) and NOT_SUPPORTED (3xxx): cuDNN refuses this graph, it would again.
  [[nodiscard]] bool is_rejection() const {
    const int code = static_cast<int>(status_);
    return code >= 2000 && code < 4000;
  }

private:
  cudnnStatus_t status_;
};

inline void check(cudnnStatus_t status, std::string_view what, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw CudnnError(status, what, file, line);
}

#define TSTITCH_CUDNN_CHECK(call)                                                                  \
  ::tstitch::cuda::detail::cudnn::check((call), #call, __FILE__, __LINE__)

// ---------------------------------------------------------------------------------------------
// Descriptors
// ---------------------------------------------------------------------------------------------

/// An owned cudnnBackendDescriptor_t.
class Descriptor {
public:
  Descriptor() = default;
  explicit Descriptor(cudnnBackendDescriptorType_t type) {
    TSTITCH_CUDNN_CHECK(api().create_descriptor(type, &handle_));
  }
  Descriptor(Descriptor&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Descriptor& operator=(Descriptor&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() { reset(); }

  [[nodiscard]] cudnnBackendDescriptor_t get() const { return handle_; }

private:
  void reset() noexcept {
    if (handle_ != nullptr)
      (void)api().destroy_descriptor(handle_);
    handle_ = nullptr;
  }
  cudnnBackendDescriptor_t handle_ = nullptr;
};

inline void set(cudnnBackendDescriptor_t descriptor, cudnnBackendAttributeName_t name,
                cudnnBackendAttributeType_t type, std::int64_t count, const void* value,
                const char* what) {
  const cudnnStatus_t status = api().set_attribute(descriptor, name, type, count, value);
  if (status != CUDNN_STATUS_SUCCESS)
    check(status, tstitch::detail::concat("cudnnBackendSetAttribute(", what, ")"), __FILE__,
          __LINE__);
}

inline void finalize(cudnnBackendDescriptor_t descriptor, const char* what) {
  const cudnnStatus_t status = api().finalize(descriptor);
  if (status != CUDNN_STATUS_SUCCESS)
    check(status, tstitch::detail::concat("cudnnBackendFinalize(", what, ")"), __FILE__, __LINE__);
}

using Dims = std::array<std::int64_t, 4>;

/// Builds one operation graph; owns every descriptor it creates until take() hands them over
/// (a plan must outlive nothing it refers to).
class GraphBuilder {
public:
  /// A new descriptor of `type`, owned by the builder. Returns the raw handle, which stays
  /// valid when the owning vector grows.
  cudnnBackendDescriptor_t keep(cudnnBackendDescriptorType_t type) {
    descriptors_.emplace_back(type);
    return descriptors_.back().get();
  }

  /// A finalized tensor descriptor.
  cudnnBackendDescriptor_t tensor(std::int64_t uid, cudnnDataType_t type, const Dims& dims,
                                  const Dims& strides, bool is_virtual, bool by_value = false) {
    const cudnnBackendDescriptor_t t = keep(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    // 16 bytes, cudnn-frontend's default; the launcher checks the base pointers for it.
    const std::int64_t alignment = 16;
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dimensions");
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor unique id");
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment,
        "tensor byte alignment");
    const bool yes = true;
    if (is_virtual)
      set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes, "tensor is virtual");
    if (by_value)
      set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, "tensor is by value");
    finalize(t, "tensor");
    return t;
  }

  /// c = a b, batched over the two leading dimensions, fp32 accumulation.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    const cudnnBackendDescriptor_t desc = keep(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    set(desc, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute,
        "matmul compute type");
    finalize(desc, "matmul descriptor");
    const cudnnBackendDescriptor_t op = keep(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, "matmul A");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "matmul B");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, "matmul C");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &desc,
        "matmul descriptor");
    finalize(op, "matmul operation");
    operations_.push_back(op);
  }

  /// y = mode(x) or mode(x, b), element-wise with broadcasting, fp32 math.
  void pointwise(cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                 cudnnBackendDescriptor_t y) {
    const cudnnBackendDescriptor_t desc = keep(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
    set(desc, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set(desc, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision,
        "pointwise math precision");
    finalize(desc, "pointwise descriptor");
    const cudnnBackendDescriptor_t op = keep(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    const float alpha = 1.0f; // cudnn-frontend sets both to 1 explicitly
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &desc,
        "pointwise descriptor");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
        "pointwise x");
    if (b != nullptr)
      set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b,
          "pointwise b");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
        "pointwise y");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &alpha, "pointwise alpha1");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &alpha, "pointwise alpha2");
    finalize(op, "pointwise operation");
    operations_.push_back(op);
  }

  /// y = reduce(x) over the dimensions where y has extent 1, fp32.
  void reduction(cudnnReduceTensorOp_t reduce, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t y) {
    const cudnnBackendDescriptor_t desc = keep(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    set(desc, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute,
        "reduction compute type");
    set(desc, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce,
        "reduction operator");
    finalize(desc, "reduction descriptor");
    const cudnnBackendDescriptor_t op = keep(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &desc,
        "reduction descriptor");
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
        "reduction x");
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
        "reduction y");
    finalize(op, "reduction operation");
    operations_.push_back(op);
  }

  /// The finalized operation graph of the operations added so far, in the order added.
  cudnnBackendDescriptor_t graph(cudnnHandle_t handle) {
    const cudnnBackendDescriptor_t g = keep(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
        static_cast<std::int64_t>(operations_.size()), operations_.data(), "operation graph ops");
    set(g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle,
        "operation graph handle");
    finalize(g, "operation graph");
    return g;
  }

  std::vector<Descriptor> take() { return std::move(descriptors_); }

private:
  std::vector<Descriptor> descriptors_;
  std::vector<cudnnBackendDescriptor_t> operations_;
};

// Unique ids of the tensors the variant pack binds; the virtual ones count up from 100.
enum Uid : std::int64_t { kQ = 1, kK, kV, kO, kScale };

/// A finalized execution plan, everything it was made from, and its workspace.
struct Plan {
  std::vector<Descriptor> descriptors; // tensors, operations, graph, heuristics, engine config
  Descriptor plan;
  DeviceBuffer<std::uint8_t> workspace;
  float scale = 1.0f; // the by-value scale tensor: read from here at each execution
};

struct AttentionShape {
  int batch, tokens, heads, head_dim;
  [[nodiscard]] std::string text() const {
    return tstitch::detail::concat("(", batch, ", ", tokens, ", ", heads, ", ", head_dim, ")");
  }
};

/// The shape could not be planned: tstitch::invalid_argument naming it and cuDNN's reason.
/// `permanent`: cuDNN refused it (not a passing fault), so the refusal can be remembered.
struct Rejection {
  std::string message;
  bool permanent;
};

inline Rejection rejection(const AttentionShape& shape, std::string why, bool permanent) {
  if (why.rfind("tstitch: ", 0) == 0)
    why.erase(0, 9);
  return {tstitch::detail::concat(
              "tstitch: attention (batch, tokens, heads, head_dim) = ", shape.text(), ": cuDNN (",
              api().path, ", version ", api().version,
              ") rejected the attention graph of path cudnn: ", why),
          permanent};
}

// The SDPA graph of the file comment; then heuristics mode A, and the first of its engine
// configurations (best first) that finalizes into an execution plan. Throws Rejection.
// Longer than our usual limit because cuDNN's graph API spells out every tensor and operation;
// split, it would only pass the same dozen descriptors around, so it reads top to bottom instead.
inline std::unique_ptr<Plan> make_plan(cudnnHandle_t handle, const AttentionShape& shape) {
  const std::int64_t b = shape.batch, t = shape.tokens, h = shape.heads, d = shape.head_dim;
  const std::int64_t qkv_row = 3 * h * d; // elements from one token's q (k, v) to the next
  const std::int64_t out_row = h * d;
  auto plan = std::make_unique<Plan>();
  plan->scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  std::int64_t workspace_bytes = 0;
  try {
    GraphBuilder g;
    const Dims qv_strides{t * qkv_row, d, qkv_row, 1}; // (B, H, T, D) inside qkv
    const Dims kt_strides{t * qkv_row, d, 1, qkv_row}; // K^T: (B, H, D, T) inside qkv
    const Dims o_strides{t * out_row, d, out_row, 1};  // (B, H, T, D) inside out
    const Dims scores{b, h, t, t};                     // (B, H, T, T), keys last
    const Dims score_strides{h * t * t, t * t, t, 1};
    const Dims rows{b, h, t, 1}; // (B, H, T, 1)
    const Dims row_strides{h * t, t, 1, 1};
    const Dims one{1, 1, 1, 1};
    const auto q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, {b, h, t, d}, qv_strides, false);
    const auto k = g.tensor(kK, CUDNN_DATA_BFLOAT16, {b, h, d, t}, kt_strides, false);
    const auto v = g.tensor(kV, CUDNN_DATA_BFLOAT16, {b, h, t, d}, qv_strides, false);
    const auto o = g.tensor(kO, CUDNN_DATA_BFLOAT16, {b, h, t, d}, o_strides, false);
    const auto scale = g.tensor(kScale, CUDNN_DATA_FLOAT, one, one, false, true);
    std::int64_t uid = 100;
    const auto virtual_scores = [&](cudnnDataType_t type) {
      return g.tensor(uid++, type, scores, score_strides, true);
    };
    const auto virtual_rows = [&] {
      return g.tensor(uid++, CUDNN_DATA_FLOAT, rows, row_strides, true);
    };

    const auto s = virtual_scores(CUDNN_DATA_FLOAT);
    g.matmul(q, k, s); // S = Q K^T
    const auto s_scaled = virtual_scores(CUDNN_DATA_FLOAT);
    g.pointwise(CUDNN_POINTWISE_MUL, s, scale, s_scaled);
    const auto row_max = virtual_rows();
    g.reduction(CUDNN_REDUCE_TENSOR_MAX, s_scaled, row_max);
    const auto shifted = virtual_scores(CUDNN_DATA_FLOAT);
    g.pointwise(CUDNN_POINTWISE_SUB, s_scaled, row_max, shifted);
    const auto e = virtual_scores(CUDNN_DATA_FLOAT);
    g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, e);
    const auto row_sum = virtual_rows();
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, row_sum);
    // The softmax statistics M + log Z. Nothing reads them in inference, but cudnn-frontend's
    // composite softmax emits them (into a virtual tensor) when the caller asks for no stats,
    // and that is the graph the fused engines are matched against.
    const auto log_sum = virtual_rows();
    g.pointwise(CUDNN_POINTWISE_LOG, row_sum, nullptr, log_sum);
    const auto stats = virtual_rows();
    g.pointwise(CUDNN_POINTWISE_ADD, row_max, log_sum, stats);
    const auto p = virtual_scores(CUDNN_DATA_BFLOAT16); // bmm2's A operand has the I/O type
    g.pointwise(CUDNN_POINTWISE_DIV, e, row_sum, p);
    g.matmul(p, v, o); // O = P V
    const cudnnBackendDescriptor_t graph = g.graph(handle);

    const cudnnBackendDescriptor_t heuristics = g.keep(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    set(heuristics, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph,
        "heuristics operation graph");
    set(heuristics, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
    finalize(heuristics, "engine heuristics, mode A");
    std::int64_t count = 0;
    TSTITCH_CUDNN_CHECK(api().get_attribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    if (count <= 0)
      throw rejection(shape, "heuristics mode A has no engine for this graph", true);
    std::vector<Descriptor> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (std::int64_t i = 0; i < count; ++i) {
      configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(configs.back().get());
    }
    std::int64_t returned = 0;
    TSTITCH_CUDNN_CHECK(api().get_attribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &returned,
                                            raw.data()));
    std::string failures;
    for (std::int64_t i = 0; i < std::min(returned, count) && plan->plan.get() == nullptr; ++i) {
      Descriptor candidate(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      const cudnnBackendDescriptor_t config = raw[static_cast<std::size_t>(i)];
      set(candidate.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle,
          "execution plan handle");
      set(candidate.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
          1, &config, "execution plan engine config");
      const cudnnStatus_t status = api().finalize(candidate.get());
      if (status != CUDNN_STATUS_SUCCESS) {
        failures += tstitch::detail::concat(failures.empty() ? "" : "; ", "engine config ", i, ": ",
                                            status_text(status));
        continue;
      }
      TSTITCH_CUDNN_CHECK(api().get_attribute(candidate.get(),
                                              CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                              CUDNN_TYPE_INT64, 1, nullptr, &workspace_bytes));
      plan->plan = std::move(candidate);
      plan->descriptors = g.take();
      plan->descriptors.push_back(std::move(configs[static_cast<std::size_t>(i)]));
    }
    if (plan->plan.get() == nullptr)
      throw rejection(shape,
                      tstitch::detail::concat("none of the ", returned,
                                              " engine configurations of "
                                              "heuristics mode A finalized: ",
                                              failures),
                      true);
  } catch (const CudnnError& e) {
    throw rejection(shape, e.what(), e.is_rejection());
  }
  // Outside the try: a failed allocation is a CUDA error (runtime_error), not a rejection.
  plan->workspace = DeviceBuffer<std::uint8_t>(std::max<std::int64_t>(workspace_bytes, 0));
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Handles and plans, shared by every thread under one mutex.
// ---------------------------------------------------------------------------------------------

// (device, stream, batch, tokens, heads, head_dim). The stream is in the key because the
// workspace is: calls on one stream run in order, calls on two streams sharing it would race.
using PlanKey = std::tuple<int, std::uintptr_t, int, int, int, int>;
using ShapeKey = std::tuple<int, int, int, int, int>; // (device, batch, tokens, heads, head_dim)

struct Cache {
  std::mutex mutex;
  std::map<int, cudnnHandle_t> handles;           // one per device, never destroyed
  std::map<PlanKey, std::unique_ptr<Plan>> plans; // never evicted: captured graphs use them
  std::map<ShapeKey, std::string> rejected;       // shapes cuDNN refused, with its message
};

inline Cache& cache() {
  static Cache* const instance = new Cache; // leaked on purpose: no teardown order with CUDA
  return *instance;
}

/// While alive, this thread may make "unsafe" CUDA calls (cudaMalloc, library initialisation)
/// even while its stream is being captured into a graph: the first call for a shape creates
/// the handle, finalizes the plan and allocates its workspace inside the capture of DitModel's
/// forward. Kernel launches into the capturing stream are captured as usual.
class RelaxedCaptureMode {
public:
  RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

/// Enqueues the attention on `stream` (inputs checked by the caller).
inline void run(const std::uint16_t* qkv, std::uint16_t* out, const AttentionShape& shape,
                cudaStream_t stream) {
  const Api& a = api();
  int device = 0;
  TSTITCH_CUDA_CHECK(cudaGetDevice(&device));
  Cache& c = cache();
  const std::lock_guard<std::mutex> lock(c.mutex); // the handle is shared: one call at a time
  const RelaxedCaptureMode relaxed;

  const ShapeKey shape_key{device, shape.batch, shape.tokens, shape.heads, shape.head_dim};
  if (const auto refused = c.rejected.find(shape_key); refused != c.rejected.end())
    throw invalid_argument(refused->second);
  cudnnHandle_t& handle = c.handles[device];
  if (handle == nullptr)
    TSTITCH_CUDNN_CHECK(a.create(&handle)); // on the current device
  const PlanKey key{device,      reinterpret_cast<std::uintptr_t>(stream),
                    shape.batch, shape.tokens,
                    shape.heads, shape.head_dim};
  auto found = c.plans.find(key);
  if (found == c.plans.end()) {
    try {
      found = c.plans.emplace(key, make_plan(handle, shape)).first;
    } catch (const Rejection& r) {
      if (r.permanent)
        c.rejected.emplace(shape_key, r.message);
      throw invalid_argument(r.message);
    }
  }
  Plan& plan = *found->second;

  const std::int64_t part = static_cast<std::int64_t>(shape.heads) * shape.head_dim;
  const std::array<std::int64_t, 5> uids{kQ, kK, kV, kO, kScale};
  // cuDNN takes non-const pointers; it does not write Q, K, V (or the scale).
  const std::array<void*, 5> pointers{const_cast<std::uint16_t*>(qkv),
                                      const_cast<std::uint16_t*>(qkv + part),
                                      const_cast<std::uint16_t*>(qkv + 2 * part), out, &plan.scale};
  void* const workspace = plan.workspace.data();
  TSTITCH_CUDNN_CHECK(a.set_stream(handle, stream));
  const Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR); // host memory only
  TSTITCH_CUDNN_CHECK(a.set_attribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                      CUDNN_TYPE_INT64, static_cast<std::int64_t>(uids.size()),
                                      uids.data()));
  TSTITCH_CUDNN_CHECK(a.set_attribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                      CUDNN_TYPE_VOID_PTR,
                                      static_cast<std::int64_t>(pointers.size()), pointers.data()));
  TSTITCH_CUDNN_CHECK(a.set_attribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                      CUDNN_TYPE_VOID_PTR, 1, &workspace));
  TSTITCH_CUDNN_CHECK(a.finalize(pack.get()));
  TSTITCH_CUDNN_CHECK(a.execute(handle, plan.plan.get(), pack.get()));
}

} // namespace cudnn

/// Whether the cudnn path can run `head_dim`, and if not why (a sentence naming cuDNN).
struct CudnnSupport {
  bool ok = false;
  bool head_dim_refused = false; // everything else is fine: only the head dimension is not
  std::string why;
};

/// libcudnn loaded, a device of sm_80 or newer, head_dim a multiple of 8 up to 128. Cheap: no
/// graph is built (a shape can still be rejected at its first call).
inline CudnnSupport cudnn_support(int head_dim) {
  const cudnn::Api& a = cudnn::api();
  if (!a.loaded())
    return {false, false, tstitch::detail::concat("cuDNN is not available: ", a.failure)};
  int device = 0;
  int major = 0;
  int minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return {false, false, "cuDNN attention needs a CUDA device, and none is usable"};
  }
  if (major < 8)
    return {false, false,
            tstitch::detail::concat("cuDNN fused attention needs sm_80 or newer; device ", device,
                                    " is sm_", major, minor)};
  if (head_dim % 8 != 0 || head_dim < kCudnnMinHeadDim || head_dim > kCudnnMaxHeadDim)
    return {false, true,
            tstitch::detail::concat("the cuDNN path supports multiples of 8 from ",
                                    kCudnnMinHeadDim, " to ", kCudnnMaxHeadDim)};
  return {true, false, ""};
}

inline bool cudnn_attention_supported(int head_dim) { return cudnn_support(head_dim).ok; }

inline void cudnn_attention(const std::uint16_t* qkv, std::uint16_t* out, int batch, int tokens,
                            int heads, int head_dim, cudaStream_t stream) {
  const CudnnSupport support = cudnn_support(head_dim);
  if (support.head_dim_refused)
    throw_invalid_argument("attention head_dim", head_dim, support.why);
  if (!support.ok)
    throw_invalid_argument("attention path", "cudnn", support.why);
  // The tensors are declared 16-byte aligned; with head_dim % 8 == 0 the K and V offsets and
  // every row keep the alignment of the base pointers.
  require(reinterpret_cast<std::uintptr_t>(qkv) % 16 == 0, "attention qkv address",
          reinterpret_cast<std::uintptr_t>(qkv), "must be 16-byte aligned for the cudnn path");
  require(reinterpret_cast<std::uintptr_t>(out) % 16 == 0, "attention out address",
          reinterpret_cast<std::uintptr_t>(out), "must be 16-byte aligned for the cudnn path");
  cudnn::run(qkv, out, {batch, tokens, heads, head_dim}, stream);
}

#else // !TSTITCH_HAS_CUDNN

inline bool cudnn_attention_supported(int /*head_dim*/) { return false; }

inline void cudnn_attention(const std::uint16_t* /*qkv*/, std::uint16_t* /*out*/, int /*batch*/,
                            int /*tokens*/, int /*heads*/, int /*head_dim*/,
                            cudaStream_t /*stream*/) {
  throw_invalid_argument("attention path", "cudnn",
                         "cuDNN attention is not built into this tstitch build (cudnn_graph.h "
                         "was not found when it was configured, or TSTITCH_WITH_CUDNN was off)");
}

#endif // TSTITCH_HAS_CUDNN

} // namespace tstitch::cuda::detail
