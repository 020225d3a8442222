#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Trains a class-conditional DiT on Fashion-MNIST (pixel space) and exports its EMA weights.

The recipe is DiT's (Peebles & Xie 2023), scaled down for a 2-core CPU:
  * data: Debian's dataset-fashion-mnist (60000 training images, 28x28, 10 classes), scaled to
    [-1, 1] and padded with the background value -1 to 32x32, one channel, no VAE; random
    horizontal flips (clothes are left/right symmetric; DiT flips too);
  * diffusion: linear betas 1e-4..0.02 over 1000 steps, t uniform in [0, 999];
  * loss: epsilon-MSE with a fixed variance (learn_sigma = false). DiT's hybrid loss (learned
    variance, L_vlb) only pays off for samplers that use the variance (DDPM with few steps);
    tstitch's demo samples with DDIM, which ignores it;
  * class-label dropout 0.1 (the label becomes the null class, num_classes) for guidance;
  * AdamW (betas 0.9/0.999, no weight decay, as DiT), constant learning rate after a linear warm-up,
    gradient clipping at 1; EMA of the weights with decay min(ema, (1 + n) / (10 + n)) at step n;
  * DiT's initialisation: xavier-uniform linears, the patch embedding like a linear, N(0, 0.02)
    label table and timestep MLP, zeroed adaLN modulations and final layer (adaLN-Zero).

Deterministic for a given seed and thread count: every random draw (init, data order, flips,
label dropout, t, noise) comes from one seeded generator. Resumable: --checkpoint is written every
--checkpoint-every steps (model, EMA, optimiser, generator state, step) and picked up at start.

Output: the EMA weights as safetensors under the official DiT names with tstitch's "tstitch-dit"
metadata (dit::Weights::load reads it), plus training facts (steps, wall time, final loss).

  /usr/bin/python3 tools/train_dit.py --preset small --out models/fashion_dit_s.safetensors
  /usr/bin/python3 tools/train_dit.py --preset large --out models/fashion_dit_l.safetensors
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dit_golden import official_pos_embed, official_shapes, metadata  # noqa: E402

# Debian package dataset-fashion-mnist; TSTITCH_FASHION_MNIST overrides (a machine without it).
DATA_DIR = os.environ.get("TSTITCH_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
NUM_TRAIN_TIMESTEPS = 1000

PRESETS = {
    # Multiply-accumulates per image forward (--info): small 9.3 M, large 83 M, ratio 8.9.
    # Step counts fit both into 90 minutes on a 2-core CPU (see models/README.md).
    "small": dict(depth=4, hidden_size=48, num_heads=3, steps=3000, batch=64, lr=1e-3),
    "large": dict(depth=6, hidden_size=128, num_heads=4, steps=4000, batch=64, lr=5e-4),
    # A much smaller partner (2.3 M MACs, 1/36 of large), for a wider capacity gap.
    "tiny": dict(depth=2, hidden_size=32, num_heads=2, steps=6000, batch=64, lr=1e-3),
}
COMMON = dict(patch_size=4, input_size=32, in_channels=1, num_classes=10, learn_sigma=False)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split="train"):
    """Images as float32 [N, 1, 32, 32] in [-1, 1] (padded with -1) and int64 labels."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    x = images.astype(np.float32) / 127.5 - 1.0
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)[:, None]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels.astype(np.int64))


class DiT(torch.nn.Module):
    """A trainable DiT whose state_dict names are the official ones (blocks.0.attn.qkv.weight...)."""

    def __init__(self, cfg):
        super().__init__()
        D, C, p = cfg["hidden_size"], cfg["in_channels"], cfg["patch_size"]
        self.cfg = cfg
        L = torch.nn.Linear
        self.x_embedder = torch.nn.Module()
        self.x_embedder.proj = torch.nn.Conv2d(C, D, p, stride=p)
        self.t_embedder = torch.nn.Module()
        self.t_embedder.mlp = torch.nn.Sequential(L(256, D), torch.nn.SiLU(), L(D, D))
        self.y_embedder = torch.nn.Module()
        self.y_embedder.embedding_table = torch.nn.Embedding(cfg["num_classes"] + 1, D)
        grid = cfg["input_size"] // p
        self.register_buffer("pos_embed", torch.from_numpy(official_pos_embed(D, grid)).float()[None])
        self.blocks = torch.nn.ModuleList()
        for _ in range(cfg["depth"]):
            b = torch.nn.Module()
            b.attn = torch.nn.Module()
            b.attn.qkv, b.attn.proj = L(D, 3 * D), L(D, D)
            b.mlp = torch.nn.Module()
            b.mlp.fc1, b.mlp.fc2 = L(D, 4 * D), L(4 * D, D)
            b.adaLN_modulation = torch.nn.Sequential(torch.nn.SiLU(), L(D, 6 * D))
            self.blocks.append(b)
        co = 2 * C if cfg["learn_sigma"] else C
        self.final_layer = torch.nn.Module()
        self.final_layer.linear = L(D, p * p * co)
        self.final_layer.adaLN_modulation = torch.nn.Sequential(torch.nn.SiLU(), L(D, 2 * D))

    def initialize(self, gen):
        for m in self.modules():
            if isinstance(m, torch.nn.Linear):
                bound = math.sqrt(6.0 / (m.in_features + m.out_features))
                with torch.no_grad():
                    m.weight.uniform_(-bound, bound, generator=gen)
                    m.bias.zero_()
        w = self.x_embedder.proj.weight
        fan_in, fan_out = w[0].numel(), w.shape[0]
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        with torch.no_grad():
            w.uniform_(-bound, bound, generator=gen)
            self.x_embedder.proj.bias.zero_()
            self.y_embedder.embedding_table.weight.normal_(0, 0.02, generator=gen)
            for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
                lin.weight.normal_(0, 0.02, generator=gen)
            for b in self.blocks:
                b.adaLN_modulation[1].weight.zero_()
                b.adaLN_modulation[1].bias.zero_()
            for lin in (self.final_layer.adaLN_modulation[1], self.final_layer.linear):
                lin.weight.zero_()
                lin.bias.zero_()

    def forward(self, x, t, y):
        cfg = self.cfg
        D, H, p = cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"]
        g = cfg["input_size"] // p
        B, T, hd = x.shape[0], g * g, D // H
        h = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder.mlp(sinusoid(t)) + self.y_embedder.embedding_table(y)
        for b in self.blocks:
            sh1, sc1, g1, sh2, sc2, g2 = (m[:, None, :] for m in b.adaLN_modulation(c).chunk(6, dim=1))
            a = F.layer_norm(h, (D,), eps=1e-6) * (1 + sc1) + sh1
            qkv = b.attn.qkv(a).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
            att = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) * hd ** -0.5, dim=-1)
            h = h + g1 * b.attn.proj((att @ qkv[2]).transpose(1, 2).reshape(B, T, D))
            m = F.layer_norm(h, (D,), eps=1e-6) * (1 + sc2) + sh2
            h = h + g2 * b.mlp.fc2(F.gelu(b.mlp.fc1(m), approximate="tanh"))
        sh, sc = (m[:, None, :] for m in self.final_layer.adaLN_modulation(c).chunk(2, dim=1))
        h = self.final_layer.linear(F.layer_norm(h, (D,), eps=1e-6) * (1 + sc) + sh)
        co = h.shape[-1] // (p * p)
        h = h.reshape(B, g, g, p, p, co).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(B, co, g * p, g * p)


def sinusoid(t):
    """DiT's timestep features [cos(t f), sin(t f)], f_i = exp(-ln(10000) i / 128), in float32 on
    t's device (make_dit_golden.timestep_embedding computes the same on the CPU)."""
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32, device=t.device) / 128)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def alphas_cumprod():
    betas = torch.linspace(1e-4, 0.02, NUM_TRAIN_TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def model_config(preset):
    cfg = dict(COMMON)
    cfg.update({k: PRESETS[preset][k] for k in ("depth", "hidden_size", "num_heads")})
    return cfg


def macs(cfg):
    t = (cfg["input_size"] // cfg["patch_size"]) ** 2
    d = cfg["hidden_size"]
    co = 2 * cfg["in_channels"] if cfg["learn_sigma"] else cfg["in_channels"]
    block = t * d * 3 * d + 2 * t * t * d + t * d * d + 8 * t * d * d + 6 * d * d
    p2 = cfg["patch_size"] ** 2
    return (t * cfg["in_channels"] * p2 * d + cfg["depth"] * block + t * d * p2 * co + 2 * d * d
            + 256 * d + d * d)


def export(model_state, cfg, path, facts):
    from safetensors.torch import save_file
    names = official_shapes(cfg)
    tensors = {}
    for name, shape in names.items():
        v = model_state[name].detach().float().contiguous()
        assert tuple(v.shape) == tuple(shape), (name, v.shape, shape)
        tensors[name] = v
    meta = metadata(cfg)
    meta.update({k: str(v) for k, v in facts.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--out", help="safetensors file for the EMA weights")
    ap.add_argument("--steps", type=int, help="training steps (preset default)")
    ap.add_argument("--batch", type=int, help="batch size (preset default)")
    ap.add_argument("--lr", type=float, help="AdamW learning rate (preset default)")
    ap.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay (upper bound)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint", help="resumable training state (.pt); default: <out>.ckpt.pt")
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--init", help="start from these weights (a safetensors file this script "
                    "exported, e.g. to continue training on another machine); fresh optimiser")
    ap.add_argument("--max-minutes", type=float,
                    help="stop early (checkpoint and export) after this much training time; the "
                         "exported metadata records the steps actually done")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--info", action="store_true", help="print the configurations and MACs, then exit")
    args = ap.parse_args()

    if args.info:
        for name in PRESETS:
            cfg = model_config(name)
            print(name, cfg, f"{macs(cfg) / 1e6:.1f} M MACs per image forward")
        print("ratio", macs(model_config("large")) / macs(model_config("small")))
        return 0
    if not args.out or not args.preset:
        ap.error("--preset and --out are required")

    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    steps = args.steps or preset["steps"]
    batch = args.batch or preset["batch"]
    lr = args.lr or preset["lr"]
    cfg = model_config(args.preset)
    ckpt_path = args.checkpoint or args.out + ".ckpt.pt"
    device = torch.device(args.device)

    x_all, y_all = load_fashion_mnist("train")
    x_all, y_all = x_all.to(device), y_all.to(device)
    n_data = x_all.shape[0]
    ac = alphas_cumprod()
    sqrt_ac = ac.sqrt().float().to(device)
    sqrt_1mac = (1 - ac).sqrt().float().to(device)

    gen = torch.Generator().manual_seed(args.seed)
    model = DiT(cfg)
    model.initialize(gen)
    model.to(device)
    if args.init:
        from safetensors.torch import load_file
        loaded = load_file(args.init)
        state = model.state_dict()
        missing = [k for k in state if k not in loaded]
        if missing:
            raise SystemExit(f"{args.init}: missing tensors {missing[:3]}")
        model.load_state_dict({k: loaded[k].to(state[k].dtype) for k in state})
        print(f"initialised from {args.init}")
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    step, elapsed, loss_avg = 0, 0.0, None
    if os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        ema = state["ema"]
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, elapsed, loss_avg = state["step"], state["elapsed"], state["loss_avg"]
        print(f"resumed from {ckpt_path} at step {step}")
    print(f"{args.preset}: {cfg}, {macs(cfg) / 1e6:.1f} M MACs/image, "
          f"{sum(p.numel() for p in model.parameters())} parameters, {steps} steps x batch {batch}, "
          f"lr {lr}, threads {args.threads}", flush=True)

    def save_checkpoint():
        torch.save({"model": model.state_dict(), "ema": ema, "opt": opt.state_dict(),
                    "gen": gen.get_state(), "step": step, "elapsed": elapsed,
                    "loss_avg": loss_avg, "cfg": cfg}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    model.train()
    perm, perm_pos = None, n_data
    t0 = time.time()
    def minutes():
        return (elapsed + time.time() - t0) / 60

    while step < steps and not (args.max_minutes and minutes() >= args.max_minutes):
        # Data order: a fresh permutation per epoch, drawn from the one generator. The epoch's
        # permutation is re-drawn on resume from the saved generator state, so a resumed run
        # sees a different order than an uninterrupted one (both are deterministic).
        if perm is None or perm_pos + batch > n_data:
            perm, perm_pos = torch.randperm(n_data, generator=gen), 0
        idx = perm[perm_pos:perm_pos + batch].to(device)
        perm_pos += batch
        x0, y = x_all[idx], y_all[idx].clone()
        flip = torch.rand(batch, generator=gen) < 0.5
        x0 = torch.where(flip.to(device)[:, None, None, None], x0.flip(-1), x0)
        drop = torch.rand(batch, generator=gen) < 0.1
        y[drop.to(device)] = cfg["num_classes"]
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        xt = sqrt_ac[t][:, None, None, None] * x0 + sqrt_1mac[t][:, None, None, None] * noise

        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / args.warmup)
        loss = F.mse_loss(model(xt, t.float(), y), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            live = model.state_dict()
            keys = [k for k, v in live.items() if v.dtype.is_floating_point]
            targets, sources = [ema[k] for k in keys], [live[k] for k in keys]
            torch._foreach_mul_(targets, decay)  # one fused launch per op on a GPU
            torch._foreach_add_(targets, sources, alpha=1 - decay)
        loss_avg = float(loss) if loss_avg is None else 0.99 * loss_avg + 0.01 * float(loss)
        if step % args.log_every == 0 or step == steps:
            now = elapsed + time.time() - t0
            print(f"step {step}/{steps} loss {float(loss):.4f} (avg {loss_avg:.4f}) "
                  f"{now / 60:.1f} min, {step * batch / max(now, 1e-9):.0f} img/s", flush=True)
        if step % args.checkpoint_every == 0 or step == steps:
            elapsed += time.time() - t0
            t0 = time.time()
            save_checkpoint()
    elapsed += time.time() - t0
    t0 = time.time()
    save_checkpoint()

    facts = {"training_steps": step, "training_batch": batch, "training_lr": lr,
             "training_minutes": f"{elapsed / 60:.1f}", "training_loss_ema100": f"{loss_avg:.4f}",
             "training_seed": args.seed, "training_device": args.device,
             "training_init": args.init or "scratch",
             "training_threads": args.threads, "ema_decay": args.ema,
             "dataset": "fashion-mnist train (60000), 28x28 padded to 32x32 with -1, [-1, 1]",
             "objective": "epsilon MSE, linear betas 1e-4..0.02, 1000 steps, fixed variance",
             "trainer": "tools/train_dit.py"}
    export(ema, cfg, args.out, facts)
    print(json.dumps({"out": args.out, **facts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
