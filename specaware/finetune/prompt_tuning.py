"""Prompt tuning for fine-tuning: learnable tokens in a frozen encoder, a trained head.

VPT-Shallow (Jia et al., ECCV 2022, sec. 3.2) through `finetune.prompts.PromptTokens`, the same
tokens the federated FedRSCLIP clients train. `attach_prompts` wraps a built head's encoder so
that `forward_features` (classification) and `forward_intermediates` (the segmentation and
change-detection decoders; both dates of a change pair see the same tokens) run with the
prompts. The prompt outputs are dropped before pooling or before the feature maps are formed,
so heads see patch tokens only. The encoder stays frozen and the tokens are registered on the
head model (`prompt_tokens.*`): they learn at the head's rate, or at `optim.prompt_lr` when set
(their own optimizer group, `train.prompt_group`). `build_head` attaches them whenever
`model.prompts > 0`, so `load_finetuned` rebuilds the same modules.
"""
from __future__ import annotations

from torch import Tensor, nn

from specaware.finetune.prompts import PromptTokens


class PromptedEncoder(nn.Module):
    """A frozen encoder whose `forward_features(batch)` [b, n, d] includes m prompt tokens."""

    def __init__(self, encoder: nn.Module, prompts: PromptTokens):
        super().__init__()
        self.encoder = encoder
        object.__setattr__(self, "_prompts", prompts)   # owned (and trained) by the head model
        for name in ("embed_dim", "patch_size", "depth", "num_prefix_tokens"):
            if hasattr(encoder, name):
                setattr(self, name, getattr(encoder, name))

    def forward_features(self, batch: dict) -> Tensor:
        return self._prompts.features(self.encoder, batch)

    def forward_intermediates(self, batch: dict, indices=None, norm: bool = True) -> list[Tensor]:
        """Feature maps [b, d, h, w] after blocks `indices`, computed with the prompts."""
        prompts = self._prompts.sequence(batch["image"].shape[0])
        return self.encoder.forward_intermediates(batch, indices, norm, prompts=prompts)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()      # frozen: no dropout or statistics drift while the tokens learn
        return self

    def forward(self, batch: dict, **kwargs):
        return self.encoder(batch, **kwargs)


def attach_prompts(model: nn.Module, task: str, model_cfg) -> nn.Module:
    """`model` (a SceneClassifier, Segmenter or ChangeDetector with freeze=encoder) with
    `model_cfg.prompts` prompt tokens: only the tokens and the head (decoder) train."""
    if task not in ("classification", "segmentation", "change"):
        raise ValueError(f"model.prompts={model_cfg.prompts}: no prompt tuning for task={task}")
    if model_cfg.freeze not in ("encoder", "frozen"):
        raise ValueError(f"model.prompts={model_cfg.prompts} needs model.freeze=encoder (prompt "
                         f"tuning trains tokens in a frozen encoder), got {model_cfg.freeze}")
    encoder = model.encoder
    encoder.requires_grad_(False)
    model.prompt_tokens = PromptTokens(encoder, int(model_cfg.prompts))
    model.encoder = PromptedEncoder(encoder, model.prompt_tokens)
    model.freeze = "none"      # gradients must flow through the frozen encoder to the tokens
    return model
