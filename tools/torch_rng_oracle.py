#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch's side of tstitch's torch-seed parity tests (tests/test_torch_rng.cpp).

Writes float32/float64 values, raw little-endian, to --out and prints the CPU capability ATen
dispatches to ("capability: AVX2"), which decides torch's float normal kernel.

  randn     per seed in --seeds: torch.randn of each size in --sizes in sequence from one
            torch.Generator, as float32, then the same as float64
  ddpm      a diffusers DDPMScheduler pipeline loop (defaults: 1000 linear betas 1e-4..0.02,
            leading spacing, fixed_small variance, clip_sample 1.0), epsilon prediction
  euler_a   a diffusers EulerAncestralDiscreteScheduler loop (leading spacing)
  fixture   the committed no-python fixture (tests/data/torch_rng/randn_seed42.txt)
  cuda_randn  as randn, float32 only, on torch.Generator("cuda"); prints "cuda: <SMs> <threads
            per SM> <offset after the calls>" or "cuda: unavailable"

The pipelines write the initial latents, then the final latents (float32). Their model is
diffusers' scheduler-test dummy, eps = x * t / (t + 1). The scheduler arithmetic follows
diffusers' step() formulas with torch ops (diffusers itself is not needed).
"""
import argparse
import math
import sys

import torch


def capability():
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            return line.split(":", 1)[1].strip()
    return "unknown"


def dummy_model(x, t):
    t = torch.tensor(t, dtype=torch.float32)
    return x * t / (t + 1)


def alphas_cumprod():
    betas = torch.linspace(0.0001, 0.02, 1000, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def ddpm(generator, shape, steps):
    """DDPMPipeline: latents from randn, then one DDPMScheduler.step per timestep."""
    acp = alphas_cumprod()
    ratio = 1000 // steps
    timesteps = [int(t) for t in (torch.arange(0, steps) * ratio).flip(0)]
    latents = torch.randn(shape, generator=generator, dtype=torch.float32)
    x = latents.clone()
    one = torch.tensor(1.0)
    for t in timesteps:
        eps = dummy_model(x, float(t))
        prev_t = t - ratio
        a_t = acp[t]
        a_prev = acp[prev_t] if prev_t >= 0 else one
        b_t = 1 - a_t
        b_prev = 1 - a_prev
        cur_alpha = a_t / a_prev
        cur_beta = 1 - cur_alpha
        x0 = (x - b_t ** 0.5 * eps) / a_t ** 0.5
        x0 = x0.clamp(-1.0, 1.0)
        x0_coeff = (a_prev ** 0.5 * cur_beta) / b_t
        x_coeff = cur_alpha ** 0.5 * b_prev / b_t
        prev = x0_coeff * x0 + x_coeff * x
        if t > 0:  # diffusers draws no noise at t == 0
            noise = torch.randn(eps.shape, generator=generator, dtype=eps.dtype)
            variance = torch.clamp(b_prev / b_t * cur_beta, min=1e-20)
            prev = prev + variance ** 0.5 * noise
        x = prev
    return latents, x


def euler_a(generator, shape, steps):
    """A pipeline on EulerAncestralDiscreteScheduler(timestep_spacing="leading"): latents times
    init_noise_sigma = sqrt(sigma_max^2 + 1), the model on scale_model_input's
    x / sqrt(sigma^2 + 1), one step() per timestep."""
    import numpy as np

    acp = alphas_cumprod()
    train_sigmas = (((1 - acp) / acp) ** 0.5).numpy()
    ratio = 1000 // steps
    timesteps = (np.arange(0, steps) * ratio).round()[::-1].copy().astype(np.float32)
    sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
    sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    timesteps = torch.from_numpy(timesteps)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32)
    x = latents * (sigmas.max() ** 2 + 1) ** 0.5
    for i, t in enumerate(timesteps):
        sigma = sigmas[i]
        scaled = x / ((sigma ** 2 + 1) ** 0.5)
        eps = dummy_model(scaled, float(t))
        x0 = x - sigma * eps
        sigma_from, sigma_to = sigmas[i], sigmas[i + 1]
        sigma_up = (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
        sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
        derivative = (x - x0) / sigma
        dt = sigma_down - sigma
        prev = x + derivative * dt
        noise = torch.randn(eps.shape, generator=generator, dtype=eps.dtype)
        x = prev + noise * sigma_up
    return latents, x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["randn", "ddpm", "euler_a", "fixture", "cuda_randn"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default="0", help="randn: comma-separated seeds")
    parser.add_argument("--sizes", default="16", help="randn: comma-separated sizes")
    parser.add_argument("--shape", default="2,4,8,8", help="pipelines: B,C,H,W")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(args.seed)
    print("capability:", capability())
    if args.mode == "fixture":
        generator.manual_seed(42)
        # A few dozen values for the test without python: sizes 3 then 17 from seed 42 (float32,
        # the scalar then the vectorised path, with its redrawn tail), then 5 float64.
        with open(args.out, "w") as out:
            out.write("# torch %s, CPU capability %s: seed 42, randn(3), randn(17), "
                      "randn(5, float64), float bits in hex\n" % (torch.__version__, capability()))
            for n, dtype in ((3, torch.float32), (17, torch.float32), (5, torch.float64)):
                values = torch.randn(n, generator=generator, dtype=dtype)
                bits = values.view(torch.int32 if dtype == torch.float32 else torch.int64)
                width = 8 if dtype == torch.float32 else 16
                mask = (1 << (4 * width)) - 1
                out.write(" ".join(format(int(b) & mask, "0%dx" % width) for b in bits) + "\n")
        return 0
    if args.mode == "cuda_randn":
        if not torch.cuda.is_available():
            print("cuda: unavailable")
            return 0
        props = torch.cuda.get_device_properties(0)
        # Threads per multiprocessor by compute capability (torch 1.13 does not report it).
        threads = {(7, 5): 1024, (8, 6): 1536, (8, 9): 1536, (12, 0): 1536}.get(
            (props.major, props.minor), 2048)
        data = b""
        for seed in args.seeds.split(","):
            cuda = torch.Generator("cuda").manual_seed(int(seed))
            for n in args.sizes.split(","):
                data += torch.randn(int(n), generator=cuda, device="cuda").cpu().numpy().astype("<f4").tobytes()
            offset = int(torch.frombuffer(bytearray(cuda.get_state().numpy().tobytes()), dtype=torch.int64)[1])
            print("cuda:", props.multi_processor_count, threads, offset)
        with open(args.out, "wb") as out:
            out.write(data)
        return 0
    if args.mode == "randn":
        # For each seed: a fresh generator, every size in sequence as float32, then again as
        # float64 from another fresh generator; all of it as bytes, one after the other.
        data = b""
        for seed in args.seeds.split(","):
            for dtype in (torch.float32, torch.float64):
                generator.manual_seed(int(seed))
                parts = [torch.randn(int(n), generator=generator, dtype=dtype)
                         for n in args.sizes.split(",")]
                data += torch.cat(parts).numpy().astype(parts[0].numpy().dtype.newbyteorder("<")).tobytes()
        with open(args.out, "wb") as out:
            out.write(data)
        return 0
    else:
        shape = tuple(int(v) for v in args.shape.split(","))
        run = ddpm if args.mode == "ddpm" else euler_a
        latents, final = run(generator, shape, args.steps)
        values = torch.cat([latents.flatten(), final.flatten()])
    with open(args.out, "wb") as out:
        out.write(values.contiguous().numpy().astype("<f4").tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
