// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

namespace tstitch {

/// The instruction sets tstitch's own run-time dispatch chooses between (Philox noise, the CPU
/// DiT's small-head attention). Libraries it calls dispatch on their own (oneDNN: its
/// ONEDNN_MAX_CPU_ISA; Eigen: at compile time).
enum class CpuIsa {
  scalar = 0, ///< portable C++ (the build's baseline, e.g. SSE2 on x86-64)
  avx2 = 1,   ///< AVX2 and FMA
};

[[nodiscard]] constexpr const char* to_string(CpuIsa isa) {
  return isa == CpuIsa::avx2 ? "avx2" : "scalar";
}

namespace detail {

inline CpuIsa detect_cpu_isa() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return CpuIsa::avx2;
#endif
  return CpuIsa::scalar;
}

/// TSTITCH_MAX_CPU_ISA, named as oneDNN's cap is: AVX2 and above (AVX512_CORE, ...) allow AVX2;
/// AVX, SSE41, SCALAR and the like allow the scalar paths only (any case). Unset or empty: no
/// cap.
inline CpuIsa cap_from_environment() {
  const char* value = std::getenv("TSTITCH_MAX_CPU_ISA");
  if (value == nullptr || *value == '\0')
    return CpuIsa::avx2;
  std::string v(value);
  for (char& c : v)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const bool avx2_or_above =
      v.starts_with("AVX2") || v.starts_with("AVX512") || v.starts_with("AVX10") || v == "ALL";
  return avx2_or_above ? CpuIsa::avx2 : CpuIsa::scalar;
}

inline std::atomic<CpuIsa>& max_cpu_isa_setting() {
  static std::atomic<CpuIsa> cap{cap_from_environment()};
  return cap;
}

} // namespace detail

/// What this CPU supports, detected once.
[[nodiscard]] inline CpuIsa detected_cpu_isa() {
  static const CpuIsa isa = detail::detect_cpu_isa();
  return isa;
}

/// Caps tstitch's own dispatch (TSTITCH_MAX_CPU_ISA sets the initial cap): for tests of the
/// scalar paths on an AVX2 machine, or to rule out a path. Thread-safe; takes effect at the next
/// call that dispatches.
inline void set_max_cpu_isa(CpuIsa isa) { detail::max_cpu_isa_setting().store(isa); }
[[nodiscard]] inline CpuIsa max_cpu_isa() { return detail::max_cpu_isa_setting().load(); }

/// The instruction set tstitch's own dispatch uses: what the CPU has, within the cap.
[[nodiscard]] inline CpuIsa cpu_isa() {
  const CpuIsa cap = max_cpu_isa(), detected = detected_cpu_isa();
  return static_cast<int>(cap) < static_cast<int>(detected) ? cap : detected;
}

} // namespace tstitch
