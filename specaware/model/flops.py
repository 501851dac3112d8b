"""Cost accounting: parameters, FLOPs per tile, and peak CPU memory of a call.

FLOPs are COUNTED, not estimated: one forward pass runs on the `meta` device (shapes only, no
memory, no arithmetic) under `torch.utils.flop_counter.FlopCounterMode`, which counts matmuls,
convolutions and attention as 2 FLOPs per multiply-add. Element-wise ops (norms, GELU, softmax)
are not counted, as is usual for transformer FLOP figures.

Peak memory on the CPU: `peak_cpu_memory` replays the allocation events the torch profiler
records with `profile_memory=True` and returns the largest number of bytes that were live at
once during the call (allocations made by tensors created inside it; inputs already alive do not
count). Frees inside a single op are netted by the profiler, so the figure can slightly
under-state transient peaks inside one kernel, never a tensor that was returned by an op.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

METHOD = "FlopCounterMode on the meta device (2 FLOPs per multiply-add; matmul/conv/attention)"


def synthetic_batch(bands: int, tile: int, batch_size: int = 1, device="cpu",
                    sensor: str = "aviris-classic", seed: int = 0) -> dict:
    """A batch of the INTERFACES.md kind: evenly spaced bands over 400-2500 nm, 10 nm FWHM."""
    wavelength = torch.linspace(400.0, 2500.0, bands, device=device)
    shape = (batch_size, bands, tile, tile)
    if torch.device(device).type == "meta":
        image = torch.empty(shape, device=device)
    else:
        gen = torch.Generator().manual_seed(seed)
        image = torch.rand(shape, generator=gen).to(device)
    return {
        "image": image,
        "valid": torch.ones(shape, dtype=torch.bool, device=device),
        "band_mask": torch.ones(batch_size, bands, dtype=torch.bool, device=device),
        "wavelength": wavelength.expand(batch_size, bands),
        "fwhm": torch.full((batch_size, bands), 10.0, device=device),
        "gsd": torch.full((batch_size,), 5.0, device=device),
        "sensor": [sensor] * batch_size, "level": ["L2"] * batch_size,
    }


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of `fn()` (run it on meta tensors to make this free)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def _build_on_meta(name_or_model):
    from specaware.model.variants import create_model
    if isinstance(name_or_model, str):
        with torch.device("meta"):
            return create_model(name_or_model)
    return name_or_model


def model_stats(name_or_model, bands: int = 224, tile: int = 128,
                mask_ratio: float | None = None) -> dict:
    """{"params", "encoder_params", "decoder_params", "flops_per_tile" (pretraining forward:
    masked encoder + decoder + head), "encoder_flops_per_tile" (fine-tuning: encoder on every
    patch), "embedding_flops_per_tile" (HyperEmbedding + conditioning, all patches), "method"}.

    A registered name is built on the meta device (free even for specaware_large); a model
    instance is measured wherever it lives (use a meta-device model to keep it free)."""
    model = _build_on_meta(name_or_model)
    device = next(model.parameters()).device
    batch = synthetic_batch(bands, tile, device=device)
    params = sum(p.numel() for p in model.parameters())
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    with torch.no_grad():
        pretrain = count_flops(lambda: model(batch, mask_ratio=mask_ratio))
        finetune = count_flops(lambda: model.encoder.forward_features(batch))
        inputs = model.encoder.prepare(batch)
        embedding = count_flops(lambda: model.encoder.embed_visible(inputs))
    return {"params": params, "encoder_params": encoder_params,
            "decoder_params": params - encoder_params, "flops_per_tile": float(pretrain),
            "encoder_flops_per_tile": float(finetune),
            "embedding_flops_per_tile": float(embedding), "bands": bands, "tile": tile,
            "method": METHOD}


def peak_cpu_memory(fn: Callable[[], object]) -> int:
    """Largest number of bytes live at once among tensors allocated during `fn()` (CPU)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)
