"""Fine-tuned checkpoints: BEST.safetensors (head + encoder weights) + BEST.json (everything
needed to rebuild the model and prepare new data the same way: task, classes, head config,
the encoder's build recipe, normalisation, patch/tile size). Written atomically; loaded with
strict key matching; no pickle anywhere.

With model.freeze=lora on a pretrained encoder, BEST.safetensors holds only the adapters and
the head; BEST.json points to the base encoder (`encoder.pretrained_from`, with the file's
sha256 checked on load), which is loaded first and adapted.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from specaware.config import from_dict, to_dict
from specaware.export import CheckpointError, read_json_object, read_safetensors_header
from specaware.finetune.config import ModelConfig

FORMAT = "specaware-finetune/1"


def build_head(task: str, encoder: nn.Module, num_classes: int, m: ModelConfig) -> nn.Module:
    """The head of `task` around `encoder` with the freezing, decoder, LoRA and prompt-token
    options of `m`: training and `load_finetuned` build the same modules, so a checkpoint's
    keys (`prompt_tokens.*`, LoRA factors) always have a home."""
    model = _head(task, encoder, num_classes, m)
    if model.freeze == "lora":
        from specaware.finetune.lora import apply_lora
        apply_lora(encoder, m.lora.rank, m.lora.alpha, tuple(m.lora.targets))
    if m.prompts:
        from specaware.finetune.prompt_tuning import attach_prompts
        model = attach_prompts(model, task, m)
    return model


def _head(task: str, encoder: nn.Module, num_classes: int, m: ModelConfig) -> nn.Module:
    from specaware.finetune.heads import ChangeDetector, SceneClassifier, Segmenter
    indices = list(m.indices) or None
    if task == "classification":
        return SceneClassifier(encoder, num_classes, head=m.head, pool=m.pool, freeze=m.freeze,
                               trainable_blocks=m.trainable_blocks)
    if task == "segmentation":
        return Segmenter(encoder, num_classes, indices, m.decoder_width, m.freeze,
                         m.trainable_blocks)
    if task == "change":
        return ChangeDetector(encoder, num_classes, m.fusion, indices, m.decoder_width, m.freeze,
                              m.trainable_blocks)
    raise ValueError(f"task {task!r} is not one of classification, segmentation, change")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_finetuned(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write PATH.safetensors and PATH.json; a crash mid-write leaves the previous pair intact."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if meta.get("adapters_only"):
        from specaware.finetune.lora import adapter_state
        save_file({k: v.cpu() for k, v in adapter_state(model).items()}, str(tmp))
    else:
        save_model(model, str(tmp))
    meta_tmp = path.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps({"format": FORMAT, **meta}, indent=2, default=float))
    os.replace(tmp, path)
    os.replace(meta_tmp, path.with_suffix(".json"))
    return path


def read_meta(path: str | Path) -> dict:
    """NAME.json of a fine-tuned checkpoint, checked to be of this format."""
    json_path = Path(path).with_suffix(".json")
    meta = read_json_object(
        json_path, "not found: a fine-tuned checkpoint is NAME.safetensors + NAME.json as "
        "written by `specaware finetune`", "it is damaged: copy it again or re-run "
        "`specaware finetune`")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: format {meta.get('format')!r} is not {FORMAT!r}; "
                              "for a pretrained export use specaware.load_pretrained")
    return meta


def load_finetuned(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the fine-tuned model from its JSON and load its weights strictly; a damaged or
    mismatching file is one CheckpointError line naming it. A LoRA adapter checkpoint
    (`adapters_only`) loads its base encoder first (`_load_adapters`)."""
    from specaware.finetune import api
    meta = read_meta(path)
    try:
        enc, task, k = meta["encoder"], meta["task"], meta["num_classes"]
        head_cfg = from_dict(ModelConfig, meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{Path(path).with_suffix('.json')}: incomplete fine-tuned "
                                  f"checkpoint metadata ({type(e).__name__}: {e}); re-run "
                                  "`specaware finetune`") from None
    if meta.get("adapters_only"):
        return _load_adapters(path, meta, head_cfg, map_location), meta
    encoder = api.build_encoder(enc.get("model_config"), enc.get("model"))
    model = build_head(task, encoder, k, head_cfg)
    weights = Path(path).with_suffix(".safetensors")
    read_safetensors_header(weights)  # a damaged file: one line naming it
    # load_model, not load_state_dict: it re-ties the shared tensors save_model wrote once
    missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not fit the model rebuilt from its JSON; missing "
            f"{sorted(missing)[:20]}, unexpected {sorted(unexpected)[:20]}")
    return model.eval(), meta


def _load_adapters(path, meta: dict, head_cfg: ModelConfig, map_location) -> nn.Module:
    """The base encoder from `encoder.pretrained_from`, adapted, then adapters + head loaded."""
    from specaware.finetune import api
    enc = meta["encoder"]
    base = enc.get("pretrained_from")
    if not base or not (Path(base).exists() or Path(base).with_suffix(".safetensors").exists()):
        raise api.CheckpointError(f"{path}: holds LoRA adapters for the base encoder {base}, which "
                                "is not there; copy the base export to that path, or rebuild "
                                "the JSON's encoder.pretrained_from to where it is now")
    expected = enc.get("base_sha256")
    weights_file = Path(base).with_suffix(".safetensors")
    if expected and weights_file.is_file() and file_sha256(weights_file) != expected:
        raise api.CheckpointError(f"{path}: the base encoder {weights_file} changed since the adapters "
                         f"were trained (sha256 differs from {expected[:12]}...): adapters only "
                         "fit the weights they were trained on")
    encoder = api.load_pretrained(base, allow_missing=tuple(head_cfg.allow_missing),
                                  map_location=map_location)
    model = build_head(meta["task"], encoder, meta["num_classes"], head_cfg)
    state = load_file(str(Path(path).with_suffix(".safetensors")), device=str(map_location))
    wanted = set(model.state_dict())
    from specaware.finetune.lora import adapter_state
    missing = sorted(set(adapter_state(model)) - set(state))
    unexpected = sorted(set(state) - wanted)
    if missing or unexpected:
        raise api.CheckpointError(f"{path}: adapters do not fit the model rebuilt from its JSON; "
                         f"missing {missing[:20]}, unexpected {unexpected[:20]}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def model_meta(task: str, num_classes: int, class_names: list[str], m: ModelConfig,
               encoder: nn.Module, data: dict) -> dict:
    """The JSON part of a fine-tuned checkpoint (metrics are added when saving). LoRA on a
    pretrained export saves adapters only, pointing to the export (and its sha256)."""
    source = getattr(encoder, "specaware_source", {}) or {}
    base = source.get("path")
    info = {"model": source.get("model"), "model_config": source.get("model_config"),
            "pretrained_from": base}
    adapters_only = m.freeze == "lora" and bool(base)
    if adapters_only and Path(base).with_suffix(".safetensors").is_file():
        info["base_sha256"] = file_sha256(Path(base).with_suffix(".safetensors"))
    return {"task": task, "num_classes": num_classes, "class_names": list(class_names),
            "model": to_dict(m), "data": data, "encoder": info, "adapters_only": adapters_only}
