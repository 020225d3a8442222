// SPDX-License-Identifier: Apache-2.0
#pragma once
// Per-tensor FP8 (e4m3) quantisation shared by lab_gemm_fp8's device kernels and its CPU
// emulation, so that --emulate rounds exactly as the device does:
//   scale = amax / 448 (448: e4m3's largest finite value), q = e4m3_rn_satfinite(x * (1 / scale)),
//   x ~ e4m3_to_float(q) * scale.
// The rounding is cuda_fp8.h's __nv_cvt_float_to_fp8 (host and device); e4m3_to_float is our own
// decoding, which --emulate checks against cuda_fp8.h for all 256 codes.
#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace lab::fp8 {

inline constexpr float kE4m3Max = 448.0f;

/// The dequantisation scale of a tensor and its inverse (what values are multiplied by before
/// rounding). An all-zero (or non-finite) amax gets scale 1: nothing to stretch.
struct Scale {
  float scale, inverse;
};

__host__ __device__ inline Scale scale_for(float amax) {
  const float scale = (amax > 0.0f && amax <= 3.0e38f) ? amax / kE4m3Max : 1.0f;
  return {scale, 1.0f / scale};
}

/// One value to e4m3 bits: round to nearest even, saturating to +-448 (never NaN from a finite x).
__host__ __device__ inline std::uint8_t to_e4m3(float x, float inverse) {
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(x * inverse, __NV_SATFINITE, __NV_E4M3));
}

/// e4m3 bits to float: 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is
/// subnormal (m * 2^-9); S.1111.111 is NaN (e4m3 has no infinity).
__host__ __device__ inline float e4m3_to_float(std::uint8_t bits) {
  const int exponent = (bits >> 3) & 0xf, mantissa = bits & 0x7;
  const float sign = (bits & 0x80) != 0 ? -1.0f : 1.0f;
  if (exponent == 0xf && mantissa == 0x7)
    return NAN;
  if (exponent == 0)
    return sign * static_cast<float>(mantissa) * 0x1p-9f;
  return sign * ldexpf(1.0f + static_cast<float>(mantissa) * 0.125f, exponent - 7);
}

/// A tensor quantised on the host: its e4m3 bits and dequantisation scale (the weights, once;
/// and every operand in --emulate).
struct Quantised {
  std::vector<std::uint8_t> bits;
  float scale = 1.0f;
};

inline Quantised quantise(const std::vector<float>& values) {
  float amax = 0.0f;
  for (const float v : values)
    amax = std::fmax(amax, std::fabs(v));
  const Scale s = scale_for(amax);
  Quantised q;
  q.scale = s.scale;
  q.bits.reserve(values.size());
  for (const float v : values)
    q.bits.push_back(to_e4m3(v, s.inverse));
  return q;
}

/// The values a quantised tensor stands for, in double (the emulation's GEMM operands).
inline std::vector<double> dequantise(const Quantised& q) {
  std::vector<double> out(q.bits.size());
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<double>(e4m3_to_float(q.bits[i])) * static_cast<double>(q.scale);
  return out;
}

} // namespace lab::fp8
