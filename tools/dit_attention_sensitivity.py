#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Can the CUDA DiT test tell a working attention from a broken one?

tests/cuda/test_dit_cuda.cpp compares the CUDA DiT-S/2 (bf16 GEMM inputs, fp32 accumulation and
residual stream) with the fp32 CPU DiT at a relative L2 bound of 1e-2. That only checks attention
if a broken attention would move the output by more than the bound. This script measures, on a
float32 PyTorch copy of the DiT forward with random weights drawn like dit::Weights::random
(normal * 0.025, clipped to +-0.05), with the query/key rows of qkv scaled by ALPHA and the adaLN
modulations by BETA:
  bf16     the relative L2 error of the same forward with the CUDA backend's roundings emulated
           (bf16 GEMM inputs and bf16 outputs where it stores bf16, P packed to bf16 before P V);
  uniform  how far uniform attention (scores ignored) moves the output;
  scale/8  how far a softmax scale off by a factor 8 moves it.
The test uses ALPHA = BETA = 4 (attention_sensitive_weights). Usage (Debian's python3-torch):
  /usr/bin/python3 tools/dit_attention_sensitivity.py
"""

import math

import torch
import torch.nn.functional as F

D, HEADS, DEPTH, PATCH, SIZE, CHANNELS, CLASSES = 384, 6, 12, 2, 32, 4, 1000  # DiT-S/2
HEAD_DIM, GRID = D // HEADS, SIZE // PATCH
TOKENS, OUT = GRID * GRID, 2 * CHANNELS


def bf16(x):
    return x.to(torch.bfloat16).to(torch.float32)


def random_weights(gen):
    def draw(*shape):
        return (torch.randn(*shape, generator=gen) * 0.025).clamp(-0.05, 0.05)

    w = {"patch": (draw(D, CHANNELS * PATCH * PATCH), draw(D)), "t1": (draw(D, 256), draw(D)),
         "t2": (draw(D, D), draw(D)), "table": draw(CLASSES + 1, D),
         "final_ada": (draw(2 * D, D), draw(2 * D)), "final": (draw(PATCH * PATCH * OUT, D), draw(PATCH * PATCH * OUT))}
    for i in range(DEPTH):
        for name, (rows, cols) in {"ada": (6 * D, D), "qkv": (3 * D, D), "proj": (D, D),
                                   "fc1": (4 * D, D), "fc2": (D, 4 * D)}.items():
            w[f"{i}.{name}"] = (draw(rows, cols), draw(rows))
    return w


def position_embedding():
    quarter = D // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.div(torch.arange(TOKENS), GRID, rounding_mode="floor"), torch.arange(TOKENS) % GRID

    def half(pos):
        angle = pos.to(torch.float64)[:, None] * omega[None, :]
        return torch.cat([torch.sin(angle), torch.cos(angle)], 1)

    return torch.cat([half(cols), half(rows)], 1).to(torch.float32)


def forward(w, x, t, y, emulate=False, attention="exact"):
    """DiT forward. emulate: the CUDA backend's bf16 roundings. attention: exact, uniform, scale/8."""

    def linear(a, weight_bias, bf16_out=False, bias=True):
        weight, b = weight_bias
        out = (bf16(a) @ bf16(weight).t() if emulate else a @ weight.t()) + (b if bias else 0)
        return bf16(out) if emulate and bf16_out else out

    def layer_norm(h):
        return F.layer_norm(h, (D,), eps=1e-6)

    n = x.shape[0]
    patches = x.reshape(n, CHANNELS, GRID, PATCH, GRID, PATCH).permute(0, 2, 4, 1, 3, 5)
    h = linear(patches.reshape(n, TOKENS, -1), w["patch"]) + position_embedding()
    freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
    sinusoid = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
    c = F.silu(linear(F.silu(linear(sinusoid, w["t1"])), w["t2"]) + w["table"][y])
    for i in range(DEPTH):
        shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, None] for m in linear(c, w[f"{i}.ada"]).chunk(6, 1))
        qkv = linear(layer_norm(h) * (1 + scale1) + shift1, w[f"{i}.qkv"], bf16_out=True)
        q, k, v = qkv.reshape(n, TOKENS, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) * HEAD_DIM ** -0.5
        if attention == "uniform":
            scores = torch.zeros_like(scores)
        elif attention == "scale/8":
            scores = scores * HEAD_DIM ** -0.5
        e = torch.exp(scores - scores.max(-1, keepdim=True).values)
        o = ((bf16(e) if emulate else e) @ v) / e.sum(-1, keepdim=True)
        o = o.transpose(1, 2).reshape(n, TOKENS, D)
        h = h + gate1 * (linear(bf16(o) if emulate else o, w[f"{i}.proj"], True, False) + w[f"{i}.proj"][1])
        m = F.gelu(linear(layer_norm(h) * (1 + scale2) + shift2, w[f"{i}.fc1"]), approximate="tanh")
        h = h + gate2 * (linear(bf16(m) if emulate else m, w[f"{i}.fc2"], True, False) + w[f"{i}.fc2"][1])
    shift, scale = (m[:, None] for m in linear(c, w["final_ada"]).chunk(2, 1))
    return linear(layer_norm(h) * (1 + scale) + shift, w["final"])


def main():
    gen = torch.Generator().manual_seed(0)
    base = random_weights(gen)
    x = torch.randn(3, CHANNELS, SIZE, SIZE, generator=gen)
    y = torch.tensor([3, 1000, 999])
    t = torch.full((3,), 500.0)

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    print("alpha beta   bf16      uniform   scale/8")
    for alpha, beta in [(1, 1), (4, 1), (1, 4), (4, 4)]:
        w = dict(base)
        for i in range(DEPTH):
            weight, bias = base[f"{i}.qkv"]
            factor = torch.ones(3 * D)
            factor[: 2 * D] = alpha
            w[f"{i}.qkv"] = (weight * factor[:, None], bias * factor)
            w[f"{i}.ada"] = tuple(p * beta for p in base[f"{i}.ada"])
        exact = forward(w, x, t, y)
        print(f"{alpha:5} {beta:4}   {rel(forward(w, x, t, y, emulate=True), exact):.2e}  "
              f"{rel(forward(w, x, t, y, attention='uniform'), exact):.2e}  "
              f"{rel(forward(w, x, t, y, attention='scale/8'), exact):.2e}", flush=True)


if __name__ == "__main__":
    main()
