"""Soft MoE versus a dense MLP and top-k, side by side in one run (forward + backward, CPU).

Prints:
1. how the layers are matched ("same per-token expert FLOPs"), and the FLOPs counted by
   torch.utils.flop_counter for each layer;
2. the router overhead formula 3*n*m*d multiply-adds per sequence (m = e*s slots) against the
   FLOPs measured on the router part of the layer (logits, dispatch, combine);
3. forward+backward time of each layer over interleaved repetitions (min and median), and the
   ratio SoftMoE / dense (min) against the target (<= 1.25 at n=196, d=384, 8 experts); the
   full run adds the ratio at other batch sizes (rows per expert = b*s);
4. where Soft MoE's time goes (expert bank alone, router alone), and the same ratio where
   specaware uses Soft MoE: specaware_small's encoder MLP on the visible
   patches of pretraining (64 tokens = 64 slots) and on all 256 patches of fine-tuning.
glibc malloc is tuned first (specaware.runtime.tune_cpu_malloc, which every specaware
training entry point applies), for all layers alike; --system-malloc leaves the defaults, where
Soft MoE pays more for its e-times larger weight gradients being paged in fresh every step.

Run: PYTHONPATH=. .venv/bin/python bench/bench_moe.py [--quick] [--threads N]
"""
from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from moe import DenseMLP, SoftMoE, TopKMoE
from specaware.model.masking import num_visible
from specaware.runtime import tune_cpu_malloc
from specaware.model.variants import model_config

TARGET = 1.25


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 2 and few repetitions (smoke run)")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 8, quick 2)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 15, quick 4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = least noise on a shared box)")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc malloc defaults (default: tune_cpu_malloc, as training does)")
    p.add_argument("--tokens", type=int, default=196)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--slots", type=int, default=25, help="slots per expert (e*s ~ n)")
    p.add_argument("--hidden", type=int, default=1536, help="expert hidden width (4 d)")
    return p.parse_args(argv)


def build_layers(a) -> dict[str, torch.nn.Module]:
    """The compared layers; see `explain` for how their compute is matched."""
    m = a.experts * a.slots
    # the exact width h*m/n rounded to the nearest multiple of 32 (1567.3 -> 1568 at the default
    # shape: MACs within 0.04 %): odd widths run far below MKL's usual GEMM speed, so the exact
    # width ("dense_x") would flatter Soft MoE; the floor to a multiple of 64 ("dense_64", 1536)
    # gives dense 2 % fewer MACs than Soft MoE's experts and is timed alongside
    exact = a.hidden * m / a.tokens
    dense_hidden = max(32, 32 * round(exact / 32))
    top1_cf = m / a.tokens   # capacity e*C = m rows per sequence: the slot count of Soft MoE
    torch.manual_seed(0)
    return {
        "dense": DenseMLP(a.dim, dense_hidden),
        "dense_x": DenseMLP(a.dim, round(exact)),
        "dense_64": DenseMLP(a.dim, max(64, 64 * math.floor(exact / 64))),
        "soft": SoftMoE(a.dim, a.experts, a.slots, a.hidden),
        "top1": TopKMoE(a.dim, a.experts, a.hidden, k=1, capacity_factor=top1_cf),
        "top2": TopKMoE(a.dim, a.experts, a.hidden // 2, k=2, capacity_factor=top1_cf),
    }


def explain(a, layers) -> None:
    m = a.experts * a.slots
    print(f"shape: b={a.batch} sequences x n={a.tokens} tokens x d={a.dim}; "
          f"{a.experts} experts, hidden {a.hidden}; threads={torch.get_num_threads()}")
    print("same per-token expert FLOPs: Soft MoE runs m = e*s = "
          f"{a.experts}*{a.slots} = {m} slots through one expert MLP each (hidden {a.hidden}), "
          f"i.e. {m}/{a.tokens} = {m / a.tokens:.3f} expert MLPs per token;")
    exact = a.hidden * m / a.tokens
    mac_ratio = lambda name: m * a.hidden / (a.tokens * layers[name].hidden_dim)  # noqa: E731
    print(f"  dense MLP hidden = {a.hidden} * {m}/{a.tokens} = {exact:.1f}, rounded to a multiple "
          f"of 32 -> {layers['dense'].hidden_dim} (the reference; Soft MoE expert MACs / dense MACs "
          f"= {mac_ratio('dense'):.4f}); timed alongside: dense_x at the exact width "
          f"{layers['dense_x'].hidden_dim} (MAC ratio {mac_ratio('dense_x'):.4f}) and dense_64 "
          f"floored to a multiple of 64, {layers['dense_64'].hidden_dim} "
          f"(MAC ratio {mac_ratio('dense_64'):.4f});")
    print(f"  top1: k=1, hidden {a.hidden}, capacity e*C = {a.experts}*{layers['top1'].capacity(a.tokens)} "
          f"rows; top2: k=2, hidden {a.hidden // 2}, capacity {a.experts}*"
          f"{layers['top2'].capacity(a.tokens)} rows (same expert FLOPs, tokens dropped over capacity)")


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def flop_table(a, layers, x) -> dict[str, int]:
    """Measured forward FLOPs per layer, plus the router check of Soft MoE."""
    measured = {}
    for name, layer in layers.items():
        measured[name] = count_flops(lambda: layer(x))
    soft = layers["soft"]
    slots = torch.randn(a.batch, a.experts * a.slots, a.dim)
    expert_flops = count_flops(lambda: soft.run_experts(slots))
    router_measured = (measured["soft"] - expert_flops) // 2          # FLOPs -> multiply-adds
    formula = a.batch * soft.flops(a.tokens)["router"]
    print(f"router overhead: formula 3*n*m*d = 3*{a.tokens}*{a.experts * a.slots}*{a.dim} = "
          f"{formula // a.batch / 1e6:.2f} M MACs/sequence; measured {router_measured / a.batch / 1e6:.2f} "
          f"M MACs/sequence; measured/formula = {router_measured / formula:.4f}")
    print(f"router share of Soft MoE forward MACs: {router_measured / (measured['soft'] / 2):.1%} "
          f"(experts {expert_flops / 2 / a.batch / 1e6:.1f} M MACs/sequence)")
    for name in layers:
        print(f"forward FLOPs {name:7s} {measured[name] / a.batch / 1e9:7.3f} GFLOP/sequence "
              f"({measured[name] / measured['dense']:.3f} x dense)")
    return measured


def time_layers(layers, x, reps: int, faults: dict | None = None) -> dict[str, list[float]]:
    """Forward+backward seconds of every repetition per layer, interleaved across layers so a
    burst of load on a shared machine hits all layers alike. `x` is one input for all layers or
    a dict of inputs by layer name. `faults`, if given, receives the minor page faults of each
    layer's timed steps (fresh memory the kernel had to zero)."""
    times: dict[str, list[float]] = {name: [] for name in layers}
    x = x if isinstance(x, dict) else dict.fromkeys(layers, x)
    inputs = {name: x[name].clone().requires_grad_(True) for name in layers}
    for rep in range(reps + 2):                                        # 2 warm-up rounds
        for name, layer in layers.items():
            layer.zero_grad(set_to_none=True)
            paged = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            y, _ = layer(inputs[name])
            y.square().mean().backward()
            if rep >= 2:
                times[name].append(time.perf_counter() - start)
                if faults is not None:
                    paged = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - paged
                    faults[name] = faults.get(name, 0) + paged
    return times


def report_faults(layers, faults: dict, reps: int) -> None:
    """Fresh pages per step: gradients are new tensors every step (zero_grad(set_to_none=True),
    the optimiser default), and Soft MoE's e expert weight matrices make e times larger weight
    gradients than the dense MLP's; the kernel zeroes every new page, which the timings include."""
    page_mb = resource.getpagesize() / 2**20
    grads = {name: sum(p.numel() * p.element_size() for p in layer.parameters()) / 2**20
             for name, layer in layers.items()}
    print("fresh memory paged in per fwd+bwd step (minor page faults), and the size of the "
          "parameter gradients: " + "; ".join(f"{name} {faults[name] / reps * page_mb:.0f} MB "
                                              f"(grads {grads[name]:.0f} MB)" for name in layers))


class _ExpertsOnly(torch.nn.Module):
    """Soft MoE's expert bank on its own (slots [b, m, d] in), for the time breakdown."""

    def __init__(self, soft: SoftMoE):
        super().__init__()
        self.soft = soft

    def forward(self, slots, mask=None):
        return self.soft.run_experts(slots), None


def breakdown(a, layers, reps: int) -> None:
    """Where Soft MoE's time goes: its expert bank alone (on b x m slots) and its router alone,
    each against the reference dense MLP, timed interleaved like the main table."""
    soft = layers["soft"]
    x = torch.randn(a.batch, a.tokens, a.dim)
    slots = torch.randn(a.batch, a.experts * a.slots, a.dim)
    router_only = SoftMoE(a.dim, a.experts, a.slots, a.hidden, expert=lambda *_: torch.nn.Identity())
    router_only.router.load_state_dict(soft.router.state_dict())      # identity experts
    parts = {"dense": layers["dense"], "experts": _ExpertsOnly(soft), "router": router_only}
    times = time_layers(parts, {"dense": x, "experts": slots, "router": x}, reps)
    best = {name: min(t) for name, t in times.items()}
    flops = soft.flops(a.tokens)
    dense_macs = layers["dense"].flops(a.tokens)["experts"]
    print(f"Soft MoE time breakdown vs dense {best['dense'] * 1e3:.1f} ms: experts alone "
          f"{best['experts'] * 1e3:.1f} ms ({best['experts'] / best['dense']:.3f}; MACs "
          f"{flops['experts'] / dense_macs:.3f}), router+dispatch+combine alone "
          f"{best['router'] * 1e3:.1f} ms ({best['router'] / best['dense']:.3f}; MACs "
          f"{flops['router'] / dense_macs:.3f})")


def batch_sweep(a, layers) -> None:
    """soft/dense ratio against sequences per step: few rows per expert make the expert GEMMs
    weight-bandwidth bound (e weight matrices read for b*s rows each)."""
    pair = {"dense": layers["dense"], "soft": layers["soft"]}
    cells = []
    for b in (1, 2, 4, 16):
        t = time_layers(pair, torch.randn(b, a.tokens, a.dim), max(4, 32 // b))
        cells.append(f"b={b}: {min(t['soft']) / min(t['dense']):.3f}")
    print(f"soft/dense by batch (rows per expert = b*s): {'; '.join(cells)}; b={a.batch}: see above")


def model_regimes(a, reps: int) -> None:
    """What swapping a dense MLP for Soft MoE costs where specaware uses it: specaware_small's
    encoder (width, MLP ratio, experts x slots from its registered config) on a 128 px tile,
    which gives the encoder its visible patches in pretraining and all patches in fine-tuning.
    The dense MLP is the block's own (hidden = mlp_ratio * d); each regime gets as many
    sequences as keep the step at about b*n tokens of the main comparison."""
    cfg = model_config("specaware_small")
    d, h = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    e, s = cfg.moe.num_experts, cfg.moe.slots_per_expert
    patches = (128 // cfg.patch_size) ** 2
    cells = []
    for regime, n in (("pretraining", num_visible(patches, cfg.mask_ratio)), ("fine-tuning", patches)):
        b = max(1, round(a.batch * a.tokens / n))
        torch.manual_seed(0)
        pair = {"dense": DenseMLP(d, h), "soft": SoftMoE(d, e, s, h)}
        t = time_layers(pair, torch.randn(b, n, d), reps)
        macs = pair["soft"].flops(n)
        mac_ratio = (macs["router"] + macs["experts"]) / pair["dense"].flops(n)["experts"]
        cells.append(f"{regime} n={n} tokens, b={b}: MACs {mac_ratio:.3f}, time "
                     f"{min(t['soft']) / min(t['dense']):.3f}")
    print(f"specaware_small encoder MLP (d={d}, hidden {h}) -> Soft MoE {e} experts x {s} slots, "
          f"soft/dense: " + "; ".join(cells))


def main(argv=None) -> int:
    a = parse_args(argv)
    a.batch = a.batch or (2 if a.quick else 8)
    reps = a.reps or (4 if a.quick else 15)
    torch.set_num_threads(a.threads)
    tuned = False if a.system_malloc else tune_cpu_malloc()
    layers = build_layers(a)
    print(f"bench_moe: {platform.machine()}, torch {torch.__version__}, fp32 on CPU, glibc "
          f"malloc {'tuned (specaware.runtime)' if tuned else 'system default'}")
    explain(a, layers)
    x = torch.randn(a.batch, a.tokens, a.dim)
    flop_table(a, layers, x)
    faults: dict[str, int] = {}
    times = time_layers(layers, x, reps, faults)
    print("fwd+bwd time, min (least disturbed by other load; the target uses it) and median:")
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in layers:
        print(f"fwd+bwd {name:7s} min {best[name] * 1e3:8.1f} ms  median {median[name] * 1e3:8.1f} ms"
              f"   ratio vs dense: min {best[name] / best['dense']:.3f}  "
              f"median {median[name] / median['dense']:.3f}")
    ratio = best["soft"] / best["dense"]
    print(f"ratio soft/dense = {ratio:.3f}; soft/dense_64 = {best['soft'] / best['dense_64']:.3f}; "
          f"soft/dense_x = {best['soft'] / best['dense_x']:.3f}; "
          f"soft/top1 = {best['soft'] / best['top1']:.3f}; soft/top2 = {best['soft'] / best['top2']:.3f}")
    print(f"target: soft/dense fwd+bwd <= {TARGET} at b={a.batch} -> "
          f"{'MET' if ratio <= TARGET else 'NOT MET'} ({ratio:.3f})")
    report_faults(layers, faults, reps)
    breakdown(a, layers, reps)
    model_regimes(a, reps)
    if not a.quick:
        batch_sweep(a, layers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
