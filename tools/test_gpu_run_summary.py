#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks tools/gpu_run_summary.py on synthetic run outputs (no GPU, no torch):
the Hopper fusion goals come out MET / NOT MET from the figures given, "not measured" where a
figure is missing (never met), and the lab section reports each program's status and its best
version per shape against version 1.

    python3 tools/test_gpu_run_summary.py      # exit 0 pass, 1 fail
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_run_summary.py")


def summarize(files):
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as logs:
        for name, content in files.items():
            with open(os.path.join(out, name), "w") as f:
                f.write(content if isinstance(content, str) else json.dumps(content))
        done = subprocess.run([sys.executable, SCRIPT, out, logs], capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"summary failed ({done.returncode}): {done.stderr}")
        return done.stdout


def verdict(text, goal):
    """The verdict printed on the goal line that contains `goal` (exactly one such line)."""
    lines = [line for line in text.splitlines() if goal in line]
    if len(lines) != 1:
        raise AssertionError(f"{len(lines)} lines name '{goal}':\n{text}")
    for v in ("not measured", "NOT MET", "MET"):
        if lines[0].strip().startswith(v):
            return v
    raise AssertionError(f"no verdict on: {lines[0]}")


def forward(model, images, ms, frac=0.5):
    return {"model": model, "images": images, "rows": 2 * images, "ms": ms,
            "fraction_of_peak": frac, "tflops": 1.0}


def stitched(images, ms04, mode="DeviceSampler, DDIM, guidance 4, check_finite off",
             errors=(0.01, -0.02, 0.03, 0.0)):
    return {"mode": mode, "steps": 50, "images": images, "c": 0.1,
            "fractions": [{"small_fraction": r, "ms": ms04 if r == 0.4 else 100.0, "speedup": 1.0,
                           "ideal": 1.0, "deviation": 0.0, "prediction_error": e}
                          for r, e in zip((0.0, 0.2, 0.4, 0.6), errors)]}


OURS = {
    "device": {"name": "NVIDIA H100 80GB HBM3"},
    "gemm_peak": {"tflops": 700.0},
    "forward": [forward("DiT-S/2", 1, 0.30), forward("DiT-S/2", 8, 0.50),
                forward("DiT-XL/2", 1, 2.0), forward("DiT-XL/2", 8, 8.0),
                forward("DiT-XL/2", 64, 50.0, frac=0.66)],
    "stitched": stitched(8, 200.0),
    "stitched_runs": [stitched(1, 60.0), stitched(8, 200.0)],
}


def torch_json(mode="max-autotune"):
    def row(model, images, compile_ms):
        return {"model": model, "images": images, "eager_ms": 10 * compile_ms,
                "compile_ms": compile_ms}
    runs = []
    for images, compile_ms in ((1, 100.0), (8, 240.0)):
        for backend, ms in (("eager", 3 * compile_ms), ("compile", compile_ms)):
            runs.append({"images": images, "backend": backend, "small_fraction": 0.4, "ms": ms})
    return {"environment": {"device": "NVIDIA H100 80GB HBM3", "compile_mode": mode},
            # S/2 at 1: 0.30 vs 0.45 (1.5x, met); S/2 at 8: 0.50 vs 0.60 (1.2x, not met);
            # XL/2: 1.5x, 1.5x, 1.2x.
            "results": [row("DiT-S/2", 1, 0.45), row("DiT-S/2", 8, 0.60),
                        row("DiT-XL/2", 1, 3.0), row("DiT-XL/2", 8, 12.0),
                        row("DiT-XL/2", 64, 60.0)],
            "stitched": {"steps": 50, "small_fraction": 0.4, "guidance": 4.0,
                         "small": "DiT-S/2", "large": "DiT-XL/2", "compile_mode": mode,
                         "runs": runs}}


LAB = "\n".join([
    "lab-status,lab_gemm_seam,pass",
    "csv,gemm_seam,qkv_4096x384x1152,1,10.0,0.001,ok",
    "csv,gemm_seam,qkv_4096x384x1152,2,5.0,0.001,ok",
    "csv,gemm_seam,qkv_4096x384x1152,3,4.0,0.5,FAIL",
    "lab-status,lab_short_attention,FAILED (rc 1)",
    "csv,short_attention,b8_h6_t256_d64,1,20.0,50.0,0.001,ok",
    "sanitize,lab_gemm_seam,memcheck,clean (ERROR SUMMARY: 0 errors)",
    "sanitize,lab_gemm_seam,racecheck,clean (RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings))",
    "lab-status,lab_bias_gelu,skipped (no CUDA device)",
]) + "\n"


def fp8_log(v2_us=150.0, images=64, fc1=None, drop=None):
    """lab_gemm_fp8's csv lines for the four XL/2 GEMMs: version 1 250 us each, version 2
    `v2_us`, the GEMM alone 125 us; `fc1` replaces fc1's version 2 line, `drop` removes lines."""
    lines = ["lab-status,lab_gemm_fp8,pass"]
    for layer in ("qkv", "proj", "fc1", "fc2"):
        shape = f"XL2_{layer}_i{images}"
        lines += [f"csv,gemm_fp8,{shape},1,250.00,2.300e-03,1",
                  fc1 if fc1 and layer == "fc1" else f"csv,gemm_fp8,{shape},2,{v2_us:.2f},4.000e-02,1",
                  f"csv,gemm_fp8,{shape},2g,125.00,4.000e-02,1",
                  f"csv,gemm_fp8,{shape},2vs1,,4.100e-02,1",
                  f"csv,gemm_fp8,{shape},3,140.00,4.200e-02,1"]
    return "\n".join(line for line in lines if not (drop and drop in line)) + "\n"


class Summary(unittest.TestCase):
    def test_goals_from_figures(self):
        text = summarize({"bench_dit_cuda.json": OURS, "bench_dit_gpu_torch.json": torch_json(),
                          "lab.log": LAB})
        self.assertIn("Hopper fusion goals (this card: NVIDIA H100 80GB HBM3", text)
        self.assertEqual(verdict(text, "DiT-S/2 : DiT-XL/2 forward time >= 15"), "MET")  # 16
        self.assertEqual(verdict(text, "DiT-XL/2 forward >= 1.3x torch.compile at 1 images"), "MET")
        self.assertEqual(verdict(text, "DiT-XL/2 forward >= 1.3x torch.compile at 8 images"), "MET")
        self.assertEqual(verdict(text, "DiT-XL/2 forward >= 1.3x torch.compile at 64 images"),
                         "NOT MET")
        self.assertEqual(verdict(text, "DiT-S/2 forward >= 1.3x torch.compile at 1 images"), "MET")
        self.assertEqual(verdict(text, "DiT-S/2 forward >= 1.3x torch.compile at 8 images"),
                         "NOT MET")
        # Stitched: 100 / 60 = 1.67 (met), 240 / 200 = 1.2 (not met).
        self.assertEqual(verdict(text, "r = 0.4, 1 images, end to end"), "MET")
        self.assertEqual(verdict(text, "r = 0.4, 8 images, end to end"), "NOT MET")
        self.assertIn("1.67x (tstitch 60.0 ms, torch.compile 100.0 ms, eager 300.0 ms)", text)
        self.assertEqual(verdict(text, "at 64 images >= 65% of the measured"), "MET")
        # Lab: the best passing version per shape and its ratio to version 1; failures named.
        self.assertIn("lab_gemm_seam: pass; sanitizer: memcheck clean (ERROR SUMMARY: 0 errors), "
                      "racecheck clean (RACECHECK SUMMARY: 0 hazards displayed (0 errors, "
                      "0 warnings))", text)
        self.assertIn("qkv_4096x384x1152: best version 2 5.00 us (2.00x version 1)"
                      "; FAILED check: 3", text)
        self.assertIn("lab_short_attention: FAILED (rc 1); sanitizer: not measured", text)
        self.assertIn("lab_bias_gelu: skipped (no CUDA device)", text)

    def test_missing_figures_are_not_measured(self):
        for files in ({}, {"bench_dit_cuda.json": OURS}, {"bench_dit_gpu_torch.json": torch_json()},
                      {"bench_dit_cuda.json": "{not json", "lab.log": ""}):
            text = summarize(files)
            table = text[text.index("Hopper fusion goals"):text.index("kernel lab")]
            lines = [line for line in table.splitlines()[1:] if line.strip()]
            self.assertEqual(len(lines), 10, table)
            for line in lines:
                if "DiT-S/2 : DiT-XL/2" in line or "65% of the measured" in line:
                    continue  # from bench_dit_cuda alone
                self.assertTrue(line.strip().startswith("not measured"), line)
            if "bench_dit_cuda.json" not in files or files["bench_dit_cuda.json"] == "{not json":
                self.assertNotIn(" MET ", table.replace("NOT MET", ""))

    def test_other_compile_mode_is_not_the_named_peer(self):
        text = summarize({"bench_dit_cuda.json": OURS,
                          "bench_dit_gpu_torch.json": torch_json("default")})
        self.assertEqual(verdict(text, "DiT-XL/2 forward >= 1.3x torch.compile at 8 images"),
                         "not measured")
        self.assertEqual(verdict(text, "r = 0.4, 1 images, end to end"), "not measured")

    def test_other_stitching_run_is_not_the_named_one(self):
        for key, value in (("steps", 10), ("small_fraction", 0.2), ("small", "tiny small")):
            peer = torch_json()
            peer["stitched"][key] = value
            text = summarize({"bench_dit_cuda.json": OURS, "bench_dit_gpu_torch.json": peer})
            self.assertEqual(verdict(text, "r = 0.4, 1 images, end to end"), "not measured")
            self.assertIn("eager - ms", text)

    def test_forwards_only_stitching_is_no_end_to_end_time(self):
        ours = dict(OURS, stitched_runs=[stitched(1, 60.0, "forwards only"),
                                         stitched(8, 200.0, "forwards only")])
        text = summarize({"bench_dit_cuda.json": ours, "bench_dit_gpu_torch.json": torch_json()})
        self.assertEqual(verdict(text, "r = 0.4, 8 images, end to end"), "not measured")

    def test_planner_goal(self):
        ours = dict(OURS, stitched_runs=[stitched(1, 60.0, errors=(0.01, -0.061, 0.0, 0.0)),
                                         stitched(8, 200.0)])
        text = summarize({"bench_dit_cuda.json": ours})
        self.assertEqual(verdict(text, "planner: stitched DDIM-50, S/2 -> XL/2, 1 images"),
                         "NOT MET")
        self.assertIn("worst -6.10% of 4 fractions", text)
        self.assertEqual(verdict(text, "planner: stitched DDIM-50, S/2 -> XL/2, 8 images"), "MET")
        self.assertIn("worst 3.00% of 4 fractions", text)
        # No prediction (an older JSON, or the forwards-only mode): not measured.
        for run in (stitched(8, 200.0, errors=(None,) * 4), stitched(8, 200.0, "forwards only")):
            text = summarize({"bench_dit_cuda.json": dict(OURS, stitched_runs=[run])})
            self.assertEqual(verdict(text, "planner: stitched DDIM-50, S/2 -> XL/2, 8 images"),
                             "not measured")
        self.assertEqual(verdict(summarize({}), "planner: stitched DDIM-50, S/2 -> XL/2, 1 images"),
                         "not measured")

    def test_row_routing_goal(self):
        row = {"steps": 50, "copies_us": 4.0, "small_step_us": 500.0, "copies_share": 0.008,
               "images": 12, "mixed_ms": 100.0, "separate_ms": 150.0, "gain": 1.5}
        text = summarize({"bench_dit_cuda.json": dict(OURS, row_routing=row)})
        self.assertEqual(verdict(text, "gather + scatter of a split step < 1%"), "MET")
        self.assertIn("0.800% (4.00 us of 500.0 us)", text)
        self.assertIn("1.500x throughput (100.0 ms against 150.0 ms)", text)
        text = summarize({"bench_dit_cuda.json": dict(OURS, row_routing=dict(row, copies_share=0.02))})
        self.assertEqual(verdict(text, "gather + scatter of a split step < 1%"), "NOT MET")
        text = summarize({"bench_dit_cuda.json": OURS})
        self.assertEqual(verdict(text, "gather + scatter of a split step < 1%"), "not measured")
        self.assertIn("not measured one mixed batch against three batches of 4", text)

    def test_fp8_stretch_goal(self):
        goal = "stretch: FP8 XL/2 GEMMs >= 1.5x bf16 at 64 images"
        # bf16 1000 us against fp8 600 us (1.67x), GEMMs alone 500 us (2.00x): met.
        text = summarize({"lab.log": fp8_log()})
        self.assertEqual(verdict(text, goal), "MET")
        self.assertIn("1.67x (bf16 1000.0 us, fp8 600.0 us with X's quantisation; the FP8 GEMMs "
                      "alone 2.00x); rel L2 error worst 4.00e-02 against the CPU reference, "
                      "4.10e-02 against bf16", text)
        # 1000 us against 800 us (1.25x): not met, figures shown.
        text = summarize({"lab.log": fp8_log(v2_us=200.0)})
        self.assertEqual(verdict(text, goal), "NOT MET")
        self.assertIn("1.25x (bf16 1000.0 us, fp8 800.0 us", text)
        # Fast but outside its error bound (or cuBLASLt refused a GEMM): not met.
        text = summarize({"lab.log": fp8_log(fc1="csv,gemm_fp8,XL2_fc1_i64,2,100.00,9.0e-01,0")})
        self.assertEqual(verdict(text, goal), "NOT MET")
        self.assertIn("FAILED check: XL2_fc1_i64 v2", text)
        text = summarize({"lab.log": fp8_log(fc1="csv,gemm_fp8,XL2_fc1_i64,2,,inf,0")})
        self.assertEqual(verdict(text, goal), "NOT MET")

    def test_fp8_stretch_goal_missing_figures(self):
        goal = "stretch: FP8 XL/2 GEMMs >= 1.5x bf16 at 64 images"
        for files in ({}, {"lab.log": ""}, {"lab.log": "lab-status,lab_gemm_fp8,skipped\n"},
                      {"lab.log": fp8_log(drop="XL2_fc2_i64,2,")},  # one GEMM missing
                      {"lab.log": fp8_log(images=8)},  # 8 images only: not the goal's batch
                      {"lab.log": fp8_log(fc1="csv,gemm_fp8,XL2_fc1_i64,2,,4.0e-02,1")}):  # --quick
            text = summarize(files)
            self.assertEqual(verdict(text, goal), "not measured", files)
        text = summarize({"lab.log": fp8_log(drop="XL2_fc2_i64,2,")})
        self.assertIn("(missing: XL2_fc2_i64 v2", text)

    def test_no_lab_log(self):
        self.assertIn("not measured (no lab.log)", summarize({}))


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    sys.exit(0 if result.wasSuccessful() else 1)
