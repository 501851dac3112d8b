"""What a client loads once per process: the resolved config, its data, the frozen encoder.

The run folder holds `federated_config.json` (written by `specaware federated`), the clients'
`data/client-<i>.npz` and, after the last round, `models/<strategy>/client-<i>.safetensors`
(every trainable parameter of that client's final model, for the audit).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from specaware.config import from_dict
from specaware.federated.config import FederatedConfig
from specaware.federated.data import ClientData

CONFIG_FILE = "federated_config.json"


def load_encoder(cfg: FederatedConfig) -> nn.Module:
    """The frozen encoder every client and the server share: the checkpoint's, or the
    variant's seeded random initialisation (identical in every process)."""
    from specaware.finetune.api import build_encoder, load_pretrained
    if cfg.model.checkpoint:
        return load_pretrained(cfg.model.checkpoint)
    torch.manual_seed(cfg.train.seed)
    return build_encoder(variant=cfg.model.variant)


@dataclass
class ClientSetup:
    cfg: FederatedConfig
    run_dir: Path
    partition: int
    data: ClientData
    encoder: nn.Module

    @property
    def num_classes(self) -> int:
        return len(self.data.class_names)

    def model_path(self, strategy: str) -> Path:
        return self.run_dir / "models" / strategy / f"client-{self.partition}.safetensors"

    def save_client_model(self, model, strategy: str) -> Path:
        from safetensors.torch import save_file
        path = self.model_path(strategy)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = model.shared_names() + model.private_names()
        save_file({k: v.contiguous() for k, v in model.state_of(names).items()}, str(path),
                  metadata={"strategy": strategy, "client": self.data.name})
        return path


def read_config(source: str | Path) -> tuple[FederatedConfig, Path]:
    """(config, run folder) from a `federated_config.json` path, or from the JSON text itself
    (the deployment engine's run config carries it, so sites need no shared file system; the
    run folder is then the config's `out`)."""
    text = str(source)
    if text.lstrip().startswith("{"):
        cfg = from_dict(FederatedConfig, json.loads(text))
        return cfg, Path(cfg.out)
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the federated run config is missing; it is written "
                                "by `specaware federated` into the run folder")
    return from_dict(FederatedConfig, json.loads(path.read_text())), path.parent


@functools.lru_cache(maxsize=8)
def load_setup(config_source: str, partition: int, data_path: str = "") -> ClientSetup:
    """The client's setup; `data_path` (a SuperNode's `--node-config data-path=...`) overrides
    the run folder's `data/client-<partition>.npz`."""
    torch.set_num_threads(1)      # one core per simulated client
    cfg, run_dir = read_config(config_source)
    path = data_path or run_dir / "data" / f"client-{partition}.npz"
    data = ClientData.load(path)
    if cfg.classes and data.class_names != list(cfg.classes):
        raise ValueError(f"{path}: classes {data.class_names} differ from the run's "
                         f"{list(cfg.classes)}; every site must use the same class list, in "
                         "the same order")
    encoder = load_encoder(cfg)
    encoder.requires_grad_(False)
    return ClientSetup(cfg, run_dir, partition, data, encoder)
