"""FederatedConfig: the typed config tree of `specaware federated` (docs/FEDERATED.md).

Defaults here, YAML files in configs/federated/ override, `key=value` last, unknown keys fail
(the same `specaware.config` rules as pretraining and fine-tuning).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from specaware.config import ConfigError
from specaware.tracking import WandbSection

STRATEGIES = ("local", "fedavg_head_blocks", "prompt_shared", "prompt_dual")


@dataclass
class ClientSpec:
    """One site: the sensor it sees the ground through, optionally only a wavelength window
    (`bands: [lo_nm, hi_nm]`), so a site may hold a band set no other site has."""
    sensor: str = "enmap"
    bands: list[float] = field(default_factory=list)
    name: str = ""                    # "" = "<index>-<sensor>"


@dataclass
class DataConfig:
    """Labelled tiles of a hyperspectral source, split among the clients.

    kind=synth: scenes generated on the fly (`specaware synth`'s renderer) through the
    hyperspectral `source_sensor` at `gsd`; kind=scenes: `images` + `labels` (land-cover maps,
    same grid) read with rasterio. Tiles of `tile` px labelled by their dominant class (>=
    `purity` of the tile) are dealt to clients with Dirichlet(`alpha`) class proportions
    (alpha <= 0: uniform, IID), then each client's tiles are resampled onto its sensor's bands
    through the catalogue's spectral responses. Per client: `val_fraction` validation,
    `holdout_fraction` held out (the audit's non-members), the rest trains (the members).
    """
    kind: Literal["synth", "scenes"] = "synth"
    images: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    source_sensor: str = "aviris-ng"
    scenes: int = 6
    size: int = 96
    gsd: float = 10.0
    tile: int = 8
    purity: float = 0.7
    max_tiles_per_class: int = 0       # 0 = all
    min_tiles_per_class: int = 8       # classes with fewer tiles overall are left out
    alpha: float = 0.5
    val_fraction: float = 0.2
    holdout_fraction: float = 0.3
    seed: int = 0


@dataclass
class ModelConfig:
    """Frozen pretrained encoder plus prompts and head. `checkpoint` is an export
    (`specaware export`) or DeepSpeed folder; without one `variant` is built with random
    weights (only for smoke runs: the report says so)."""
    checkpoint: str = ""
    variant: str = "specaware_debug"
    shared_prompts: int = 4
    private_prompts: int = 4
    deep: bool = False
    last_blocks: int = 1               # K of the fedavg_head_blocks baseline


@dataclass
class TrainConfig:
    """Local training per round and the losses of the prompt method."""
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-3
    encoder_lr: float = 3e-4           # last K blocks of fedavg_head_blocks
    weight_decay: float = 1e-4
    dual_weight: float = 0.5           # dual-prompt alignment
    prototype_weight: float = 0.5      # class-prototype alignment (prompt_dual)
    seed: int = 0


@dataclass
class AuditSection:
    shadows: int = 16                  # LiRA shadow models per audited client
    shadow_epochs: int = 60
    clients: list[int] = field(default_factory=list)   # [] = every client


@dataclass
class DeploymentSection:
    """engine=deployment: `superlink` = host:port of a running SuperLink (its sites' SuperNodes
    connected); "" starts a SuperLink and one SuperNode per client on 127.0.0.1 for this run."""
    superlink: str = ""
    insecure: bool = True             # false: TLS, with root_certificates
    root_certificates: str = ""       # CA certificate file of the SuperLink (TLS)
    timeout: float = 3600.0           # seconds `flwr run` may take


@dataclass
class FederatedConfig:
    out: str = "federated_out"
    clients: list[ClientSpec] = field(default_factory=lambda: [
        ClientSpec("enmap"), ClientSpec("sentinel-2a"), ClientSpec("landsat-8")])
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    engine: Literal["simulation", "deployment"] = "simulation"
    deployment: DeploymentSection = field(default_factory=DeploymentSection)
    classes: list[str] = field(default_factory=list)   # filled by the data step
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    audit: bool = False
    audit_cfg: AuditSection = field(default_factory=AuditSection)
    wandb: WandbSection = field(default_factory=WandbSection)


def validate(cfg: FederatedConfig) -> FederatedConfig:
    """Range checks the types cannot express; each error names the key and the fix."""
    bad = [s for s in cfg.strategies if s not in STRATEGIES]
    _check(not bad and cfg.strategies, "strategies",
           f"{bad or '[]'}: choose from {list(STRATEGIES)}")
    _check(len(cfg.clients) >= 2, "clients", "federation needs >= 2 clients")
    for i, c in enumerate(cfg.clients):
        _check(len(c.bands) in (0, 2), f"clients[{i}].bands", "give [lo_nm, hi_nm] or []")
        _check_sensor(c.sensor, f"clients[{i}].sensor")
    _check_sensor(cfg.data.source_sensor, "data.source_sensor")
    _check(cfg.train.rounds >= 1, "train.rounds", "must be >= 1")
    _check(cfg.data.val_fraction + cfg.data.holdout_fraction < 0.9, "data.holdout_fraction",
           "validation + holdout must leave >= 10 % of the tiles for training")
    _check(cfg.model.shared_prompts >= 1, "model.shared_prompts", "must be >= 1")
    _check(cfg.model.private_prompts >= 1, "model.private_prompts", "must be >= 1")
    if cfg.data.kind == "scenes":
        _check(len(cfg.data.images) == len(cfg.data.labels) >= 1, "data.images",
               "kind=scenes needs one land-cover map in data.labels per image")
        for key in ("images", "labels"):
            missing = [p for p in getattr(cfg.data, key) if not Path(p).is_file()]
            _check(not missing, f"data.{key}", f"files not found: {missing}")
    if cfg.model.checkpoint:
        path = Path(cfg.model.checkpoint)
        _check(path.exists() or path.with_suffix(".safetensors").is_file(), "model.checkpoint",
               f"{path} not found (an export from `specaware export`, or a DeepSpeed folder)")
    return cfg


def _check_sensor(name: str, key: str) -> None:
    from specaware.sensors import UnknownSensorError, get_sensor
    try:
        get_sensor(name)
    except UnknownSensorError as e:
        raise ConfigError(f"config key '{key}': {e.args[0] if e.args else e}") from None


def _check(ok, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")
