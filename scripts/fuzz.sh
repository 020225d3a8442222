#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds tstitch's libFuzzer targets (fuzz/, clang++ with ASan + UBSan) and runs them one after
# the other, one process each:
#   scripts/fuzz.sh [SECONDS | --runs N] [TARGET...]
# SECONDS (default 30) or N executions per target; TARGET is safetensors, npy or dit_weights
# (default: all three). Each target starts from the seeds that tstitch's writers produce
# (build/fuzz/fuzz/seeds/<target>), any reproducers in fuzz/regressions/<target>, and the corpus
# kept from earlier runs (build/fuzz/corpus/<target>, which grows). A crash, sanitizer report,
# leak, disallowed exception, timeout (-timeout, default 10 s per input) or out-of-memory
# (-rss_limit_mb, default 2048) fails the script; the input is saved in build/fuzz/findings/.
# Environment: TSTITCH_FUZZ_BUILD_DIR (default build/fuzz), TSTITCH_FUZZ_JOBS (build jobs,
# default 2), TSTITCH_FUZZ_TIMEOUT, TSTITCH_FUZZ_RSS_MB, TSTITCH_FUZZ_FLAGS (more libFuzzer
# flags).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

limit=(-max_total_time=30)
if [[ $# -gt 0 && "$1" == "--runs" ]]; then
  [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --runs needs a count" >&2; exit 2; }
  limit=(-runs="$2")
  shift 2
elif [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  limit=(-max_total_time="$1")
  shift
fi
# TSTITCH_FUZZ_SEED fixes libFuzzer's random seed, so a run explores the same inputs each time.
[[ -z "${TSTITCH_FUZZ_SEED:-}" ]] || limit+=(-seed="${TSTITCH_FUZZ_SEED}")
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(safetensors npy dit_weights)
for target in "${targets[@]}"; do
  [[ -f "fuzz/fuzz_${target}.cpp" ]] || { echo "fuzz.sh: unknown target '${target}'" >&2; exit 2; }
done

dir="${TSTITCH_FUZZ_BUILD_DIR:-build/fuzz}"
echo "=== fuzz: configure and build (${dir}, clang++) ==="
cmake -S . -B "${dir}" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTSTITCH_BUILD_FUZZERS=ON -DTSTITCH_BUILD_TESTS=OFF -DTSTITCH_BUILD_EXAMPLES=OFF \
  -DTSTITCH_BUILD_BENCHMARKS=OFF -DTSTITCH_ENABLE_CUDA=OFF -DTSTITCH_WARNINGS_AS_ERRORS=ON >/dev/null
cmake --build "${dir}" -j "${TSTITCH_FUZZ_JOBS:-2}" \
  --target tstitch_fuzz_corpora "${targets[@]/#/tstitch_fuzz_}"

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
mkdir -p "${dir}/findings" "${dir}/logs"
failed=()
for target in "${targets[@]}"; do
  corpus="${dir}/corpus/${target}"
  mkdir -p "${corpus}"
  inputs=("${corpus}" "${dir}/fuzz/seeds/${target}")
  [[ -d "fuzz/regressions/${target}" ]] && inputs+=("fuzz/regressions/${target}")
  log="${dir}/logs/${target}.log"
  echo "=== fuzz: ${target} (${limit[*]}) ==="
  start=$(date +%s)
  status=0
  # shellcheck disable=SC2086  # TSTITCH_FUZZ_FLAGS holds several flags
  "${dir}/fuzz/tstitch_fuzz_${target}" "${limit[@]}" -dict="fuzz/${target}.dict" \
    -timeout="${TSTITCH_FUZZ_TIMEOUT:-10}" -rss_limit_mb="${TSTITCH_FUZZ_RSS_MB:-2048}" \
    -print_final_stats=1 -artifact_prefix="${dir}/findings/${target}-" \
    ${TSTITCH_FUZZ_FLAGS:-} "${inputs[@]}" >"${log}" 2>&1 || status=$?
  seconds=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${log}" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "${log}" | tail -n1)
  files=$(find "${corpus}" -type f | wc -l)
  bytes=$(du -sb "${corpus}" | cut -f1)
  echo "fuzz ${target}: exit ${status}, ${runs:-?} executions in ${seconds} s (${rate:-?} exec/s)," \
    "corpus ${files} files, ${bytes} bytes; log ${log}"
  if [[ ${status} -ne 0 ]]; then
    failed+=("${target}")
    grep -E "ERROR|SUMMARY|finding|terminate|what\(\)" "${log}" | head -n 20 >&2 || true
    ls "${dir}/findings/${target}-"* 2>/dev/null >&2 || true
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "=== fuzz: FINDINGS in ${failed[*]} (inputs in ${dir}/findings/) ===" >&2
  exit 1
fi
echo "=== fuzz: no findings (${targets[*]}) ==="
