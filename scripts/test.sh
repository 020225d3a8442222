#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Configures, builds and tests tstitch twice: with g++ (build/gcc) and with clang++ (build/clang).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh

common=(
  -DCMAKE_BUILD_TYPE=Release
  -DTSTITCH_BUILD_TESTS=ON
  -DTSTITCH_BUILD_EXAMPLES=ON
  -DTSTITCH_BUILD_BENCHMARKS=ON
  -DTSTITCH_WARNINGS_AS_ERRORS=ON
)

run() {
  local name="$1" cxx="$2"
  shift 2
  local dir="build/${name}"
  echo "=== ${name}: configure (${cxx}) ==="
  cmake -S . -B "${dir}" -DCMAKE_CXX_COMPILER="${cxx}" "${common[@]}" "$@"
  echo "=== ${name}: build ==="
  cmake --build "${dir}" -j 2
  echo "=== ${name}: test ==="
  ctest --test-dir "${dir}" --output-on-failure -j2
}

# g++: TSTITCH_ENABLE_CUDA keeps its default (ON when a CUDA compiler is found).
run gcc g++
# clang++: CUDA off (CUDA compile checks come later).
run clang clang++ -DTSTITCH_ENABLE_CUDA=OFF

echo "=== all tests passed (gcc, clang) ==="
