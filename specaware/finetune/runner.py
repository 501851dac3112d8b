"""One fine-tuning experiment from a FinetuneConfig: data -> encoder (pretrained or random) ->
head -> fit with early stopping -> test metrics, confusion matrix CSV/PNG, best checkpoint;
repeated over seeds and over both inits when `model.init=both`, with a result table.

Outputs under `out/<init>/seed<k>/`: best.safetensors + best.json, confusion.csv,
confusion.png, metrics.json; `out/results.json` and the printed table summarise everything.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from specaware.config import ConfigError, to_dict
from specaware.data.collate import collate
from specaware.data.shard_reader import require_shard_files
from specaware.finetune import api
from specaware.finetune.checkpoint import build_head, model_meta, save_finetuned
from specaware.finetune.config import FinetuneConfig, expand_file_lists
from specaware.finetune.distributed import (DistEnv, RankSampler, init_distributed,
                                            local_batch_size, shutdown)
from specaware.finetune.heads.common import canonical_freeze
from specaware.finetune.lora import count_parameters
from specaware.finetune.metrics import format_mean_std, summarize
from specaware.finetune.records import TABLE_METRICS, finished_metrics, write_outputs
from specaware.finetune.train import FitOptions, evaluate, fit
from specaware.optim.seed import seed_everything

log = logging.getLogger(__name__)
@dataclass
class Prepared:
    train: object
    val: object
    test: object
    num_classes: int
    class_names: list[str]
    data_meta: dict = field(default_factory=dict)


def _loaders(cfg: FinetuneConfig, seed: int, env: DistEnv, train, val, test) -> tuple:
    """Each rank loads its share: the training permutation (seeded by seed and epoch) split by
    rank, validation and test split without repeats (distributed.RankSampler)."""
    kw = {"batch_size": local_batch_size(cfg.optim.batch_size, env), "collate_fn": collate,
          "num_workers": cfg.optim.num_workers}

    def loader(dataset, shuffle: bool) -> DataLoader:
        sampler = RankSampler(len(dataset), env.rank, env.world_size, shuffle, seed)
        return DataLoader(dataset, sampler=sampler, **kw)
    return loader(train, True), loader(val, False), loader(test, False)


def _split_sizes(cfg: FinetuneConfig) -> tuple[float, float]:
    p = cfg.protocol
    return (p.val_fraction if p.val_fraction is not None else 0.2), p.test_fraction


# the keys each data.kind cannot do without, and which config keys name files or folders
_REQUIRED = {"mat": ("image",), "geotiff": ("images", "masks"), "tiles": ("root",),
             "shards": ("train_shards", "val_shards")}
_PATHS = ("image", "image2", "gt", "test_gt", "wavelength", "wavelength2", "images", "images2",
          "masks", "root")


def check_inputs(cfg: FinetuneConfig) -> None:
    """Everything the run will read exists and every key its data.kind needs is set: checked
    before any model is built, with errors naming the config key, the path and the fix."""
    d, m = expand_file_lists(cfg.data), cfg.model     # data.images=scenes/*.tif
    missing = [f"data.{k}" for k in _REQUIRED[d.kind] if not getattr(d, k)]
    if d.kind == "geotiff" and cfg.task == "change" and not d.images2:
        missing.append("data.images2")
    if d.kind == "shards" and not d.num_classes:
        missing.append("data.num_classes")
    if missing:
        raise ConfigError(f"data.kind={d.kind} (task {cfg.task}) needs config key(s) "
                          f"{', '.join(missing)}: set them on the command line, e.g. "
                          f"{missing[0]}=..., or see configs/finetune/ for examples")
    for key in _PATHS:
        value = getattr(d, key)
        for path in (value if isinstance(value, list) else [value] if value else []):
            _require_input(f"data.{key}", path)
    for key in ("train_shards", "val_shards", "test_shards"):
        if getattr(d, key):
            require_shard_files(f"data.{key}", getattr(d, key),
                                "write labelled shards with `specaware shard`")
    if m.init in ("pretrained", "both") and not m.checkpoint:
        raise ConfigError(f"model.init={m.init} needs config key 'model.checkpoint' (an export "
                          "OUT.safetensors + OUT.json from `specaware export`); model.init=random "
                          "trains without one")
    if m.checkpoint and Path(m.checkpoint).is_dir():
        raise ConfigError(f"config key 'model.checkpoint': {m.checkpoint} is a folder; DeepSpeed "
                          "checkpoints are pickles, never loaded for use. Export it first: "
                          f"`specaware export {m.checkpoint} OUT.safetensors`")
    if m.checkpoint and not (Path(m.checkpoint).exists()
                             or Path(m.checkpoint).with_suffix(".safetensors").is_file()):
        raise ConfigError(f"config key 'model.checkpoint': {m.checkpoint} not found (an export "
                          "OUT.safetensors + OUT.json from `specaware export`)")
    check_split(cfg)


def _require_input(key: str, path) -> None:
    """ConfigError naming `key` unless the file is there; a URL / s3:// / GDAL network path is
    opened (headers only) so a typo, 404 or missing credentials surface before training."""
    from specaware.data.h5_cubes import cube_path
    from specaware.data.remote import RemoteReadError, check_exists, is_remote

    if not is_remote(path):
        if not Path(cube_path(str(path))).exists():  # EMIT-ORTHO:<file> names a file too
            raise ConfigError(f"config key {key!r}: {path} not found")
        return
    try:
        check_exists(path)
    except (RemoteReadError, OSError) as err:
        raise ConfigError(f"config key {key!r}: {err}") from None


def check_split(cfg: FinetuneConfig) -> None:
    """protocol.split=fixed reads a .mat classification benchmark's training map (data.gt) and
    test map (data.test_gt); a test map under a random split would be silently unused."""
    p, d = cfg.protocol, cfg.data
    if p.split == "kshot":
        if d.test_gt:
            raise ConfigError(f"data.test_gt={d.test_gt} is not read by protocol.split=kshot "
                              "(test = every labelled pixel outside the k-shot train/val): "
                              "drop data.test_gt")
        return
    if p.split == "random":
        if d.test_gt:
            raise ConfigError(f"data.test_gt={d.test_gt} is read only by protocol.split=fixed: add "
                              "protocol.split=fixed, or drop data.test_gt for a random split")
        return
    if d.kind != "mat" or cfg.task == "change":
        raise ConfigError("protocol.split=fixed reads the training and test maps of a .mat "
                          "classification benchmark (data.kind=mat, task classification or "
                          f"segmentation), not data.kind={d.kind} with task={cfg.task}")
    if not d.test_gt:
        raise ConfigError("protocol.split=fixed needs data.test_gt=PATH, the benchmark's test map "
                          "(data.gt is its training map; the same file twice when it holds both)")


def _split(cfg: FinetuneConfig, seed: int, scene):
    from specaware.finetune.datasets import protocol as pr
    p = cfg.protocol
    if p.split == "kshot":
        from specaware.finetune.kshot import kshot_pixels
        return kshot_pixels(scene.labels, seed, p.per_class, p.val_per_class)
    if p.split == "fixed":
        return pr.fixed_split(scene.labels, scene.test_labels, seed, p.val_per_class,
                              p.val_fraction, class_names=scene.class_names)
    return pr.split_pixels(scene.labels, seed, p.per_class, p.fraction, p.val_per_class,
                           p.val_fraction)


def _pixel_or_tiles(cfg: FinetuneConfig, seed: int, env: DistEnv, scene) -> Prepared:
    """A whole labelled/two-date scene in memory: pixel patches, or tiles keeping split pixels."""
    from specaware.finetune.datasets import protocol as pr
    p = cfg.protocol
    split = _split(cfg, seed, scene)
    log.info("split (seed %d): %s", seed, split.counts())
    test_map = getattr(scene, "test_labels", None)   # a fixed split's test pixels live there
    parts = [(split.train, scene.labels), (split.val, scene.labels),
             (split.test, scene.labels if test_map is None else test_map)]
    if cfg.task == "classification":
        sets = [pr.PixelPatches(scene, c, p.patch, labels) for c, labels in parts]
        base = scene.scene
    else:
        sets = [pr.SceneTiles(scene, pr.keep_only(labels, c), p.tile, p.stride or None)
                for c, labels in parts]
        base = scene.t1 if cfg.task == "change" else scene.scene
    meta = {"patch": p.patch, "tile": p.tile, "normalization": base.meta.get("normalization"),
            "sensor": base.sensor, "split": split.counts()}
    if cfg.task == "change":
        meta["normalization_t2"] = scene.t2.meta.get("normalization")
    return Prepared(*_loaders(cfg, seed, env, *sets), scene.num_classes, scene.class_names,
                    meta)


def _prepare_mat(cfg: FinetuneConfig, seed: int, env: DistEnv) -> Prepared:
    from specaware.finetune.datasets.mat import load_benchmark, load_change_benchmark
    d = cfg.data
    wl, wl2 = d.wavelength or None, d.wavelength2 or None
    if cfg.task == "change":
        scene = load_change_benchmark(d.benchmark, d.image, d.image2 or None, d.gt or None,
                                      keys=d.keys, wavelength=wl, wavelength_t2=wl2,
                                      num_classes=d.num_classes or None, normalize=d.normalize)
    else:
        scene = load_benchmark(d.benchmark, d.image, d.gt or None, test_gt=d.test_gt or None,
                               image_key=d.keys.get("image"), gt_key=d.keys.get("gt"),
                               test_gt_key=d.keys.get("test_gt"), wavelength=wl,
                               normalize=d.normalize)
    return _pixel_or_tiles(cfg, seed, env, scene)


def _tile_split(cfg: FinetuneConfig, seed: int, env: DistEnv, dataset,
                labels=None) -> Prepared:
    from specaware.finetune.datasets.tiles import stratified_split
    val_f, test_f = _split_sizes(cfg)
    labels = np.zeros(len(dataset), np.int64) if labels is None else labels
    if cfg.protocol.split == "kshot":
        from specaware.finetune.kshot import kshot_indices
        idx = kshot_indices(labels, seed, cfg.protocol.per_class, cfg.protocol.val_per_class)
    else:
        idx = stratified_split(labels, seed, val_f, test_f)
    if min(len(i) for i in idx) == 0:
        raise ValueError(f"{len(dataset)} tiles are too few for val/test fractions "
                         f"{val_f}/{test_f}: add data or use smaller tiles (protocol.tile)")
    sets = [Subset(dataset, i.tolist()) for i in idx]
    return Prepared(*_loaders(cfg, seed, env, *sets), 0, [], {"tile": cfg.protocol.tile})


def _zero_is_unlabelled(cfg: FinetuneConfig) -> bool:
    """Unset: change masks keep 0 (= no change); class masks use 0 for unlabelled."""
    flag = cfg.data.zero_is_unlabelled
    return cfg.task != "change" if flag is None else bool(flag)


def _prepare_geotiff(cfg: FinetuneConfig, seed: int, env: DistEnv) -> Prepared:
    from specaware.finetune.datasets.geotiff import GeoTiffTiles, read_labelled_scene
    d = cfg.data
    zero = _zero_is_unlabelled(cfg)
    if cfg.task == "classification":
        scene = read_labelled_scene(d.images[0], d.masks[0], d.sensor, d.wavelength, d.normalize,
                                    zero, d.ignore_value, d.num_classes)
        return _pixel_or_tiles(cfg, seed, env, scene)
    tiles = GeoTiffTiles(d.images, d.masks, cfg.protocol.tile, cfg.protocol.stride,
                         d.images2 if cfg.task == "change" else None, d.sensor, d.sensor2,
                         d.wavelength, d.wavelength2, d.normalize, zero,
                         d.ignore_value)
    prepared = _tile_split(cfg, seed, env, tiles)
    k = d.num_classes or _max_label(tiles) + 1
    if cfg.task == "change":
        k = max(k, 2)
    names = _class_names(cfg.task, k)
    prepared.data_meta["normalization"] = tiles.infos[0].normalization
    if tiles.infos2:
        prepared.data_meta["normalization_t2"] = tiles.infos2[0].normalization
    return replace(prepared, num_classes=k, class_names=names)


def _class_names(task: str, k: int) -> list[str]:
    if task != "change":
        return [f"class_{i + 1}" for i in range(k)]
    if k == 2:
        return ["no change", "change"]
    return ["no change"] + [f"change_{i}" for i in range(1, k)]


def _max_label(tiles) -> int:
    return max(int(tiles._labels(i, r, c).max()) for i, r, c in tiles.items)


def _prepare_tiles(cfg: FinetuneConfig, seed: int, env: DistEnv) -> Prepared:
    from specaware.finetune.datasets.tiles import TileFolder
    if cfg.task != "classification":
        raise ValueError("data.kind=tiles holds one label per tile: use task=classification")
    d = cfg.data
    folder = TileFolder(d.root, d.sensor, d.wavelength, d.normalize)
    prepared = _tile_split(cfg, seed, env, folder, folder.labels)
    prepared.data_meta["normalization"] = folder.infos[0].normalization
    return replace(prepared, num_classes=len(folder.class_names), class_names=folder.class_names)


def _prepare_shards(cfg: FinetuneConfig, seed: int, env: DistEnv) -> Prepared:
    from specaware.finetune.datasets.tiles import LabelledShards
    d = cfg.data
    batch = local_batch_size(cfg.optim.batch_size, env)
    make = lambda src, mode: LabelledShards(src, batch, mode, seed,  # noqa: E731
                                            cfg.optim.num_workers, rank=env.rank,
                                            world_size=env.world_size)
    test = make(d.test_shards, "eval") if d.test_shards else make(d.val_shards, "eval")
    names = [f"class_{i}" for i in range(d.num_classes)]
    return Prepared(make(d.train_shards, "eval"), make(d.val_shards, "eval"), test,
                    d.num_classes, names, {})


PREPARE = {"mat": _prepare_mat, "geotiff": _prepare_geotiff, "tiles": _prepare_tiles,
           "shards": _prepare_shards}


def make_encoder(cfg: FinetuneConfig, init: str) -> torch.nn.Module:
    """Pretrained weights from `model.checkpoint`, or the same architecture freshly initialised."""
    m = cfg.model
    if init == "pretrained":
        if not m.checkpoint:
            raise ValueError("model.init=pretrained needs model.checkpoint=PATH (an export from "
                             "`specaware export`); use model.init=random for a from-scratch run")
        return api.load_pretrained(m.checkpoint, allow_missing=tuple(m.allow_missing))
    if m.checkpoint:  # random baseline: same architecture as the checkpoint, no weights
        _, meta = api._read_checkpoint(Path(m.checkpoint), "cpu")
        return api.build_encoder(meta.get("model_config"), meta.get("model") or m.variant)
    return api.build_encoder(None, m.variant)


def _check_patch(cfg: FinetuneConfig, encoder) -> None:
    """Pixel patches of one token carry little but noise once the encoder standardises each band
    per sample (fields are homogeneous): warn below 2 x 2 tokens of context."""
    k = getattr(encoder, "patch_size", 1)
    if cfg.task == "classification" and cfg.data.kind in ("mat", "geotiff") and \
            cfg.protocol.patch < 2 * k:
        log.warning("protocol.patch=%d is below 2 x the encoder's patch size %d: the pixel sees "
                    "almost no context; use protocol.patch=%d or more", cfg.protocol.patch, k,
                    3 * k)


def _tracker(cfg: FinetuneConfig, env: DistEnv, out: Path, init: str, seed: int, names):
    from specaware.finetune.tracking import FinetuneTracker
    return FinetuneTracker(cfg.wandb, out, to_dict(cfg), env.is_main, cfg.task, names,
                           f"{Path(cfg.out).name}/{init}/seed{seed}")


def run_once(cfg: FinetuneConfig, init: str, seed: int, env: DistEnv | None = None) -> dict:
    """Train and test one (init, seed); returns the test metrics. Inputs as checked by
    `check_inputs` (which `run` calls first). Every rank runs this; rank 0 writes the files."""
    env = env or init_distributed(cfg.device)
    out = Path(cfg.out) / init / f"seed{seed}"
    stored = finished_metrics(out, cfg.resume)
    if stored is not None:
        return stored
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    data = PREPARE[cfg.data.kind](cfg, seed, env)
    encoder = make_encoder(cfg, init)
    _check_patch(cfg, encoder)
    model = build_head(cfg.task, encoder, data.num_classes, cfg.model)
    meta = model_meta(cfg.task, data.num_classes, data.class_names, cfg.model, encoder,
                      data.data_meta)
    meta["finetune_config"] = to_dict(cfg)
    meta["init"], meta["seed"] = init, seed  # with the config: the run's split (specaware audit)

    def on_best(m, epoch, val):
        save_finetuned(m, out / "best", {**meta, "epoch": epoch, "val_metrics": val})

    params = count_parameters(model)
    log.info("%s encoder, freeze=%s: %d of %d parameters train", init, cfg.model.freeze,
             params["trainable"], params["total"])
    tracker = _tracker(cfg, env, out, init, seed, data.class_names)
    options = FitOptions(cfg.precision, env, out / "last", cfg.resume == "auto", tracker)
    try:
        result = fit(model, data.train, data.val, cfg.task, data.num_classes, cfg.optim,
                     env.device, cfg.progress, on_best, options)
        cm, metrics = evaluate(model, data.test, cfg.task, data.num_classes, env.device,
                               cfg.precision, env)
        tracker.summary(metrics)
    finally:
        tracker.finish()
    if env.is_main:
        write_outputs(cfg, out, init, seed, cm, metrics, result, data.class_names, params)
    return metrics


def check_run(cfg: FinetuneConfig) -> None:
    """Keys `run` reads beyond the inputs: the resume mode, the freeze name, and a global batch
    that splits evenly over torchrun's processes."""
    if cfg.resume not in ("", "auto"):
        raise ConfigError(f"config key 'resume': {cfg.resume!r} is not '' (start afresh) or "
                          "'auto' (continue from OUT/<init>/seed<k>/last where it exists)")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)    # torchrun's, before any process group
    local_batch_size(cfg.optim.batch_size, DistEnv(world_size=world))
    try:
        cfg.model.freeze = canonical_freeze(cfg.model.freeze)
    except ValueError as e:
        raise ConfigError(f"config key 'model.freeze': {e}") from None


def run(cfg: FinetuneConfig) -> dict[str, dict[str, tuple[float, float]]]:
    """All seeds for each init; returns {init: {metric: (mean, std)}} and writes results.json
    (rank 0). Under torchrun every process runs this; they split the data (distributed.py)."""
    check_inputs(cfg)
    check_run(cfg)
    env = init_distributed(cfg.device)
    try:
        inits = ["pretrained", "random"] if cfg.model.init == "both" else [cfg.model.init]
        summary = {}
        for init in inits:
            runs = [run_once(cfg, init, seed, env) for seed in cfg.protocol.seeds]
            summary[init] = summarize(runs)
    finally:
        shutdown(env)
    if env.is_main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.json").write_text(json.dumps(
            {"task": cfg.task, "seeds": list(cfg.protocol.seeds), "results": summary}, indent=2))
    return summary


def result_table(task: str, summary: dict) -> str:
    """Rows (task, metric, pretrained, random) as mean ± std in percent (kappa too)."""
    inits = [i for i in ("pretrained", "random") if i in summary]
    header = ["task", "metric", *inits]
    rows = [[task, k, *[format_mean_std(*summary[i][k]) for i in inits]]
            for k in TABLE_METRICS[task] if all(k in summary[i] for i in inits)]
    widths = [max(len(str(r[j])) for r in [header, *rows]) for j in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
