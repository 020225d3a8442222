#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the DiT golden files of the C++ DiT parity test (tests/data/dit/).

Two independent PyTorch implementations are run on the same random weights:

  * diffusers' DiTTransformer2DModel, configured as facebookresearch/DiT (see DIFFUSERS FIXES),
    whose float32 output is stored as the golden `out`;
  * this file's own implementation of the published DiT equations (OfficialDiT below), which reads
    the weights under the official state_dict names; it must agree with diffusers to a relative L2
    error below 1e-6, which proves the diffusers <-> official name mapping.

Every parameter is random and non-zero (also those DiT's own init zeroes: the adaLN modulations
and the final layer), scaled by fan-in so activations stay O(1) and the test is sensitive.

Files (weights under the official names, F32, with the "tstitch-dit" metadata):
  tiny_dit.safetensors          depth 2, hidden 64, 4 heads, patch 2, 8x8x4 input, 10 classes,
                                learn_sigma (8 output channels)
  tiny_dit_golden.safetensors   x [4,4,8,8], t [4], y [4] (float class ids, 10 = null class),
                                out [4,8,8,8] (diffusers, float32), out_f64 [4,8,8,8] (the official
                                equations in float64, rounded to F32; for diagnosing tolerance)
  tiny_dit_p4*.safetensors      depth 1, hidden 40, 5 heads (head dim 8), patch 4, 16x16x3 input,
                                7 classes, no learn_sigma, B = 2 (hidden 48 would push the four
                                files past 1 MB)

DIFFUSERS FIXES. diffusers' DiT port differs from facebookresearch/DiT in two places, which this
script corrects after building the model (both are asserted by the independent check):
  * norm_eps: the LayerNorm before each block's MLP uses the block's `norm_eps` (default 1e-5);
    DiT uses 1e-6 everywhere -> norm_eps=1e-6.
  * timestep frequencies: diffusers' CombinedTimestepLabelEmbeddings uses downscale_freq_shift=1,
    i.e. exp(-ln(10000) * i / 127); DiT uses exp(-ln(10000) * i / 128) -> shift 0.

Usage:
  .venv/bin/python tools/make_dit_golden.py [--out-dir tests/data/dit] [--verify]
--verify recomputes everything and compares with the files on disk instead of writing them.
The bench and converter tools import OfficialDiT, official_shapes and official_pos_embed from here.
"""

import argparse
import copy
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

FREQ_DIM = 256  # DiT's TimestepEmbedder frequency_embedding_size
MAX_PERIOD = 10000
LN_EPS = 1e-6
MLP_RATIO = 4

CONFIGS = {
    "tiny_dit": dict(
        depth=2, hidden_size=64, num_heads=4, patch_size=2, input_size=8, in_channels=4,
        num_classes=10, learn_sigma=True, seed=20240611,
        t=[999.0, 500.0, 1.0, 250.5], y=[3, 10, 0, 9]),
    "tiny_dit_p4": dict(
        depth=1, hidden_size=40, num_heads=5, patch_size=4, input_size=16, in_channels=3,
        num_classes=7, learn_sigma=False, seed=20240612,
        t=[999.0, 37.25], y=[7, 2]),
}

MODEL_KEYS = ("depth", "hidden_size", "num_heads", "patch_size", "input_size", "in_channels",
              "num_classes", "learn_sigma")


# --------------------------------------------------------------------------------------------
# The official DiT (facebookresearch/DiT models.py), from the published equations.
# --------------------------------------------------------------------------------------------

def out_channels(cfg):
    return 2 * cfg["in_channels"] if cfg["learn_sigma"] else cfg["in_channels"]


def official_shapes(cfg):
    """Official state_dict name -> shape, in the order of the official module tree."""
    D, C, p = cfg["hidden_size"], cfg["in_channels"], cfg["patch_size"]
    T = (cfg["input_size"] // p) ** 2
    shapes = {
        "pos_embed": (1, T, D),
        "x_embedder.proj.weight": (D, C, p, p),
        "x_embedder.proj.bias": (D,),
        "t_embedder.mlp.0.weight": (D, FREQ_DIM),
        "t_embedder.mlp.0.bias": (D,),
        "t_embedder.mlp.2.weight": (D, D),
        "t_embedder.mlp.2.bias": (D,),
        "y_embedder.embedding_table.weight": (cfg["num_classes"] + 1, D),
    }
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.qkv.weight": (3 * D, D),
            b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D),
            b + "attn.proj.bias": (D,),
            b + "mlp.fc1.weight": (MLP_RATIO * D, D),
            b + "mlp.fc1.bias": (MLP_RATIO * D,),
            b + "mlp.fc2.weight": (D, MLP_RATIO * D),
            b + "mlp.fc2.bias": (D,),
            b + "adaLN_modulation.1.weight": (6 * D, D),
            b + "adaLN_modulation.1.bias": (6 * D,),
        })
    shapes.update({
        "final_layer.linear.weight": (p * p * out_channels(cfg), D),
        "final_layer.linear.bias": (p * p * out_channels(cfg),),
        "final_layer.adaLN_modulation.1.weight": (2 * D, D),
        "final_layer.adaLN_modulation.1.bias": (2 * D,),
    })
    return shapes


def official_pos_embed(hidden_size, grid_size):
    """MAE/DiT fixed 2-D sin-cos embedding, float64 [grid*grid, D]. Token n = (row, col) =
    divmod(n, grid); the first D/2 channels encode the column, the last D/2 the row; each half is
    [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (D/4)), k < D/4."""
    assert hidden_size % 4 == 0
    quarter = hidden_size // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.divmod(np.arange(grid_size * grid_size, dtype=np.float64), grid_size)

    def half(pos):
        out = pos[:, None] * omega[None, :]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([half(cols), half(rows)], axis=1)


def timestep_embedding(t, dtype):
    """cat(cos(t * f), sin(t * f)), f_i = exp(-ln(10000) * i / 128), i < 128. The official code
    computes this in float32 whatever the model dtype; dtype=float64 gives the exact values."""
    half = FREQ_DIM // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class OfficialDiT(torch.nn.Module):
    """DiT forward from the published equations; weights under the official names.

    Plain torch ops only (conv2d, linear, layer_norm, softmax, gelu-tanh), exportable to ONNX.
    sinusoid_dtype: dtype of the timestep sinusoid (float32 = what the official code does).
    The LayerNorms pass an explicit weight of ones and bias of zeros: the same values as DiT's
    affine-free LayerNorm, but ONNX-friendly. Without a weight, torch 1.13's exporter (opset 17)
    emits a LayerNormalization with an empty scale, which its checker rejects; without a bias it
    emits an empty bias input, on which ONNX Runtime (1.20 - 1.32 tried) segfaults at session
    creation with ORT_ENABLE_EXTENDED/ALL (onnxruntime#18967, pytorch#116574).
    """

    def __init__(self, cfg, weights, dtype=torch.float32, sinusoid_dtype=torch.float32):
        super().__init__()
        self.cfg = dict(cfg)
        self.names = list(official_shapes(cfg))
        self.w = torch.nn.ParameterDict({
            n.replace(".", "__"): torch.nn.Parameter(weights[n].to(dtype).clone(), requires_grad=False)
            for n in self.names})
        self.register_buffer("ln_one", torch.ones(cfg["hidden_size"], dtype=dtype))
        self.register_buffer("ln_zero", torch.zeros(cfg["hidden_size"], dtype=dtype))
        self.sinusoid_dtype = sinusoid_dtype

    def W(self, name):
        return self.w[name.replace(".", "__")]

    def ln(self, h):
        return F.layer_norm(h, (h.shape[-1],), self.ln_one, self.ln_zero, LN_EPS)

    def forward(self, x, t, y):
        cfg, W = self.cfg, self.W
        D, H, p = cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"]
        g = cfg["input_size"] // p
        T, hd, B = g * g, D // H, x.shape[0]

        # Patch embedding (conv, kernel = stride = p) and fixed positional embedding.
        h = F.conv2d(x, W("x_embedder.proj.weight"), W("x_embedder.proj.bias"), stride=p)
        h = h.flatten(2).transpose(1, 2) + W("pos_embed")                    # [B, T, D]

        # Conditioning c = MLP(sinusoid(t)) + table[y].
        tf = timestep_embedding(t, self.sinusoid_dtype).to(h.dtype)
        temb = F.linear(F.silu(F.linear(tf, W("t_embedder.mlp.0.weight"), W("t_embedder.mlp.0.bias"))),
                        W("t_embedder.mlp.2.weight"), W("t_embedder.mlp.2.bias"))
        c = temb + F.embedding(y, W("y_embedder.embedding_table.weight"))
        sc = F.silu(c)

        for i in range(cfg["depth"]):
            b = f"blocks.{i}."
            mod = F.linear(sc, W(b + "adaLN_modulation.1.weight"), W(b + "adaLN_modulation.1.bias"))
            shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, None, :] for m in mod.chunk(6, dim=1))

            a = self.ln(h) * (1 + scale1) + shift1
            qkv = F.linear(a, W(b + "attn.qkv.weight"), W(b + "attn.qkv.bias"))
            qkv = qkv.reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)          # [3, B, H, T, hd]
            att = torch.softmax(torch.matmul(qkv[0], qkv[1].transpose(-2, -1)) * hd ** -0.5, dim=-1)
            a = torch.matmul(att, qkv[2]).transpose(1, 2).reshape(B, T, D)
            a = F.linear(a, W(b + "attn.proj.weight"), W(b + "attn.proj.bias"))
            h = h + gate1 * a

            m = self.ln(h) * (1 + scale2) + shift2
            m = F.gelu(F.linear(m, W(b + "mlp.fc1.weight"), W(b + "mlp.fc1.bias")), approximate="tanh")
            m = F.linear(m, W(b + "mlp.fc2.weight"), W(b + "mlp.fc2.bias"))
            h = h + gate2 * m

        shift, scale = (m[:, None, :] for m in F.linear(
            sc, W("final_layer.adaLN_modulation.1.weight"),
            W("final_layer.adaLN_modulation.1.bias")).chunk(2, dim=1))
        h = F.linear(self.ln(h) * (1 + scale) + shift,
                     W("final_layer.linear.weight"), W("final_layer.linear.bias"))  # [B, T, p*p*Co]

        # Unpatchify: token (r, c) channel (i, j, o) -> out[o, r*p + i, c*p + j].
        co = out_channels(cfg)
        h = h.reshape(B, g, g, p, p, co).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(B, co, g * p, g * p)


# --------------------------------------------------------------------------------------------
# diffusers <-> official names.
# --------------------------------------------------------------------------------------------

# Per-block renames (official suffix after "blocks.{i}." -> diffusers suffix after
# "transformer_blocks.{i}."); qkv is split into to_q/to_k/to_v separately.
BLOCK_RENAMES = {
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm1.linear",
}
# DiT's shared embedders: diffusers keeps one copy per block (in AdaLayerNormZero.emb) and its
# final layer uses block 0's.
SHARED_RENAMES = {
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
    "y_embedder.embedding_table": "norm1.emb.class_embedder.embedding_table",
}
TOP_RENAMES = {
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.adaLN_modulation.1": "proj_out_1",
    "final_layer.linear": "proj_out_2",
}


def official_to_diffusers(w, depth):
    """Official state_dict -> DiTTransformer2DModel state_dict. `pos_embed` is dropped: diffusers
    recomputes it into the non-persistent buffer pos_embed.pos_embed."""
    sd = {}
    for off, dif in TOP_RENAMES.items():
        for s in ("weight", "bias"):
            sd[f"{dif}.{s}"] = w[f"{off}.{s}"]
    for i in range(depth):
        b, tb = f"blocks.{i}.", f"transformer_blocks.{i}."
        for off, dif in SHARED_RENAMES.items():
            for s in ("weight", "bias") if "table" not in off else ("weight",):
                sd[f"{tb}{dif}.{s}"] = w[f"{off}.{s}"]
        for off, dif in BLOCK_RENAMES.items():
            for s in ("weight", "bias"):
                sd[f"{tb}{dif}.{s}"] = w[f"{b}{off}.{s}"]
        for s in ("weight", "bias"):
            q, k, v = w[f"{b}attn.qkv.{s}"].chunk(3, dim=0)
            sd[f"{tb}attn1.to_q.{s}"], sd[f"{tb}attn1.to_k.{s}"], sd[f"{tb}attn1.to_v.{s}"] = q, k, v
    return sd


def diffusers_to_official(sd, depth, pos_embed):
    """Inverse of official_to_diffusers; checks that the per-block embedder copies agree."""
    w = {"pos_embed": pos_embed}
    for off, dif in TOP_RENAMES.items():
        for s in ("weight", "bias"):
            w[f"{off}.{s}"] = sd[f"{dif}.{s}"]
    for off, dif in SHARED_RENAMES.items():
        for s in ("weight", "bias") if "table" not in off else ("weight",):
            copies = [sd[f"transformer_blocks.{i}.{dif}.{s}"] for i in range(depth)]
            for other in copies[1:]:
                if not torch.equal(other, copies[0]):
                    raise ValueError(f"diffusers blocks disagree on the shared {off}.{s}")
            w[f"{off}.{s}"] = copies[0]
    for i in range(depth):
        b, tb = f"blocks.{i}.", f"transformer_blocks.{i}."
        for off, dif in BLOCK_RENAMES.items():
            for s in ("weight", "bias"):
                w[f"{b}{off}.{s}"] = sd[f"{tb}{dif}.{s}"]
        for s in ("weight", "bias"):
            w[f"{b}attn.qkv.{s}"] = torch.cat([sd[f"{tb}attn1.to_{n}.{s}"] for n in "qkv"], dim=0)
    return w


def build_diffusers(cfg, official=True):
    """DiTTransformer2DModel for cfg; official=False keeps diffusers' own eps and frequencies."""
    from diffusers import DiTTransformer2DModel

    D, H = cfg["hidden_size"], cfg["num_heads"]
    model = DiTTransformer2DModel(
        num_attention_heads=H, attention_head_dim=D // H, in_channels=cfg["in_channels"],
        out_channels=out_channels(cfg), num_layers=cfg["depth"], dropout=0.0,
        attention_bias=True, sample_size=cfg["input_size"], patch_size=cfg["patch_size"],
        activation_fn="gelu-approximate", num_embeds_ada_norm=cfg["num_classes"],
        norm_type="ada_norm_zero", norm_elementwise_affine=False,
        # DiT: 1e-6 (diffusers' default 1e-5 is used by the pre-MLP LayerNorm, norm3)
        **({"norm_eps": LN_EPS} if official else {}))
    for block in model.transformer_blocks if official else ():
        proj = block.norm1.emb.time_proj
        assert proj.num_channels == FREQ_DIM and proj.flip_sin_to_cos and proj.scale == 1
        proj.downscale_freq_shift = 0  # DiT: exp(-ln(10000) * i / 128), diffusers: .../ 127
    if official:
        # eps 1e-5 vs 1e-6 moves the output by only ~1e-6 (relative L2), below what the numeric
        # check can tell from rounding, so check it structurally.
        norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert len(norms) == 2 * cfg["depth"] + 1
        assert all(m.eps == LN_EPS and not m.elementwise_affine for m in norms)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Golden generation.
# --------------------------------------------------------------------------------------------

def init_std(name, shape):
    """Fan-in scaling: O(1) activations everywhere; modulations (shift/scale/gate) ~0.2-0.3."""
    if name == "y_embedder.embedding_table.weight":
        return 0.5
    if name.endswith(".bias"):
        return 0.1
    fan_in = int(np.prod(shape[1:]))
    if "adaLN_modulation" in name:
        return 0.5 / math.sqrt(fan_in)
    return 1.0 / math.sqrt(fan_in)


def random_weights(cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    w = {}
    for name, shape in official_shapes(cfg).items():
        if name == "pos_embed":
            grid = cfg["input_size"] // cfg["patch_size"]
            w[name] = torch.from_numpy(official_pos_embed(cfg["hidden_size"], grid)).float()[None]
        else:
            w[name] = (torch.randn(shape, generator=gen, dtype=torch.float64)
                       * init_std(name, shape)).float()
    return w


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def metadata(cfg):
    meta = {"format": "tstitch-dit", "mlp_ratio": str(MLP_RATIO)}
    for k in MODEL_KEYS:
        v = cfg[k]
        meta[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return meta


def make(name, cfg):
    """Returns (weights, golden tensors, report lines)."""
    import diffusers

    torch.manual_seed(0)  # nothing below should draw from the global generator; belt and braces
    w = random_weights(cfg)
    depth = cfg["depth"]
    report = [f"[{name}] " + ", ".join(f"{k}={cfg[k]}" for k in MODEL_KEYS)]

    model = build_diffusers(cfg)
    sd = official_to_diffusers(w, depth)
    model.load_state_dict(sd, strict=True)  # every diffusers parameter comes from `w`
    for pname, param in model.named_parameters():
        assert bool((param != 0).all()), f"{pname} has zeros"
    # pos_embed: diffusers' buffer vs the equations; and the mapping round-trips bit for bit.
    buf = model.pos_embed.pos_embed
    assert buf.shape == w["pos_embed"].shape and torch.equal(buf, w["pos_embed"]), "pos_embed"
    back = diffusers_to_official(model.state_dict(), depth, buf)
    assert back.keys() == w.keys() and all(torch.equal(back[k], w[k]) for k in w), "round trip"

    # Inputs.
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    B, C, S = len(cfg["t"]), cfg["in_channels"], cfg["input_size"]
    x = torch.randn((B, C, S, S), generator=gen, dtype=torch.float64).float()
    t = torch.tensor(cfg["t"], dtype=torch.float32)
    y = torch.tensor(cfg["y"], dtype=torch.int64)
    assert int(y.max()) <= cfg["num_classes"] and cfg["num_classes"] in cfg["y"]

    with torch.inference_mode():
        out = model(x, timestep=t, class_labels=y).sample
        out_d64 = copy.deepcopy(model).double()(x.double(), timestep=t.double(), class_labels=y).sample
        ref32 = OfficialDiT(cfg, w)(x, t, y)
        ref64_t32 = OfficialDiT(cfg, w, torch.float64)(x.double(), t.double(), y)
        ref64 = OfficialDiT(cfg, w, torch.float64, torch.float64)(x.double(), t.double(), y)
        # How far the unfixed diffusers port is from DiT (for the report only).
        raw = build_diffusers(cfg, official=False)
        raw.load_state_dict(sd, strict=True)
        out_raw = raw(x, timestep=t, class_labels=y).sample

    co = out_channels(cfg)
    assert out.shape == (B, co, S, S) and out.dtype == torch.float32
    err_indep = rel_l2(out, ref32)
    report += [
        f"  diffusers {diffusers.__version__} f32 vs official equations f32:      rel L2 {err_indep:.3e}",
        f"  diffusers f32 vs official f64 (f64 sinusoid):          rel L2 {rel_l2(out, ref64):.3e}",
        f"  diffusers f32 vs official f64 (f32 sinusoid, as DiT):  rel L2 {rel_l2(out, ref64_t32):.3e}",
        f"  diffusers f32 vs diffusers .double() (f32 sinusoid):   rel L2 {rel_l2(out, out_d64):.3e}",
        f"  official f64: f32 sinusoid vs f64 sinusoid:            rel L2 {rel_l2(ref64_t32, ref64):.3e}",
        f"  official f32 vs official f64 (f64 sinusoid):           rel L2 {rel_l2(ref32, ref64):.3e}",
        f"  unfixed diffusers (freq shift 1, eps 1e-5) vs DiT:     rel L2 {rel_l2(out_raw, ref64):.3e}",
        f"  |out| rms {float(out.double().pow(2).mean().sqrt()):.3f}, max {float(out.abs().max()):.3f}",
    ]
    if err_indep >= 1e-6:
        raise SystemExit(f"{name}: diffusers and the official equations disagree ({err_indep:.3e})")

    golden = {"x": x, "t": t, "y": y.float(), "out": out.contiguous(),
              "out_f64": ref64.float().contiguous()}
    return w, golden, report


def save(path, tensors, meta):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)


def same_content(path, tensors, meta):
    """Whether `path` holds exactly these tensors (dtype, shape, bits) and metadata values
    (the library versions in a golden's metadata excepted)."""
    from safetensors import safe_open
    if not os.path.exists(path):
        return False
    with safe_open(path, "pt") as f:
        disk_meta = f.metadata() or {}
        if set(f.keys()) != set(tensors):
            return False
        for k, v in tensors.items():
            d = f.get_tensor(k)
            if d.dtype != v.dtype or d.shape != v.shape or not torch.equal(d, v):
                return False
    ignored = ("torch", "diffusers")
    return ({k: v for k, v in disk_meta.items() if k not in ignored}
            == {k: v for k, v in meta.items() if k not in ignored})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "tests", "data", "dit"))
    ap.add_argument("--verify", action="store_true",
                    help="compare with the files on disk instead of writing them")
    args = ap.parse_args()
    out_dir = os.path.normpath(args.out_dir)
    torch.set_num_threads(1)  # bit-reproducible reductions

    import diffusers
    import safetensors
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"safetensors {safetensors.__version__}, numpy {np.__version__}")
    failures = 0
    total = 0
    for name, cfg in CONFIGS.items():
        w, golden, report = make(name, cfg)
        print("\n".join(report))
        gmeta = {"format": "tstitch-dit-golden", "weights": f"{name}.safetensors",
                 "generator": "tools/make_dit_golden.py", "torch": torch.__version__,
                 "diffusers": diffusers.__version__,
                 "out": "diffusers DiTTransformer2DModel float32 output (eval)",
                 "out_f64": "official DiT equations in float64, rounded to float32"}
        files = {f"{name}.safetensors": (w, metadata(cfg)),
                 f"{name}_golden.safetensors": (golden, gmeta)}
        for fname, (tensors, meta) in files.items():
            path = os.path.join(out_dir, fname)
            same = same_content(path, tensors, meta)
            if args.verify:
                print(f"  {fname}: {'identical' if same else 'DIFFERS'}")
                failures += not same
            else:
                # safetensors writes __metadata__ in hash order, so an unchanged file is left
                # alone rather than rewritten with a byte-different header.
                if not same:
                    os.makedirs(out_dir, exist_ok=True)
                    save(path, tensors, meta)
                size = os.path.getsize(path)
                total += size
                print(f"  {'wrote' if not same else 'unchanged'} {path} ({size} bytes)")
    if not args.verify:
        print(f"total {total} bytes")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
