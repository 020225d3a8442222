#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Where one DiT forward spends its time, kernel by kernel: Nsight Compute (ncu) times every
# kernel of exactly one forward (bench_dit_cuda --profile, graphs off, after warm-up) and the
# table sums them by kernel (GEMMs also by grid, i.e. by shape).
#
#   benchmarks/gpu/profile.sh BENCH_BIN OUT_DIR SPEC...      e.g. ... build/gpu/out XL/2:64 S/2:8
#
# ncu serialises the kernels (gpu__time_duration only; clocks and caches left alone) and times
# each one alone, without the overlap and launch gaps of graph replay: their sum is not the
# forward's time in bench_dit_cuda (for short kernels it can be larger); read the shares.
set -uo pipefail
bin="$1"
out="$2"
shift 2
ncu="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)"
[[ -x "$ncu" ]] || {
  echo "ncu not found"
  exit 1
}
PYTHON="${PYTHON:-python3}"
rc=0
for spec in "$@"; do
  tag="${spec//\//}"
  tag="${tag//:/_b}"
  csv="$out/../logs/ncu_$tag.csv"
  mkdir -p "$(dirname "$csv")"
  "$ncu" --profile-from-start off --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    --print-units base "$bin" --profile "$spec" >"$csv" 2>&1
  r=$?
  ((r != 0)) && {
    echo "ncu on $spec: rc $r"
    tail -n 5 "$csv"
    rc=$r
    continue
  }
  "$PYTHON" - "$csv" "$spec" <<'PY'
import csv, re, sys
from collections import OrderedDict

path, spec = sys.argv[1], sys.argv[2]
with open(path) as f:
    lines = f.read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
if start is None:
    print(f"{spec}: no ncu CSV found"); sys.exit(1)
rows = list(csv.reader(lines[start:]))
head, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
col = {name: i for i, name in enumerate(head)}


def short(name):
    name = re.sub(r"^void ", "", name)
    name = name.split("(")[0]
    name = re.sub(r"<.*>", lambda m: "<" + m.group(0)[1:-1].split(",")[0] + ">" if len(m.group(0)) < 12 else "<..>", name)
    return name.split("::")[-1][:70]


groups = OrderedDict()
total = 0.0
for r in body:
    if r[col["Metric Name"]] != "gpu__time_duration.sum":
        continue
    ns = float(r[col["Metric Value"]].replace(",", ""))
    name = short(r[col["Kernel Name"]])
    gemmish = not name.startswith(("attention", "flash", "layernorm", "residual", "gated", "bias",
                                   "fill", "prepare", "timestep", "silu", "condition", "patchify",
                                   "add_position", "unpatchify", "reference"))
    key = (name, r[col["Grid Size"]] if gemmish else "")
    g = groups.setdefault(key, [0, 0.0])
    g[0] += 1
    g[1] += ns
    total += ns
print(f"== {spec}: {len(body)} kernels, sum of kernel times {total / 1e3:.1f} us ==")
print(f"{'us':>10s} {'%':>5s} {'calls':>5s}  kernel [grid]")
for (name, grid), (n, ns) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
    print(f"{ns / 1e3:10.1f} {100 * ns / total:5.1f} {n:5d}  {name} {grid}")
PY
done
exit "$rc"
