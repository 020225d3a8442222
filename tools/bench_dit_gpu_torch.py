#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch peer of benchmarks/gpu/bench_dit_cuda: the same DiT forward, and the same stitched
sampling run, on the same card.

Models: DiT-S/2, DiT-B/2, DiT-XL/2 at 32x32x4 latents (256x256 images), 1000 classes,
learn_sigma, random weights (official names and fan-in scaling of tools/make_dit_golden.py,
generated on the device). Batches count images; every forward runs twice as many rows, as
classifier-free guidance does (the same rule as bench_dit_cuda).

The forward is the published DiT equations (OfficialDiT in tools/make_dit_golden.py), written
once more here with F.scaled_dot_product_attention in place of the explicit softmax, because
that is what a PyTorch user would run on a GPU; bf16 weights and activations. Two backends:
  eager    the module as is, under torch.inference_mode
  compile  torch.compile of one DiT block (--compile-scope block, default: every block shares its
           code and shapes, so one compilation serves all of them and costs seconds, not the
           minute a whole DiT-XL/2 takes), or of the whole forward (--compile-scope model);
           dynamic=False, --compile-mode (default "max-autotune"); only for the configurations
           in --compile (compilation is the slow part of this script). With a CUDA-graph mode
           (max-autotune, reduce-overhead) and block scope, the blocks are compiled without
           graphs and the whole forward is captured in one CUDA graph (GraphedForward), as
           inductor captures a whole compiled model.
FLOPs = 2 x MACs x rows with MACs counted as dit::Config::macs() counts them (linear layers,
patch embedding, the two attention products), so TFLOP/s compare one to one.

Stitched sampling (--stitch-batches, default 1,8): deterministic DDIM over --steps (50) of the
default DiscreteSchedule, DiT-S/2 for the first floor(r * steps) steps (--small-fraction r, 0.4),
DiT-XL/2 after, guidance --guidance (4) on every latent channel, the conditional and null-class
rows in one forward: the arithmetic of tstitch's sampler (stitched_ddim), timed end to end with
eager and with compiled models at r = 0, r and 1 (median of interleaved runs after warm-up), as
bench_dit_cuda times DeviceSampler. tools/test_stitched_ddim.py checks the loop on the CPU.

Timing: CUDA events; --warmup calls, then --repeats blocks of back-to-back calls (about 5 ms per
block, at least one call), median of the per-call times. The compiled output is checked against
eager (relative L2 < 3e-2, bf16 on both sides).

Usage (on the GPU machine; benchmarks/gpu/run.sh calls it):
  python3 tools/bench_dit_gpu_torch.py [--models S/2,B/2,XL/2 | none] [--batches 1,8,32,64]
      [--repeats 10] [--compile S/2:8,XL/2:8,XL/2:64 | all | none] [--compile-scope block]
      [--compile-mode max-autotune] [--stitch-batches 1,8 | none] [--json out.json]
  python3 tools/bench_dit_gpu_torch.py --device cpu --smoke   # tiny float32 check, no GPU needed
  python3 tools/bench_dit_gpu_torch.py --device cpu --models none --tiny
      # the stitched runs on two tiny float32 DiTs (eager only where torch has no torch.compile)
Output: progress lines, then a table (model images rows eager_ms eager_TFLOP/s compile_ms
compile_TFLOP/s compile_s) and the stitched runs; with --json the rows, the stitched runs and the
environment (written after every model, so that a run cut short keeps what it measured).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dit_golden import (  # noqa: E402  (the path above makes it importable)
    FREQ_DIM, LN_EPS, MAX_PERIOD, OfficialDiT, init_std, official_pos_embed, official_shapes,
    out_channels, random_weights, rel_l2)

MODELS = {
    "S/2": dict(depth=12, hidden_size=384, num_heads=6, patch_size=2),
    "B/2": dict(depth=12, hidden_size=768, num_heads=12, patch_size=2),
    "XL/2": dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2),
}
COMMON = dict(input_size=32, in_channels=4, num_classes=1000, learn_sigma=True, mlp_ratio=4)
# The smoke configuration: small enough for the CPU, every dimension distinct.
SMOKE = dict(depth=2, hidden_size=64, num_heads=4, patch_size=2, input_size=8, in_channels=4,
             num_classes=10, learn_sigma=True, mlp_ratio=4)

# The small model of the tiny stitched pair (--tiny; SMOKE is the large one): same latents and
# classes, fewer and narrower blocks.
TINY_SMALL = dict(SMOKE, depth=1, hidden_size=32, num_heads=2)

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def macs(cfg):
    """Multiply-accumulates of one image forward, counted exactly as dit::Config::macs()."""
    p, d = cfg["patch_size"], cfg["hidden_size"]
    t = (cfg["input_size"] // p) ** 2
    mlp = cfg.get("mlp_ratio", 4) * d
    patch = t * cfg["in_channels"] * p * p * d
    per_block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * mlp + 6 * d * d
    final = t * d * p * p * out_channels(cfg) + 2 * d * d
    embed = FREQ_DIM * d + d * d
    return float(patch + cfg["depth"] * per_block + final + embed)


def device_weights(cfg, device, dtype, seed):
    """Random weights under the official names, drawn on `device` (XL/2's 675M values take
    seconds on a GPU, minutes on a CPU), fan-in scaled like make_dit_golden.random_weights."""
    gen = torch.Generator(device=device).manual_seed(seed)
    w = {}
    for name, shape in official_shapes(cfg).items():
        if name == "pos_embed":
            grid = cfg["input_size"] // cfg["patch_size"]
            table = torch.from_numpy(official_pos_embed(cfg["hidden_size"], grid)).float()[None]
            w[name] = table.to(device=device, dtype=dtype)
        else:
            v = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
            w[name] = (v * init_std(name, shape)).to(dtype)
    return w


def attention(q, k, v):
    """q, k, v: [B, H, T, hd]. SDPA where torch has it (2.0+), else the explicit softmax (only
    the CPU smoke test on an old torch takes this path)."""
    if HAS_SDPA:
        return F.scaled_dot_product_attention(q, k, v)
    att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)
    return torch.matmul(att, v)


def dit_block(h, sc, ada_w, ada_b, qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b,
              heads: int):
    """One DiT block (adaLN-Zero): the unit torch.compile compiles with --compile-scope block.
    Weights are arguments, not attributes, so every block reuses one compiled graph."""
    B, T, D = h.shape
    hd = D // heads
    mod = F.linear(sc, ada_w, ada_b)
    shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, None, :] for m in mod.chunk(6, dim=1))
    a = F.layer_norm(h, (D,), eps=LN_EPS) * (1 + scale1) + shift1
    qkv = F.linear(a, qkv_w, qkv_b).reshape(B, T, 3, heads, hd).permute(2, 0, 3, 1, 4)
    a = attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, T, D)
    h = h + gate1 * F.linear(a, proj_w, proj_b)
    m = F.layer_norm(h, (D,), eps=LN_EPS) * (1 + scale2) + shift2
    m = F.gelu(F.linear(m, fc1_w, fc1_b), approximate="tanh")
    return h + gate2 * F.linear(m, fc2_w, fc2_b)


class SdpaDiT(torch.nn.Module):
    """DiT forward (the published equations, as OfficialDiT) with SDPA attention."""

    def __init__(self, cfg, weights):
        super().__init__()
        self.cfg = dict(cfg)
        self.w = dict(weights)
        self.block = dit_block

    def forward(self, x, t, y):
        cfg, w = self.cfg, self.w
        D, H, p = cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"]
        g = cfg["input_size"] // p
        B = x.shape[0]
        dtype = w["x_embedder.proj.weight"].dtype

        h = F.conv2d(x.to(dtype), w["x_embedder.proj.weight"], w["x_embedder.proj.bias"], stride=p)
        h = h.flatten(2).transpose(1, 2) + w["pos_embed"]

        # Timestep sinusoid in float32 (as the official code), then the model dtype.
        half = FREQ_DIM // 2
        freqs = torch.exp(-math.log(MAX_PERIOD) *
                          torch.arange(half, dtype=torch.float32, device=x.device) / half)
        args = t.float()[:, None] * freqs[None, :]
        tf = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(dtype)
        temb = F.linear(F.silu(F.linear(tf, w["t_embedder.mlp.0.weight"], w["t_embedder.mlp.0.bias"])),
                        w["t_embedder.mlp.2.weight"], w["t_embedder.mlp.2.bias"])
        sc = F.silu(temb + F.embedding(y, w["y_embedder.embedding_table.weight"]))

        for i in range(cfg["depth"]):
            b = f"blocks.{i}."
            h = self.block(h, sc, w[b + "adaLN_modulation.1.weight"], w[b + "adaLN_modulation.1.bias"],
                           w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"],
                           w[b + "attn.proj.weight"], w[b + "attn.proj.bias"],
                           w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"],
                           w[b + "mlp.fc2.weight"], w[b + "mlp.fc2.bias"], H)

        shift, scale = (m[:, None, :] for m in F.linear(
            sc, w["final_layer.adaLN_modulation.1.weight"],
            w["final_layer.adaLN_modulation.1.bias"]).chunk(2, dim=1))
        h = F.linear(F.layer_norm(h, (D,), eps=LN_EPS) * (1 + scale) + shift,
                     w["final_layer.linear.weight"], w["final_layer.linear.bias"])
        co = out_channels(cfg)
        h = h.reshape(B, g, g, p, p, co).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(B, co, g * p, g * p)


def inputs(cfg, rows, device, seed):
    """Latents, timesteps and labels; the second half of the rows gets the null class."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn((rows, cfg["in_channels"], cfg["input_size"], cfg["input_size"]), generator=gen)
    t = torch.rand((rows,), generator=gen) * 999.0
    y = torch.randint(0, cfg["num_classes"], (rows,), generator=gen)
    y[(rows + 1) // 2:] = cfg["num_classes"]
    return x.to(device), t.to(device), y.to(device)


def time_ms(fn, device, warmup, repeats):
    """Median per-call milliseconds over `repeats` blocks of back-to-back calls (~5 ms each)."""
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def block(calls):
        if cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / calls
        begin = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - begin) * 1e3 / calls

    for _ in range(warmup):
        fn()
    sync()
    single = block(1)
    calls = max(1, min(50, math.ceil(5.0 / max(single, 1e-3))))
    times = [block(calls) for _ in range(repeats)]
    return statistics.median(times), calls


def parse_compile(text, models, batches):
    if text == "none":
        return set()
    if text == "all":
        return {(m, b) for m in models for b in batches}
    wanted = set()
    for item in text.split(","):
        m, _, b = item.strip().partition(":")
        m = m.replace("DiT-", "")
        if m not in MODELS or not b.isdigit():
            raise SystemExit(f"--compile: '{item}' must look like XL/2:64 (model:images)")
        wanted.add((m, int(b)))
    return wanted


# ---------------------------------------------------------------------------------------------
# Stitched DDIM sampling: the small model for the first fraction r of the steps, the large one for
# the rest, written out as tstitch's sampler does it (sample.hpp, solver/ddim.hpp, the default
# DiscreteSchedule), so that the end-to-end time compares with bench_dit_cuda's DeviceSampler.

def ddim_points(steps, n_train=1000, beta_start=1e-4, beta_end=0.02):
    """(timestep, alpha, sigma) of the steps + 1 points of DiscreteSchedule's default trajectory:
    linear betas rounded to float32, alphas = float32(1 - beta), their running product taken in
    double and stored as float32; leading spacing ((arange(n) * (N // n)) reversed); the last
    point clean (alpha 1, sigma 0). alpha and sigma in double, as TimePoint holds them."""
    betas = torch.linspace(beta_start, beta_end, n_train, dtype=torch.float64).float()
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas.double(), dim=0).float()
    stride = n_train // steps
    points = []
    for i in range(steps):
        t = (steps - 1 - i) * stride
        ac = float(abar[t])
        points.append((float(t), math.sqrt(ac), math.sqrt(1.0 - ac)))
    points.append((-1.0, 1.0, 0.0))
    return points


def small_steps(r, steps):
    """Steps the small model serves: floor(r * n) with r rounded to 9 decimals first, in
    integers (StepFraction::small_fraction), so 0.4 of 50 is exactly 20."""
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"small fraction {r} must be in [0, 1]")
    return (round(r * 1_000_000_000) * steps) // 1_000_000_000


def f32(v):
    """A coefficient as the sampler passes it to its kernels: rounded to float32."""
    return float(torch.tensor(v, dtype=torch.float32))


def stitched_ddim(models, r, x_T, labels, null_class, guidance, points):
    """Deterministic DDIM (eta 0) over `points` with models[0] for the first small_steps(r)
    steps and models[1] after; classifier-free guidance on every latent channel
    (Guidance::standard: u + s (c - u)), the conditional and null-class rows in one 2N-row call.
    A model is called as model(x, t, y) and returns [rows, 2C, H, W] (eps, then the learned
    variance, which is not used) or [rows, C, H, W]. Returns the final float32 latents."""
    steps = len(points) - 1
    n_small = small_steps(r, steps)
    n, channels = x_T.shape[0], x_T.shape[1]
    x = x_T.float().clone()
    guided = guidance != 1.0
    y = torch.cat([labels, torch.full_like(labels, null_class)]) if guided else labels
    scale = f32(guidance)
    for i in range(steps):
        t, alpha, sigma = points[i]
        _, alpha_next, sigma_next = points[i + 1]
        model = models[0] if i < n_small else models[1]
        x_in = torch.cat([x, x]) if guided else x
        timesteps = torch.full((x_in.shape[0],), t, dtype=torch.float32, device=x.device)
        raw = model(x_in, timesteps, y).float()
        if guided:
            c, u = raw[:n, :channels], raw[n:, :channels]
            eps = u + scale * (c - u)
        else:
            eps = raw[:, :channels]
        # conversion(epsilon): x0 = (1 / alpha) x + (-sigma / alpha) eps; DDIM (eta 0):
        # x = alpha' x0 + sigma' eps. Coefficients in double, rounded to float32.
        x0 = f32(1.0 / alpha) * x + f32(-sigma / alpha) * eps
        x = f32(alpha_next) * x0 + f32(sigma_next) * eps
    return x


class GraphedForward:
    """One CUDA graph of a whole forward at fixed rows: inputs are copied into static buffers, the
    graph replayed, the static output returned (valid until the next call). What
    torch.compile(mode="max-autotune") does for a whole compiled model, here over per-block
    compiled code (--compile-scope block), which compiles in seconds instead of minutes."""

    def __init__(self, fn, x, t, y, warmup=2):
        self.x, self.t, self.y = x.clone(), t.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compilation and autotuning happen here, not in capture
            for _ in range(warmup):
                fn(self.x, self.t, self.y)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn(self.x, self.t, self.y)

    def __call__(self, x, t, y):
        self.x.copy_(x)
        self.t.copy_(t)
        self.y.copy_(y)
        self.graph.replay()
        return self.out


_COMPILED_BLOCKS = {}


def compiled_forward(cfg, w, rows, mode, scope, device):
    """A torch.compile'd forward for `rows` rows and how it was made. mode "max-autotune" or
    "reduce-overhead" means CUDA graphs on: with scope "model" inductor captures them itself;
    with scope "block" the blocks are compiled without graphs (one compilation for every block
    of a shape) and GraphedForward captures the whole forward. With inductor's graphs the weights
    are marked static, so that they are not copied into the graph at every call (only there:
    per block, every block passes other weights to the one compiled function)."""
    graphs = mode in ("max-autotune", "reduce-overhead") and device.startswith("cuda")
    if scope == "model":
        if graphs and hasattr(torch._dynamo, "mark_static_address"):
            for v in w.values():
                torch._dynamo.mark_static_address(v)
        model = torch.compile(SdpaDiT(cfg, w), dynamic=False, mode=mode)
        if not graphs:
            return model, f"whole model, mode {mode}"

        def call(x, t, y):
            if hasattr(torch, "compiler") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
                torch.compiler.cudagraph_mark_step_begin()
            return model(x, t, y)
        return call, f"whole model, mode {mode} (inductor's CUDA graphs)"
    inner = {"max-autotune": "max-autotune-no-cudagraphs", "reduce-overhead": "default"}.get(
        mode, mode) if graphs else mode
    if inner not in _COMPILED_BLOCKS:  # one compiled function: its cache serves every shape
        _COMPILED_BLOCKS[inner] = torch.compile(dit_block, dynamic=False, mode=inner)
    model = SdpaDiT(cfg, w)
    model.block = _COMPILED_BLOCKS[inner]
    if not graphs:
        return model, f"per block, mode {inner}"
    x, t, y = inputs(cfg, rows, device, 99)
    return GraphedForward(model, x, t, y), \
        f"per block, mode {inner}, whole forward in one CUDA graph"


def time_runs(fn, device, runs):
    """Milliseconds of each of `runs` calls of fn (CUDA events, or the host clock on a CPU)."""
    times = []
    for _ in range(runs):
        if device.startswith("cuda"):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return times


def stitch_bench(args, small_cfg, large_cfg, dtype, batches, can_compile):
    """End-to-end stitched DDIM runs at each batch: eager models, then (where torch has it)
    compiled ones; fractions 0 (large alone), r and 1 (small alone), interleaved; median ms."""
    device = args.device
    fractions = sorted({0.0, args.small_fraction, 1.0})
    w_small = device_weights(small_cfg, device, dtype, seed=2026)
    w_large = device_weights(large_cfg, device, dtype, seed=2027)
    points = ddim_points(args.steps)
    null = large_cfg["num_classes"]
    backends = ["eager"] + (["compile"] if can_compile and args.stitch_compile else [])
    results, failures = [], 0
    for images in batches:
        gen = torch.Generator(device="cpu").manual_seed(5)
        x_T = (1.7 * torch.randn((images, large_cfg["in_channels"], large_cfg["input_size"],
                                  large_cfg["input_size"]), generator=gen)).to(device)
        labels = torch.tensor([(i * 97 + 3) % null for i in range(images)], device=device)
        rows = 2 * images if args.guidance != 1.0 else images
        for backend in backends:
            try:
                begin = time.perf_counter()
                with torch.inference_mode():
                    if backend == "eager":
                        models = (SdpaDiT(small_cfg, w_small), SdpaDiT(large_cfg, w_large))
                        how = "eager"
                    else:
                        small, how = compiled_forward(small_cfg, w_small, rows, args.compile_mode,
                                                      args.compile_scope, device)
                        large, _ = compiled_forward(large_cfg, w_large, rows, args.compile_mode,
                                                    args.compile_scope, device)
                        models = (small, large)
                    for r in fractions:  # warm-up: compilation, autotuning, graphs, allocator
                        last = stitched_ddim(models, r, x_T, labels, null, args.guidance, points)
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    prepare_s = time.perf_counter() - begin
                    times = {r: [] for r in fractions}
                    for _ in range(max(3, args.repeats // 2)):
                        for r in fractions:  # interleaved: drifting clocks hit every fraction alike
                            times[r] += time_runs(
                                lambda: stitched_ddim(models, r, x_T, labels, null,
                                                      args.guidance, points), device, 1)
                ms = {r: statistics.median(v) for r, v in times.items()}
                for r in fractions:
                    results.append(dict(images=images, backend=backend, how=how, small_fraction=r,
                                        ms=round(ms[r], 3)))
                print(f"stitched {backend:7s} {images} images, {args.steps} steps: " +
                      ", ".join(f"r={r:g} {ms[r]:.2f} ms" for r in fractions) +
                      f" ({how}; warm-up {prepare_s:.1f} s; final |x| {last.abs().mean():.3f})",
                      flush=True)
            except Exception as e:  # a failed compile must not lose the eager rows
                failures += 1
                results.append(dict(images=images, backend=backend,
                                    error=f"{type(e).__name__}: {e}"[:500]))
                print(f"stitched {backend} {images} images: FAILED: {results[-1]['error']}",
                      flush=True)
    if not can_compile:
        print(f"# stitched: torch {torch.__version__} has no torch.compile: eager only")
    section = dict(steps=args.steps, small_fraction=args.small_fraction, guidance=args.guidance,
                   solver="DDIM eta 0, default DiscreteSchedule (linear betas, leading spacing)",
                   small=small_cfg.get("name", "DiT-S/2"), large=large_cfg.get("name", "DiT-XL/2"),
                   compile_mode=args.compile_mode if "compile" in backends else None,
                   runs=results)
    return section, failures


def smoke(args):
    """CPU check of this file's forward against OfficialDiT (float32, same weights)."""
    cfg = dict(SMOKE, seed=1234)
    w = random_weights(cfg)
    ref_model = OfficialDiT(cfg, w).eval()
    model = SdpaDiT(cfg, {k: v.to(args.device) for k, v in w.items()})
    x, t, y = inputs(cfg, 4, args.device, 7)
    with torch.inference_mode():
        ref = ref_model(x.cpu(), t.cpu(), y.cpu())
        got = model(x, t, y).cpu()
        err = rel_l2(got, ref)
        ms, calls = time_ms(lambda: model(x, t, y), args.device, 1, 2)
    ok = err < 1e-5
    print(f"smoke: SdpaDiT vs OfficialDiT (float32, {args.device}, sdpa={HAS_SDPA}): rel L2 "
          f"{err:.2e} ({'OK' if ok else 'FAILED'}); {ms:.2f} ms per forward ({calls} calls/block); "
          f"macs(S/2) = {macs(dict(COMMON, **MODELS['S/2'])) / 1e9:.3f} G, "
          f"macs(XL/2) = {macs(dict(COMMON, **MODELS['XL/2'])) / 1e9:.3f} G")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny float32 check against OfficialDiT")
    ap.add_argument("--models", default="S/2,B/2,XL/2")
    ap.add_argument("--batches", default="1,8,32,64", help="images; forwards run 2x rows")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", default="S/2:8,S/2:64,XL/2:8,XL/2:64",
                    help="model:images list, 'all' or 'none'")
    ap.add_argument("--compile-scope", choices=("block", "model"), default="block")
    ap.add_argument("--compile-mode", default="max-autotune",
                    help="torch.compile mode (max-autotune and reduce-overhead: CUDA graphs on)")
    ap.add_argument("--stitch-batches", default="1,8",
                    help="images of the stitched DDIM runs (S/2 then XL/2), or 'none'")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of the stitched runs")
    ap.add_argument("--small-fraction", type=float, default=0.4,
                    help="r: the small model serves the first floor(r * steps) steps")
    ap.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    ap.add_argument("--no-stitch-compile", dest="stitch_compile", action="store_false",
                    help="stitched runs with eager models only")
    ap.add_argument("--tiny", action="store_true",
                    help="stitched runs with two tiny float32 DiTs (the CPU path)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    if args.smoke:
        return smoke(args)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_dit_gpu_torch: no CUDA device visible to torch; nothing measured")
        return 0
    models = [m.strip().replace("DiT-", "") for m in args.models.split(",")
              if m.strip() and m.strip() != "none"]
    stitch_batches = [] if args.stitch_batches == "none" else [
        int(b) for b in args.stitch_batches.split(",")]
    if args.tiny and models:
        raise SystemExit("--tiny is for the stitched runs alone: add --models none")
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models: unknown model '{m}' (S/2, B/2, XL/2)")
    batches = [int(b) for b in args.batches.split(",")]
    to_compile = parse_compile(args.compile, models, batches)
    can_compile = hasattr(torch, "compile")
    if to_compile and not can_compile:
        print(f"# torch {torch.__version__} has no torch.compile: compile rows skipped")
    if can_compile:
        import torch._dynamo as dynamo
        # One compiled graph per (model, rows) with --compile-scope block, more with model;
        # the default limit of 8 would silently fall back to eager.
        for knob in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo.config, knob):
                setattr(dynamo.config, knob, 64)

    dtype = torch.float32 if args.tiny else torch.bfloat16
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
           "cuda": torch.version.cuda, "dtype": str(dtype).replace("torch.", ""), "sdpa": HAS_SDPA,
           "sdpa_backends": None, "compile_scope": args.compile_scope,
           "compile_mode": args.compile_mode, "torch_compile": can_compile,
           "warmup": args.warmup, "repeats": args.repeats}
    if args.device.startswith("cuda"):
        cap = torch.cuda.get_device_capability()
        env["sm"] = cap[0] * 10 + cap[1]
        backends = torch.backends.cuda
        env["sdpa_backends"] = {k: getattr(backends, k + "_sdp_enabled")()
                                for k in ("flash", "mem_efficient", "math", "cudnn")
                                if hasattr(backends, k + "_sdp_enabled")}
    print("# " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)

    rows = []
    failures = 0
    for m in models:
        cfg = dict(COMMON, **MODELS[m])
        model_macs = macs(cfg)
        w = device_weights(cfg, args.device, dtype, seed=2026 + len(rows))
        eager = SdpaDiT(cfg, w)
        compiled = None
        for images in batches:
            n = 2 * images
            flops = 2.0 * model_macs * n
            x, t, y = inputs(cfg, n, args.device, images)
            row = dict(model=f"DiT-{m}", images=images, rows=n, flops=flops)
            with torch.inference_mode():
                ms, calls = time_ms(lambda: eager(x, t, y), args.device, args.warmup, args.repeats)
                row.update(eager_ms=round(ms, 4), eager_tflops=round(flops / (ms * 1e9), 2),
                           eager_calls_per_repeat=calls)
                print(f"eager   DiT-{m} images {images} rows {n}: {ms:.3f} ms, "
                      f"{flops / (ms * 1e9):.1f} TFLOP/s", flush=True)
                if can_compile and (m, images) in to_compile:
                    try:
                        begin = time.perf_counter()
                        compiled, how = compiled_forward(cfg, w, n, args.compile_mode,
                                                         args.compile_scope, args.device)
                        row["compile_how"] = how
                        out = compiled(x, t, y)
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        compile_s = time.perf_counter() - begin
                        err = rel_l2(out.float(), eager(x, t, y).float())
                        ms, calls = time_ms(lambda: compiled(x, t, y), args.device, args.warmup,
                                            args.repeats)
                        row.update(compile_ms=round(ms, 4),
                                   compile_tflops=round(flops / (ms * 1e9), 2),
                                   compile_calls_per_repeat=calls, compile_s=round(compile_s, 1),
                                   compile_rel_l2_vs_eager=float(f"{err:.3e}"))
                        print(f"compile DiT-{m} images {images} rows {n}: {ms:.3f} ms, "
                              f"{flops / (ms * 1e9):.1f} TFLOP/s (first call {compile_s:.1f} s, "
                              f"rel L2 vs eager {err:.1e})", flush=True)
                        if not err < 3e-2:
                            failures += 1
                            print(f"# ERROR: compiled output differs from eager: {err:.3e}")
                    except Exception as e:  # a failed compile must not lose the eager rows
                        failures += 1
                        row["compile_error"] = f"{type(e).__name__}: {e}"[:500]
                        print(f"compile DiT-{m} images {images}: FAILED: {row['compile_error']}",
                              flush=True)
            rows.append(row)
        del eager, compiled, w
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        save(args.json, env, rows, None)  # after every model: a run cut short keeps what it has

    stitched = None
    if stitch_batches:
        if args.tiny:
            small_cfg, large_cfg = dict(TINY_SMALL, name="tiny small"), dict(SMOKE, name="tiny large")
        else:
            small_cfg = dict(COMMON, **MODELS["S/2"], name="DiT-S/2")
            large_cfg = dict(COMMON, **MODELS["XL/2"], name="DiT-XL/2")
        stitched, stitch_failures = stitch_bench(args, small_cfg, large_cfg, dtype,
                                                 stitch_batches, can_compile)
        failures += stitch_failures
        save(args.json, env, rows, stitched)

    def f(v, digits):
        return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "-"

    print(f"\n== PyTorch {torch.__version__} on {env['device']}, {env['dtype']}, "
          f"{'SDPA' if HAS_SDPA else 'explicit softmax'}; compile scope {args.compile_scope} ==")
    print(f"{'model':9s} {'images':>6s} {'rows':>5s} {'eager_ms':>9s} {'eager_TF/s':>10s} "
          f"{'compile_ms':>10s} {'compile_TF/s':>12s} {'compile_s':>9s}")
    for r in rows:
        print(f"{r['model']:9s} {r['images']:6d} {r['rows']:5d} {f(r['eager_ms'], 3):>9s} "
              f"{f(r['eager_tflops'], 1):>10s} {f(r.get('compile_ms'), 3):>10s} "
              f"{f(r.get('compile_tflops'), 1):>12s} {f(r.get('compile_s'), 1):>9s}")
    if stitched:
        print(f"\n== stitched DDIM-{stitched['steps']}, {stitched['small']} for r = "
              f"{stitched['small_fraction']:g} then {stitched['large']}, guidance "
              f"{stitched['guidance']:g}: ms per run ==")
        for r in stitched["runs"]:
            if "error" not in r:
                print(f"{r['backend']:7s} images {r['images']:3d} r {r['small_fraction']:4.2f} "
                      f"{r['ms']:10.2f} ms")
    if args.json:
        save(args.json, env, rows, stitched)
        print(f"wrote {args.json}")
    return 1 if failures else 0


def save(path, env, rows, stitched):
    if not path:
        return
    report = {"environment": env, "results": rows}
    if stitched is not None:
        report["stitched"] = stitched
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")


if __name__ == "__main__":
    sys.exit(main())
