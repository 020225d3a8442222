// SPDX-License-Identifier: Apache-2.0
#pragma once

// Per-element math (schedule formulas, solver coefficients, Philox, prediction conversions) is
// written once and shared by host and device code. Under nvcc these functions become
// __host__ __device__; in a plain C++ translation unit they are ordinary inline functions, so the
// CPU headers never need CUDA installed.
#if defined(__CUDACC__)
#define TSTITCH_HOST_DEVICE __host__ __device__
#else
#define TSTITCH_HOST_DEVICE
#endif

#define TSTITCH_INLINE inline

#define TSTITCH_VERSION_MAJOR 0
#define TSTITCH_VERSION_MINOR 1
#define TSTITCH_VERSION_PATCH 0
