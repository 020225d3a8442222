#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The summary of a GPU run (benchmarks/gpu/run.sh): tstitch against PyTorch per model x batch,
attention, switch cost, stitched sampling, the H100 goals, the tests and the sanitizer.

    tools/gpu_run_summary.py OUT LOGS

OUT holds what the run's stages wrote (the benchmarks' JSON, tests.log, sanitize.log,
stages.tsv); LOGS is the run's log folder. Prints the table on stdout.
"""
import json, os, sys

if len(sys.argv) != 3:
    sys.exit(__doc__)
out, logs = sys.argv[1], sys.argv[2]


def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, digits=2):
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and v == v else "-"


stages = []
try:
    with open(os.path.join(out, "stages.tsv")) as f:
        next(f)
        stages = [line.rstrip("\n").split("\t") for line in f]
except OSError:
    pass
ours, torch_ = load("bench_dit_cuda.json"), load("bench_dit_gpu_torch.json")

device = (ours or {}).get("device", {}).get("name") or (torch_ or {}).get("environment", {}).get("device", "?")
print(f"===== GPU run: {device} =====")
for name, rc, seconds, note in stages:
    status = "ok" if rc == "0" else ("skipped" if rc in ("skipped", "77") else
                                     ("TIMED OUT" if rc in ("124", "137") else f"FAILED rc {rc}"))
    print(f"stage {name:10s} {status:12s} {seconds:>4s}s  {note}")

peak = ((ours or {}).get("gemm_peak") or {}).get("tflops")
print(f"\nbf16 GEMM peak (cublasGemmEx 8192^3, this run): {fmt(peak, 1)} TFLOP/s")
theirs = {(r["model"], r["images"]): r for r in (torch_ or {}).get("results", [])}
rows = (ours or {}).get("forward", [])
keys = [(r["model"], r["images"]) for r in rows] or list(theirs)
print("ms per forward (rows = 2 x images, guidance); ratio = PyTorch time / tstitch time")
print(f"{'model':9s} {'images':>6s} {'rows':>4s} {'tstitch':>8s} {'TFLOP/s':>7s} {'%peak':>5s} "
      f"{'eager':>8s} {'compile':>8s} {'eager/ts':>8s} {'comp/ts':>7s} {'cudnn-attn':>10s} {'%peak':>5s}")
by_key = {(r["model"], r["images"]): r for r in rows}
for key in keys:
    o, t = by_key.get(key, {}), theirs.get(key, {})
    ms, em, cm = o.get("ms"), t.get("eager_ms"), t.get("compile_ms")
    frac = o.get("fraction_of_peak")
    print(f"{key[0]:9s} {key[1]:6d} {2 * key[1]:4d} {fmt(ms, 3):>8s} {fmt(o.get('tflops'), 1):>7s} "
          f"{fmt(100 * frac if frac is not None else None, 1):>5s} {fmt(em, 3):>8s} {fmt(cm, 3):>8s} "
          f"{fmt(em / ms if em and ms else None):>8s} {fmt(cm / ms if cm and ms else None):>7s} "
          f"{fmt(o.get('ms_cudnn_attention'), 3):>10s} "
          f"{fmt(100 * frac * ms / o['ms_cudnn_attention'] if frac and ms and o.get('ms_cudnn_attention') else None, 1):>5s}")

# The first predict of each batch size (allocation, GEMM algorithm timing, graph capture, one
# replay; host wall time): the cost DitModel::prepare moves out of the first frame.
first = {}
for r in rows:
    if r.get("first_call_ms") is not None:
        first.setdefault(r["model"], []).append(f"{r['images']}: {fmt(r['first_call_ms'], 1)}")
for m, items in first.items():
    print(f"first call {m} (images: ms): " + ", ".join(items))

# One guided evaluation at small batches: two N-row predicts (how the loops ran guidance before
# predict_guided) against one predict_guided (2N rows in one forward, how they run it now).
for r in rows:
    two, one = r.get("guided_two_calls_ms"), r.get("guided_one_call_ms")
    if two is not None and one is not None:
        print(f"guided evaluation {r['model']} {r['images']} images: two N-row calls {fmt(two, 3)} "
              f"ms, predict_guided {fmt(one, 3)} ms ({fmt(two / one, 2)}x)")

for m, mem in ((ours or {}).get("memory") or {}).items():
    if "total" in mem:
        print(f"memory DiT-{m}: weights {mem['weights'] / 2**20:.1f} MiB, activations "
              f"{mem['activations'] / 2**20:.1f} MiB, workspace {mem['workspace'] / 2**20:.1f} MiB")


# Attention: the CSV rows bench_attention --csv prints after its table. The goal counts the flash
# path's automatic tiling (what kernels::attention runs), the forced tilings are for comparison.
attention_best = None
attention_rows = []
header = "path,tiling,head_dim,tokens,batch,heads,ms,tflops"
try:
    with open(os.path.join(logs, "attention.log")) as f:
        lines = f.read().splitlines()
    if header in lines:
        for line in lines[lines.index(header) + 1:]:
            parts = line.split(",")
            if len(parts) == 8:
                attention_rows.append((parts[0], parts[1], int(parts[2]), int(parts[3]),
                                       int(parts[4]), int(parts[5]), float(parts[6]),
                                       float(parts[7])))
except (OSError, ValueError):
    pass
if attention_rows:
    print("\nattention (bench_attention): TFLOP/s = 4 b h T^2 d / time; tiling = warps x rows per warp")
    print(f"{'path':10s} {'tiling':10s} {'head_dim':>8s} {'tokens':>6s} {'batch':>5s} {'heads':>5s} {'ms':>9s} {'TFLOP/s':>8s}")
    for p, tiling, d, t, b, h, ms, tf in attention_rows:
        print(f"{p:10s} {tiling:10s} {d:8d} {t:6d} {b:5d} {h:5d} {ms:9.4f} {tf:8.1f}")
        if p == "flash" and tiling.startswith("auto") and d == 64 and t == 1024 and b == 64:
            attention_best = max(attention_best or 0.0, tf)
else:
    print("\nattention: no result (see build/gpu/logs/attention.log)")

for s in (ours or {}).get("switch", []):
    print(f"switch {s['pair']}, batch 2: {fmt(s.get('cost_us_per_switch'))} us per switch "
          f"(same {fmt(s.get('same_ms_per_call'), 4)} ms, alternating {fmt(s.get('alternating_ms_per_call'), 4)} ms per call)")

st = (ours or {}).get("stitched")
worst = None
if st:
    print(f"\nstitched DiT-S/2 -> DiT-XL/2, {st['images']} images, {st['steps']} steps, "
          f"{st['mode']}; c = {fmt(st.get('c'), 4)}")
    print(f"{'r':>4s} {'ms':>9s} {'speedup':>8s} {'ideal':>7s} {'dev':>7s}")
    for r in st["fractions"]:
        print(f"{r['small_fraction']:4.1f} {fmt(r['ms'], 1):>9s} {fmt(r['speedup'], 3):>8s} "
              f"{fmt(r['ideal'], 3):>7s} {fmt(100 * r['deviation'] if r['deviation'] is not None else None, 2):>6s}%")
        if r["deviation"] is not None:
            worst = max(worst or 0.0, abs(r["deviation"]))


def goal(text, value, ok):
    verdict = "not measured" if ok is None else ("MET" if ok else "NOT MET")
    print(f"  {verdict:12s} {text}: {value}")


print("\nH100 goals (this card: " + device + "):")
xl64 = by_key.get(("DiT-XL/2", 64), {}).get("fraction_of_peak")
xl64_cudnn = by_key.get(("DiT-XL/2", 64), {}).get("ms_cudnn_attention")
xl64_ms = by_key.get(("DiT-XL/2", 64), {}).get("ms")
goal("DiT-XL/2 forward at batch 64 >= 60% of the measured bf16 peak",
     (f"{fmt(100 * xl64, 1)}%" if xl64 is not None else "-") +
     (f" (with cuDNN attention {fmt(100 * xl64 * xl64_ms / xl64_cudnn, 1)}%)" if xl64 and xl64_cudnn else ""),
     None if xl64 is None else xl64 >= 0.6)
s8, x8 = by_key.get(("DiT-S/2", 8), {}).get("ms"), by_key.get(("DiT-XL/2", 8), {}).get("ms")
ratio = x8 / s8 if s8 and x8 else None
s8_gemms = next((g.get("ms") for g in (ours or {}).get("gemms_alone", []) if g.get("model") == "DiT-S/2"), None)
goal("DiT-S/2 : DiT-XL/2 latency ratio >= 15 at batch 8",
     fmt(ratio) + (f" (at most {fmt(x8 / s8_gemms)} with S/2's block GEMMs alone, {fmt(s8_gemms, 3)} ms)"
                   if s8_gemms and x8 else ""),
     None if ratio is None else ratio >= 15)
goal("stitched speedup within 3% of ideal" + (f" ({st['mode']})" if st else ""),
     f"worst {fmt(100 * worst, 2)}%" if worst is not None else "-", None if worst is None else worst <= 0.03)
goal("attention >= 300 TFLOP/s at head dim 64, sequence 1024 (hand-written, automatic tiling)", fmt(attention_best, 1),
     None if attention_best is None else attention_best >= 300)
xl = [(k[1], theirs[k]["eager_ms"] / by_key[k]["ms"]) for k in by_key
      if k[0] == "DiT-XL/2" and k in theirs and by_key[k].get("ms") and theirs[k].get("eager_ms")]
low = min(xl, key=lambda v: v[1]) if xl else None
goal(">= 1.3x PyTorch eager on DiT-XL/2 (every batch)",
     f"lowest {fmt(low[1])}x at batch {low[0]}" if low else "-", None if low is None else low[1] >= 1.3)


# ---------------------------------------------------------------------------------------------
# The Hopper fusion goals: tstitch against torch.compile (mode max-autotune, CUDA graphs on), all
# figures from this run. A figure that is missing is "not measured", never met.
def forward_ms(model, images):
    return by_key.get((model, images), {}).get("ms")


env = (torch_ or {}).get("environment", {})
peer_mode = env.get("compile_mode")
peer_named = peer_mode == "max-autotune"
print(f"\nHopper fusion goals (this card: {device}; peer: torch.compile mode {peer_mode or '-'}"
      f"{'' if peer_named or peer_mode is None else ', not the named max-autotune: compile goals not measured'}):")
x8, s8 = forward_ms("DiT-XL/2", 8), forward_ms("DiT-S/2", 8)
ratio = x8 / s8 if s8 and x8 else None
goal("DiT-S/2 : DiT-XL/2 forward time >= 15 at 8 images",
     f"{fmt(ratio)} (XL/2 {fmt(x8, 3)} ms, S/2 {fmt(s8, 3)} ms)", None if ratio is None else ratio >= 15)
for model, batches in (("DiT-XL/2", (1, 8, 64)), ("DiT-S/2", (1, 8))):
    for images in batches:
        ms = forward_ms(model, images)
        peer = theirs.get((model, images), {}).get("compile_ms") if peer_named else None
        speedup = peer / ms if peer and ms else None
        goal(f"{model} forward >= 1.3x torch.compile at {images} images",
             f"{fmt(speedup)}x (tstitch {fmt(ms, 3)} ms, torch.compile {fmt(peer, 3)} ms)",
             None if speedup is None else speedup >= 1.3)


def stitched_ms(runs, images, backend=None):
    """ms of the r = 0.4 run of DDIM-50 at `images` (tstitch: DeviceSampler runs only, the
    forwards-only mode is no end-to-end time)."""
    for run in runs:
        if run.get("images") != images:
            continue
        if backend is None:  # bench_dit_cuda
            if run.get("steps") != 50 or "DeviceSampler" not in str(run.get("mode")):
                continue
            for row in run.get("fractions", []):
                if abs(row.get("small_fraction", -1) - 0.4) < 1e-9:
                    return row.get("ms")
        elif run.get("backend") == backend and abs(run.get("small_fraction", -1) - 0.4) < 1e-9:
            return run.get("ms")
    return None


ours_runs = (ours or {}).get("stitched_runs") or ([ours["stitched"]] if (ours or {}).get("stitched") else [])
peer_st = (torch_ or {}).get("stitched") or {}
# Only the run the goal names: DDIM-50, S/2 -> XL/2 at r = 0.4 (not, say, a tiny CPU check).
peer_same = (peer_st.get("steps") == 50 and peer_st.get("small_fraction") == 0.4 and
             peer_st.get("small") == "DiT-S/2" and peer_st.get("large") == "DiT-XL/2")
peer_runs = peer_st.get("runs", []) if peer_same else []
peer_compiled = peer_runs if peer_named and peer_st.get("compile_mode") == "max-autotune" else []
for images in (1, 8):
    o, t = stitched_ms(ours_runs, images), stitched_ms(peer_compiled, images, "compile")
    e = stitched_ms(peer_runs, images, "eager")
    speedup = t / o if t and o else None
    goal(f"stitched DDIM-50, S/2 -> XL/2 at r = 0.4, {images} images, end to end >= 1.3x torch.compile",
         f"{fmt(speedup)}x (tstitch {fmt(o, 1)} ms, torch.compile {fmt(t, 1)} ms, eager {fmt(e, 1)} ms)",
         None if speedup is None else speedup >= 1.3)
xl64 = by_key.get(("DiT-XL/2", 64), {}).get("fraction_of_peak")
goal("DiT-XL/2 forward at 64 images >= 65% of the measured bf16 peak",
     f"{fmt(100 * xl64, 1) if xl64 is not None else '-'}% of {fmt(peak, 1)} TFLOP/s",
     None if xl64 is None else xl64 >= 0.65)


def fp8_lines():
    """lab_gemm_fp8's csv lines in lab.log: {(shape, version): (us or None, err or None, ok)}."""
    try:
        with open(os.path.join(out, "lab.log")) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        parts = line.strip().split(",")
        if len(parts) != 7 or parts[:2] != ["csv", "gemm_fp8"]:
            continue
        numbers = []
        for text in parts[4:6]:
            try:
                value = float(text)
                numbers.append(value if value == value and abs(value) != float("inf") else None)
            except ValueError:
                numbers.append(None)
        found[(parts[2], parts[3])] = (numbers[0], numbers[1], parts[6].strip() == "1")
    return found


def fp8_goal():
    """The FP8 stretch goal from lab_gemm_fp8 at 64 images: sum of version 1's times over
    sum of version 2's (X's quantisation included) for qkv, proj, fc1, fc2, and version 2's
    error against the CPU reference and against version 1. A failed check is NOT MET with its
    figures; a missing figure is not measured."""
    lines = fp8_lines()
    shapes = [f"XL2_{layer}_i64" for layer in ("qkv", "proj", "fc1", "fc2")]
    failed = [f"{s} v{v}" for s in shapes for v in ("1", "2", "2vs1")
              if (s, v) in lines and not lines[(s, v)][2]]
    missing = [f"{s} v{v}" for s in shapes for v in ("1", "2")
               if lines.get((s, v), (None,))[0] is None]
    missing += [f"{s} v2 error" for s in shapes if lines.get((s, "2"), (None, None))[1] is None]
    if not failed and missing:
        return (f"- (missing: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})"
                if lines else "-"), None
    us = {v: [lines.get((s, v), (None,))[0] for s in shapes] for v in ("1", "2", "2g")}
    total = {v: sum(t) if all(t) else None for v, t in us.items()}
    ratio = total["1"] / total["2"] if total["1"] and total["2"] else None
    alone = total["1"] / total["2g"] if total["1"] and total["2g"] else None
    cpu = [lines.get((s, "2"), (None, None))[1] for s in shapes]
    bf16 = [lines.get((s, "2vs1"), (None, None))[1] for s in shapes]

    def worst(errs):
        return f"{max(errs):.2e}" if all(e is not None for e in errs) else "-"

    value = (f"{fmt(ratio)}x (bf16 {fmt(total['1'], 1)} us, fp8 {fmt(total['2'], 1)} us with X's "
             f"quantisation; the FP8 GEMMs alone {fmt(alone)}x); rel L2 error worst "
             f"{worst(cpu)} against the CPU reference, {worst(bf16)} against bf16")
    if failed:
        return value + f"; FAILED check: {' '.join(failed)}", False
    return value, ratio >= 1.5


fp8_value, fp8_ok = fp8_goal()
goal("stretch: FP8 XL/2 GEMMs >= 1.5x bf16 at 64 images", fp8_value, fp8_ok)


# ---------------------------------------------------------------------------------------------
# The kernel lab (run.sh's lab stage writes lab.log): each program's exit status, its csv lines
#   csv,<program>,<shape>,<version>,<us>,...,<ok>
# and, from the sanitize stage, "sanitize,<program>,<tool>,<status>" lines.
def lab_results():
    try:
        with open(os.path.join(out, "lab.log")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    status, timings, sanitized = {}, {}, {}
    for line in lines:
        parts = line.strip().split(",")
        if line.startswith("lab-status,") and len(parts) >= 3:
            status[parts[1]] = ",".join(parts[2:])
        elif line.startswith("sanitize,") and len(parts) >= 4:  # the status may hold commas
            sanitized.setdefault(parts[1], {})[parts[2]] = ",".join(parts[3:])
        elif line.startswith("csv,") and len(parts) >= 6:
            try:
                us = float(parts[4])
            except ValueError:
                continue
            ok = parts[-1].strip().lower() in ("1", "ok", "true", "pass")
            timings.setdefault(parts[1], {}).setdefault(parts[2], []).append((parts[3], us, ok))
    return status, timings, sanitized


lab = lab_results()
print("\nkernel lab (dev/cuda): exit status, best version per shape (time; version 1's time / best)")
if lab is None:
    print("  not measured (no lab.log)")
else:
    status, timings, sanitized = lab
    for program in sorted(set(status) | set(timings) | set(sanitized)):
        checks = ", ".join(f"{tool} {v}" for tool, v in sorted(sanitized.get(program, {}).items()))
        print(f"  {program}: {status.get(program, 'not run')}"
              f"{'; sanitizer: ' + checks if checks else '; sanitizer: not measured'}")
        shapes = timings.get(program, {})
        if not shapes:
            print("    no csv lines (no per-version times)")
        for shape, rows in shapes.items():
            good = [r for r in rows if r[2] and r[1] == r[1]]
            bad = sorted({r[0] for r in rows if not r[2]})
            base = next((r[1] for r in good if r[0] == "1"), None)
            if good:
                best = min(good, key=lambda r: r[1])
                print(f"    {shape}: best version {best[0]} {best[1]:.2f} us "
                      f"({fmt(base / best[1]) + 'x version 1' if base else 'version 1 not measured'})"
                      f"{'; FAILED check: ' + ' '.join(bad) if bad else ''}")
            else:
                print(f"    {shape}: no version passed its check ({' '.join(bad)})")


# ---------------------------------------------------------------------------------------------
# Per-sample routing and the planner on the GPU: a split step's gather/scatter under 1% of a
# DiT-S/2 step; every stitched DeviceSampler run (DDIM-50, S/2 -> XL/2) within 5% of the time
# tstitch::plan::Planner predicts from one guided evaluation of each model.
print(f"\nper-sample routing and planner goals (this card: {device}):")
rows = (ours or {}).get("row_routing") or {}
share = rows.get("copies_share") if isinstance(rows.get("copies_share"), (int, float)) else None
goal("per-sample routing: gather + scatter of a split step < 1% of a guided DiT-S/2 step "
     "(8 images)",
     f"{fmt(100 * share, 3)}% ({fmt(rows.get('copies_us'), 2)} us of {fmt(rows.get('small_step_us'), 1)} us)"
     if share is not None else "-", None if share is None else share < 0.01)
gain = rows.get("gain") if isinstance(rows.get("gain"), (int, float)) else None
print(f"  {'measured':12s} one mixed batch of {rows.get('images', '-')} (fractions 0.0/0.4/0.8) "
      f"against three batches of 4: {fmt(gain, 3)}x throughput "
      f"({fmt(rows.get('mixed_ms'), 1)} ms against {fmt(rows.get('separate_ms'), 1)} ms)"
      if gain is not None else f"  {'not measured':12s} one mixed batch against three batches of 4")
for images in (1, 8):
    run = next((r for r in ours_runs if r.get("images") == images and r.get("steps") == 50
                and "DeviceSampler" in str(r.get("mode"))), None)
    errors = [row["prediction_error"] for row in (run or {}).get("fractions", [])
              if isinstance(row.get("prediction_error"), (int, float))]
    worst_error = max(errors, key=abs) if errors else None
    goal(f"planner: stitched DDIM-50, S/2 -> XL/2, {images} images, within 5% of predicted "
         "(every fraction)",
         f"worst {fmt(100 * worst_error, 2)}% of {len(errors)} fractions" if errors else "-",
         None if worst_error is None else abs(worst_error) <= 0.05)
