"""The DeepSpeed config dict, generated from the typed `PretrainConfig`.

Keys that follow from our config (batch sizes, ZeRO stage, precision, clipping) are always
generated here, on top of per-stage tuning defaults; a preset YAML (`deepspeed.preset`, see configs/deepspeed/) may add tuning keys
(bucket sizes, overlap, offload...) but may not contradict a generated key: that is an error
naming both places, so the typed config stays the one source of truth.
The optimizer and scheduler are torch objects handed to `deepspeed.initialize`, not entries
here (DeepSpeed's own Adam would JIT-build a C++ op at start-up).

bf16 (`deepspeed.precision: bf16`): weights and activations in bf16, fp32 master weights in
the optimizer, and
  - gradient accumulation in fp32 (`data_types.grad_accum_dtype`; DeepSpeed's default for bf16
    is bf16, which rounds every micro-batch's contribution to 8 bits of mantissa). DeepSpeed
    0.19 supports this with ZeRO 1-3 only; ZeRO 0 accumulates in bf16, so ZeRO 0 + bf16 is
    refused with train.grad_accum > 1 (`validate_precision`);
  - gradient communication in fp32 (`communication_data_type`): the all-reduce / reduce-scatter
    sums gradients of every rank, and summing in bf16 loses the small ones against the large.
    It doubles the gradient traffic of a bf16 run; for the model sizes shipped (<= base) the
    step is compute-bound, and a cluster that needs the bandwidth can set
    `communication_data_type: bf16` in a preset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from specaware.config import ConfigError, load_yaml

__all__ = ["make_ds_config", "STAGE_DEFAULTS"]

# Tuning that is safe on CPU (gloo) and GPU alike; presets refine it per cluster.
STAGE_DEFAULTS: dict[int, dict[str, Any]] = {
    0: {},
    1: {"reduce_bucket_size": 5e8},
    2: {"contiguous_gradients": True, "overlap_comm": False, "reduce_scatter": True,
        "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8},
    3: {"contiguous_gradients": True, "overlap_comm": False, "reduce_bucket_size": 5e8,
        "stage3_prefetch_bucket_size": 5e7, "stage3_param_persistence_threshold": 1e5,
        # export consolidates fp32 weights from the partitioned optimizer states
        # (zero_to_fp32), so gathering 16-bit weights at every save is not needed.
        "stage3_gather_16bit_weights_on_model_save": False},
}


def _generated(cfg, world_size: int) -> dict[str, Any]:
    micro, accum = cfg.data.batch_size, cfg.train.grad_accum
    bf16 = cfg.deepspeed.precision == "bf16"
    precision = {}
    if bf16 and cfg.deepspeed.zero_stage > 0:
        precision["data_types"] = {"grad_accum_dtype": "fp32"}
    return {**precision,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world_size,
        "gradient_clipping": float(cfg.optim.grad_clip),
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        # our AdamW is a torch optimizer; DeepSpeed only vouches for its own under ZeRO
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,        # progress is ours (progress.py), not DeepSpeed's
        "wall_clock_breakdown": False,
    }


def _merge_preset(preset: dict, generated: dict, source: str, path: str = "") -> dict:
    """Deep-merge: preset keys fill in, generated keys win; a conflicting value is an error."""
    out = dict(preset)
    for key, value in generated.items():
        here = f"{path}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_preset(out[key], value, source, here + ".")
        elif key in preset and here in _OWNED and preset[key] != value:
            raise ConfigError(
                f"{source} sets '{here}: {preset[key]}' but the pretraining config gives "
                f"{value!r} ({_OWNED[here]}). Remove it from the preset and set {_OWNED[here]}.")
        else:
            out[key] = value
    return out


# DeepSpeed keys that follow from our config, and the config key that controls each.
_OWNED = {
    "train_micro_batch_size_per_gpu": "data.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "train_batch_size": "data.batch_size x train.grad_accum x world size",
    "gradient_clipping": "optim.grad_clip",
    "zero_optimization.stage": "deepspeed.zero_stage",
    "bf16.enabled": "deepspeed.precision",
    "fp16.enabled": "deepspeed.precision (fp16 is not supported; use bf16)",
    "data_types.grad_accum_dtype": "deepspeed.precision (fp32 accumulation for bf16)",
}


def validate_precision(cfg) -> None:
    """ZeRO 0 + bf16 accumulates gradients in bf16 in DeepSpeed 0.19 (see the module doc):
    refused when there is anything to accumulate."""
    if (cfg.deepspeed.precision == "bf16" and cfg.deepspeed.zero_stage == 0
            and cfg.train.grad_accum > 1):
        raise ConfigError(
            f"config key 'train.grad_accum': {cfg.train.grad_accum} micro-batches would be "
            f"accumulated in bf16 with deepspeed.zero_stage=0 (DeepSpeed accumulates in fp32 "
            f"with ZeRO 1-3 only); set deepspeed.zero_stage=1 or train.grad_accum=1")


def make_ds_config(cfg, world_size: int, preset_dir: str | Path | None = None) -> dict:
    """DeepSpeed dict for `cfg` on `world_size` processes.

    `deepspeed.preset` is a path, or a bare name looked up as `preset_dir/NAME.yaml`.
    """
    validate_precision(cfg)
    generated = _generated(cfg, world_size)
    tuning = {"zero_optimization": dict(STAGE_DEFAULTS[cfg.deepspeed.zero_stage])}
    if cfg.deepspeed.precision == "bf16":
        tuning["communication_data_type"] = "fp32"      # a preset may choose bf16 instead
    name = cfg.deepspeed.preset
    if not name:
        return _merge_preset(tuning, generated, "<defaults>")
    path = Path(name)
    if not path.suffix and preset_dir is not None:
        path = Path(preset_dir) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"config key 'deepspeed.preset': {name!r} is not a file "
                          f"(tried {path}); presets live in configs/deepspeed/")
    preset = _deep_update(tuning, load_yaml(path))   # preset tuning beats our defaults
    return _merge_preset(preset, generated, str(path))


def _deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out
