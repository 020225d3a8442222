#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# DiT-S/2 and DiT-B/2 forward on the CPU: tstitch (float32; oneDNN GEMMs, and Eigen for reference) against PyTorch eager and ONNX
# Runtime on the same machine, in the same run, with the same thread count. Prints one table with
# the ratios (peer time / tstitch time: above 1 means tstitch is faster).
#
#   benchmarks/run_dit_cpu.sh [threads] [isa]   # threads: default 2; isa: native (default) or avx2
#
# tstitch is built for this CPU (-march=native) in build/native, as PyTorch and ONNX Runtime pick
# their kernels for it at run time. With isa = avx2, tstitch runs as on an AVX2 CPU even where the
# machine has AVX-512: built for x86-64-v3 (AVX2 + FMA) in build/avx2, with oneDNN capped at AVX2
# (ONEDNN_MAX_CPU_ISA). The peers cannot be capped (ONNX Runtime's MLAS and OpenBLAS dispatch on
# the CPU alone), so on an AVX-512 machine they keep AVX-512: a comparison that favours them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
threads="${1:-2}"
isa="${2:-native}"
case "$isa" in
  native) build=build/native march=native cap="" ;;
  avx2) build=build/avx2 march=x86-64-v3 cap=AVX2 ;;
  *) echo "run_dit_cpu.sh: isa = '$isa': must be native or avx2" >&2; exit 2 ;;
esac

./scripts/install-deps.sh
./scripts/setup-python.sh >/dev/null
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="-march=$march" \
  -DTSTITCH_BUILD_TESTS=OFF -DTSTITCH_BUILD_EXAMPLES=OFF -DTSTITCH_ENABLE_CUDA=OFF \
  -DTSTITCH_WARNINGS_AS_ERRORS=OFF >/dev/null  # g++ 12 warns inside its own AVX-512 headers
cmake --build "$build" -j 2 --target dit_cpu >/dev/null

out="$(mktemp -d)"
env ${cap:+ONEDNN_MAX_CPU_ISA=$cap} OMP_NUM_THREADS="$threads" "$build"/benchmarks/dit_cpu \
  --benchmark_filter='^dit_forward/' --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true --benchmark_out="$out/tstitch.json" \
  --benchmark_out_format=json >/dev/null
.venv/bin/python tools/bench_dit_cpu.py --threads "$threads" --runs 10 --json "$out/peers.json" >/dev/null

isa_line="$(grep -o 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
.venv/bin/python - "$out/tstitch.json" "$out/peers.json" "$isa" "$isa_line" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
peers = json.load(open(sys.argv[2]))
ms = {}
for b in ours["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    # dit_forward/DiT-S_2/onednn/batch:8/real_time_median
    _, model, gemm, batch = b["run_name"].split("/")[:4]
    ms[(model.replace("_", "/"), int(batch.split(":")[1]), gemm)] = b["real_time"]
for r in peers["results"]:
    ms[(r["model"], r["batch"], r["backend"])] = r["median_ms"]
env = peers["environment"]
print(f"# {env['cpu']} (CPU flags: {sys.argv[4].strip()}), tstitch at ISA {sys.argv[3]}, "
      f"{env['threads']} threads; torch {env['torch']}, "
      f"onnxruntime {env['onnxruntime']}; medians in ms; ratios = peer / tstitch (oneDNN GEMMs)")
print("model      batch  tstitch  (Eigen)   pytorch   onnxruntime   pytorch/tstitch   ort/tstitch")
fmt = lambda v: f"{v:8.1f}" if v is not None else "       -"
for model in ("DiT-S/2", "DiT-B/2"):
    for batch in (1, 8):
        t = ms.get((model, batch, "onednn")) or ms.get((model, batch, "eigen"))
        e = ms.get((model, batch, "eigen"))
        p = ms.get((model, batch, "pytorch"))
        o = ms.get((model, batch, "onnxruntime"))
        if t is None:
            continue
        ratio = lambda v: f"{v / t:10.2f}" if v is not None else "         -"
        print(f"{model:9s}  {batch:5d}  {fmt(t)} {fmt(e)}  {fmt(p)}  {fmt(o)}     {ratio(p)}        {ratio(o)}")
PY
