#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""CPU reference timings of one DiT forward: PyTorch eager vs ONNX Runtime.

Models (random weights, patch 2, 32x32x4 latent = 256x256 images, 1000 classes, learn_sigma):
  DiT-S/2  depth 12, hidden 384, 6 heads
  DiT-B/2  depth 12, hidden 768, 12 heads
The PyTorch model is OfficialDiT from tools/make_dit_golden.py (the official DiT equations in
plain torch ops; it matches diffusers' DiTTransformer2DModel bit for bit on the golden), run
eagerly in float32 under torch.inference_mode with torch.set_num_threads(N). The same module is
exported with torch.onnx.export (opset 17, the newest torch 1.13 supports; static shapes, one
export per batch size) and run by ONNX Runtime's CPU provider with intra_op_num_threads=N,
inter_op_num_threads=1, sequential execution, all graph optimizations. ORT's output must equal
PyTorch's to a relative L2 error < 1e-4.

Each measurement: --warmup runs, then the median (and min) of --runs timed runs (>= 10).
OPENBLAS_NUM_THREADS and OMP_NUM_THREADS are set to N before torch is imported (Debian's torch
does its GEMMs in OpenBLAS, whose thread pool torch.set_num_threads does not size), and
OMP_WAIT_POLICY to PASSIVE unless set (spinning OpenMP threads starve OpenBLAS's, and vice versa).

Usage:
  .venv/bin/python tools/bench_dit_cpu.py [--threads 2] [--runs 10] [--json results.json]
         [--models S,B] [--batches 1,8]
Output: a whitespace-separated table (model batch backend threads median_ms min_ms runs
rel_l2_vs_torch) on stdout, and the same rows plus the environment as JSON with --json.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

MODELS = {
    "DiT-S/2": dict(depth=12, hidden_size=384, num_heads=6),
    "DiT-B/2": dict(depth=12, hidden_size=768, num_heads=12),
}
COMMON = dict(patch_size=2, input_size=32, in_channels=4, num_classes=1000, learn_sigma=True)
OPSET = 17


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="S,B", help="comma list of S, B")
    ap.add_argument("--batches", default="1,8", help="comma list of batch sizes")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-ort", action="store_true")
    args = ap.parse_args()
    if args.runs < 10:
        ap.error("--runs must be >= 10")
    n = args.threads
    os.environ["OPENBLAS_NUM_THREADS"] = str(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    # torch's OpenMP threads and OpenBLAS's pthreads take turns on the same cores; with libgomp's
    # default spin-waiting, each pool's idle spinning starves the other (DiT-S/2 batch 1 at N=2
    # on 2 cores: ~400 ms spinning, ~170 ms passive, ~200 ms single-threaded).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_dit_golden import OfficialDiT, random_weights, rel_l2

    torch.set_num_threads(n)
    ort = None
    if not args.skip_ort:
        import onnxruntime as ort

    env = {
        "cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": n,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(), "numpy": np.__version__,
        "onnxruntime": ort.__version__ if ort else None, "onnx_opset": OPSET,
        "pytorch_model": "tools/make_dit_golden.py OfficialDiT (official DiT equations)",
        "warmup": args.warmup, "runs": args.runs,
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }
    print("# " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    if env["loadavg_1m_start"] > 0.5:
        print(f"# warning: load average {env['loadavg_1m_start']} before starting: other processes"
              " compete for the cores and multi-threaded timings suffer most", flush=True)
    header = ("model", "batch", "backend", "threads", "median_ms", "min_ms", "runs", "rel_l2_vs_torch")
    print("\t".join(header), flush=True)

    rows, failures = [], 0
    wanted = {s.strip().upper() for s in args.models.split(",")}
    batches = [int(b) for b in args.batches.split(",")]
    for mname, mcfg in MODELS.items():
        if mname.split("-")[1][0] not in wanted:
            continue
        cfg = dict(COMMON, **mcfg, seed=1234)
        model = OfficialDiT(cfg, random_weights(cfg)).eval()
        for batch in batches:
            gen = torch.Generator().manual_seed(batch)
            x = torch.randn((batch, 4, 32, 32), generator=gen)
            t = torch.rand((batch,), generator=gen) * 999.0
            y = torch.randint(0, 1001, (batch,), generator=gen)  # 1000 = null class
            with torch.inference_mode():
                ref = model(x, t, y)
                med, best = timed(lambda: model(x, t, y), args.warmup, args.runs)
            results = [("pytorch", med, best, 0.0)]

            if ort:
                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, "dit.onnx")
                    with torch.no_grad(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # torch 1.13: prim::Constant shape inference
                        torch.onnx.export(model, (x, t, y), path, opset_version=OPSET,
                                          input_names=["x", "t", "y"], output_names=["out"],
                                          do_constant_folding=True)
                    so = ort.SessionOptions()
                    so.intra_op_num_threads = n
                    so.inter_op_num_threads = 1
                    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                feeds = {"x": x.numpy(), "t": t.numpy(), "y": y.numpy()}
                got = torch.from_numpy(sess.run(None, feeds)[0])
                err = rel_l2(got, ref)
                med, best = timed(lambda: sess.run(None, feeds), args.warmup, args.runs)
                results.append(("onnxruntime", med, best, err))
                if not err < 1e-4:
                    failures += 1
                    print(f"# ERROR: {mname} batch {batch}: ORT vs PyTorch rel L2 {err:.3e}",
                          flush=True)
                del sess

            for backend, med, best, err in results:
                row = dict(model=mname, batch=batch, backend=backend, threads=n,
                           median_ms=round(med, 3), min_ms=round(best, 3), runs=args.runs,
                           rel_l2_vs_torch=float(f"{err:.3e}"))
                rows.append(row)
                print("\t".join(str(row[h]) for h in header), flush=True)

    env["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(f"# loadavg_1m_end={env['loadavg_1m_end']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
            f.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
