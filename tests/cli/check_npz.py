# SPDX-License-Identifier: Apache-2.0
"""Checks a tstitch-sample .npz against the .npy of the same run.

usage: check_npz.py SAMPLES.npz SAMPLES.npy N H W C

The .npz must hold exactly arr_0, uint8 [N, H, W, C], equal to DiT's sample_ddp.py conversion of
the float32 [N, C, H', W'] samples: clamp(127.5 x + 128, 0, 255) cast to uint8, channels last, of
the centred H x W region when the .npz is smaller (--crop).
Exits 77 (a skip for ctest) when numpy is missing.
"""
import sys
import zipfile

try:
    import numpy as np
except ImportError:
    print("numpy is missing: skipped")
    sys.exit(77)

npz_path, npy_path = sys.argv[1], sys.argv[2]
shape = tuple(int(v) for v in sys.argv[3:7])
with zipfile.ZipFile(npz_path) as z:
    bad = z.testzip()
    assert bad is None, f"bad CRC in {bad}"
    assert z.namelist() == ["arr_0.npy"], z.namelist()
with np.load(npz_path) as f:
    assert list(f.keys()) == ["arr_0"], list(f.keys())
    images = f["arr_0"]
assert images.shape == shape, f"shape {images.shape}, expected {shape}"
assert images.dtype == np.uint8, f"dtype {images.dtype}"
x = np.load(npy_path)
assert x.dtype == np.float32 and x.shape[:2] == (shape[0], shape[3]), x.shape
# A smaller H x W is --crop's centred region (an odd margin's extra row or column after it).
top, left = (x.shape[2] - shape[1]) // 2, (x.shape[3] - shape[2]) // 2
assert top >= 0 and left >= 0, f"the .npz's {shape[1:3]} is larger than the .npy's {x.shape[2:]}"
x = x[:, :, top : top + shape[1], left : left + shape[2]]
# float32 throughout, two roundings, as torch does it; the cast truncates.
expected = np.clip(np.float32(127.5) * x + np.float32(128.0), 0, 255).astype(np.uint8)
expected = expected.transpose(0, 2, 3, 1)
mismatches = int((images != expected).sum())
assert mismatches == 0, f"{mismatches} pixels differ from the .npy's conversion"
print(f"npz ok: {images.shape} {images.dtype}, equal to the .npy's conversion")
