// SPDX-License-Identifier: Apache-2.0
// Compiled without OpenMP and oneDNN (tests/CMakeLists.txt): the CPU DiT must build with Eigen
// alone. Including the headers instantiates every parallel loop of the forward.
#ifdef _OPENMP
#error "this file checks the build without OpenMP"
#endif
#ifdef TSTITCH_HAS_ONEDNN
#error "this file checks the build without oneDNN"
#endif

#include "tstitch/metrics/classifier.hpp"
#include "tstitch/metrics/frechet.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
