#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the safetensors fixtures of tests/test_safetensors.cpp with the official writer.

The files are written by Hugging Face's `safetensors` package (not by tstitch), so the test checks
tstitch's reader against an independent implementation. Needs numpy and safetensors >= 0.8
(`pip install safetensors`; TensorSpec is the 0.8 serialization API). numpy has no bfloat16, so
BF16 data is passed as raw uint16 words with dtype "bfloat16".

Usage: python3 tools/make_safetensors_fixtures.py [output dir, default tests/data/safetensors]

The expected values are repeated in tests/test_safetensors.cpp; keep the two in sync.
"""

import os
import sys

import numpy as np
import safetensors
from safetensors import TensorSpec, serialize_file


def spec(array, dtype=None):
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    array = np.require(array, requirements="C")
    assert sys.byteorder == "little"
    return TensorSpec(
        dtype=dtype or array.dtype.name,
        shape=list(array.shape),
        data_ptr=array.ctypes.data,
        data_len=array.nbytes,
    )


def bf16_words(values):
    """float32 -> bfloat16 bit patterns; the values below are exact in bfloat16, so truncation is
    exact (asserted)."""
    f32 = np.asarray(values, dtype=np.float32)
    words = (f32.view(np.uint32) >> 16).astype(np.uint16)
    back = (words.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(back, f32, equal_nan=True), "fixture values must be exact in bfloat16"
    return words


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "data", "safetensors")
    os.makedirs(out, exist_ok=True)

    arrays = {
        # F32 with values that are not exact in binary (0.1) to check all 32 bits.
        "blocks.0.attn.qkv.weight": np.array(
            [[0.0, 1.0, -2.5], [0.1, 3.0e38, -1.0e-40]], dtype=np.float32),
        # F16: normal, max, smallest normal, smallest subnormal, inf, -0.
        "blocks.0.mlp.fc1.weight": np.array(
            [1.0, -2.0, 0.5, 65504.0, 2.0**-14, 2.0**-24, np.inf, -0.0], dtype=np.float16),
        "scalar": np.array(42.5, dtype=np.float32),  # 0-d tensor, shape []
        "empty": np.zeros((0, 4), dtype=np.float32),  # no bytes at all
        "steps": np.array([1, -2, 3], dtype=np.int64),  # not readable as float
    }
    bf16 = bf16_words([1.0, -2.0, 3.140625, 2.0**100, -np.inf, 2.0**-130])  # last: subnormal
    tensors = {name: spec(array) for name, array in arrays.items()}
    tensors["final_layer.linear.bias"] = spec(bf16.reshape(2, 3), dtype="bfloat16")
    metadata = {"format": "pt", "note": "tstitch fixture \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9"}
    paths = [os.path.join(out, "official_mixed.safetensors"),
             os.path.join(out, "official_no_tensors.safetensors")]
    serialize_file(tensors, paths[0], metadata=metadata)
    # A file with metadata and no tensors: an 8-byte length, a header and an empty data section.
    serialize_file({}, paths[1], metadata={"only": "metadata"})
    for path in paths:
        os.chmod(path, 0o644)  # serialize_file writes through a 0600 temporary file
    print(f"wrote fixtures to {out} with safetensors {safetensors.__version__}")


if __name__ == "__main__":
    main()
