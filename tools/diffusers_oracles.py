#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Prints what diffusers computes for a scheduler_config.json: the timesteps and VE sigmas of an
n-step run, and the full loop of diffusers' scheduler-test harness (the dummy model
sample * t / (t + 1) on the deterministic 4x3x8x8 sample). tests/test_diffusers_config.cpp checks
tstitch's from_diffusers_config against these numbers; docs/parity.md §7 says how they were made.

The loop starts every class from the harness sample as the variance-preserving latents x_T, so
one tstitch loop serves every class: classes that step in k-diffusion's variance-exploding
coordinates (Euler, Heun, ...) start from x_T * sqrt(1 + sigma_0^2) and feed the model
scale_model_input(x), which is x_T again at the first step.

Usage: pip install diffusers==0.31.0 (with torch), then
    python3 tools/diffusers_oracles.py tests/data/diffusers/*.json [--steps 10]
"""
import argparse
import json
import math

import diffusers
import torch

# Classes whose latents are variance-exploding (init_noise_sigma != 1).
VE_CLASSES = {
    "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
    "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
}
# Classes whose n-step loop draws noise; their full loop is only deterministic with one step.
NOISY_CLASSES = {"DDPMScheduler", "LCMScheduler", "TCDScheduler", "EulerAncestralDiscreteScheduler",
                 "KDPM2AncestralDiscreteScheduler"}


def harness_sample():
    n = 4 * 3 * 8 * 8
    return (torch.arange(n).reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


def dummy_model(sample, t):
    return sample * t / (t + 1)


def run(path, steps):
    with open(path) as f:
        config = json.load(f)
    cls = getattr(diffusers, config["_class_name"])
    scheduler = cls.from_config(config)
    scheduler.set_timesteps(steps)
    timesteps = [float(t) for t in scheduler.timesteps]
    if hasattr(scheduler, "sigmas") and config["_class_name"] in VE_CLASSES:
        sigmas = [float(s) for s in scheduler.sigmas]
    else:
        ac = scheduler.alphas_cumprod
        sigmas = [math.sqrt((1 - float(ac[int(t)])) / float(ac[int(t)])) for t in timesteps]

    loop_steps = 1 if config["_class_name"] in NOISY_CLASSES else steps
    scheduler = cls.from_config(config)
    scheduler.set_timesteps(loop_steps)
    sample = harness_sample()
    if config["_class_name"] in VE_CLASSES:
        sample = sample * math.sqrt(1 + float(scheduler.sigmas[0]) ** 2)
    for t in scheduler.timesteps:
        residual = dummy_model(scheduler.scale_model_input(sample, t), t)
        sample = scheduler.step(residual, t, sample).prev_sample
    total = float(torch.sum(torch.abs(sample.double())))
    return {
        "config": path, "class": config["_class_name"], "diffusers": diffusers.__version__,
        "steps": steps, "timesteps": timesteps, "ve_sigmas": sigmas,
        "loop_steps": loop_steps, "sum": total, "mean": total / sample.numel(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    for path in args.configs:
        print(json.dumps(run(path, args.steps)))


if __name__ == "__main__":
    main()
