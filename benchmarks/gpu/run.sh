#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The GPU run (the CUDA DiT against its H100 goals and the Hopper fusion goals), on a machine
# with an NVIDIA GPU, nvcc, CMake and python3 + torch and nothing else prepared (header-only
# dependencies from .deps/: benchmarks/gpu/pack_deps.sh):
#
#   benchmarks/gpu/run.sh [stage...]     # default: all stages, in this order
#     build      configure build/gpu (Release, sm_90 on Hopper, else native) and build
#                tstitch_cuda_tests, bench_dit_cuda, bench_attention (and tstitch-sample,
#                tstitch_npy_close where configured)
#     tests      the CUDA tests (the Catch2 binary once; TESTS_VIA_CTEST=1: ctest -L cuda) and
#                tstitch-sample --device cuda against --device cpu (ctest -R cli_cuda)
#     lab        the kernel lab: reconfigure with TSTITCH_BUILD_CUDA_LAB=ON, build every lab_*
#                program (dev/cuda/*.cu) and run each (0 pass, 1 fail, 77 skip; at most
#                LAB_PROGRAM_LIMIT_S, 90, each); output and csv lines to lab.log
#     sample     the trained Fashion-MNIST pair through tstitch-sample on the GPU (times) and
#                against the CPU
#     sanitize   compute-sanitizer memcheck and racecheck on a fast subset of the CUDA tests and
#                (the other half of the limit) on each built lab program with --quick
#     attention  bench_attention (hand-written and cuDNN attention)
#     bench      bench_dit_cuda (GEMM peak, DiT forward, switch cost, stitched DDIM-50 sampling at
#                1 and 8 images)
#     torch      tools/bench_dit_gpu_torch.py (PyTorch eager and torch.compile max-autotune with
#                CUDA graphs on the same card: forwards, and stitched DDIM-50, S/2 for r = 0.4
#                then XL/2, at 1 and 8 images)
#     profile    per-kernel times of one forward under ncu (benchmarks/gpu/profile.sh; PROFILE,
#                default XL/2:64,S/2:8); not in the default set
#     summary    the combined table, the H100 goals, the Hopper fusion goals and the lab results
#                (tools/gpu_run_summary.py; always last)
# For the goals alone in a short call: benchmarks/gpu/run.sh build lab bench torch.
#
# Every stage may fail without stopping the others; each prints its time and status. Logs and
# JSON go to ${OUT:-build/gpu/out} (8 files, so that a caller copying back at most 8 gets them
# all: run.log, summary.txt, stages.tsv, tests.log, sanitize.log, lab.log and the benchmarks'
# JSON); the build log and the rest stay in build/gpu/logs/. The whole run keeps to
# TOTAL_BUDGET_S seconds (default 540): a stage gets at most what is left, so the summary prints.
# Knobs (environment): CUDA_ARCH, REPEATS (10), TORCH_COMPILE (S/2:1,S/2:8,XL/2:1,XL/2:8,XL/2:64
# | all | none), TORCH_COMPILE_MODE (max-autotune), TORCH_STITCH (1,8 | none), SANITIZE_SPEC (a
# Catch2 test spec), SANITIZE_LIMIT_S (130), SANITIZE_TOOLS (memcheck racecheck),
# LAB_PROGRAM_LIMIT_S (90), LAB_PROGRAMS (all), TESTS_VIA_CTEST, PYTHON (python3), TOTAL_BUDGET_S,
# TSTITCH_CUDNN_LIBRARY (libcudnn for the cudnn attention path; default: libcudnn.so.9, else the
# nvidia-cudnn wheel of $PYTHON).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
BUILD="${BUILD_DIR:-$ROOT/build/gpu}"
OUT="${OUT:-$BUILD/out}"
mkdir -p "$OUT" "$BUILD/logs"
OUT="$(cd "$OUT" && pwd)"
RUN_LOG="$OUT/run.log"
STAGES_TSV="$OUT/stages.tsv"
PYTHON="${PYTHON:-python3}"
REPEATS="${REPEATS:-10}"
TOTAL_BUDGET_S="${TOTAL_BUDGET_S:-540}"
SANITIZE_LIMIT_S="${SANITIZE_LIMIT_S:-130}"
LAB_PROGRAM_LIMIT_S="${LAB_PROGRAM_LIMIT_S:-90}"
for knob in REPEATS TOTAL_BUDGET_S SANITIZE_LIMIT_S LAB_PROGRAM_LIMIT_S; do
  [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || {
    echo "run.sh: $knob must be a positive whole number, not '${!knob}'" >&2
    exit 2
  }
done
START_S=$SECONDS
: >"$RUN_LOG"
printf 'stage\trc\tseconds\tnote\n' >"$STAGES_TSV"

log() { echo "$*" | tee -a "$RUN_LOG"; }

# nvcc and compute-sanitizer live in /usr/local/cuda/bin on most images, not always on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
if command -v nvcc >/dev/null 2>&1; then
  export CUDACXX="${CUDACXX:-$(command -v nvcc)}"
fi

ALL_STAGES=(build tests lab sample sanitize attention bench torch)
if [[ $# -eq 0 || "$*" == "all" ]]; then
  STAGES=("${ALL_STAGES[@]}")
else
  STAGES=("$@")
fi
# A stage about to run (or be skipped for the budget) leaves no earlier run's results behind for
# the summary to report; the results of stages not named stay (a run split over several calls).
for s in "${STAGES[@]}"; do
  case "$s" in
  tests) rm -f "$OUT/tests.log" ;;
  lab) rm -f "$OUT/lab.log" ;;
  sanitize) rm -f "$OUT/sanitize.log" ;;
  bench) rm -f "$OUT/bench_dit_cuda.json" ;;
  torch) rm -f "$OUT/bench_dit_gpu_torch.json" ;;
  esac
done

# Seconds a stage may still use: its own cap, but never past the run's budget (20 s are kept
# for the summary).
budget() {
  local cap="$1" left=$((TOTAL_BUDGET_S - (SECONDS - START_S) - 20))
  ((left < cap)) && cap=$left
  echo "$cap"
}

NOTE=""
run_stage() {
  local name="$1" cap="$2" t0=$SECONDS rc
  local limit
  limit="$(budget "$cap")"
  if ((limit < 15)); then
    log "== $name: SKIPPED (run budget of ${TOTAL_BUDGET_S}s spent)"
    printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 "budget spent" >>"$STAGES_TSV"
    return
  fi
  log ""
  log "== $name (limit ${limit}s) =="
  NOTE=""
  STAGE_LIMIT="$limit"
  "stage_$name" 2>&1 | tee -a "$RUN_LOG"
  rc=${PIPESTATUS[0]}
  # Notes are written by the stage into a file: it runs in a pipeline's subshell.
  [[ -f "$BUILD/logs/$name.note" ]] && NOTE="$(cat "$BUILD/logs/$name.note")"
  rm -f "$BUILD/logs/$name.note"
  local status=ok
  ((rc == 124 || rc == 137)) && status="TIMED OUT"
  ((rc == 77)) && status="skipped (no CUDA device)"
  ((rc != 0 && rc != 77 && rc != 124 && rc != 137)) && status="FAILED (rc $rc)"
  log "== $name: $status in $((SECONDS - t0))s${NOTE:+ ($NOTE)}"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$NOTE" >>"$STAGES_TSV"
}
note() { echo "$*" >"$BUILD/logs/${CURRENT_STAGE:-x}.note"; }

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Configures $BUILD (extra CMake arguments: "$@"); sets GEN_KEEP_GOING for the build.
configure() {
  local arch="${CUDA_ARCH:-}" cap=""
  if [[ -z "$arch" ]]; then
    if have_gpu; then
      cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' ')"
      # Hopper (H100, H200): exactly sm_90; anything else: whatever the card is.
      if [[ "$cap" == "9.0" ]]; then arch=90; else arch=native; fi
    else
      arch=90 # no GPU: still compile, for the device the benchmarks are written for
    fi
  fi
  local gen=() prefix=() keep_going=(-k)
  if command -v ninja >/dev/null 2>&1; then
    gen=(-G Ninja)
    keep_going=(-k 0)
  fi
  [[ -d "$ROOT/.deps" ]] && prefix=(-DCMAKE_PREFIX_PATH="$ROOT/.deps")
  echo "cmake $(cmake --version | head -n 1 | cut -d' ' -f3), nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?'), arch $arch (compute_cap ${cap:-?}), ${gen[*]:-make}, .deps: ${prefix[*]:-none}"
  # A generator change needs a fresh build directory.
  if [[ -f "$BUILD/CMakeCache.txt" ]] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${gen[1]:-Unix Makefiles}" "$BUILD/CMakeCache.txt"; then
    rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
  fi
  timeout -k 5 "$STAGE_LIMIT" cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" "${prefix[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" -DTSTITCH_ENABLE_CUDA=ON \
    -DTSTITCH_BUILD_TESTS=ON -DTSTITCH_BUILD_BENCHMARKS=OFF -DTSTITCH_BUILD_EXAMPLES=ON \
    -DTSTITCH_WARNINGS_AS_ERRORS=OFF "$@" >"$BUILD/logs/configure.log" 2>&1
  local rc=$?
  grep -E '^-- tstitch|Error|error' "$BUILD/logs/configure.log" | head -n 30
  if ((rc != 0)); then
    tail -n 40 "$BUILD/logs/configure.log"
    note "configure failed"
  fi
  GEN_KEEP_GOING=("${keep_going[@]}")
  return "$rc"
}

stage_build() {
  CURRENT_STAGE=build
  local t0=$SECONDS
  configure || return
  local targets=(bench_dit_cuda)
  [[ -d "$ROOT/tests/cuda" ]] && targets=(tstitch_cuda_tests "${targets[@]}")
  [[ -f "$ROOT/benchmarks/gpu/bench_attention.cpp" ]] && targets+=(bench_attention)
  # The command-line sampler and its GPU-against-CPU test tool, where CMake configured them
  # (they need CLI11 and stb, which .deps/ carries).
  local t
  for t in tstitch-sample tstitch_npy_close; do
    [[ -d "$BUILD/apps/CMakeFiles/$t.dir" ]] && targets+=("$t")
  done
  echo "building ${targets[*]} with $(nproc) jobs"
  # Keep going past a failing target: the others may still run.
  local left=$((STAGE_LIMIT - (SECONDS - t0)))
  ((left < 1)) && left=1 # timeout 0 would mean no limit at all
  timeout -k 5 "$left" cmake --build "$BUILD" -j "$(nproc)" \
    --target "${targets[@]}" -- "${GEN_KEEP_GOING[@]}" >"$BUILD/logs/build.log" 2>&1
  local rc=$?
  if ((rc != 0)); then
    grep -E 'error|Error' "$BUILD/logs/build.log" | head -n 40
    tail -n 20 "$BUILD/logs/build.log"
  else
    tail -n 3 "$BUILD/logs/build.log"
  fi
  local built=()
  for t in "${targets[@]}"; do
    [[ -n "$(find "$BUILD" -name "$t" -type f -perm -u+x 2>/dev/null | head -n 1)" ]] && built+=("$t")
  done
  note "built: ${built[*]:-nothing}"
  return "$rc"
}

binary() { find "$BUILD" -name "$1" -type f -perm -u+x 2>/dev/null | head -n 1; }

stage_tests() {
  CURRENT_STAGE=tests
  local bin
  bin="$(binary tstitch_cuda_tests)"
  [[ -z "$bin" ]] && { echo "tstitch_cuda_tests not built"; note "not built"; return 1; }
  local rc
  local t0=$SECONDS
  rm -f "$BUILD/logs/tests.log" "$BUILD/logs/tests_cli.log" # never report an earlier run's result
  # On a GPU machine the CLI's GPU tests must run: a missing device fails them instead of
  # skipping them (tests/cli/cli_cuda_check.cmake).
  have_gpu && export TSTITCH_REQUIRE_CUDA=1
  if [[ -n "${TESTS_VIA_CTEST:-}" ]]; then
    (cd "$BUILD" && timeout -k 5 "$STAGE_LIMIT" ctest -L cuda --output-on-failure) \
      >"$BUILD/logs/tests.log" 2>&1
    rc=$?
    tail -n 60 "$BUILD/logs/tests.log"
  else
    # One process for all tests: ctest starts one per test case, each paying CUDA's start-up.
    timeout -k 5 "$STAGE_LIMIT" "$bin" --durations yes >"$BUILD/logs/tests.log" 2>&1
    rc=$?
    # Per-test durations are long; keep failures and the totals.
    grep -vE '^[0-9.]+ s: ' "$BUILD/logs/tests.log" | tail -n 60
    grep -E '^[0-9.]+ s: ' "$BUILD/logs/tests.log" | sort -rn | head -n 5 | sed 's/^/slowest: /'
    # tstitch-sample --device cuda against --device cpu (ctest scripts, label cli + cuda).
    local left=$((STAGE_LIMIT - (SECONDS - t0)))
    if [[ -n "$(binary tstitch-sample)" && -n "$(binary tstitch_npy_close)" ]] && ((left >= 5)); then
      local r
      (cd "$BUILD" && timeout -k 5 "$left" ctest -L cli -R '^cli_cuda_matches' -V) \
        >"$BUILD/logs/tests_cli.log" 2>&1
      r=$?
      grep -E 'cuda against cpu|Test +#|tests passed|sampled|Skipped|Failed' "$BUILD/logs/tests_cli.log"
      cat "$BUILD/logs/tests_cli.log" >>"$BUILD/logs/tests.log"
      ((rc == 0)) && rc=$r
    fi
  fi
  note "$(grep -E '^(All tests passed|test cases:|[0-9]+% tests passed)' "$BUILD/logs/tests.log" 2>/dev/null | head -n 1)$(
    grep -E '[0-9]+% tests passed' "$BUILD/logs/tests_cli.log" 2>/dev/null | sed 's/^/; cli: /')"
  [[ -f "$BUILD/logs/tests.log" ]] && cp "$BUILD/logs/tests.log" "$OUT/tests.log"
  return "$rc"
}

# The kernel lab (dev/cuda/*.cu, one lab_<name> program each): configured in, built, and each
# program run once (exit 0 pass, 1 fail, 77 skipped). Its output, its csv lines and a
# "lab-status,<program>,<status>" line go to $OUT/lab.log, where the summary reads them.
# LAB_PROGRAMS (e.g. persistent_block,short_attention) picks programs and their order, so a short
# GPU call can run the ones that decide first; default: every dev/cuda/*.cu, by name.
lab_programs() {
  local f name
  if [[ -n "${LAB_PROGRAMS:-}" ]]; then
    for name in ${LAB_PROGRAMS//,/ }; do
      f="$ROOT/dev/cuda/$name.cu"
      if [[ -f "$f" ]]; then
        echo "lab_$name"
      else
        echo "run.sh: LAB_PROGRAMS names '$name', which has no $f" >&2
      fi
    done
    return
  fi
  for f in "$ROOT"/dev/cuda/*.cu; do
    [[ -f "$f" ]] && echo "lab_$(basename "$f" .cu)"
  done
}

stage_lab() {
  CURRENT_STAGE=lab
  local t0=$SECONDS
  : >"$OUT/lab.log"
  local programs
  mapfile -t programs < <(lab_programs)
  ((${#programs[@]} > 0)) || { echo "no dev/cuda/*.cu"; note "no lab programs"; return 1; }
  configure -DTSTITCH_BUILD_CUDA_LAB=ON || return
  local left=$((STAGE_LIMIT - (SECONDS - t0)))
  ((left < 1)) && left=1
  echo "building ${programs[*]} with $(nproc) jobs"
  timeout -k 5 "$left" cmake --build "$BUILD" -j "$(nproc)" \
    --target "${programs[@]}" -- "${GEN_KEEP_GOING[@]}" >"$BUILD/logs/lab_build.log" 2>&1 ||
    grep -E 'error|Error' "$BUILD/logs/lab_build.log" | head -n 40
  local p bin r status rc=0 passed=0 skipped=0 failed=0
  for p in "${programs[@]}"; do
    bin="$(binary "$p")"
    left=$((STAGE_LIMIT - (SECONDS - t0)))
    if [[ -z "$bin" ]]; then
      status="not built"
    elif ((left < 5)); then
      status="not run (stage limit)"
    else
      # One program may not take the whole stage.
      ((left > LAB_PROGRAM_LIMIT_S)) && left=$LAB_PROGRAM_LIMIT_S
      timeout -k 5 "$left" "$bin" >"$BUILD/logs/$p.log" 2>&1
      r=$?
      case $r in
      0) status=pass ;;
      77) status="skipped (no CUDA device)" ;;
      124 | 137) status="TIMED OUT after ${left}s" ;;
      *) status="FAILED (rc $r)" ;;
      esac
      { echo "== $p"; cat "$BUILD/logs/$p.log"; } >>"$OUT/lab.log"
      grep -E 'FAIL|csv,|error' "$BUILD/logs/$p.log" | head -n 20
    fi
    echo "lab-status,$p,$status" | tee -a "$OUT/lab.log"
    case "$status" in
    pass) passed=$((passed + 1)) ;;
    skipped*) skipped=$((skipped + 1)) ;;
    *) failed=$((failed + 1)) ;;
    esac
  done
  note "$passed passed, $failed failed or not run, $skipped skipped of ${#programs[@]}"
  ((failed > 0)) && rc=1
  ((failed == 0 && passed == 0 && skipped > 0)) && rc=77
  return "$rc"
}

stage_sanitize() {
  CURRENT_STAGE=sanitize
  local t0=$SECONDS
  local bin sanitizer
  sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  [[ -x "$sanitizer" ]] || { echo "compute-sanitizer not found"; note "no compute-sanitizer"; return 1; }
  local rc=0 tool per_tool
  local summary=()
  # Every kernel is instrumented: racecheck limited to tstitch's own (--kernel-name kns=_kernel)
  # stopped with "Internal Sanitizer Error: failed to handle a hardware exception" in the DiT
  # sampling test on an H100 (2026-11-26), where the unfiltered run reported no hazard in the
  # part it finished.
  local tools
  read -r -a tools <<<"${SANITIZE_TOOLS:-memcheck racecheck}"
  ((${#tools[@]} > 0)) || tools=(memcheck racecheck) # SANITIZE_TOOLS of blanks
  # With lab programs built, half the limit goes to them (each with --quick, under each tool).
  local labs=() p
  for p in $(lab_programs); do
    [[ -n "$(binary "$p")" ]] && labs+=("$p")
  done
  local suite_limit=$((STAGE_LIMIT - 5))
  ((${#labs[@]} > 0)) && suite_limit=$(((STAGE_LIMIT - 5) / 2))
  rm -f "$OUT/sanitize.log"
  local spec="${SANITIZE_SPEC:-}"
  bin="$(binary tstitch_cuda_tests)"
  if [[ -z "$bin" ]]; then
    echo "tstitch_cuda_tests not built"
    summary+=("tstitch_cuda_tests not built")
    rc=1
  else
    sanitize_suite
  fi
  sanitize_labs
  note "${spec:+spec $spec; }$(
    IFS=';'
    echo "${summary[*]}"
  )"
  return "$rc"
}

# The test-suite half of stage_sanitize (its locals are visible here: bash scopes dynamically).
sanitize_suite() {
  if [[ -z "$spec" ]]; then
    # The kernel-level tests: small shapes, every hand-written kernel. Whole-model forwards are
    # left out (memcheck slows kernels 10-100x); their kernels are the same ones.
    local tags want=() t
    tags="$("$bin" --list-tags 2>/dev/null)"
    for t in attention kernels backend layernorm gelu residual embedding patchify solver philox gemm; do
      grep -q "\[$t\]" <<<"$tags" && want+=("[$t]~[cudnn]") # cuDNN's own kernels: not ours
    done
    spec="$(
      IFS=,
      echo "${want[*]}"
    )"
    [[ -z "$spec" ]] && spec="~[dit]~[model]~[sampling]~[slow]~[forward]"
  fi
  echo "test spec: $spec"
  per_tool=$((suite_limit / ${#tools[@]}))
  ((per_tool < 1)) && per_tool=1 # timeout 0 would mean no limit at all
  for tool in "${tools[@]}"; do
    timeout -k 5 "$per_tool" "$sanitizer" --tool "$tool" --error-exitcode 99 --print-limit 20 \
      "$bin" "$spec" >"$BUILD/logs/sanitize_$tool.log" 2>&1
    local r=$?
    grep -E '========= (ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|Error)' \
      "$BUILD/logs/sanitize_$tool.log" | head -n 20
    grep -E '^(All tests passed|test cases:)' "$BUILD/logs/sanitize_$tool.log" | tail -n 1
    ((r == 124 || r == 137)) && summary+=("$tool timed out after ${per_tool}s")
    ((r == 0)) && summary+=("$tool $(grep -oE '(ERROR|RACECHECK) SUMMARY: .*' "$BUILD/logs/sanitize_$tool.log" | tail -n 1)")
    ((r != 0 && r != 124 && r != 137)) && summary+=("$tool rc $r: $(grep -oE '(ERROR|RACECHECK) SUMMARY: .*' "$BUILD/logs/sanitize_$tool.log" | tail -n 1)")
    ((r != 0)) && rc=$r
  done
  for tool in "${tools[@]}"; do
    cat "$BUILD/logs/sanitize_$tool.log" >>"$OUT/sanitize.log" 2>/dev/null
  done
}

# The lab half of stage_sanitize: each program at its smallest shape without timing (--quick),
# one line each in lab.log for the summary ("sanitize,<program>,<tool>,<status>").
sanitize_labs() {
  local lab_bad=0 runs_left=$((${#labs[@]} * ${#tools[@]})) left st
  for p in "${labs[@]}"; do
    for tool in "${tools[@]}"; do
      # An even share of what is left of the stage for each run still to come.
      left=$(((STAGE_LIMIT - 5 - (SECONDS - t0)) / runs_left))
      runs_left=$((runs_left - 1))
      if ((left < 5)); then
        st="not run (stage limit)"
      else
        timeout -k 5 "$left" "$sanitizer" --tool "$tool" --error-exitcode 99 --print-limit 20 \
          "$(binary "$p")" --quick >"$BUILD/logs/sanitize_${p}_$tool.log" 2>&1
        local r=$?
        case $r in
        0) st="clean ($(grep -oE '(ERROR|RACECHECK) SUMMARY: .*' "$BUILD/logs/sanitize_${p}_$tool.log" | tail -n 1))" ;;
        77) st="skipped (no CUDA device)" ;;
        124 | 137) st="timed out after ${left}s" ;;
        99) st="ERRORS ($(grep -oE '(ERROR|RACECHECK) SUMMARY: .*' "$BUILD/logs/sanitize_${p}_$tool.log" | tail -n 1))" ;;
        *) st="rc $r" ;;
        esac
        { echo "== $tool $p --quick"; cat "$BUILD/logs/sanitize_${p}_$tool.log"; } >>"$OUT/sanitize.log"
      fi
      [[ "$st" == clean* || "$st" == skipped* ]] || lab_bad=1
      echo "sanitize,$p,$tool,$st" | tee -a "$OUT/lab.log"
      summary+=("$p $tool: $st")
    done
  done
  ((lab_bad != 0 && rc == 0)) && rc=1
  return 0
}

# The trained Fashion-MNIST pair through tstitch-sample: --device cuda at small fractions 0, 0.4
# and 1 (wall time of the whole command, first-call costs and model loading included), and the
# 0.4 run against --device cpu on the same seeds (relative L2 of the 50 samples).
stage_sample() {
  CURRENT_STAGE=sample
  local cli close
  cli="$(binary tstitch-sample)"
  close="$(binary tstitch_npy_close)"
  [[ -z "$cli" || -z "$close" ]] && { echo "tstitch-sample not built"; note "not built"; return 1; }
  local dir="$BUILD/logs/sample" r rc=0 t0 line stage_t0=$SECONDS
  mkdir -p "$dir"
  rm -f "$dir"/*.npy # never compare an earlier run's files
  # Seconds left of the stage's limit, for the next command (at least 1: timeout 0 means none).
  left() {
    local l=$((STAGE_LIMIT - (SECONDS - stage_t0)))
    ((l < 1)) && l=1
    echo "$l"
  }
  local pair=("$ROOT/models/fashion_dit_s.safetensors" "$ROOT/models/fashion_dit_l.safetensors")
  local common=(--steps 50 --guidance 1.25 --count 50 --batch 50 --seed 1 --quiet)
  for r in 0 0.4 1; do
    t0=$(date +%s%N)
    line="$(timeout -k 5 "$(left)" "$cli" "${pair[@]}" --fraction "$r" "${common[@]}" --device cuda \
      --npy "$dir/cuda_$r.npy" 2>&1)" || rc=1
    echo "cuda, small fraction $r: $(grep -E 'sampled|error' <<<"$line" | tr '\n' ' ')(command $((($(date +%s%N) - t0) / 1000000)) ms)"
  done
  grep -E '^device:' <<<"$line"
  t0=$(date +%s%N)
  line="$(timeout -k 5 "$(left)" "$cli" "${pair[@]}" --fraction 0.4 "${common[@]}" --device cpu \
    --npy "$dir/cpu_0.4.npy" 2>&1)" || rc=1
  echo "cpu ($(nproc) cores), small fraction 0.4: $(grep -E 'sampled|error' <<<"$line" | tr '\n' ' ')(command $((($(date +%s%N) - t0) / 1000000)) ms)"
  line="$(timeout -k 5 "$(left)" "$close" "$dir/cpu_0.4.npy" "$dir/cuda_0.4.npy" 2e-2 2>&1)" || rc=1
  echo "cuda against cpu at 0.4: $line"
  note "cuda against cpu: $line"
  return "$rc"
}

stage_attention() {
  CURRENT_STAGE=attention
  local bin
  bin="$(binary bench_attention)"
  [[ -z "$bin" ]] && { echo "bench_attention not built"; note "not built"; return 1; }
  # Its table, then (--csv) the same rows as CSV, which the summary reads.
  timeout -k 5 "$STAGE_LIMIT" "$bin" --csv >"$BUILD/logs/attention.log" 2>&1
  local rc=$?
  sed '/^path,head_dim,/,$d' "$BUILD/logs/attention.log" | tail -n 30
  return "$rc"
}

stage_bench() {
  CURRENT_STAGE=bench
  local bin
  bin="$(binary bench_dit_cuda)"
  [[ -z "$bin" ]] && { echo "bench_dit_cuda not built"; note "not built"; return 1; }
  rm -f "$OUT/bench_dit_cuda.json" # never summarize an earlier run's figures
  timeout -k 5 "$STAGE_LIMIT" "$bin" --repeats "$REPEATS" --sample-batch 1,8 \
    --json "$OUT/bench_dit_cuda.json"
}

stage_torch() {
  CURRENT_STAGE=torch
  # Compiled kernels are cached beside the build, so a rerun on the same machine skips most of
  # the compilation.
  export TORCHINDUCTOR_CACHE_DIR="$BUILD/torchinductor-cache"
  export TRITON_CACHE_DIR="$BUILD/triton-cache"
  rm -f "$OUT/bench_dit_gpu_torch.json" # never summarize an earlier run's figures
  timeout -k 5 "$STAGE_LIMIT" "$PYTHON" "$ROOT/tools/bench_dit_gpu_torch.py" --repeats "$REPEATS" \
    --compile "${TORCH_COMPILE:-S/2:1,S/2:8,XL/2:1,XL/2:8,XL/2:64}" \
    --compile-mode "${TORCH_COMPILE_MODE:-max-autotune}" \
    --stitch-batches "${TORCH_STITCH:-1,8}" --json "$OUT/bench_dit_gpu_torch.json"
}

stage_profile() {
  CURRENT_STAGE=profile
  local bin
  bin="$(binary bench_dit_cuda)"
  [[ -z "$bin" ]] && { echo "bench_dit_cuda not built"; note "not built"; return 1; }
  local specs
  IFS=, read -r -a specs <<<"${PROFILE:-XL/2:64,S/2:8}"
  timeout -k 5 "$STAGE_LIMIT" "$ROOT/benchmarks/gpu/profile.sh" "$bin" "$OUT" "${specs[@]}"
}

# ---------------------------------------------------------------------------------------------
# The combined table: tstitch against PyTorch per model x batch, attention, switch, stitching, the
# H100 goals, the tests and the sanitizer (tools/gpu_run_summary.py reads what the stages left in
# $OUT).
summarize() {
  "$PYTHON" "$ROOT/tools/gpu_run_summary.py" "$OUT" "$BUILD/logs"
}

# ---------------------------------------------------------------------------------------------
log "benchmarks/gpu/run.sh: stages ${STAGES[*]}; OUT=$OUT; $(date -u +%FT%TZ)"
if have_gpu; then
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,power.limit \
    --format=csv 2>&1 | tee -a "$RUN_LOG"
else
  log "no GPU visible (nvidia-smi): builds still run, the programs report themselves skipped"
fi
# AttentionPath::cudnn opens libcudnn at run time ($TSTITCH_CUDNN_LIBRARY, else libcudnn.so.9).
# Where libcudnn.so.9 is not on the loader's path, use PyTorch's nvidia-cudnn wheel if there is
# one (its sub-libraries are found through the library's own RUNPATH).
cudnn_loadable() {
  "$PYTHON" -c 'import ctypes; ctypes.CDLL("libcudnn.so.9")' >/dev/null 2>&1 ||
    ldconfig -p 2>/dev/null | grep -q 'libcudnn\.so\.9 '
}
if [[ -n "${TSTITCH_CUDNN_LIBRARY:-}" ]]; then
  log "cuDNN: TSTITCH_CUDNN_LIBRARY=$TSTITCH_CUDNN_LIBRARY (given)"
elif cudnn_loadable; then
  log "cuDNN: libcudnn.so.9 from the loader's default path"
else
  CUDNN_WHEEL="$("$PYTHON" -c 'import nvidia.cudnn, os; print(os.path.join(nvidia.cudnn.__path__[0], "lib", "libcudnn.so.9"))' 2>/dev/null || true)"
  if [[ -n "$CUDNN_WHEEL" && -f "$CUDNN_WHEEL" ]]; then
    export TSTITCH_CUDNN_LIBRARY="$CUDNN_WHEEL"
    log "cuDNN: TSTITCH_CUDNN_LIBRARY=$CUDNN_WHEEL (the nvidia-cudnn wheel of $PYTHON)"
  else
    log "cuDNN: no libcudnn.so.9 found: the cudnn attention path reports itself unsupported"
  fi
fi
for s in "${STAGES[@]}"; do
  case "$s" in
  build) run_stage build 300 ;;
  tests) run_stage tests 150 ;;
  lab) run_stage lab 240 ;;
  sample) run_stage sample 200 ;;
  sanitize) run_stage sanitize "$SANITIZE_LIMIT_S" ;;
  attention) run_stage attention 90 ;;
  bench) run_stage bench 200 ;;
  torch) run_stage torch 240 ;;
  profile) run_stage profile 120 ;;
  summary) ;; # always runs below
  *) log "unknown stage '$s' (build tests lab sample sanitize attention bench torch profile summary)" ;;
  esac
done

log ""
summarize >"$OUT/summary.txt" 2>&1
tee -a "$RUN_LOG" <"$OUT/summary.txt"
log "run.sh: total $((SECONDS - START_S))s"
