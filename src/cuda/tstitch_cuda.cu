// SPDX-License-Identifier: Apache-2.0
// The one CUDA translation unit of tstitch: the kernels, their launchers (cuda/kernels.hpp), the
// CUDA DiT (cuda/dit.hpp) and device sampling (cuda/sampling.hpp). The files it includes define
// those out of line, so they are compiled here and nowhere else. CMake builds it as
// tstitch::cuda_dit; by hand (from the repository root):
//   nvcc -std=c++20 --expt-relaxed-constexpr -arch=sm_90 -Iinclude -c src/cuda/tstitch_cuda.cu
// Add -DTSTITCH_HAS_CUDNN -I<dir of cudnn_graph.h> for AttentionPath::cudnn (cuDNN 9 headers only:
// libcudnn is opened at run time, see cudnn_attention.cuh; link -ldl on older glibc).
#include "attention.cuh"
#include "dit_kernels.cuh"
#include "dit_model.cuh"
#include "row_kernels.cuh"
#include "sampling_dit.cuh"
