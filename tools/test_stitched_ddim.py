#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks the stitched DDIM loop of tools/bench_dit_gpu_torch.py (the PyTorch peer of
bench_dit_cuda's stitched sampling) on two tiny random-weight DiTs, on the CPU, in float32:

  - r = 0 is the large model alone and r = 1 the small one alone, bit for bit;
  - at r = 0.4 of 50 steps the small model serves exactly the first 20 steps;
  - the final latents match a plain reference loop written here on its own (diffusers' DDIM
    formulas from alphas_cumprod, in float64), for r = 0, 0.4 and 1.

    /usr/bin/python3 tools/test_stitched_ddim.py      # exit 0 pass, 1 fail, 77 without torch
"""
import math
import os
import sys
import unittest

try:
    import torch
except ImportError:
    print("SKIPPED: no torch in this python")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_dit_gpu_torch as peer  # noqa: E402
from make_dit_golden import random_weights, rel_l2  # noqa: E402

STEPS, GUIDANCE, IMAGES = 50, 1.5, 2


def reference_ddim(schedule, x_T, labels, null, guidance, r):
    """DDIM (eta 0) as diffusers' DDIMScheduler writes it: timesteps 980, 960, ..., 0; the
    previous alphas_cumprod 1 after the last step; epsilon from the guided output. `schedule`
    is a list of the models serving each step. float64 arithmetic on the latents."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    alphas_cumprod = torch.cumprod(1.0 - betas.double(), dim=0)
    timesteps = list(range(0, 1000, 1000 // STEPS))[::-1]
    x = x_T.double()
    n = x.shape[0]
    for i, t in enumerate(timesteps):
        model = schedule[i]
        both = torch.cat([x, x]).float()
        out = model(both, torch.full((2 * n,), float(t)), torch.cat(
            [labels, torch.full_like(labels, null)])).double()
        cond, uncond = out[:n, :4], out[n:, :4]
        eps = uncond + guidance * (cond - uncond)
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[t - 1000 // STEPS] if t - 1000 // STEPS >= 0 else torch.tensor(1.0)
        pred_x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
        x = torch.sqrt(a_prev) * pred_x0 + torch.sqrt(1 - a_prev) * eps
    return x.float()


class Counting:
    """A model that counts its calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t, y):
        self.calls += 1
        return self.model(x, t, y)


class StitchedDdim(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        small_cfg = dict(peer.TINY_SMALL, seed=11)
        large_cfg = dict(peer.SMOKE, seed=12)
        cls.small = peer.SdpaDiT(small_cfg, random_weights(small_cfg))
        cls.large = peer.SdpaDiT(large_cfg, random_weights(large_cfg))
        cls.null = large_cfg["num_classes"]
        gen = torch.Generator().manual_seed(3)
        size = large_cfg["input_size"]
        cls.x_T = torch.randn((IMAGES, 4, size, size), generator=gen)
        cls.labels = torch.tensor([1, 7])
        cls.points = peer.ddim_points(STEPS)
        cls.runs = {}

    def run_peer(self, models, r):
        with torch.inference_mode():
            return peer.stitched_ddim(models, r, self.x_T, self.labels, self.null, GUIDANCE,
                                      self.points)

    def pair(self, r):
        """The (small, large) run at r, computed once per class; at 0.4 the calls are counted."""
        cache = type(self).runs
        if r not in cache:
            small, large = Counting(self.small), Counting(self.large)
            cache[r] = (self.run_peer((small, large), r), small.calls, large.calls)
        return cache[r]

    def test_points(self):
        self.assertEqual([p[0] for p in self.points[:3]], [980.0, 960.0, 940.0])
        self.assertEqual(self.points[STEPS - 1][0], 0.0)
        self.assertEqual(self.points[STEPS][1:], (1.0, 0.0))
        for t, alpha, sigma in self.points:
            self.assertAlmostEqual(alpha * alpha + sigma * sigma, 1.0, places=12)

    def test_small_steps(self):
        self.assertEqual(peer.small_steps(0.4, 50), 20)
        self.assertEqual(peer.small_steps(0.29, 100), 29)  # a plain product would give 28
        self.assertEqual(peer.small_steps(0.0, 50), 0)
        self.assertEqual(peer.small_steps(1.0, 50), 50)
        with self.assertRaises(ValueError):
            peer.small_steps(1.5, 50)

    def test_ends_are_one_model_alone(self):
        torch.testing.assert_close(self.pair(0.0)[0], self.run_peer((self.large,) * 2, 0.4),
                                   rtol=0, atol=0)
        torch.testing.assert_close(self.pair(1.0)[0], self.run_peer((self.small,) * 2, 0.4),
                                   rtol=0, atol=0)

    def test_switch_after_the_small_fraction(self):
        self.assertEqual(self.pair(0.4)[1:], (20, 30))
        self.assertEqual(self.pair(0.0)[1:], (0, 50))
        self.assertEqual(self.pair(1.0)[1:], (50, 0))

    def test_against_reference_loop(self):
        results = {}
        for r in (0.0, 0.4, 1.0):
            k = int(round(r * STEPS))
            schedule = [self.small] * k + [self.large] * (STEPS - k)
            with torch.inference_mode():
                want = reference_ddim(schedule, self.x_T, self.labels, self.null, GUIDANCE, r)
            got = self.pair(r)[0]
            err = float(rel_l2(got, want))
            print(f"r = {r}: stitched DDIM against the reference loop: rel L2 {err:.2e}")
            self.assertTrue(math.isfinite(err) and err < 1e-5, f"r = {r}: rel L2 {err:.3e}")
            results[r] = got
        # The three runs differ: the switch changes the result.
        self.assertGreater(float(rel_l2(results[0.4], results[0.0])), 1e-3)
        self.assertGreater(float(rel_l2(results[0.4], results[1.0])), 1e-3)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    sys.exit(0 if result.wasSuccessful() else 1)
