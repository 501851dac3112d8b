"""The pretraining configuration tree (docs/DESIGN.md section 4).

Defaults here, then `configs/pretrain/*.yaml`, then `key=value` overrides, through the generic
machinery in `specaware.config` (unknown keys and wrong types fail naming the dotted key).
The resolved tree travels with every checkpoint and is logged to wandb.

Batch arithmetic: `data.batch_size` tiles per process per micro-step; `train.grad_accum`
micro-steps per optimizer step; global batch = batch_size * grad_accum * world_size.
One "step" everywhere below is one optimizer step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from specaware.config import ConfigError, build, merge, to_dict
from specaware.data.shard_reader import require_shard_files
from specaware.data.views import ViewConfig
from specaware.tracking import WandbSection
from specaware.training import expert_parallel

__all__ = ["PretrainConfig", "load_config", "validate", "ConfigError"]


@dataclass
class ModelSection:
    name: str = "specaware_debug"          # a variant from specaware.list_models()
    overrides: dict[str, Any] = field(default_factory=dict)  # keyword overrides of its config
    mask_ratio: float | None = None        # None = the variant's default (0.75)


@dataclass
class CurationSection:
    """Which tiles the train stream draws, and how often (specaware.data.curate, CSMoE)."""
    balance: list[str] = field(default_factory=list)  # fields whose joint strata are drawn
    # equally, e.g. [landcover, climate_zone, sensor, "mean_reflectance:4"]; [] = natural mix
    min_entropy: float | None = None       # bits; remove tiles whose `entropy` is below
    drop_quantile: float | None = None     # also remove this fraction of lowest-entropy tiles
    max_oversample: float = 10.0           # no stratum drawn more than this x its natural share
    keys_file: str = ""                    # KEYS.json of `specaware curate`: only these tiles

    @property
    def active(self) -> bool:
        return (bool(self.balance) or self.min_entropy is not None or bool(self.drop_quantile)
                or bool(self.keys_file))


@dataclass
class DataSection:
    shards: str = ""                       # shard dir with manifest.json, a .tar or a brace pattern
    batch_size: int = 8                    # tiles per process per micro-step
    num_workers: int = 2
    shuffle_buffer: int = 256
    # augmentations / cross-sensor views (specaware.data.views.ViewConfig); null = decode only.
    # Typed, so `data.views.crop=64` changes one field and keeps the YAML's others.
    views: ViewConfig | None = None
    bucket_by: Literal["none", "sensor", "bands", "sensor_bands"] = "none"  # unpadded batches
    max_skip_rate: float = 0.05            # fail once this fraction of samples was broken
    curation: CurationSection = field(default_factory=CurationSection)  # needs a shard dir


@dataclass
class OptimSection:
    lr: float = 1.5e-4                     # peak learning rate (after warmup)
    min_lr: float = 1.0e-6                 # floor of the cosine decay
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1.0e-8
    weight_decay: float = 0.05             # biases, norms, tokens, position tables get none
    grad_clip: float = 1.0                 # global-norm clipping; 0 = off


@dataclass
class DeepSpeedSection:
    zero_stage: int = 1                    # 0..3
    precision: Literal["fp32", "bf16"] = "fp32"
    preset: str = ""                       # optional YAML of extra DeepSpeed keys (configs/deepspeed)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on GPU, gloo on CPU
    # ranks that split each Soft-MoE layer's experts (slots by all-to-all); 1 = all on every
    # rank. Must divide the world size and every layer's expert count; ZeRO 1 or 2 only.
    expert_parallel: int = 1


@dataclass
class TrainSection:
    steps: int = 1000                      # optimizer steps in total
    grad_accum: int = 1                    # micro-steps per optimizer step
    seed: int = 0
    log_every: int = 10
    max_nonfinite: int = 10                # consecutive non-finite micro-batches before failing
    peak_tflops: float = 0.0               # per device, for MFU; 0 = look up the GPU, else no MFU
    deterministic: bool = False            # deterministic kernels (determinism.py; README)


@dataclass
class CheckpointSection:
    run_dir: str = "runs/pretrain"
    every: int = 500                       # steps between checkpoints (the last step always saves)
    keep_last: int = 3                     # complete checkpoints kept; 0 = keep all
    keep_every: int = 0                    # also keep every multiple of this step forever; 0 = none
    enabled: bool = True                   # false: write no checkpoints at all (benchmarks, smoke)


@dataclass
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    wandb: WandbSection = field(default_factory=WandbSection)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def validate(cfg: PretrainConfig) -> PretrainConfig:
    """Range checks the type system cannot express; each error names the key and the fix."""
    _check(0 <= cfg.deepspeed.zero_stage <= 3, "deepspeed.zero_stage", "must be 0, 1, 2 or 3")
    _check(cfg.data.batch_size >= 1, "data.batch_size", "must be >= 1")
    _check(cfg.data.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check(0.0 <= cfg.data.max_skip_rate < 1.0, "data.max_skip_rate", "must be in [0, 1)")
    _check(cfg.train.steps >= 1, "train.steps", "must be >= 1")
    _check(cfg.train.grad_accum >= 1, "train.grad_accum", "must be >= 1")
    _check(cfg.train.log_every >= 1, "train.log_every", "must be >= 1")
    _check(cfg.train.max_nonfinite >= 1, "train.max_nonfinite", "must be >= 1")
    _check(cfg.optim.lr > 0, "optim.lr", "must be > 0")
    _check(0 <= cfg.optim.min_lr <= cfg.optim.lr, "optim.min_lr", "must be in [0, optim.lr]")
    _check(cfg.optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    _check(cfg.optim.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables clipping)")
    _check(all(0 <= b < 1 for b in cfg.optim.betas), "optim.betas", "both must be in [0, 1)")
    _check(cfg.checkpoint.every >= 1, "checkpoint.every", "must be >= 1")
    _check(cfg.checkpoint.keep_last >= 0, "checkpoint.keep_last", "must be >= 0 (0 keeps all)")
    _check(cfg.wandb.panel_every >= 0, "wandb.panel_every", "must be >= 0 (0 disables panels)")
    mr = cfg.model.mask_ratio
    _check(mr is None or 0.0 < mr < 1.0, "model.mask_ratio", "must be in (0, 1) or null")
    _check(bool(cfg.checkpoint.run_dir), "checkpoint.run_dir", "must name a folder")
    mc = model_config(cfg)                  # model.name and model.overrides, before any set-up
    expert_parallel.check_config(cfg.deepspeed.expert_parallel, cfg.deepspeed.zero_stage,
                                 lambda: _mae(mc))
    from specaware.training.ds_config import validate_precision
    validate_precision(cfg)
    views = view_config(cfg.data.views)
    _check(views is None or views.normalize.mode != "per_sample", "data.views.normalize.mode",
           "per_sample standardises each tile over ALL its pixels before masking, so the "
           "visible patches would carry the hidden patches' mean and std; pretraining refuses "
           "it. Use none or affine: the model standardises every sample from its visible "
           "patches itself")
    cur = cfg.data.curation
    _check(cur.drop_quantile is None or 0.0 <= cur.drop_quantile < 1.0,
           "data.curation.drop_quantile", "must be in [0, 1) or null")
    _check(cur.max_oversample >= 1.0, "data.curation.max_oversample", "must be >= 1")
    return cfg


def model_config(cfg: PretrainConfig):
    """The MAEConfig that `model.name` + `model.overrides` resolve to; a bad name or override
    is a ConfigError naming the key as written in the pretraining config."""
    from specaware.model.variants import list_models, resolve_model_config, unknown_model_message
    if cfg.model.name not in list_models():
        raise ConfigError(f"config key 'model.name': {unknown_model_message(cfg.model.name)}")
    return resolve_model_config(cfg.model.name, cfg.model.overrides, prefix="model.overrides.")


def _mae(mc):
    from specaware.model.mae import MaskedAutoencoder
    return MaskedAutoencoder(mc)


def view_config(views: ViewConfig | dict | None) -> ViewConfig | None:
    """`data.views` as the loader's ViewConfig (None = decode only, no augmentation)."""
    if views is None or isinstance(views, ViewConfig):
        return views
    return merge(ViewConfig(), views, prefix="data.views.")


def load_config(files=(), overrides=()) -> PretrainConfig:
    """Defaults <- YAML files in order <- `key=value` overrides, then range-checked."""
    return validate(build(PretrainConfig, files=list(files), overrides=list(overrides)))


_SHARDS_HELP = ("pass data.shards=DIR (a folder with manifest.json written by `specaware shard`, "
                "or `specaware synth` for a small synthetic set) or a brace pattern such as "
                "shards/train-{000000..000009}.tar")


def require_shards(cfg: PretrainConfig) -> None:
    """Training needs data: the shards named by `data.shards` must exist. Checked before the
    model and DeepSpeed start, so a typo costs a one-line error, not a traceback per rank."""
    if not cfg.data.shards:
        raise ConfigError(f"config key 'data.shards' is empty: {_SHARDS_HELP}")
    require_shard_files("data.shards", cfg.data.shards, _SHARDS_HELP)


def resolved(cfg: PretrainConfig) -> dict:
    """The JSON/YAML-able tree saved with checkpoints and logged to wandb."""
    return to_dict(cfg)
