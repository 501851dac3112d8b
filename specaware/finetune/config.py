"""FinetuneConfig: the typed config tree of `specaware finetune` (docs/DESIGN.md section 4 rules:
defaults here, YAML files in configs/finetune/ override, `key=value` last, unknown keys fail)."""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from typing import Literal, Optional

from specaware.config import ConfigError
from specaware.tracking import WandbSection

Task = Literal["classification", "segmentation", "change"]


@dataclass
class DataConfig:
    """Where the labelled data comes from.

    kind=mat: `benchmark` + `image` (+ `gt`; change: `image2` for t2) .mat files; with
    `protocol.split=fixed`, `gt` is the benchmark's training map and `test_gt` its test map
    (the same file twice when one file holds both);
    kind=geotiff: `images` + `masks` GeoTIFF lists (change: `images2` for t2);
    kind=tiles: `root` folder of `<class>/<tile>.tif`; kind=shards: labelled webdataset shards
    (`train_shards`, `val_shards`, `test_shards`).
    """
    kind: Literal["mat", "geotiff", "tiles", "shards"] = "mat"
    benchmark: str = ""
    image: str = ""
    image2: str = ""
    gt: str = ""
    test_gt: str = ""             # fixed split's test map (protocol.split=fixed)
    keys: dict = field(default_factory=dict)       # .mat key overrides: image/gt/test_gt/t1/t2
    images: list[str] = field(default_factory=list)
    images2: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    root: str = ""
    train_shards: str = ""
    val_shards: str = ""
    test_shards: str = ""
    wavelength: str = ""          # file of band centres (nm or um; optional FWHM column)
    wavelength2: str = ""         # the same for t2
    sensor: str = ""              # catalogue name when a GeoTIFF carries no wavelengths
    sensor2: str = ""
    normalize: Literal["auto", "none", "minmax", "standard"] = "auto"
    # GeoTIFF masks: true = 0 is unlabelled and classes are 1..K; false = classes 0..K-1 as
    # stored; unset = true for classification/segmentation, false for change (0 = no change)
    zero_is_unlabelled: Optional[bool] = None
    ignore_value: int = 255           # GeoTIFF mask value that means unlabelled
    num_classes: int = 0              # 0 = infer from the data


@dataclass
class ActiveConfig:
    """protocol.active.*: active learning (finetune/active.py); rounds=0 is off."""
    rounds: int = 0
    budget: int = 16                 # pixels queried per round (the oracle labels them)
    initial_per_class: int = 2       # labelled pixels per class before round 1
    score: str = "margin"            # margin | entropy
    candidates: int = 4              # uncertain candidates per query, clustered for diversity
    pseudo_threshold: float = 0.95   # confidence of the weak view for a pseudo-label; 1 = off
    epochs: int = 200                # full-batch steps of the linear classifier per round
    # what trains between rounds (finetune/active_train.py): linear = only the linear scorer on
    # the frozen encoder's features; prompt | full = the k-shot method's model is fine-tuned on
    # labelled + confident pseudo-labelled samples before each round's scoring
    train: str = "linear"
    train_epochs: int = 3            # fine-tuning epochs per round (train=prompt|full)
    pseudo_max: int = 64             # most confident pseudo-labels a round's fine-tuning uses
    max_pixels: int = 0              # > 0: a seeded random subset of the labelled pixels (speed)


@dataclass
class ProtocolConfig:
    """Split rules: `per_class` labelled pixels per class, or `fraction` of them (or of tiles).

    split=fixed keeps a benchmark's own training and test maps (data.gt, data.test_gt) and
    ignores per_class/fraction; validation is `val_per_class`/`val_fraction` of each class's
    training pixels (default 10 %), so the seeds vary only validation, init and batch order.
    """
    split: Literal["random", "fixed", "kshot"] = "random"   # kshot: exactly per_class per class
    per_class: Optional[int] = 30
    fraction: Optional[float] = None
    val_per_class: Optional[int] = None
    val_fraction: Optional[float] = None
    test_fraction: float = 0.2        # tiles/GeoTIFF: share of tiles held out for test
    seeds: list[int] = field(default_factory=lambda: [0])
    # pixel-patch size for pixel-wise classification. The encoder standardises each band per
    # sample, so a one-token patch inside a homogeneous field holds only noise: give the pixel
    # context of several tokens (24 = 3 x 3 tokens at patch size 8).
    patch: int = 24
    tile: int = 32                    # tile size for dense heads (segmentation, change)
    # k-shot grid (finetune/kshot.py): non-empty runs every shot count x method over the seeds
    shots: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["linear", "prompt", "full"])
    active: ActiveConfig = field(default_factory=ActiveConfig)   # finetune/active.py
    stride: int = 0                   # 0 = tile (no overlap)


@dataclass
class LoraConfig:
    """Low-rank adapters for model.freeze=lora (finetune/lora.py): W + (alpha / rank) A B."""
    rank: int = 8
    alpha: float = 16.0
    # qkv, proj: attention projections; mlp: dense MLP layers; experts: Soft-MoE expert banks
    targets: list[str] = field(default_factory=lambda: ["qkv", "proj", "mlp", "experts"])


@dataclass
class ModelConfig:
    init: Literal["pretrained", "random", "both"] = "pretrained"
    checkpoint: str = ""              # export (.safetensors + .json), `specaware export`
    variant: str = "specaware_debug"  # architecture when no checkpoint is given
    allow_missing: list[str] = field(default_factory=list)
    head: Literal["linear", "mlp"] = "linear"
    pool: Literal["mean", "center"] = "center"
    # what is frozen: none (every weight trains), encoder (linear probe / frozen features),
    # partial (all but the last trainable_blocks), lora (encoder frozen, adapters train).
    # Deprecated spellings: full (= none), frozen (= encoder).
    freeze: Literal["none", "encoder", "partial", "lora", "full", "frozen"] = "none"
    trainable_blocks: int = 1
    indices: list[int] = field(default_factory=list)   # empty = 4 evenly spaced blocks
    decoder_width: int = 64
    fusion: Literal["diff", "concat", "both"] = "diff"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # > 0: that many learnable prompt tokens enter the frozen encoder (finetune/prompt_tuning.py;
    # any task, with freeze=encoder); protocol.methods=prompt sets 8 when this is 0
    prompts: int = 0


@dataclass
class OptimConfig:
    epochs: int = 30
    batch_size: int = 32              # global: split over the processes of a torchrun launch
    lr: float = 1e-3                  # head
    encoder_lr: float = 1e-4          # encoder blocks that train (partial/full)
    # prompt tokens (model.prompts > 0); None = the head's lr. VPT tunes the prompts' rate
    # apart from the head's (Jia et al. 2022, sec. 4.1)
    prompt_lr: Optional[float] = None
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    patience: int = 8                 # epochs without validation gain before stopping
    class_weight: Literal["none", "balanced"] = "none"   # balanced: inverse class frequency
    max_steps_per_epoch: int = 0      # 0 = whole training set
    num_workers: int = 0


@dataclass
class FinetuneConfig:
    task: Task = "classification"
    out: str = "runs/finetune"
    device: str = "auto"              # auto = cuda when available
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # bf16: autocast of the forward pass (on GPU; on CPU torch's CPU autocast, slow without
    # AMX); weights, optimizer, normalisation statistics, loss and metrics stay fp32
    precision: Literal["fp32", "bf16"] = "fp32"
    # "" = start fresh; auto = continue from out/<init>/seed<k>/last (model, optimizer,
    # schedule, early stopping, RNG) where it exists, skipping finished (init, seed) runs
    resume: str = ""
    wandb: WandbSection = field(default_factory=WandbSection)    # same keys as pretraining


FILE_LIST_KEYS = ("images", "images2", "masks")


def expand_file_lists(data: DataConfig) -> DataConfig:
    """Shell-style patterns in the file-list keys (`data.images=scenes/*.tif`) become the
    sorted list of matching files, so `images` and `masks` pair up by name order. A pattern
    that matches nothing is an error naming the key: a silently empty list would train on
    fewer scenes than the user meant."""
    for key in FILE_LIST_KEYS:
        out: list[str] = []
        for item in getattr(data, key):
            if not glob.has_magic(item):
                out.append(item)
                continue
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise ConfigError(f"config key 'data.{key}': pattern {item!r} matches no file "
                                  f"(patterns are expanded relative to the current folder)")
            out.extend(found)
        setattr(data, key, out)
    return data
