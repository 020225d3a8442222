#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Exports a tstitch DiT safetensors file (the shipped Fashion models) to TorchScript, for LibTorch.

The weights go into train_dit.py's PyTorch DiT, which is traced with a batch of two:
forward(x: float32 [N, C, H, W], t: float32 [N], y: int64 [N]) -> [N, C_out, H, W]. The batch
size stays free (the trace reads it from x), which the export checks on a batch of three.

  /usr/bin/python3 tools/export_torchscript.py models/fashion_dit_l.safetensors fashion_dit_l.pt

--hostile DIR writes the small scripted modules the LibTorch adapter's tests feed it: modules whose
input names, output shape, output dtype, output type or arithmetic do not fit a denoiser's call.

Needs torch and numpy only (the safetensors file is read here, not with the safetensors package).
"""

import argparse
import json
import os
import struct
import sys
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dit_golden import MODEL_KEYS  # noqa: E402
from train_dit import DiT  # noqa: E402

NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    """(name -> float32 torch tensor, metadata dict). BF16 is widened by its bits."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = memoryview(data)[8 + header_len:]
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = body[begin:end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            values = bits.view(np.float32)
        elif info["dtype"] in NUMPY_DTYPES:
            values = np.frombuffer(raw, dtype=NUMPY_DTYPES[info["dtype"]]).astype(np.float32)
        else:
            raise SystemExit(f"{path}: tensor '{name}' has dtype {info['dtype']}; "
                             f"expected F32, F16, BF16 or F64")
        tensors[name] = torch.from_numpy(values.reshape(info["shape"]).copy())
    return tensors, meta


def config_of(meta, path):
    if meta.get("format") != "tstitch-dit":
        raise SystemExit(f"{path}: metadata 'format' = {meta.get('format')!r}; expected "
                         f"'tstitch-dit' (convert official checkpoints first)")
    cfg = {}
    for key in MODEL_KEYS:
        if key not in meta:
            raise SystemExit(f"{path}: metadata has no '{key}'")
        value = meta[key]
        cfg[key] = value.lower() == "true" if key == "learn_sigma" else int(value)
    return cfg


def load_dit(path):
    tensors, meta = read_safetensors(path)
    cfg = config_of(meta, path)
    model = DiT(cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{path}: weights do not fit the DiT of its metadata "
                         f"(missing {missing}, unexpected {unexpected})")
    return model.eval(), cfg


def export_model(src, dst):
    model, cfg = load_dit(src)
    C, S = cfg["in_channels"], cfg["input_size"]
    gen = torch.Generator().manual_seed(0)

    def inputs(n):
        return (torch.randn(n, C, S, S, generator=gen), torch.full((n,), 500.0),
                torch.arange(n, dtype=torch.int64) % (cfg["num_classes"] + 1))

    # DiT's timestep features are float32 whatever the weights' dtype: cast them to the first
    # timestep layer's (type_as stays an operation in the trace), so that the module converted to
    # bf16 or f16 in LibTorch (module.to) runs in that dtype.
    model.t_embedder.mlp[0].register_forward_pre_hook(lambda m, args: (args[0].type_as(m.weight),))
    with torch.no_grad():
        traced = torch.jit.trace(model, inputs(2), check_trace=False)
        probe = inputs(3)  # another batch size: the trace must not have fixed N
        err = (traced(*probe) - model(*probe)).abs().max().item()
    if err > 1e-6:
        raise SystemExit(f"{src}: the trace differs from the model by {err} at batch 3")
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    traced.save(dst)
    print(f"wrote {dst} ({cfg})")


# -- Hostile modules: each breaks one thing a denoiser's call relies on. -------------------------

class WrongInputName(torch.nn.Module):
    """The latents are called 'latents', not 'x'."""

    def forward(self, latents: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return latents * 0.5


class WrongOutputShape(torch.nn.Module):
    """Returns half the rows of the image."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x[:, :, : x.shape[2] // 2, :]


class WrongOutputDtype(torch.nn.Module):
    """Returns float64."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.double()


class TupleOutput(torch.nn.Module):
    """Returns a tuple where a tensor is expected."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        return x, x


class DictOutput(torch.nn.Module):
    """Returns its prediction by name: {'eps': 0.5 x + t/1000, 'aux': x}."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"eps": x * 0.5 + (t / 1000.0)[:, None, None, None], "aux": x}


class WrongInputShape(torch.nn.Module):
    """A linear layer over 3 channels: fails inside forward on 1-channel latents."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mix(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class WrongInputDtype(torch.nn.Module):
    """float64 weights: fails inside forward on float32 latents."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1, 1, 1, 1, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.scale)


class WritesInput(torch.nn.Module):
    """Doubles its latents in place (what a module must not do): shows whether the adapter handed
    it tstitch's buffer itself or a copy."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0)
        return x.clone()


HOSTILE = {
    "wrong_input_name": WrongInputName,
    "wrong_output_shape": WrongOutputShape,
    "wrong_output_dtype": WrongOutputDtype,
    "tuple_output": TupleOutput,
    "dict_output": DictOutput,
    "wrong_input_shape": WrongInputShape,
    "wrong_input_dtype": WrongInputDtype,
    "writes_input": WritesInput,
}


def export_hostile(folder):
    os.makedirs(folder, exist_ok=True)
    for name, cls in HOSTILE.items():
        path = os.path.join(folder, name + ".pt")
        torch.jit.script(cls().eval()).save(path)
        print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", help="tstitch DiT safetensors file")
    ap.add_argument("dst", nargs="?", help="TorchScript file to write (.pt)")
    ap.add_argument("--hostile", metavar="DIR", help="write the adapter tests' hostile modules here")
    args = ap.parse_args()
    if bool(args.src) != bool(args.dst) or not (args.src or args.hostile):
        ap.error("give SRC and DST, --hostile DIR, or both")
    torch.manual_seed(0)
    if args.src:
        export_model(args.src, args.dst)
    if args.hostile:
        export_hostile(args.hostile)


if __name__ == "__main__":
    main()
