#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Trains the Fashion-MNIST classifier whose penultimate features are the demo's second feature
space, and writes it with the real images' feature statistics.

Why a classifier: the PCA space of tools/make_fd_stats.py measures pixel-space layout, and is
nearly blind to the defects a weak generator makes (a dress broken in two still has the right
mean brightness where a dress should be). A classifier's features respond to whether the image
is recognisably an object of its class, which is what FID's Inception features do on ImageNet.
It also gives the class accuracy of generated samples (their label is the class they were
conditioned on).

Model: an MLP 1024 -> 256 -> 64 -> 10 with ReLU on the padded 32x32 images in [-1, 1] (the same
preprocessing as tools/train_dit.py); features = the 64 ReLU outputs of the second layer. Adam
1e-3, batch 128, 4 epochs, one seeded generator, 2 CPU threads: about 30 s on 2 cores, about
86% test accuracy.

Output (F32, metadata format "tstitch-classifier"): fc1/fc2/fc3 .weight [out, in] and .bias,
feature_mean [64] and feature_cov [64, 64] over the 60000 training images, test_features
[2000, 64] of the first 2000 test images (the demo's noise floor), test_labels [2000].

  .venv/bin/python tools/train_classifier.py --out models/fashion_classifier.safetensors
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_dit import load_fashion_mnist  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(args.seed)

    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    fc1, fc2, fc3 = torch.nn.Linear(1024, 256), torch.nn.Linear(256, 64), torch.nn.Linear(64, 10)
    for layer in (fc1, fc2, fc3):  # seeded init, independent of torch's global generator
        bound = 1.0 / layer.in_features ** 0.5
        with torch.no_grad():
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
    params = [p for layer in (fc1, fc2, fc3) for p in layer.parameters()]

    def features(images):
        h = torch.relu(fc1(images.reshape(images.shape[0], -1)))
        return torch.relu(fc2(h))

    opt = torch.optim.Adam(params, lr=1e-3)
    for epoch in range(args.epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 128):
            idx = perm[i:i + 128]
            loss = torch.nn.functional.cross_entropy(fc3(features(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((fc3(features(xt)).argmax(1) == yt).float().mean())
        print(f"epoch {epoch + 1}: loss {float(loss):.4f}, test accuracy {acc:.4f}", flush=True)

    with torch.no_grad():
        f = features(x).double()
        mean = f.mean(0)
        centred = f - mean
        cov = centred.T @ centred / (f.shape[0] - 1)
        test_features = features(xt[:2000])
    tensors = {"fc1.weight": fc1.weight, "fc1.bias": fc1.bias, "fc2.weight": fc2.weight,
               "fc2.bias": fc2.bias, "fc3.weight": fc3.weight, "fc3.bias": fc3.bias,
               "feature_mean": mean, "feature_cov": cov, "test_features": test_features,
               "test_labels": yt[:2000]}
    from safetensors.torch import save_file
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, args.out,
              metadata={"format": "tstitch-classifier", "test_accuracy": f"{acc:.4f}",
                        "epochs": str(args.epochs), "seed": str(args.seed),
                        "generator": "tools/train_classifier.py",
                        "features": "ReLU(fc2(ReLU(fc1(x)))), x = 32x32 image in [-1, 1], flattened"})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes), test accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
