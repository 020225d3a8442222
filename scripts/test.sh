#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Configures, builds and tests tstitch twice: with g++ (build/gcc, Release, the CUDA code and its
# kernel lab compiled where nvcc is found, LibTorch and Open MPI where installed) and with clang++ under
# AddressSanitizer and UndefinedBehaviorSanitizer (build/clang, RelWithDebInfo: out-of-bounds
# accesses, leaks, signed overflow and the like fail the tests), then runs each fuzz target for
# 30 s (build/fuzz).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh

# Every relative link in the Markdown documents resolves inside the repository.
python3 tools/check_links.py

common=(
  -DCMAKE_BUILD_TYPE=Release
  -DTSTITCH_BUILD_TESTS=ON
  -DTSTITCH_BUILD_EXAMPLES=ON
  -DTSTITCH_BUILD_BENCHMARKS=ON
  -DTSTITCH_WARNINGS_AS_ERRORS=ON
)

# Each phase prints its duration, so a slow CI run shows where its minutes went.
run() {
  local name="$1" cxx="$2" t0=$SECONDS
  shift 2
  local dir="build/${name}"
  echo "=== ${name}: configure (${cxx}) ==="
  cmake -S . -B "${dir}" -DCMAKE_CXX_COMPILER="${cxx}" "${common[@]}" "$@"
  echo "=== ${name}: build ==="
  cmake --build "${dir}" -j 2
  echo "=== ${name}: configured and built in $((SECONDS - t0)) s; test ==="
  t0=$SECONDS
  ctest --test-dir "${dir}" --output-on-failure -j2
  echo "=== ${name}: tested in $((SECONDS - t0)) s ==="
}

# g++: TSTITCH_ENABLE_CUDA keeps its default (ON when a CUDA compiler is found); with it, the kernel
# lab (dev/cuda), whose --emulate checks run on the CPU.
run gcc g++ -DTSTITCH_BUILD_CUDA_LAB=ON
# clang++ with ASan + UBSan; CUDA, LibTorch and MPI off (the CUDA code is g++'s and nvcc's; the
# LibTorch and Open MPI libraries are not built with the sanitizers); the headers-alone check and
# the benchmarks (no tests run them) are left to the g++ build, to keep CI under 40 minutes on two
# cores. Two sanitizer options concern the test harness, not the library: test_dit.cpp counts
# allocations with its own global operator new, which ASan reports as a new/free mismatch, and
# libomp keeps its thread pool's memory until exit (scripts/lsan.supp).
(
  export ASAN_OPTIONS=alloc_dealloc_mismatch=0
  export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp"
  export UBSAN_OPTIONS=print_stacktrace=1
  run clang clang++ -DTSTITCH_ENABLE_CUDA=OFF -DTSTITCH_WITH_LIBTORCH=OFF -DTSTITCH_WITH_MPI=OFF \
    -DTSTITCH_VERIFY_HEADERS=OFF -DTSTITCH_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
    "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"
)

# Fuzz smoke: each libFuzzer target in fuzz/ (clang, ASan + UBSan) for 30 s, from the seeds the
# project's writers produce; a crash, sanitizer report, leak, disallowed exception or timeout
# fails (scripts/fuzz.sh). A fixed seed, so every run tries the same inputs. Measured on the 2-core
# machine (2026-12-07): 3.5 minutes with the build.
t0=$SECONDS
TSTITCH_FUZZ_SEED=1 ./scripts/fuzz.sh 30
echo "=== fuzz: built and run in $((SECONDS - t0)) s ==="

echo "=== all tests passed (gcc; clang with ASan and UBSan; fuzz smoke) in $SECONDS s ==="
