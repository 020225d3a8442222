#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ThreadSanitizer over the CPU DiT's threaded tests on the Eigen path:
#   scripts/tsan.sh [CATCH2 TEST SPEC...]     (default: "[dit]")
# Compiles tests/test_dit.cpp, test_dit_threads.cpp, test_dit_determinism.cpp and
# test_dit_limits.cpp with clang++ -fsanitize=thread -fopenmp into build/tsan/tstitch_tsan_tests,
# without oneDNN (so that every GEMM, attention and layer-norm loop is instrumented code), and runs
# them at 1, 2, 4 and 7 OpenMP threads. clang's OpenMP runtime (libomp) is not instrumented
# itself; Archer (libarcher.so, LLVM's OpenMP tool for TSan) tells TSan about the ordering that
# its barriers, locks and task waits give, so OpenMP regions report real races only.
# A data race (or any TSan report) fails the script.
# Environment: CXX (default clang++), EIGEN_INCLUDE_DIR (default /usr/include/eigen3),
# ARCHER_LIBRARY (default: libarcher.so of the clang in use), TSTITCH_TSAN_THREADS ("1 2 4 7"),
# TSTITCH_TSAN_JOBS (compilers at a time, default 2), TSTITCH_TSAN_BUILD_DIR (default build/tsan).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cxx="${CXX:-clang++}"
eigen="${EIGEN_INCLUDE_DIR:-/usr/include/eigen3}"
archer="${ARCHER_LIBRARY:-$("${cxx}" -print-file-name=libarcher.so)}"
if [[ "${archer}" != /* ]]; then # -print-file-name echoes the name back when it finds nothing
  archer="$(dirname "$(readlink -f "$(command -v "${cxx}")")")/../lib/libarcher.so"
fi
[[ -f "${archer}" ]] || { echo "tsan.sh: libarcher.so not found; set ARCHER_LIBRARY" >&2; exit 1; }
[[ -f "${eigen}/Eigen/Core" ]] || { echo "tsan.sh: Eigen not in ${eigen}" >&2; exit 1; }

dir="${TSTITCH_TSAN_BUILD_DIR:-build/tsan}"
mkdir -p "${dir}"
flags=(-std=c++20 -O1 -g -fsanitize=thread -fno-omit-frame-pointer -fopenmp
       -Wall -Wextra -Wpedantic -Werror -Iinclude -Itests -isystem "${eigen}"
       "-DTSTITCH_TEST_DATA_DIR=\"${PWD}/tests/data\"" "-DTSTITCH_MODELS_DIR=\"${PWD}/models\"")
sources=(test_main test_dit test_dit_threads test_dit_determinism test_dit_limits)

echo "=== tsan: compile (${cxx}, Eigen only, OpenMP) ==="
start=$(date +%s)
# Two compilers at a time; each object is rebuilt only when a header or its source is newer.
# shellcheck disable=SC2016  # the single-quoted script expands its variables in the inner sh
printf '%s\n' "${sources[@]}" | xargs -P "${TSTITCH_TSAN_JOBS:-2}" -I{} sh -c '
  obj="$0/{}.o"
  if [ ! -f "$obj" ] || [ -n "$(find tests/{}.cpp tests/support include -newer "$obj" -print -quit)" ]; then
    "$@" -c "tests/{}.cpp" -o "$obj" || exit 255
  fi' "${dir}" "${cxx}" "${flags[@]}"
objects=()
for source in "${sources[@]}"; do objects+=("${dir}/${source}.o"); done
# test_dit.cpp counts allocations with its own global operator new, which TSan's static runtime
# also defines: the test's (first on the line) is kept; it allocates with malloc, which TSan sees.
"${cxx}" -fsanitize=thread -fopenmp -Wl,--allow-multiple-definition "${objects[@]}" \
  -o "${dir}/tstitch_tsan_tests"
echo "tsan: built in $(($(date +%s) - start)) s"

export OMP_TOOL_LIBRARIES="${archer}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1 ignore_noninstrumented_modules=1}"

# A canary: an OpenMP loop with a real race must be reported under these settings, or a clean
# run below would prove nothing (a runtime that fails to load Archer, options that hide reports).
cat >"${dir}/canary.cpp" <<'CANARY'
int main() {
  int sum = 0;
#pragma omp parallel for num_threads(2)
  for (int i = 0; i < 100000; ++i)
    sum += i;
  return sum == 0;
}
CANARY
"${cxx}" -O0 -g -fsanitize=thread -fopenmp "${dir}/canary.cpp" -o "${dir}/canary"
if "${dir}/canary" >"${dir}/canary.log" 2>&1 || ! grep -q "ThreadSanitizer: data race" "${dir}/canary.log"; then
  echo "tsan.sh: the canary race went unreported (see ${dir}/canary.log); TSan is not working" >&2
  exit 1
fi
echo "tsan: the canary race is reported, as it must be"
spec=("$@")
[[ ${#spec[@]} -gt 0 ]] || spec=("[dit]")
for threads in ${TSTITCH_TSAN_THREADS:-1 2 4 7}; do
  echo "=== tsan: ${spec[*]} at OMP_NUM_THREADS=${threads} ==="
  start=$(date +%s)
  OMP_NUM_THREADS="${threads}" "${dir}/tstitch_tsan_tests" "${spec[@]}"
  echo "tsan: ${threads} threads: no report in $(($(date +%s) - start)) s"
done
echo "=== tsan: no data race reported ==="
