"""Fine-tuned checkpoints: BEST.safetensors (head + encoder weights) + BEST.json (everything
needed to rebuild the model and prepare new data the same way: task, classes, head config,
the encoder's build recipe, normalisation, patch/tile size). Written atomically; loaded with
strict key matching; no pickle anywhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from specaware.config import from_dict, to_dict
from specaware.finetune.config import ModelConfig

FORMAT = "specaware-finetune/1"


def build_head(task: str, encoder: nn.Module, num_classes: int, m: ModelConfig) -> nn.Module:
    """The head of `task` around `encoder` with the freezing and decoder options of `m`."""
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


def save_finetuned(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write PATH.safetensors and PATH.json; a crash mid-write leaves the previous pair intact."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp))
    meta_tmp = path.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps({"format": FORMAT, **meta}, indent=2, default=float))
    os.replace(tmp, path)
    os.replace(meta_tmp, path.with_suffix(".json"))
    return path


def read_meta(path: str | Path) -> dict:
    from specaware.finetune.api import CheckpointError
    json_path = Path(path).with_suffix(".json")
    if not json_path.is_file():
        raise CheckpointError(f"{json_path} not found: a fine-tuned checkpoint is NAME.safetensors "
                              "+ NAME.json as written by `specaware finetune`")
    try:
        meta = json.loads(json_path.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{json_path}: not valid JSON ({type(e).__name__}); it is damaged: "
                              "copy it again or re-run `specaware finetune`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{json_path}: format {fmt!r} is not {FORMAT!r}; for a pretrained "
                              "export use specaware.load_pretrained")
    return meta


def load_finetuned(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the fine-tuned model from its JSON and load its weights strictly; a damaged or
    mismatching file is one CheckpointError line naming it."""
    from specaware.finetune import api
    meta = read_meta(path)
    try:
        enc, task, k = meta["encoder"], meta["task"], meta["num_classes"]
        head_cfg = from_dict(ModelConfig, meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise api.CheckpointError(f"{Path(path).with_suffix('.json')}: incomplete fine-tuned "
                                  f"checkpoint metadata ({type(e).__name__}: {e}); re-run "
                                  "`specaware finetune`") from None
    encoder = api.build_encoder(enc.get("model_config"), enc.get("model"))
    model = build_head(task, encoder, k, head_cfg)
    weights = Path(path).with_suffix(".safetensors")
    api.read_safetensors_header(weights)  # a damaged file: one line naming it
    # load_model, not load_state_dict: it re-ties the shared tensors save_model wrote once
    missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
    if missing or unexpected:
        raise api.CheckpointError(
            f"{weights}: weights do not fit the model rebuilt from its JSON; missing "
            f"{sorted(missing)[:20]}, unexpected {sorted(unexpected)[:20]}")
    return model.eval(), meta


def model_meta(task: str, num_classes: int, class_names: list[str], m: ModelConfig,
               encoder: nn.Module, data: dict) -> dict:
    """The JSON part of a fine-tuned checkpoint (metrics are added when saving)."""
    source = getattr(encoder, "specaware_source", {}) or {}
    return {"task": task, "num_classes": num_classes, "class_names": list(class_names),
            "model": to_dict(m), "data": data,
            "encoder": {"model": source.get("model"), "model_config": source.get("model_config"),
                        "pretrained_from": source.get("path")}}
