#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds and runs the T-Stitch demo on the DiT pair trained on Fashion-MNIST (models/); arguments
# go to the demo (build/demo/examples/fashion_demo --help). The image grid goes to
# build/demo/fashion_stitch.png unless --png says otherwise. The older demo on analytic
# denoisers is the stitch_demo example.
#
# build/demo is its own build folder because the demo is compiled for this CPU (-march=native:
# the CPU DiT's GEMMs are several times faster with AVX2/AVX-512 than with the x86-64 baseline).
# g++ 12 warns inside its own AVX-512 intrinsics headers when Eigen inlines them, so -Werror is
# off there; scripts/test.sh builds everything with -Werror for the baseline architecture.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh >&2

cmake -S . -B build/demo -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="-march=native" -DTSTITCH_WARNINGS_AS_ERRORS=OFF \
  -DTSTITCH_BUILD_TESTS=OFF -DTSTITCH_BUILD_BENCHMARKS=OFF -DTSTITCH_ENABLE_CUDA=OFF >&2
cmake --build build/demo -j 2 --target fashion_demo >&2

exec build/demo/examples/fashion_demo --png build/demo/fashion_stitch.png "$@"
