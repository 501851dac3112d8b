"""SpecAware MAE versus a plain MAE, and the HyperEmbedding versus a DOFA-style embedding.

Side by side in one run on the CPU (forward + backward; min and median over interleaved
repetitions, the ratios use the min, the run least disturbed by other load):
1. a pretraining step per tile of specaware_small against a plain MAE of the same encoder and
   decoder width/depth with a fixed conv patch embedding for exactly this band count, dense MLPs,
   a linear pixel head and MSE loss (target: time ratio <= 1.5 at 224 bands). The plain MAE
   embeds every patch, then masks, as He et al. 2022 do;
2. the patch embedding alone: SpecAware's conditioning + HyperEmbedding against a
   wavelength-conditioned dynamic patch embedding of the DOFA kind (a hypernetwork generates the
   full kernel [d, c, k, k] from the wavelengths, then a strided conv), at the same width, each
   on the visible 25% of the patches (pretraining) and on all patches (fine-tuning).
Peak memory: the torch profiler's allocation events (`profile_memory=True`) replayed in time
order (specaware.model.flops.peak_cpu_memory), i.e. the most bytes of tensors allocated during
the step that were alive at once: activations and temporaries. Weights and their gradients are
allocated before the measured step (gradients accumulate in place) and are printed apart, as
"weights+grads", since they do not grow with the tiles of a step.

glibc malloc is tuned first (specaware.runtime.tune_cpu_malloc, as a CPU training run
should be), for both models alike; --system-malloc leaves it at its defaults.

Run: PYTHONPATH=. .venv/bin/python bench/bench_model.py [--quick] [--threads N]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from specaware.model.block import Block
from specaware.model.flops import count_flops, peak_cpu_memory, synthetic_batch
from specaware.model.masking import (gather_patches, gather_tokens, patchify, random_masking,
                                     scatter_tokens)
from specaware.model.pos_embed import MetricPositionEmbedding
from specaware.runtime import tune_cpu_malloc
from specaware.model.variants import create_model, model_config

TARGET = 1.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 1, two repetitions")
    p.add_argument("--bands", type=int, default=224)
    p.add_argument("--tile", type=int, default=None, help="tile side in pixels (default 128)")
    p.add_argument("--batch", type=int, default=None, help="tiles per step (default 2, quick 1)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = least noise)")
    p.add_argument("--model", default="specaware_small")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc malloc defaults (default: tune_cpu_malloc, as CPU "
                        "training should)")
    return p.parse_args(argv)


class PlainMAE(nn.Module):
    """MAE with a fixed Conv2d patch embedding for one band count (He et al. 2022 layout)."""

    def __init__(self, bands: int, name: str):
        super().__init__()
        cfg = model_config(name)
        d, dd, k = cfg.embed_dim, cfg.decoder.embed_dim, cfg.patch_size
        self.k, self.ratio = k, cfg.mask_ratio
        self.patch = nn.Conv2d(bands, d, k, stride=k)
        self.pos = MetricPositionEmbedding(d)
        self.blocks = nn.ModuleList([Block(d, cfg.num_heads, cfg.mlp_ratio)
                                     for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d)
        self.dec_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(dd))
        self.dec_pos = MetricPositionEmbedding(dd)
        self.dec_blocks = nn.ModuleList([Block(dd, cfg.decoder.num_heads, cfg.decoder.mlp_ratio)
                                         for _ in range(cfg.decoder.depth)])
        self.dec_norm = nn.LayerNorm(dd)
        self.head = nn.Linear(dd, bands * k * k)

    def forward(self, batch: dict) -> torch.Tensor:
        image, gsd = batch["image"], batch["gsd"]
        b, c, h, w = image.shape
        grid = (h // self.k, w // self.k)
        x = rearrange(self.patch(image), "b d h w -> b (h w) d") + self.pos(*grid, self.k, gsd)
        keep, mask = random_masking(b, x.shape[1], self.ratio, image.device)
        x = gather_tokens(x, keep)
        for block in self.blocks:
            x, _ = block(x)
        x = scatter_tokens(self.dec_embed(self.norm(x)), keep, self.mask_token, mask.shape[1])
        x = x + self.dec_pos(*grid, self.k, gsd)
        for block in self.dec_blocks:
            x, _ = block(x)
        pred = rearrange(self.head(self.dec_norm(x)), "b n (c p) -> b c n p", c=c)
        err = (pred - patchify(image, self.k)).square().mean(dim=(1, 3))
        return (err * mask).sum() / mask.sum()


class DOFAEmbedding(nn.Module):
    """Wavelength-conditioned dynamic patch embedding of the DOFA kind (Xiong et al. 2024):
    Fourier features of each wavelength -> one transformer layer across bands -> a linear
    hypernetwork emitting that band's whole kernel [d, k, k] (+ a bias from the mean); then a
    strided conv over the full image. Generated weights are shared by the batch, as in DOFA."""

    def __init__(self, dim: int, patch_size: int, wave_dim: int = 128):
        """dim d, patch side k, wave_dim: width of the wavelength features."""
        super().__init__()
        self.dim, self.k = dim, patch_size
        periods = torch.logspace(1, math.log10(4400.0), wave_dim // 2)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)
        self.wave_layer = nn.TransformerEncoderLayer(wave_dim, 4, 2 * wave_dim, 0.0,
                                                     batch_first=True, norm_first=True)
        self.weight_gen = nn.Linear(wave_dim, dim * patch_size * patch_size)
        self.bias_gen = nn.Linear(wave_dim, dim)

    def forward(self, image: torch.Tensor, wavelength: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """image [b, c, H, W], wavelength [c] nm -> tokens [b, n, d]; with keep [b, n_keep]
        only those patches are embedded (a matmul on the gathered patches, same weights)."""
        phase = rearrange(wavelength, "c -> 1 c 1") * self.omega
        feats = self.wave_layer(torch.cat([phase.sin(), phase.cos()], dim=-1))[0]   # [c, w]
        weight = rearrange(self.weight_gen(feats), "c (d k1 k2) -> d c k1 k2",
                           d=self.dim, k1=self.k)
        bias = self.bias_gen(feats.mean(0))
        weight = weight / image.shape[1]
        if keep is not None:
            patches = gather_patches(patchify(image, self.k), keep)              # [b, c, v, p]
            return torch.einsum("bcvp,dcp->bvd", patches,
                                rearrange(weight, "d c k1 k2 -> d c (k1 k2)")) + bias
        x = F.conv2d(image, weight, bias, stride=self.k)
        return rearrange(x, "b d h w -> b (h w) d")


def time_calls(fns: dict, reps: int) -> dict[str, list[float]]:
    """Seconds of every call of each fn, interleaved so load drifts hit all of them alike.
    One warm-up call each first (it also allocates the parameter gradients)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def weight_bytes(*modules: nn.Module) -> int:
    """Bytes of the parameters plus their gradients (same size)."""
    return 2 * sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def step(model, batch, loss_of=lambda out: out.loss):
    def run():
        model.zero_grad(set_to_none=False)     # keep gradients allocated: see docstring
        loss_of(model(batch)).backward()
    return run


def measure(fns: dict, reps: int) -> dict[str, dict[str, float]]:
    """min/median seconds and peak activation bytes of each fn (see the module docstring)."""
    times = time_calls(fns, reps)
    return {name: {"min": min(t), "median": statistics.median(t),
                   "peak": peak_cpu_memory(fns[name])} for name, t in times.items()}


def report(rows: dict, flops: dict, tiles: int, extra: dict | None = None) -> None:
    """One line per compared thing: per-tile time, peak activations, forward FLOPs."""
    for name, r in rows.items():
        more = f"  {extra[name]}" if extra else ""
        print(f"  {name:20s} {1e3 * r['min'] / tiles:8.1f} ms/tile (median "
              f"{1e3 * r['median'] / tiles:8.1f})  peak {r['peak'] / 1e6 / tiles:7.1f} MB/tile  "
              f"fwd {flops[name] / 1e9 / tiles:6.2f} GFLOP/tile{more}")


def compare_models(a) -> None:
    torch.manual_seed(0)
    batch = synthetic_batch(a.bands, a.tile, a.batch)
    ours, plain = create_model(a.model), PlainMAE(a.bands, a.model)
    fns = {"specaware": step(ours, batch), "plain": step(plain, batch, loss_of=lambda x: x)}
    rows = measure(fns, a.reps)
    with torch.no_grad():
        flops = {"specaware": count_flops(lambda: ours(batch)),
                 "plain": count_flops(lambda: plain(batch))}
    extra = {name: f"params {sum(p.numel() for p in m.parameters()) / 1e6:5.1f} M, "
                   f"weights+grads {weight_bytes(m) / 1e6:6.1f} MB"
             for name, m in (("specaware", ours), ("plain", plain))}
    print(f"\n[1] pretraining step (forward+backward), {a.model} vs plain MAE, {a.bands} bands, "
          f"{a.tile}x{a.tile} tile, batch {a.batch}, mask ratio {ours.config.mask_ratio}")
    report(rows, flops, a.batch, extra)
    ratio = rows["specaware"]["min"] / rows["plain"]["min"]
    print(f"  time ratio specaware/plain = {ratio:.2f} (target <= {TARGET}: "
          f"{'met' if ratio <= TARGET else 'NOT met'}; median ratio "
          f"{rows['specaware']['median'] / rows['plain']['median']:.2f}); peak activation ratio = "
          f"{rows['specaware']['peak'] / rows['plain']['peak']:.2f}")


def embedding_fns(a, mae, dofa, batch) -> tuple[dict, dict]:
    """Forward+backward closures and forward-only closures (for FLOPs) of the four embeddings."""
    encoder = mae.encoder
    inputs = encoder.prepare(batch)
    keep, _ = random_masking(a.batch, inputs.num_patches, mae.config.mask_ratio, "cpu")
    wavelength = batch["wavelength"][0]
    forward = {
        "hyper (visible 25%)": lambda: encoder.embed_visible(inputs, keep)[0],
        "dofa (visible 25%)": lambda: dofa(batch["image"], wavelength, keep),
        "hyper (all patches)": lambda: encoder.embed_visible(inputs)[0],
        "dofa (all patches)": lambda: dofa(batch["image"], wavelength),
    }
    backward = {name: (lambda fn=fn: fn().sum().backward()) for name, fn in forward.items()}
    return backward, forward


def compare_embeddings(a) -> None:
    torch.manual_seed(0)
    batch = synthetic_batch(a.bands, a.tile, a.batch)
    mae = create_model(a.model)
    dofa = DOFAEmbedding(mae.encoder.embed_dim, mae.encoder.patch_size)
    fns, forward = embedding_fns(a, mae, dofa, batch)
    rows = measure(fns, a.reps)
    with torch.no_grad():
        flops = {name: count_flops(fn) for name, fn in forward.items()}
    print(f"\n[2] patch embedding alone (forward+backward, conditioning included), width "
          f"{mae.encoder.embed_dim}, {a.bands} bands, {a.tile}x{a.tile}, batch {a.batch}")
    report(rows, flops, a.batch)
    for part in ("visible 25%", "all patches"):
        hyper, other = rows[f"hyper ({part})"], rows[f"dofa ({part})"]
        print(f"  hyper/dofa on {part}: time {hyper['min'] / other['min']:.2f}, "
              f"peak activations {hyper['peak'] / other['peak']:.2f}")


def main(argv=None) -> int:
    a = parse_args(argv)
    # 128 px even in quick mode: Soft-MoE's 64 slots are sized for the 64 visible tokens of a
    # 128 px tile; a smaller tile would make the comparison say something about another regime.
    a.tile = a.tile or 128
    a.batch = a.batch or (1 if a.quick else 2)
    a.reps = a.reps or (2 if a.quick else 5)
    torch.set_num_threads(a.threads)
    tuned = False if a.system_malloc else tune_cpu_malloc()
    print(f"bench_model: threads={torch.get_num_threads()}, torch {torch.__version__}, "
          f"malloc {'tuned (specaware.runtime)' if tuned else 'system default'}")
    compare_models(a)
    compare_embeddings(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
