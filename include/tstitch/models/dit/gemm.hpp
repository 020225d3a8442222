// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>

#ifdef TSTITCH_HAS_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "tstitch/core/error.hpp"

namespace tstitch::dit {

/// Which library runs the CPU DiT's matrix products: its linear layers (linear.hpp) and the two
/// products of attention (attention.hpp).
///
/// - `eigen`: Eigen's GEMM, the output columns split between the OpenMP threads. Always built.
/// - `onednn`: oneDNN's matmul with the bias (JIT kernels chosen at run time for the CPU: AVX-512
///   brgemm, or its AVX2/AVX/SSE4.1 sgemm), tstitch's own pass for the tanh-GELU and the gated
///   residual, and attention as two batched matmuls over chunks of (sample, head) pairs around
///   oneDNN's softmax. A shape for which oneDNN has only a reference kernel runs in Eigen
///   (KernelChoice below).
///   Built when TSTITCH_HAS_ONEDNN is defined (CMake defines it for tstitch::dit when it finds
///   oneDNN; Debian: libdnnl-dev). The weights are read in place, in their PyTorch [out, in]
///   layout: nothing is repacked or copied, so memory-mapped checkpoints stay mapped.
///
/// Neither path makes tstitch allocate per forward once a batch size has been seen. oneDNN's own
/// per-call bookkeeping does allocate: about 90 small blocks per forward per DiT block (measured:
/// 179 `operator new` calls of at most 304 bytes per forward of a depth-2 DiT-S/2 at batch 2).
/// Where no heap traffic at all is allowed in the sampling loop, use `eigen` (zero).
enum class Gemm { eigen, onednn };

[[nodiscard]] constexpr bool gemm_available(Gemm gemm) {
#ifdef TSTITCH_HAS_ONEDNN
  return gemm == Gemm::eigen || gemm == Gemm::onednn;
#else
  return gemm == Gemm::eigen;
#endif
}

/// oneDNN when it was built in (1.0-1.5x faster per forward on AVX-512;
/// benchmarks/results/2026-11-26-dit-cpu-xeon.md), Eigen otherwise.
[[nodiscard]] constexpr Gemm default_gemm() {
  return gemm_available(Gemm::onednn) ? Gemm::onednn : Gemm::eigen;
}

[[nodiscard]] inline const char* to_string(Gemm gemm) {
  return gemm == Gemm::onednn ? "onednn" : "eigen";
}

/// Returns `gemm`, or throws invalid_argument when it was not built in.
inline Gemm require_available(Gemm gemm) {
  if (!gemm_available(gemm))
    throw invalid_argument(detail::concat("DiT GEMM '", to_string(gemm),
                                          "' is not built in: tstitch::dit was compiled without "
                                          "oneDNN (TSTITCH_HAS_ONEDNN undefined)"));
  return gemm;
}

} // namespace tstitch::dit

namespace tstitch::dit {

/// Which implementation runs one of the CPU DiT's operations at one shape (CpuModel::kernels()).
struct KernelChoice {
  /// The operation and its shape, e.g. "linear [5120, 48] x [144, 48]^T + GELU".
  std::string operation;
  /// What runs it, e.g. "oneDNN brg:avx512_core, fused epilogue", "oneDNN gemm:jit + tstitch
  /// gated residual", "Eigen".
  std::string implementation;
  /// Whether that is one of oneDNN's unvectorised reference kernels (its "ref:" implementations,
  /// hundreds of times slower than a JIT kernel). The DiT never chooses one where another form
  /// exists, so this is false unless no form of the operation has a JIT kernel on this CPU.
  bool reference = false;
};

} // namespace tstitch::dit

#ifdef TSTITCH_HAS_ONEDNN
namespace tstitch::detail {

/// oneDNN names its unvectorised fallbacks "ref:any", "ref_int8:any" and the like: the choice of
/// last resort when no JIT kernel supports a descriptor and its attributes on this CPU.
inline bool is_reference_kernel(std::string_view impl_info) { return impl_info.starts_with("ref"); }

/// Throws naming what `describe()` returns when a oneDNN C call fails (the message is only built
/// then).
template <class Describe> void check_dnnl(dnnl_status_t status, Describe&& describe) {
  if (status != dnnl_success)
    throw runtime_error(
        concat("oneDNN ", describe(), " failed (status ", static_cast<int>(status), ")"));
}

/// Runs a primitive through the C API with its arguments on the stack (the C++ API builds a
/// std::unordered_map per call) and waits for it.
template <std::size_t N, class Describe>
void execute(const dnnl::primitive& primitive, const dnnl::stream& stream,
             const dnnl_exec_arg_t (&args)[N], int count, Describe&& describe) {
  check_dnnl(dnnl_primitive_execute(primitive.get(), stream.get(), count, args), describe);
  check_dnnl(dnnl_stream_wait(stream.get()), describe);
}

} // namespace tstitch::detail
#endif
