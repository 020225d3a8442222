#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the fixed feature space of tstitch's Fashion-MNIST Frechet distance (FD).

Features: the top-k principal components of the real training images, preprocessed exactly as
tools/train_dit.py trains on them (28x28 padded with -1 to 32x32, one channel, values in [-1, 1];
no flips: the statistics describe the data, not the augmentation). A feature vector is
    f = components @ (x.flatten() - pixel_mean)            (k values per image)
and the real statistics are the mean and covariance of f over the 60000 training images. The
C++ side (include/tstitch/metrics/frechet.hpp) projects generated images the same way and
computes FD against these statistics.

Why PCA and not a classifier's features: it is deterministic, needs no training, and the top
components of Fashion-MNIST carry the garment shape and layout that a weak generator gets wrong.
Why k = 16 by default: FD from N samples is biased upwards by roughly tr(S) / N-order terms that
grow with k; at the demo's N (about 100-200 images) k = 64 makes the noise floor (real test images
against the training statistics) several times larger than the differences the demo must resolve.
`--choose-k` prints the measurement this choice rests on.

Output (safetensors, F32; the C++ side converts to double):
  pixel_mean     [1024]         mean training image
  components     [k, 1024]      principal directions, rows, unit length, by decreasing variance
  feature_mean   [k]            mean of f over the training images (~0 by construction)
  feature_cov    [k, k]         covariance of f (denominator n - 1)
  test_features  [T, k]         f of the first T t10k test images, for the noise floor at any N
  test_labels    [T]            their labels (as float32)

  .venv/bin/python tools/make_fd_stats.py                       # models/fashion_fd_stats.safetensors
  .venv/bin/python tools/make_fd_stats.py --choose-k            # the measurement behind k
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_dit import load_fashion_mnist  # noqa: E402  (same preprocessing as training)


def images_as_rows(split):
    x, y = load_fashion_mnist(split)
    return x.numpy().reshape(len(x), -1).astype(np.float64), y.numpy()


def pca(rows, k):
    mean = rows.mean(axis=0)
    centred = rows - mean
    cov = centred.T @ centred / (len(rows) - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    components = vectors[:, :k].T.copy()
    # eigh's sign is arbitrary: fix it so the file does not depend on the LAPACK build.
    for row in components:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return mean, components, values


def frechet(mu1, s1, mu2, s2):
    """|mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2), by symmetric eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    w2 = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.sum(np.sqrt(np.clip(w2, 0, None))))


def blur(rows, sigma):
    """Separable Gaussian blur of 32x32 images: a stand-in for a weaker generator."""
    radius = int(3 * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-t * t / (2 * sigma * sigma))
    kernel /= kernel.sum()
    img = rows.reshape(-1, 32, 32)
    pad = np.pad(img, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    out = sum(kernel[i] * pad[:, i:i + 32, radius:radius + 32] for i in range(len(t)))
    pad = np.pad(out, ((0, 0), (0, 0), (radius, radius)), mode="edge")
    out = sum(kernel[i] * pad[:, :, i:i + 32] for i in range(len(t)))
    return out.reshape(len(rows), -1)


def choose_k(train, test):
    mean, components, values = pca(train, 128)
    print(f"explained variance: " + ", ".join(
        f"k={k}: {values[:k].sum() / values.sum():.3f}" for k in (8, 16, 32, 64, 128)))
    rng = np.random.default_rng(0)
    print("FD of N real test images against the training statistics (noise floor), and of the same")
    print("images blurred (sigma 0.7 px, a mild degradation), mean over 20 draws of N; ratio = "
          "blurred / floor")
    print(f"{'k':>4} {'N':>5} {'floor':>9} {'blurred':>9} {'ratio':>6}")
    for k in (8, 16, 32, 64):
        w = components[:k]
        f_train = (train - mean) @ w.T
        mu, cov = f_train.mean(0), np.cov(f_train, rowvar=False)
        for n in (100, 200, 1000):
            floor, blurred = [], []
            for _ in range(20):
                idx = rng.choice(len(test), n, replace=False)
                for rows, acc in ((test[idx], floor), (blur(test[idx], 0.7), blurred)):
                    f = (rows - mean) @ w.T
                    acc.append(frechet(f.mean(0), np.cov(f, rowvar=False), mu, cov))
            print(f"{k:4d} {n:5d} {np.mean(floor):9.3f} {np.mean(blurred):9.3f} "
                  f"{np.mean(blurred) / np.mean(floor):6.2f}")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=32, help="number of principal components")
    parser.add_argument("--test-count", type=int, default=2000,
                        help="test images whose features are stored (noise floor)")
    parser.add_argument("--out", default=os.path.join(root, "models", "fashion_fd_stats.safetensors"))
    parser.add_argument("--choose-k", action="store_true", help="print the k measurement and exit")
    args = parser.parse_args()

    train, _ = images_as_rows("train")
    test, test_labels = images_as_rows("test")
    if args.choose_k:
        choose_k(train, test)
        return

    from safetensors.numpy import save_file

    mean, components, values = pca(train, args.k)
    f_train = (train - mean) @ components.T
    feature_mean = f_train.mean(axis=0)
    feature_cov = np.cov(f_train, rowvar=False)
    test_features = (test[:args.test_count] - mean) @ components.T
    tensors = {
        "pixel_mean": mean.astype(np.float32),
        "components": components.astype(np.float32),
        "feature_mean": feature_mean.astype(np.float32),
        "feature_cov": feature_cov.astype(np.float32),
        "test_features": test_features.astype(np.float32),
        "test_labels": test_labels[:args.test_count].astype(np.float32),
    }
    metadata = {
        "format": "tstitch-fd-stats",
        "description": "PCA feature space for the Frechet distance on Fashion-MNIST: "
                       "f = components @ (image.flatten() - pixel_mean)",
        "dataset": "fashion-mnist train (60000), 28x28 padded to 32x32 with -1, [-1, 1], no flips",
        "image_shape": "1,32,32",
        "k": str(args.k),
        "explained_variance": f"{values[:args.k].sum() / values.sum():.6f}",
        "train_count": str(len(train)),
        "test_features": f"first {args.test_count} t10k images",
        "generator": "tools/make_fd_stats.py",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=metadata)
    print(f"wrote {args.out}: k = {args.k}, explained variance "
          f"{values[:args.k].sum() / values.sum():.3f}, {args.test_count} test feature rows")


if __name__ == "__main__":
    main()
