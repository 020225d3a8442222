#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Converts an official DiT checkpoint (.pt) into safetensors for tstitch's DiT.

Input: a facebookresearch/DiT state_dict, e.g. DiT-XL-2-256x256.pt, or a training checkpoint
that wraps one ({"model": ..., "ema": ..., "opt": ..., "args": ...}, as DiT's train.py and
T-Stitch's dit_s_256.pt etc. save; "ema" is preferred, as DiT's own find_model does; "model",
"state_dict" and "module" are tried next; a DistributedDataParallel "module." prefix is removed).

Output: the tensors under their official names (see tools/make_dit_golden.py official_shapes),
converted to --dtype, with __metadata__ (all strings): format "tstitch-dit", depth, hidden_size,
num_heads, patch_size, input_size, in_channels, num_classes, learn_sigma ("true"/"false"),
mlp_ratio. Everything but num_heads is read off the tensor shapes:
  hidden_size, in_channels, patch_size   x_embedder.proj.weight [D, C, p, p]
  depth                                  number of blocks.{i}.
  input_size                             sqrt(T) * p, T from pos_embed [1, T, D] (or --input-size
                                         when a checkpoint lacks pos_embed, which is then recomputed)
  num_classes                            y_embedder.embedding_table rows - 1 (the null class)
  learn_sigma                            final_layer.linear rows / (p*p) == 2 * C
  mlp_ratio                              blocks.0.mlp.fc1 rows / D
  num_heads                              not in the weights: DiT's presets by hidden size
                                         (384: 6, 768: 12, 1024: 16, 1152: 16), or --num-heads

Usage:
  .venv/bin/python tools/convert_dit_checkpoint.py DiT-XL-2-256x256.pt dit_xl_2_256.safetensors
  .venv/bin/python tools/convert_dit_checkpoint.py dit_s_256.pt dit_s_256.safetensors --dtype bf16
  .venv/bin/python tools/convert_dit_checkpoint.py --self-test   # round trip on the tiny golden
The pickle is loaded with torch.load(weights_only=True), which refuses arbitrary objects; a
checkpoint that also pickles e.g. an argparse.Namespace or optimizer state needs --trust-pickle
(runs code from the file: only for files you trust). torch 1.13's weights_only loader even
refuses plain Python floats, so DiT's train.py checkpoints (with "opt" and "args") need it;
the released DiT-XL-2-*.pt files are bare state_dicts and load without it.
"""

import argparse
import math
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dit_golden import (LN_EPS, MODEL_KEYS, official_pos_embed,  # noqa: E402
                             official_shapes)

HEAD_PRESETS = {384: 6, 768: 12, 1024: 16, 1152: 16}  # DiT-S, -B, -L, -XL
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
WRAPPER_KEYS = ("ema", "model", "state_dict", "module")

assert LN_EPS == 1e-6  # the format implies DiT's LayerNorm eps


def load_checkpoint(path, trust_pickle=False):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # pickle.UnpicklingError for non-tensor objects under weights_only
        if trust_pickle:
            raise
        raise SystemExit(f"{path}: torch.load(weights_only=True) failed ({e}).\n"
                         "If you trust this file, rerun with --trust-pickle.")
    return obj


def unwrap(obj):
    """The state_dict inside a checkpoint; returns (state_dict, description)."""
    path = []
    while isinstance(obj, dict) and "x_embedder.proj.weight" not in obj and \
            not any(k.startswith("module.x_embedder.") for k in obj):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                path.append(key)
                obj = obj[key]
                break
        else:
            keys = ", ".join(list(map(str, obj))[:10])
            raise SystemExit(f"no DiT state_dict found (top-level keys: {keys})")
    if not isinstance(obj, dict):
        raise SystemExit(f"expected a state_dict, found {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        path.append("module. prefix")
    return dict(obj), " / ".join(path) or "plain state_dict"


def infer_config(sd, num_heads=None, input_size=None, num_classes=None):
    def need(name):
        if name not in sd:
            raise SystemExit(f"missing tensor {name}")
        return sd[name]

    D, C, p, p2 = need("x_embedder.proj.weight").shape
    if p != p2:
        raise SystemExit(f"non-square patch {p}x{p2}")
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in sd:
        depth += 1
    if depth == 0:
        raise SystemExit("no blocks.0.attn.qkv.weight")

    if "pos_embed" in sd:
        T = sd["pos_embed"].shape[1]
        grid = math.isqrt(T)
        if grid * grid != T:
            raise SystemExit(f"pos_embed has {T} tokens, not a square grid")
        if input_size is not None and input_size != grid * p:
            raise SystemExit(f"--input-size {input_size} != {grid * p} implied by pos_embed")
        input_size = grid * p
    elif input_size is None:
        raise SystemExit("no pos_embed in the checkpoint: give --input-size (latent size)")

    rows = need("y_embedder.embedding_table.weight").shape[0]
    if num_classes is None:
        num_classes = rows - 1  # DiT trains with class dropout, so the table has a null row
    elif num_classes + 1 != rows:
        raise SystemExit(f"--num-classes {num_classes}: the table has {rows} rows, expected "
                         f"num_classes + 1 (tstitch needs the null class row)")

    out = need("final_layer.linear.weight").shape[0]
    if out % (p * p):
        raise SystemExit(f"final_layer.linear has {out} rows, not a multiple of p*p = {p * p}")
    if out // (p * p) == 2 * C:
        learn_sigma = True
    elif out // (p * p) == C:
        learn_sigma = False
    else:
        raise SystemExit(f"final_layer.linear gives {out // (p * p)} channels for C = {C}")

    hidden_mlp = need("blocks.0.mlp.fc1.weight").shape[0]
    if hidden_mlp % D:
        raise SystemExit(f"mlp hidden {hidden_mlp} is not a multiple of hidden size {D}")
    mlp_ratio = hidden_mlp // D

    if num_heads is None:
        if D not in HEAD_PRESETS:
            raise SystemExit(f"hidden size {D} is not a DiT preset {sorted(HEAD_PRESETS)}: "
                             "give --num-heads")
        num_heads = HEAD_PRESETS[D]
    if D % num_heads:
        raise SystemExit(f"hidden size {D} is not divisible by {num_heads} heads")

    return dict(depth=depth, hidden_size=D, num_heads=num_heads, patch_size=p,
                input_size=input_size, in_channels=C, num_classes=num_classes,
                learn_sigma=learn_sigma, mlp_ratio=mlp_ratio)


def metadata(cfg):
    meta = {"format": "tstitch-dit", "mlp_ratio": str(cfg["mlp_ratio"])}
    for k in MODEL_KEYS:
        v = cfg[k]
        meta[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return meta


def convert(sd, cfg, dtype, log=print):
    """Checks every tensor's shape against the official DiT and casts it to dtype."""
    if cfg["mlp_ratio"] != 4:
        raise SystemExit(f"mlp_ratio {cfg['mlp_ratio']}: DiT uses 4")
    shapes = official_shapes(cfg)
    sd = dict(sd)
    if "pos_embed" not in sd:
        grid = cfg["input_size"] // cfg["patch_size"]
        sd["pos_embed"] = torch.from_numpy(official_pos_embed(cfg["hidden_size"], grid)).float()[None]
        log("note: pos_embed missing, recomputed from the sin-cos equations")
    out = {}
    for name, shape in shapes.items():
        if name not in sd:
            raise SystemExit(f"missing tensor {name}")
        t = sd[name]
        if tuple(t.shape) != shape:
            raise SystemExit(f"{name}: shape {tuple(t.shape)}, expected {shape}")
        if not t.is_floating_point():
            raise SystemExit(f"{name}: dtype {t.dtype} is not floating point")
        out[name] = t.detach().to(dtype).contiguous()
    extra = sorted(set(sd) - set(shapes))
    if extra:
        log(f"warning: dropping {len(extra)} tensors that DiT does not use: {', '.join(extra[:8])}"
            + (" ..." if len(extra) > 8 else ""))
    return out


def run(src, dst, dtype_name="f32", num_heads=None, input_size=None, num_classes=None,
        trust_pickle=False, log=print):
    from safetensors.torch import save_file

    sd, where = unwrap(load_checkpoint(src, trust_pickle))
    cfg = infer_config(sd, num_heads, input_size, num_classes)
    tensors = convert(sd, cfg, DTYPES[dtype_name], log)
    meta = metadata(cfg)
    save_file(tensors, dst, metadata=meta)
    params = sum(t.numel() for n, t in tensors.items() if n != "pos_embed")
    log(f"{src} ({where}) -> {dst}: {len(tensors)} tensors, {params / 1e6:.2f} M parameters, "
        f"{dtype_name}, {os.path.getsize(dst)} bytes")
    log("  " + ", ".join(f"{k}={v}" for k, v in meta.items()))
    return tensors, meta


def self_test():
    """Round trip: the tiny golden weights -> .pt (several wrappings) -> convert -> compare."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(here, "..", "tests", "data", "dit", "tiny_dit.safetensors")
    ref = load_file(src)
    with safe_open(src, "pt") as f:
        ref_meta = f.metadata()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "plain": ref,
            "train_ckpt": {"model": {k: v + 1 for k, v in ref.items()}, "ema": ref,
                           "opt": {"state": {}}, "steps": 1000},
            "ddp": {"model": {"module." + k: v for k, v in ref.items()}},
            "extra_and_no_pos": {**{k: v for k, v in ref.items() if k != "pos_embed"},
                                 "unused.buffer": torch.zeros(3)},
        }
        failures = 0
        for case, obj in cases.items():
            pt = os.path.join(tmp, case + ".pt")
            torch.save(obj, pt)
            for dname, dtype in DTYPES.items():
                dst = os.path.join(tmp, f"{case}_{dname}.safetensors")
                kw = {"input_size": 8} if case == "extra_and_no_pos" else {}
                run(pt, dst, dname, num_heads=4, log=lambda *_: None, **kw)
                got = load_file(dst)
                with safe_open(dst, "pt") as f:
                    meta = f.metadata()
                ok = meta == ref_meta and got.keys() == ref.keys()
                for k in ref:
                    expect = ref[k].to(dtype)
                    if case == "extra_and_no_pos" and k == "pos_embed":
                        ok = ok and got[k].dtype == dtype and torch.allclose(
                            got[k].float(), expect.float(), rtol=0, atol=1e-6 if dname == "f32" else 1e-2)
                    else:
                        ok = ok and got[k].dtype == dtype and torch.equal(got[k], expect)
                print(f"self-test {case:17s} {dname:4s}: {'ok' if ok else 'FAILED'}")
                failures += not ok
        # Errors are reported, not mangled.
        bad = {k: v for k, v in ref.items() if k != "blocks.1.mlp.fc2.bias"}
        torch.save(bad, os.path.join(tmp, "bad.pt"))
        try:
            run(os.path.join(tmp, "bad.pt"), os.path.join(tmp, "bad.safetensors"), num_heads=4,
                log=lambda *_: None)
            print("self-test missing tensor: FAILED (no error)")
            failures += 1
        except SystemExit as e:
            print(f"self-test missing tensor: ok ({e})")
        heads = dict(ref)  # hidden 64 is no preset: --num-heads is required
        torch.save(heads, os.path.join(tmp, "heads.pt"))
        try:
            run(os.path.join(tmp, "heads.pt"), os.path.join(tmp, "h.safetensors"),
                num_heads=None, log=lambda *_: None)
        except SystemExit as e:
            print(f"self-test num_heads required: ok ({e})")
        else:
            print("self-test num_heads required: FAILED (no error)")
            failures += 1
        # A checkpoint that pickles a Namespace (as DiT's train.py does) needs --trust-pickle.
        ns = os.path.join(tmp, "ns.pt")
        torch.save({"ema": ref, "args": argparse.Namespace(model="DiT-S/2")}, ns)
        try:
            run(ns, os.path.join(tmp, "ns.safetensors"), num_heads=4, log=lambda *_: None)
            print("self-test weights_only refusal: FAILED (loaded)")
            failures += 1
        except SystemExit:
            got = run(ns, os.path.join(tmp, "ns.safetensors"), num_heads=4, trust_pickle=True,
                      log=lambda *_: None)[0]
            ok = all(torch.equal(got[k], ref[k]) for k in ref)
            print(f"self-test Namespace with --trust-pickle: {'ok' if ok else 'FAILED'}")
            failures += not ok
    print("self-test:", "FAILED" if failures else "all ok")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", nargs="?", help="official DiT checkpoint (.pt)")
    ap.add_argument("output", nargs="?", help="output .safetensors")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    ap.add_argument("--num-heads", type=int, help="override the preset chosen by hidden size")
    ap.add_argument("--input-size", type=int, help="latent size, only needed without pos_embed")
    ap.add_argument("--num-classes", type=int, help="check the class count (table rows - 1)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="torch.load(weights_only=False): may run code in the file")
    ap.add_argument("--self-test", action="store_true", help="round-trip test on the tiny golden")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.input or not args.output:
        ap.error("input and output are required")
    run(args.input, args.output, args.dtype, args.num_heads, args.input_size, args.num_classes,
        args.trust_pickle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
