"""A client's model: frozen pretrained encoder + prompt tokens + classification head, and which
of its parameters travel for each strategy (docs/FEDERATED.md "Method").

Strategies (the method and its baselines, all on the same frozen encoder):
  prompt_dual         shared + private prompts; shared prompts FedAvg'd, private prompts and
                      head stay on the client; dual-prompt and class-prototype alignment
                      (FedRSCLIP's shared/private prompts; its text alignment replaced, see below)
  prompt_shared       shared prompts only (FedAvg'd), head on the client
  fedavg_head_blocks  no prompts; head + the encoder's last K blocks (and final norm) FedAvg'd
  local               the prompt_dual model trained on each client alone; nothing travels

Pooling: mean over the prompt outputs and patch tokens after the final norm.

Letters: b batch, d width, K classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn

from specaware.finetune.heads.common import set_trainable
from specaware.finetune.prompts import PromptTokens
from specaware.federated.config import ModelConfig

PROMPT_GROUPS = {"prompt_dual": ("shared", "private"), "local": ("shared", "private"),
                 "prompt_shared": ("shared",), "fedavg_head_blocks": ()}


class ClientModel(nn.Module):
    """batch (INTERFACES.md) -> logits [b, K]; `shared_state()` is what the client sends."""

    def __init__(self, encoder: nn.Module, num_classes: int, strategy: str, cfg: ModelConfig):
        super().__init__()
        self.encoder, self.strategy = encoder, strategy
        groups = PROMPT_GROUPS[strategy]
        sizes = {"shared": cfg.shared_prompts, "private": cfg.private_prompts}
        self.prompts = (PromptTokens(encoder, {g: sizes[g] for g in groups}, deep=cfg.deep)
                        if groups else None)
        if strategy == "fedavg_head_blocks":
            set_trainable(encoder, "partial", cfg.last_blocks)
        else:
            set_trainable(encoder, "encoder")
        self.head = nn.Sequential(nn.LayerNorm(encoder.embed_dim),
                                  nn.Linear(encoder.embed_dim, num_classes))
        self.last_blocks = cfg.last_blocks

    def train(self, mode: bool = True):
        super().train(mode)
        if self.strategy != "fedavg_head_blocks":
            self.encoder.eval()          # frozen: no dropout / drop-path while prompts learn
        return self

    def features(self, batch: dict, groups: tuple[str, ...] | None = None) -> Tensor:
        """Pooled features [b, d] with the prompts of `groups` (None: all of the model's)."""
        if self.prompts is None:
            out = self.encoder(batch)
            return reduce(out.tokens[:, self.encoder.num_prefix_tokens:], "b n d -> b d", "mean")
        return self.prompts.pooled(self.encoder, batch, groups)

    def forward(self, batch: dict) -> Tensor:
        return self.head(self.features(batch))

    # ------------------------------------------------------------ what travels, what stays
    def shared_names(self) -> list[str]:
        """Names of the parameters FedAvg'd by the server for this strategy."""
        if self.strategy in ("prompt_dual", "prompt_shared"):
            return ["prompts.groups.shared"]
        if self.strategy == "fedavg_head_blocks":
            depth = len(self.encoder.blocks)
            blocks = tuple(f"encoder.blocks.{i}." for i in range(depth - self.last_blocks, depth))
            return [n for n, p in self.named_parameters()
                    if n.startswith(("head.", "encoder.norm.") + blocks)]
        return []

    def private_names(self) -> list[str]:
        """Trainable parameters that never leave the client."""
        shared = set(self.shared_names())
        return [n for n, p in self.named_parameters() if p.requires_grad and n not in shared]

    def state_of(self, names: list[str]) -> dict[str, Tensor]:
        params = dict(self.named_parameters())
        return {n: params[n].detach().clone() for n in names}

    def load_state_of(self, state: dict[str, Tensor]) -> None:
        params = dict(self.named_parameters())
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise KeyError(f"parameters {unknown} are not in the {self.strategy} client model")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].dtype).reshape(params[name].shape))


def alignment(a: Tensor, b: Tensor) -> Tensor:
    """Mean (1 - cosine similarity) of the rows of a and b [b, d]."""
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean()


def local_loss(model: ClientModel, batch: dict, prototypes: Tensor | None,
               dual_weight: float, prototype_weight: float) -> tuple[Tensor, dict]:
    """Cross-entropy of the client's prediction plus, for shared+private prompts, the
    dual-prompt alignment (shared-only vs shared+private features) and the class-prototype
    alignment of the shared-only features to the server's prototypes [K, d] (NaN rows:
    classes no client reported)."""
    label = batch["label"]
    if model.prompts is None or "private" not in model.prompts.names:
        ce = F.cross_entropy(model(batch), label)
        return ce, {"ce": ce.item()}
    both = model.features(batch, ("shared", "private"))
    shared = model.features(batch, ("shared",))
    ce = F.cross_entropy(model.head(both), label)
    dual = alignment(shared, both.detach())
    loss, parts = ce + dual_weight * dual, {"ce": ce.item(), "dual": dual.item()}
    if prototypes is not None and prototype_weight > 0:
        target = prototypes[label]
        known = ~target.isnan().any(dim=-1)
        if known.any():
            proto = alignment(shared[known], target[known])
            loss = loss + prototype_weight * proto
            parts["prototype"] = proto.item()
    return loss, parts
