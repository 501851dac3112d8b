"""Fine-tuning throughput: tiles/s of `specaware_small` segmentation steps in fp32 and in bf16
(`precision=bf16`, finetune/precision.py), side by side in one run (issue 18).

One step is what `specaware finetune` does per batch: forward under the precision's autocast,
fp32 cross-entropy normalised by the labelled pixels (train.global_mean_loss), backward,
gradient clipping and AdamW over the encoder (freeze=none) and the UPerNet decoder. Batches are
random 224-band tiles with full labels, made once on the device, so the loader is not timed.
Prints tiles/s per precision and the bf16 / fp32 ratio; on a GPU bf16 is the figure the README
asks for, on a CPU bf16 runs through CPU autocast and is expected to be slower.

    PYTHONPATH=. .venv/bin/python bench/bench_finetune.py [--quick]
"""
from __future__ import annotations

import argparse
import time

import torch

from specaware.finetune import api
from specaware.finetune.config import ModelConfig, OptimConfig
from specaware.finetune.checkpoint import build_head
from specaware.finetune.precision import autocast
from specaware.finetune.train import _optimizer, global_mean_loss

BANDS, CLASSES = 224, 8


def _batch(b: int, tile: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    wl = torch.linspace(400.0, 2500.0, BANDS)
    batch = {"image": torch.rand(b, BANDS, tile, tile, generator=g),
             "valid": torch.ones(b, BANDS, tile, tile, dtype=torch.bool),
             "band_mask": torch.ones(b, BANDS, dtype=torch.bool),
             "wavelength": wl.expand(b, BANDS).clone(), "fwhm": torch.full((b, BANDS), 10.0),
             "gsd": torch.full((b,), 30.0), "sensor": ["enmap"] * b, "level": ["L2"] * b,
             "label": torch.randint(0, CLASSES, (b, tile, tile), generator=g)}
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def tiles_per_s(variant: str, precision: str, b: int, tile: int, steps: int,
                device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_head("segmentation", api.build_encoder(None, variant), CLASSES,
                       ModelConfig(freeze="none", decoder_width=64)).to(device).train()
    batch = _batch(b, tile, device)
    optimizer, scheduler, _ = _optimizer(model, [None] * steps, OptimConfig(epochs=1))
    times = []
    for step in range(steps + 2):                       # 2 warm-up steps left out
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        with autocast(precision, device):
            logits = model(batch)
        loss, _, _ = global_mean_loss(logits, batch["label"], None, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    steady = sorted(times[2:])[len(times[2:]) // 2]     # median step
    return b / steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="debug model, small tiles")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    variant = "specaware_debug" if args.quick else "specaware_small"
    b, tile, steps = (32, 64, 20) if gpu else ((4, 32, 3) if args.quick else (2, 64, 3))
    print(f"fine-tuning {variant} segmentation, {b} tiles of {tile} px x {BANDS} bands per "
          f"step, freeze=none, on {torch.cuda.get_device_name() if gpu else 'CPU'}")
    rates = {p: tiles_per_s(variant, p, b, tile, steps, device) for p in ("fp32", "bf16")}
    for p, r in rates.items():
        print(f"  {p}: {r:8.2f} tiles/s")
    print(f"  bf16 / fp32: {rates['bf16'] / rates['fp32']:.2f}")


if __name__ == "__main__":
    main()
