"""Hub-style checkpoint folders (the Hugging Face layout of `PyTorchModelHubMixin`).

A folder (local, or a hub repo fetched by `from_pretrained("owner/name")`) holds:
- `config.json`: the keyword arguments of `SpecAwareBackbone` — `model_config` (the encoder's
  `to_dict(MAEConfig)`), `variant`, `out_indices`, band set, and `pretraining` (format, step,
  the sensors with tile counts and band ranges, the data) for the model card;
- `model.safetensors`: `encoder.*` weights (a backbone's `save_pretrained`), or the whole
  MaskedAutoencoder (`encoder.*`, `decoder.*`, ... from `specaware export --format hub`); both
  load as an encoder, strictly, without unpickling anything;
- `README.md`: the model card (variant, sensors and band ranges, data, how to load it).

`specaware.load_pretrained(folder_or_repo_id)` and `SpecAwareBackbone.from_pretrained` read it.
Downloads go through `huggingface_hub`, so `HF_HUB_OFFLINE=1` serves repos from the local cache.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

HUB_FORMAT = "specaware-hub/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def is_hub_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def is_repo_id(text: str) -> bool:
    """`owner/name` that is not a local path: fetched from the hub (or its offline cache)."""
    parts = str(text).split("/")
    return (len(parts) == 2 and all(parts) and not Path(text).exists()
            and not str(text).startswith((".", "~")) and "\\" not in str(text)
            and Path(text).suffix not in _FILE_SUFFIXES)


# names that are files, never repo ids: a missing export stays a "not found" error
_FILE_SUFFIXES = {".safetensors", ".json", ".pt", ".pth", ".bin", ".ckpt", ".yaml", ".tar"}


def _download(repo_id: str, filename: str, **kwargs) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return Path(hf_hub_download(repo_id, filename, **kwargs))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise FileNotFoundError(f"{repo_id}: cannot get {filename} from the hub or its cache "
                                f"({type(e).__name__}: {e}); pass a local folder with "
                                f"{CONFIG_NAME} and {WEIGHTS_NAME}, or go online") from e


def weights_file(model_id: str, **kwargs) -> Path:
    """`model.safetensors` of a local folder or of a hub repo id."""
    local = Path(model_id) / WEIGHTS_NAME
    if Path(model_id).is_dir():
        if not local.is_file():
            raise FileNotFoundError(f"{model_id}: no {WEIGHTS_NAME}; a specaware hub folder holds "
                                    f"{CONFIG_NAME}, {WEIGHTS_NAME} and {CARD_NAME}")
        return local
    return _download(model_id, WEIGHTS_NAME, **kwargs)


def read_config(model_id: str | Path, **kwargs) -> dict[str, Any]:
    path = (Path(model_id) / CONFIG_NAME if Path(model_id).is_dir()
            else _download(str(model_id), CONFIG_NAME, **kwargs))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a specaware hub folder holds {CONFIG_NAME} "
                                f"(model_config, variant, ...) next to {WEIGHTS_NAME}")
    config = json.loads(path.read_text())
    if "model_config" not in config:
        raise ValueError(f"{path}: no 'model_config' key, so this is not a specaware hub folder "
                         "(write one with save_pretrained or `specaware export --format hub`)")
    return config


def read_hub(model_id: str | Path, map_location="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, meta in load_pretrained's terms) of a hub folder or repo id."""
    from safetensors.torch import load_file
    config = read_config(model_id)
    state = load_file(str(weights_file(str(model_id))), device=str(map_location))
    pre = config.get("pretraining") or {}
    meta = {"format": HUB_FORMAT, "model": config.get("variant"),
            "model_config": config["model_config"], "step": pre.get("step"), "pretraining": pre}
    return state, meta


def load_encoder_weights(encoder, weights: str | Path, map_location="cpu") -> None:
    """Strict load of the `encoder.*` part of `weights` (errors list missing/unexpected keys)."""
    from specaware.export import match_scalars, read_safetensors
    from specaware.finetune import api
    state = read_safetensors(Path(weights), map_location)
    wanted = encoder.state_dict()
    given = match_scalars(api._encoder_part(state), wanted)
    api._check_keys(Path(weights), wanted, given, ())
    encoder.load_state_dict(given, strict=True)


def save_weights(model, folder: str | Path) -> Path:
    """model.safetensors of a module (tied weights handled by safetensors' save_model)."""
    from safetensors.torch import save_model
    path = Path(folder) / WEIGHTS_NAME
    save_model(model, str(path), metadata={"format": HUB_FORMAT})
    return path


def pretraining_summary(train_config: dict | None, step: int | None) -> dict:
    """What the weights saw: sensors with tile counts, bands and ranges (nm), and the data."""
    data = (train_config or {}).get("data", {}) or {}
    out: dict[str, Any] = {"format": HUB_FORMAT, "step": step, "data": data.get("shards") or None,
                           "sensors": {}}
    shards = data.get("shards")
    if shards and Path(shards).is_dir() and (Path(shards) / "manifest.json").is_file():
        manifest = json.loads((Path(shards) / "manifest.json").read_text())
        out["tiles"] = manifest.get("total")
        for name, entry in (manifest.get("sensors") or {}).items():
            out["sensors"][name] = {"tiles": entry.get("count"), "bands": entry.get("bands"),
                                    "range_nm": _sensor_range(name)}
    return out


def _sensor_range(name: str) -> list[float] | None:
    try:
        from specaware.sensors import get_sensor
        wl = get_sensor(name).wavelength
        return [round(float(wl.min()), 1), round(float(wl.max()), 1)]
    except Exception:                      # "unknown" or a sensor outside the catalogue
        return None


def model_card(config: dict):
    """`huggingface_hub.ModelCard` listing the variant, the sensors and band ranges, the data."""
    from huggingface_hub import ModelCard
    pre = config.get("pretraining") or {}
    mc = config.get("model_config") or {}
    rows = [f"| {name} | {s.get('tiles', '?')} | {s.get('bands', '?')} | "
            f"{'-'.join(f'{v:g}' for v in s['range_nm']) if s.get('range_nm') else '?'} |"
            for name, s in (pre.get("sensors") or {}).items()]
    sensors = ("| sensor | tiles | bands | range (nm) |\n|---|---|---|---|\n" + "\n".join(rows)
               if rows else "Not recorded (the weights were not exported from a run whose shards "
                            "were found).")
    text = f"""---
library_name: specaware
tags: [specaware, hyperspectral, remote-sensing, feature-extraction]
---
# SpecAware encoder `{config.get('variant') or 'custom'}`

Hypernetwork-conditioned Soft-MoE masked autoencoder encoder over any band set
(wavelengths and FWHM in nm, GSD in m).

- variant: `{config.get('variant')}`; width {mc.get('embed_dim')}, depth {mc.get('depth')},
  patch {mc.get('patch_size')} px
- pretraining step: {pre.get('step')}
- data: {pre.get('data') or 'not recorded'}

## Sensors and band ranges seen in pretraining
{sensors}

## Use
```python
import specaware
bb = specaware.create_model("{config.get('variant')}", features_only=True,
                            pretrained="THIS_FOLDER_OR_REPO", sensor="enmap")
maps = bb(image)   # [B, C, H, W] -> list of [B, D, H/p, W/p]
```
"""
    return ModelCard(text)


def write_hub(state: dict[str, torch.Tensor], meta: dict, folder: str | Path) -> Path:
    """A hub folder from an export's state dict and meta (`specaware export --format hub`)."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(folder / WEIGHTS_NAME),
              metadata={"format": HUB_FORMAT, "step": str(meta.get("step"))})
    config = {"model_config": meta.get("model_config", {}), "variant": meta.get("model"),
              "pretraining": pretraining_summary(meta.get("train_config"), meta.get("step"))}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    model_card(config).save(str(folder / CARD_NAME))
    log.info("wrote hub folder %s (%d tensors)", folder, len(state))
    return folder


def export_hub(source: str | Path, folder: str | Path, verify: bool = True,
               trust_pickle: bool = False) -> Path:
    """Hub folder from an export (OUT.safetensors + OUT.json), or from a pretraining checkpoint
    (or run) folder, which goes through `specaware.export.export` first (its pickle
    allow-list and strict verification included): the whole MaskedAutoencoder's fp32 weights."""
    import tempfile

    from safetensors.torch import load_file
    from specaware.export import export, read_meta
    source = Path(source)
    if source.is_dir():
        Path(folder).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=Path(folder).parent) as tmp:
            out, _ = export(source, Path(tmp) / "export.safetensors", verify, trust_pickle)
            return export_hub(out, folder)
    weights = source.with_suffix(".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: give an export (OUT.safetensors with "
                                "OUT.json) or a checkpoint folder written by `specaware pretrain`")
    return write_hub(load_file(str(weights)), read_meta(source.with_suffix(".json")), folder)
