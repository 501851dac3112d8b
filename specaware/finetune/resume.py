"""Epoch checkpoints for `--resume auto`: everything a fine-tuning run needs to continue as if
it had never stopped.

After each epoch, rank 0 writes `RUN/last/epoch_NNNN.safetensors` (the model's trainable
parameters and buffers, AdamW's moment tensors, every rank's torch RNG state) and then
`RUN/last/epoch_NNNN.json` (optimizer hyper-parameters, the LR schedule's counters, the early
stopping state, each rank's numpy and Python RNG states). The JSON is written last, so an epoch
counts only once both files exist; older epochs are deleted after that. Frozen weights are not
stored: they are rebuilt from the same source (pretrained export or seed) on resume.

Nothing is unpickled: tensors come from safetensors, the rest from JSON. Samplers are seeded
by (seed, epoch), so the data order of the remaining epochs follows from the epoch number.
"""
from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)
FORMAT = "specaware-finetune-state/1"


@dataclass
class EarlyStop:
    """Early-stopping bookkeeping that must survive a restart."""
    next_epoch: int = 0
    best_epoch: int = -1
    best_score: float = float("-inf")
    waited: int = 0
    history: list[dict] = field(default_factory=list)


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers; frozen parameters are rebuilt, not stored."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in frozen}


def rng_state() -> tuple[dict, dict]:
    """(tensors, json) of this process's torch, CUDA, numpy and Python generators."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return tensors, {"numpy": [kind, keys.tolist(), pos, has_gauss, cached],
                     "python": [version, list(state), gauss]}


def set_rng_state(tensors: dict, info: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    kind, keys, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = info["python"]
    random.setstate((version, tuple(state), gauss))


def _optimizer_parts(optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict, info: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in info["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_epoch(folder: Path, epoch: int, model: nn.Module, optimizer, scheduler,
               stop: EarlyStop, rngs: list[tuple[dict, dict]]) -> Path:
    """Write epoch `epoch`'s state (rank 0 only; `rngs` holds every rank's rng_state())."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"epoch_{epoch:04d}"
    tensors = {f"model.{k}": v.cpu() for k, v in _trainable_state(model).items()}
    optim_tensors, optim_info = _optimizer_parts(optimizer)
    tensors.update(optim_tensors)
    for rank, (rng_tensors, _) in enumerate(rngs):
        tensors.update({f"rng.{rank}.{k}": v.cpu() for k, v in rng_tensors.items()})
    tmp = stem.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, stem.with_suffix(".safetensors"))
    info = {"format": FORMAT, "epoch": epoch, "optimizer": optim_info,
            "scheduler": scheduler.state_dict(), "early_stop": stop.__dict__,
            "rng": [r[1] for r in rngs]}
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, default=float))
    os.replace(tmp, stem.with_suffix(".json"))
    for old in folder.glob("epoch_*"):
        if old.stem != stem.name and old.suffix in (".json", ".safetensors"):
            old.unlink(missing_ok=True)
    return stem


def latest(folder: Path) -> Path | None:
    """Stem of the newest complete epoch checkpoint in `folder`, or None."""
    done = sorted(p.with_suffix("") for p in folder.glob("epoch_*.json")
                  if p.with_suffix(".safetensors").is_file())
    return done[-1] if done else None


def load_epoch(stem: Path, model: nn.Module, optimizer, scheduler, rank: int = 0) -> EarlyStop:
    """Restore model, optimizer, schedule and this rank's RNG from `stem`; returns the early
    stopping state. Errors name the file when it does not fit the model being resumed."""
    info = json.loads(stem.with_suffix(".json").read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{stem}.json: format {info.get('format')!r} is not {FORMAT!r}")
    tensors = load_file(str(stem.with_suffix(".safetensors")))
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = _trainable_state(model)
    if set(weights) != set(expected):
        diff = sorted(set(weights) ^ set(expected))[:10]
        raise ValueError(f"{stem}.safetensors was written by a different model or freeze mode "
                         f"(differing keys: {diff}): resume with the run's original config, "
                         "or start afresh without --resume")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(_optimizer_state(tensors, info["optimizer"]))
    scheduler.load_state_dict(info["scheduler"])
    rngs = info["rng"]
    if rank < len(rngs):
        own = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"rng.{rank}.")}
        set_rng_state(own, rngs[rank])
    else:
        log.warning("%s holds RNG states of %d ranks, not of rank %d: that rank continues "
                    "from a fresh seed (results differ from an uninterrupted run)",
                    stem, len(rngs), rank)
    log.info("resumed from %s (epoch %d done)", stem, info["epoch"])
    return EarlyStop(**info["early_stop"])
