// SPDX-License-Identifier: Apache-2.0
// The one CUDA translation unit of tstitch: the kernels, their launchers (cuda/kernels.hpp), the
// CUDA DiT (cuda/dit.hpp) and device sampling (cuda/sampling.hpp). Build it with nvcc into your
// program (CMake: link tstitch::cuda_dit), then use those plain C++ headers from any C++ compiler:
//   nvcc -std=c++20 --expt-relaxed-constexpr -arch=sm_90 -I<tstitch>/include -c tstitch_cuda.cu
// Add -DTSTITCH_HAS_CUDNN -I<dir of cudnn_graph.h> for AttentionPath::cudnn (cuDNN 9 headers only:
// libcudnn is opened at run time, see cuda/cudnn_attention.cuh; link -ldl on older glibc).
#include "tstitch/cuda/attention.cuh"
#include "tstitch/cuda/dit_kernels.cuh"
#include "tstitch/cuda/dit_model.cuh"
#include "tstitch/cuda/sampling_dit.cuh"
