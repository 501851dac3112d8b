"""Parameter groups of AdamW for pretraining and fine-tuning: one no-decay rule, and the
encoder's own learning rate when fine-tuning (docs/DESIGN.md section 4, "Optimisation").

Weight decay pulls a weight toward 0. That regularises matrices that mix features, and is
wrong for everything whose size carries meaning or is normalised away:
- biases, including the experts' per-expert biases `b1` [e, h] and `b2` [e, d] (2-D);
- normalisation layers (LayerNorm, RMSNorm, GroupNorm, BatchNorm gains and shifts);
- embedding tables (nn.Embedding: `sensor_table`, `level_table`) and learned tokens and
  position tables (`pos_embed`, `cls_token`, `mask_token`, `no_content`);
- parameters the forward pass normalises: the Soft-MoE router's `phi` (l2-normalised per
  slot, its length only changes the effective learning rate) and its learned `scale`;
- any other 0-D or 1-D parameter.
"""
from __future__ import annotations

from torch import nn

__all__ = ["no_decay", "param_groups", "NO_DECAY_LEAVES", "NO_DECAY_MODULES"]

NO_DECAY_LEAVES = frozenset({"bias", "b1", "b2", "phi", "scale", "pos_embed", "cls_token",
                             "mask_token", "no_content"})
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    """Full parameter name -> the module that holds it."""
    return {f"{prefix}.{leaf}" if prefix else leaf: module
            for prefix, module in model.named_modules()
            for leaf, _ in module.named_parameters(recurse=False)}


def no_decay(name: str, param: nn.Parameter, owner: nn.Module | None = None) -> bool:
    """True when parameter `name` (held by module `owner`) gets no weight decay."""
    leaf = name.rsplit(".", 1)[-1]
    return (param.ndim <= 1 or leaf in NO_DECAY_LEAVES
            or isinstance(owner, NO_DECAY_MODULES))


def param_groups(model: nn.Module, *, lr: float, weight_decay: float,
                 encoder_lr: float | None = None) -> list[dict]:
    """AdamW groups of the trainable parameters, in a stable (named) order.

    encoder_lr: learning rate of the parameters of `model.encoder` (fine-tuning a head on a
    pretrained encoder); None = one learning rate for all. Returns non-empty groups
    {"name", "params", "names", "lr", "weight_decay"} named decay / no_decay, prefixed by
    encoder_ / head_ when encoder_lr is given; "names" lets tests and logs say which tensors
    went where (torch keeps unknown group keys and ignores them).
    """
    owners = _owners(model)
    encoder = getattr(model, "encoder", None) if encoder_lr is not None else None
    in_encoder = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "" if encoder_lr is None else ("encoder_" if id(p) in in_encoder else "head_")
        kind = "no_decay" if no_decay(name, p, owners.get(name)) else "decay"
        group = groups.setdefault(part + kind, {
            "name": part + kind, "params": [], "names": [],
            "lr": encoder_lr if part == "encoder_" else lr,
            "weight_decay": 0.0 if kind == "no_decay" else weight_decay})
        group["params"].append(p)
        group["names"].append(name)
    order = ["decay", "no_decay", "encoder_decay", "encoder_no_decay", "head_decay",
             "head_no_decay"]
    return [groups[k] for k in order if k in groups]
