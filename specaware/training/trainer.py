"""The pretraining loop: steps over the streaming loader, DeepSpeed engine, checkpoints, tracking.

    run(cfg, resume="auto")  # on every process a launcher started (or one plain process)

One step = `train.grad_accum` micro-batches, then one optimizer step. A micro-batch whose loss is
NaN/inf on ANY rank is skipped on every rank (ranks must agree, or ZeRO's collectives would
hang), counted and logged; `train.max_nonfinite` consecutive skips stop the run with an error.

Data-stream position: the loader is (re)started at step 0 and right after every checkpoint with
a seed derived from (train.seed, step). A run resumed from checkpoint N therefore starts exactly
the stream the uninterrupted run started at step N, with no need to replay N steps of data.
`data.curation` (curate.py: balanced strata, entropy pruning) decides which tiles that stream
draws and how often; it is computed once per process from the shard manifest.

At the end rank 0 writes `run_dir/summary.json` (throughput medians, final loss) for scripts
and benchmarks (bench/bench_train.py).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from specaware.config import ConfigError, save_yaml, to_dict
from specaware.optim.schedule import make_scheduler
from specaware.optim.seed import seed_everything
from specaware.resources import config_path
from specaware.training import checkpoint, distributed, expert_parallel
from specaware.training.config import PretrainConfig, require_shards, resolved, view_config
from specaware.training.determinism import make_deterministic
from specaware.training.ds_config import make_ds_config
from specaware.faults import fault_point, nan_injected
from specaware.training.optim import group_layout, make_optimizer
from specaware.training.progress import Progress
from specaware.tracking import Tracker, peak_tflops

log = logging.getLogger(__name__)

__all__ = ["run", "NonFiniteLossError", "segment_seed", "PRESET_DIR"]

PRESET_DIR = config_path("deepspeed")


class NonFiniteLossError(RuntimeError):
    """The loss stayed NaN/inf for `train.max_nonfinite` consecutive micro-batches."""


def segment_seed(seed: int, start_step: int) -> int:
    """Loader seed of the data segment that starts at `start_step`."""
    return (seed * 1_000_003 + start_step) % 2**31


def build_model(cfg: PretrainConfig):
    from specaware.model.mae import MaskedAutoencoder
    from specaware.training.config import model_config
    return MaskedAutoencoder(model_config(cfg))


def make_data(cfg: PretrainConfig, env, start_step: int):
    """The training stream for this rank, as of step `start_step`."""
    from specaware.data.stream import make_loader
    keys, weights = curation(cfg)
    return make_loader(cfg.data.shards, mode="train", batch_size=cfg.data.batch_size,
                       num_workers=cfg.data.num_workers, rank=env.rank,
                       world_size=env.world_size, seed=segment_seed(cfg.train.seed, start_step),
                       shuffle_buffer=cfg.data.shuffle_buffer, views=view_config(cfg.data.views),
                       max_skip_rate=cfg.data.max_skip_rate, bucket_by=cfg.data.bucket_by,
                       keys=keys, weights=weights)


_CURATED: dict = {}


def curation(cfg: PretrainConfig):
    """(keys, weights) of `data.curation` over the shard manifest, computed once per process
    (the loader restarts after every checkpoint); (None, None) when curation is off."""
    cur = cfg.data.curation
    if not cur.active:
        return None, None
    ident = (cfg.data.shards, tuple(cur.balance), cur.min_entropy, cur.drop_quantile,
             cur.max_oversample, cur.keys_file)
    if ident not in _CURATED:
        from specaware.data.curate import CurationError, curation_for
        from specaware.data.object_store import is_store_url
        if not (is_store_url(cfg.data.shards)   # remote manifests are read by curation_for
                or (Path(cfg.data.shards) / "manifest.json").is_file()):
            raise ConfigError(f"config key 'data.curation' needs data.shards to be a shard "
                              f"folder with manifest.json; {cfg.data.shards!r} is not")
        try:
            keys, weights = curation_for(cfg.data.shards, balance=cur.balance,
                                         min_entropy=cur.min_entropy,
                                         drop_quantile=cur.drop_quantile,
                                         max_oversample=cur.max_oversample)
            if cur.keys_file:
                from specaware.data.prune import restrict_to_keys_file
                keys, weights = restrict_to_keys_file(cur.keys_file, keys, weights)
        except CurationError as e:
            raise ConfigError(f"config key 'data.curation': {e}") from None
        _CURATED[ident] = keys, weights
    return _CURATED[ident]


def to_device(batch, device: torch.device):
    """Tensors to `device`, in the dtype the loader made them. Pixels stay float32 also in bf16
    runs: the target statistics (counts, means, stds) and the loss are computed from them, and
    bf16's 8-bit mantissa puts those off by up to 0.14 std units (a wavelength in nm would not
    survive it either); the model casts to its weights' dtype where the matmuls are."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, dict) and key == "target":
            out[key] = to_device(value, device)
        elif torch.is_tensor(value):
            out[key] = value.to(device, non_blocking=True)
        else:
            out[key] = value
    return out


@dataclasses.dataclass
class _Window:
    """Sums between two log lines."""
    parts: dict = dataclasses.field(default_factory=dict)
    micro: int = 0
    tiles: int = 0
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, out, tiles: int) -> None:
        self.parts["loss"] = self.parts.get("loss", 0.0) + float(out.loss.detach())
        for k, v in out.parts.items():
            self.parts[f"loss/{k}"] = self.parts.get(f"loss/{k}", 0.0) + float(v.detach())
        self.micro += 1
        self.tiles += tiles


class Trainer:
    """Holds the engine and bookkeeping; `fit` runs steps [start, train.steps)."""

    def __init__(self, cfg: PretrainConfig, env, device, engine, scheduler, tracker,
                 data_factory=make_data):
        self.cfg, self.env, self.device, self.engine = cfg, env, device, engine
        self.scheduler, self.tracker, self.data_factory = scheduler, tracker, data_factory
        self.patch = getattr(getattr(engine.module, "encoder", None), "patch_size", 1)
        self.samples_seen, self.nonfinite_total, self.losses = 0, 0, []
        self.history: list[dict] = []       # logged metrics of this call (rank 0)
        self._flops: float | None = None
        self._loader = self._it = None

    # -- data ---------------------------------------------------------------------------------
    def _next_batch(self, step: int):
        if self._it is None:
            self._loader = self.data_factory(self.cfg, self.env, step)
            self._it = iter(self._loader)
        return to_device(next(self._it), self.device)

    # -- one optimizer step -------------------------------------------------------------------
    def _step(self, step: int, window: _Window):
        """Run grad_accum finite micro-batches; returns the last (batch, out)."""
        done, bad = 0, 0
        while done < self.cfg.train.grad_accum:
            batch = self._next_batch(step)
            out = self.engine(batch, mask_ratio=self.cfg.model.mask_ratio)
            loss = out.loss.detach()
            if nan_injected(step, self.env.rank, self.env.world_size):
                loss = loss * float("nan")
            if distributed.any_true(not bool(torch.isfinite(loss)), self.device):
                bad, self.nonfinite_total = bad + 1, self.nonfinite_total + 1
                log.warning("step %d: non-finite loss on some rank, micro-batch skipped "
                            "(%d in a row, %d in total)", step, bad, self.nonfinite_total)
                if bad >= self.cfg.train.max_nonfinite:
                    raise NonFiniteLossError(
                        f"loss was NaN/inf in {bad} consecutive micro-batches at step {step} "
                        f"(last batch: {_batch_keys(batch)}). Lower optim.lr or raise "
                        "optim.warmup_steps, check the shards (`specaware inspect DIR`), or "
                        "raise train.max_nonfinite.")
                continue
            self.engine.backward(out.loss)
            self.engine.step()
            done += 1
            window.add(out, batch["image"].shape[0])
        return batch, out

    # -- logging ------------------------------------------------------------------------------
    def _flops_per_tile(self, batch) -> float | None:
        if self._flops is None:
            try:
                from specaware.model.variants import model_stats
                c, h = batch["image"].shape[1], batch["image"].shape[-1]
                with torch.random.fork_rng(devices=[]):   # stats must not shift the RNG
                    model = build_model(self.cfg)
                    self._flops = float(model_stats(model, bands=c, tile=h)["flops_per_tile"])
            except Exception as e:  # noqa: BLE001 - MFU is a nicety, never a crash
                log.warning("no MFU: model FLOPs unavailable (%s)", e)
                self._flops = float("nan")
        return None if math.isnan(self._flops) else self._flops

    def _metrics(self, window: _Window, batch, out) -> dict[str, float]:
        """Collective (every rank calls it): loss parts are averaged over ranks."""
        parts = {k: v / max(1, window.micro) for k, v in window.parts.items()}
        metrics = distributed.mean_of(parts, self.device)
        seconds = time.perf_counter() - window.start
        tiles_s = window.tiles * self.env.world_size / max(seconds, 1e-9)
        n_tokens = out.mask.shape[1]
        metrics.update({
            "lr": float(self.scheduler.get_last_lr()[0]),
            "perf/tiles_per_s": tiles_s, "perf/tokens_per_s": tiles_s * n_tokens,
            "perf/step_time_s": seconds / max(1, window.micro / self.cfg.train.grad_accum),
            "train/samples_seen": float(self.samples_seen),
            "train/nonfinite_skipped": float(self.nonfinite_total)})
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            metrics["grad_norm"] = float(norm)
        metrics.update({f"moe/{k}": float(v) for k, v in (out.metrics or {}).items()})
        stats = getattr(self._loader, "stats", None)
        stats = stats.as_dict() if hasattr(stats, "as_dict") else stats
        if isinstance(stats, dict):
            metrics.update({f"data/{k}": float(v) for k, v in stats.items()
                            if isinstance(v, (int, float))})
        return metrics

    def _add_mfu(self, metrics: dict, batch) -> None:
        peak = peak_tflops(self.cfg.train.peak_tflops, self.cfg.deepspeed.precision)
        flops = self._flops_per_tile(batch) if peak else None
        if peak and flops:
            # forward + backward ~ 3x forward FLOPs; peak is per device
            achieved = 3.0 * flops * metrics["perf/tiles_per_s"] / self.env.world_size
            metrics["perf/mfu"] = achieved / (peak * 1e12)
            metrics["perf/tflops_per_device"] = achieved / 1e12

    # -- checkpoint ---------------------------------------------------------------------------
    def _state(self) -> dict:
        module = self.engine.module
        state = {"samples_seen": self.samples_seen, "world_size": self.env.world_size,
                 "data": {"segment_start": None, "seed": self.cfg.train.seed},
                 "nonfinite_skipped": self.nonfinite_total, "model": self.cfg.model.name,
                 "model_config": to_dict(module.config) if hasattr(module, "config") else {},
                 "config": resolved(self.cfg)}
        names = master_names(self.engine)
        if names is not None:
            state["fp32_master_names"] = names
        state["optimizer_groups"] = group_layout(module, self.cfg.optim,
                                                 expert_parallel.split_param_groups)
        return state

    def _save(self, step: int) -> None:
        state = self._state()
        state["data"]["segment_start"] = step
        ck = self.cfg.checkpoint
        checkpoint.save(self.engine, ck.run_dir, step, state, self.env,
                        keep_last=ck.keep_last, keep_every=ck.keep_every)
        self._loader = self._it = None     # the next data segment starts at `step`

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, start: int) -> dict:
        cfg, progress = self.cfg, Progress(self.cfg.train.steps, start)
        window, last_saved, began = _Window(), start, time.perf_counter()
        for step in range(start, cfg.train.steps):
            batch, out = self._step(step, window)
            done = step + 1
            self.samples_seen += batch["image"].shape[0] * cfg.train.grad_accum * self.env.world_size
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                self._log(done, window, batch, out, progress)
                window = _Window()
            paused = time.perf_counter()     # panels and saves do not count as step time
            if cfg.wandb.panel_every and done % cfg.wandb.panel_every == 0:
                self.tracker.panel(_cpu(batch), out, self.patch, done)
            if cfg.checkpoint.enabled and (done % cfg.checkpoint.every == 0
                                           or done == cfg.train.steps):
                self._save(done)
                last_saved = done
            paused = time.perf_counter() - paused
            window.start += paused
            progress.last += paused
            fault_point("step", done)
        summary = {"step": cfg.train.steps, "losses": self.losses, "last_checkpoint": last_saved,
                   "nonfinite_skipped": self.nonfinite_total}
        if self.env.is_main:
            write_summary(Path(cfg.checkpoint.run_dir) / "summary.json", cfg, self.env, start,
                          self.history, time.perf_counter() - began,
                          extra=expert_parallel.param_stats(self.engine.module))
        return summary

    def _log(self, done: int, window: _Window, batch, out, progress: Progress) -> None:
        metrics = self._metrics(window, batch, out)
        progress.update(done)
        if self.env.is_main:
            self._add_mfu(metrics, batch)
            self.losses.append((done, metrics["loss"]))
            self.history.append(metrics)
            self.tracker.log(metrics, done)
            progress.print(metrics)


def master_names(engine) -> list[list[str]] | None:
    """Parameter names of the fp32 master copies, group by group, when the optimizer keeps them
    outside ZeRO's files (bf16 at ZeRO stage 0: DeepSpeed's FP16_UnfusedOptimizer saves them
    as nameless lists in the model states); export reads the weights from them."""
    optimizer = engine.optimizer
    groups = getattr(optimizer, "fp16_groups", None)
    if groups is None or not hasattr(optimizer, "fp32_groups"):
        return None
    names = {id(p): n for n, p in engine.module.named_parameters()}
    return [[names[id(p)] for p in group] for group in groups]


def write_summary(path: Path, cfg: PretrainConfig, env, start: int, history: list[dict],
                  wall_s: float, extra: dict | None = None) -> dict:
    """`summary.json` of one `run` call (rank 0): throughput medians over the logged windows,
    leaving out the first (start-up, loader warm-up, first-step allocations) when there are
    more. Benchmarks and scripts read this instead of parsing log lines."""
    steady = history[1:] if len(history) > 1 else history

    def median(key: str) -> float | None:
        values = [m[key] for m in steady if key in m]
        return float(np.median(values)) if values else None

    summary = {"model": cfg.model.name, "world_size": env.world_size,
               "zero_stage": cfg.deepspeed.zero_stage, "precision": cfg.deepspeed.precision,
               "batch_size": cfg.data.batch_size, "grad_accum": cfg.train.grad_accum,
               "start_step": start, "end_step": cfg.train.steps, "wall_s": wall_s,
               "windows": len(steady), "final_loss": history[-1]["loss"] if history else None,
               "tiles_per_s": median("perf/tiles_per_s"),
               "tokens_per_s": median("perf/tokens_per_s"),
               "step_time_s": median("perf/step_time_s"), "mfu": median("perf/mfu"),
               "tflops_per_device": median("perf/tflops_per_device"),
               "expert_parallel": cfg.deepspeed.expert_parallel, **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    return summary


def _batch_keys(batch, shown: int = 4) -> str:
    """'shard :: key' of the first samples of a batch, for messages."""
    meta = [m for m in batch.get("meta", []) if isinstance(m, dict)]
    names = [f"{m.get('shard', '?')} :: {m.get('key', '?')}" for m in meta[:shown]]
    more = f" and {len(meta) - shown} more" if len(meta) > shown else ""
    return ", ".join(names) + more if names else "no sample keys"


def _cpu(batch):
    return {k: (_cpu(v) if isinstance(v, dict) and k == "target" else
                v.detach().cpu() if torch.is_tensor(v) else v) for k, v in batch.items()}


def _setup_engine(cfg: PretrainConfig, env, model_factory):
    seed_everything(cfg.train.seed)                # same initial weights on every rank
    model = (model_factory or build_model)(cfg)
    n = cfg.deepspeed.expert_parallel
    if n > 1:                                      # this rank keeps its share of the experts
        expert_parallel.check_world(n, env.world_size)
        expert_parallel.shard_model(model, n, distributed.expert_parallel_group(n))
        stats = expert_parallel.param_stats(model)
        log.info("expert parallel over %d ranks: this rank holds %d expert weights of %d "
                 "(%d parameters in all)", n, stats["expert_params"],
                 stats["expert_params"] * n, stats["params"])
    distributed.promote_scalar_params(model)
    optimizer = make_optimizer(model, cfg.optim, split=expert_parallel.split_param_groups)
    scheduler = make_scheduler(optimizer, total_steps=cfg.train.steps,
                               warmup_steps=cfg.optim.warmup_steps, peak=cfg.optim.lr,
                               floor=cfg.optim.min_lr)
    ds_config = make_ds_config(cfg, env.world_size, preset_dir=PRESET_DIR)
    expert_parallel.check_ds_config(cfg.deepspeed.expert_parallel, ds_config)
    engine, scheduler = distributed.initialize(model, optimizer, scheduler, ds_config)
    seed_everything(cfg.train.seed + 1 + 7919 * env.rank)   # masks differ across ranks
    return engine, scheduler, ds_config


def _resume_point(resume: str | None, run_dir: str, env):
    """The checkpoint every rank resumes from (chosen on the main rank, which also removes
    leftovers of interrupted saves); an unusable one raises on every rank, not only main."""
    choice = None
    if env.is_main:
        checkpoint.remove_partial(run_dir)
        try:
            choice = ("ok", checkpoint.resolve_resume(resume, run_dir))
        except (FileNotFoundError, checkpoint.CheckpointReadError) as e:
            choice = (type(e).__name__, str(e))
    kind, value = distributed.broadcast_object(choice)
    if kind == "FileNotFoundError":
        raise FileNotFoundError(value)
    if kind != "ok":
        raise checkpoint.CheckpointReadError(value)
    return value


def run(cfg: PretrainConfig, resume: str | None = None, *, local_rank: int | None = None,
        model_factory=None, data_factory=None) -> dict:
    """Train per `cfg` on this process's share; returns a summary (losses on rank 0 only).

    `model_factory(cfg)` and `data_factory(cfg, env, start_step)` replace the registry model and
    the shard loader (tests, custom data); they must behave the same on every rank.
    """
    if cfg.train.deterministic:       # before any CUDA work: cuBLAS reads its env var once
        make_deterministic()
    if data_factory is None:
        require_shards(cfg)
        curation(cfg)                 # bad curation settings fail before DeepSpeed starts
    env, device = distributed.setup(cfg.deepspeed.backend, local_rank=local_rank)
    tracker = None
    try:
        engine, scheduler, ds_config = _setup_engine(cfg, env, model_factory)
        ckpt = _resume_point(resume, cfg.checkpoint.run_dir, env)
        start = 0
        if ckpt is not None:
            saved = checkpoint.read_state(ckpt)
            expert_parallel.check_resume(saved, cfg.deepspeed.expert_parallel, ckpt)
            checkpoint.check_groups(saved, group_layout(engine.module, cfg.optim,
                                                        expert_parallel.split_param_groups), ckpt)
            state = checkpoint.load(engine, ckpt, env)
            start = int(state["step"])
            log.info("resumed from %s at step %d", ckpt, start)
        run_dir = Path(cfg.checkpoint.run_dir)
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, run_dir / "config.yaml")
        tracker = Tracker(cfg.wandb, run_dir, {**resolved(cfg), "deepspeed_dict": ds_config},
                          env.is_main)
        trainer = Trainer(cfg, env, device, engine, scheduler, tracker,
                          data_factory=data_factory or make_data)
        if ckpt is not None:
            trainer.samples_seen = int(state.get("samples_seen", 0))
            trainer.nonfinite_total = int(state.get("nonfinite_skipped", 0))
        return trainer.fit(start)
    finally:
        if tracker is not None:
            tracker.finish()
        distributed.shutdown()
