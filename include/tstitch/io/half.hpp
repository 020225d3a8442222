// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <bit>
#include <cstdint>

// Conversions between float32 and the two 16-bit float formats found in checkpoints: IEEE 754
// binary16 ("F16", "half") and bfloat16 ("BF16", the top 16 bits of a float32).
//
// Everything here is integer arithmetic on the bit patterns, never float arithmetic: the results
// are exact and independent of the floating-point environment (rounding mode, and the FTZ/DAZ
// flags that -ffast-math or CUDA host code may switch on), and the functions are constexpr.
//
// NaN policy: widening (to f32) keeps sign and payload bit for bit, so a signaling NaN stays
// signaling. Narrowing (from f32) keeps the sign and the top payload bits and sets the quiet bit,
// which is what x86 F16C (vcvtps2ph) and most bf16 libraries do, and guarantees a NaN never
// collapses into an infinity by losing its low payload bits.

namespace tstitch::io {

/// binary16 -> float32. Exact for all 65536 inputs (every half is a float), subnormals included.
[[nodiscard]] constexpr float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  std::uint32_t mantissa = h & 0x3FFu;
  std::uint32_t bits = 0;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13); // inf, or NaN with its payload
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign; // +-0
  } else {
    // Subnormal half m * 2^-24: a normal float. Shift the leading 1 up to bit 10 (the implicit
    // bit position) and lower the exponent once per shift.
    std::uint32_t e = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

/// bfloat16 -> float32. Exact: a bfloat16 is the top half of a float32.
[[nodiscard]] constexpr float bf16_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

/// float32 -> binary16, rounding to nearest, ties to even. Values whose magnitude rounds past
/// 65504 become +-inf, values below half the smallest subnormal (2^-25) become +-0.
[[nodiscard]] constexpr std::uint16_t f32_to_f16_rne(float value) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) // NaN: quiet, top payload bits kept
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  if (magnitude >= 0x477FF000u) // >= 65520, the midpoint between 65504 and 2^16: inf
    return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (magnitude >= 0x38800000u) { // >= 2^-14: a normal half
    // Rebias the exponent (127 -> 15) and drop 13 mantissa bits; a carry out of the mantissa
    // correctly bumps the exponent (the overflow case was handled above).
    std::uint32_t half = (magnitude - ((127u - 15u) << 23)) >> 13;
    const std::uint32_t rest = magnitude & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u) != 0))
      ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  // Subnormal half (or zero): the result is round(|value| * 2^24). Anything below 2^-25, half
  // the smallest subnormal, rounds to zero (2^-25 itself is a tie and rounds to even, zero, too);
  // that includes the float subnormals.
  const std::uint32_t exponent = magnitude >> 23;
  if (exponent < 127 - 25)
    return sign;
  const std::uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126u - exponent; // 14..24: |value| * 2^24 = mantissa >> shift
  std::uint32_t half = mantissa >> shift;
  const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
  const std::uint32_t tie = 1u << (shift - 1u);
  if (rest > tie || (rest == tie && (half & 1u) != 0))
    ++half; // may carry into 0x400, the smallest normal half: the right encoding
  return static_cast<std::uint16_t>(sign | half);
}

/// float32 -> bfloat16, rounding to nearest, ties to even (overflow rounds to +-inf).
[[nodiscard]] constexpr std::uint16_t f32_to_bf16_rne(float value) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) // NaN: plain rounding could carry it into inf
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  const std::uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

} // namespace tstitch::io
