"""Deal source tiles to clients (Dirichlet label skew), render them through each client's sensor
and split them into train / val / holdout. See `specaware.federated.data` for the steps."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from specaware.data.views import simulate_sensor
from specaware.federated.config import ClientSpec, DataConfig
from specaware.federated.data import SPLITS, ClientData, SourceTiles, source_tiles, synth_scenes

log = logging.getLogger(__name__)
MIN_TILES = 6          # per client: at least a few train, val and holdout tiles


def dirichlet_partition(label: np.ndarray, clients: int, alpha: float, seed: int,
                        attempts: int = 100) -> list[np.ndarray]:
    """Tile indices per client. Each class is split in Dirichlet(alpha) proportions (alpha <= 0:
    a uniform random split). Draws are repeated until every client holds >= MIN_TILES tiles."""
    rng = np.random.default_rng(seed)
    for _ in range(attempts):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for k in np.unique(label):
            idx = rng.permutation(np.flatnonzero(label == k))
            share = (np.full(clients, 1.0 / clients) if alpha <= 0
                     else rng.dirichlet(np.full(clients, alpha)))
            cuts = (np.cumsum(share)[:-1] * len(idx)).round().astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts)):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= MIN_TILES:
            return [np.sort(np.asarray(p, np.int64)) for p in parts]
    raise ValueError(f"data.alpha={alpha}: after {attempts} draws some of the {clients} clients "
                     f"still hold < {MIN_TILES} of {len(label)} tiles; fix: raise data.alpha, "
                     "add scenes (data.scenes) or use fewer clients")


def split_client(label: np.ndarray, val: float, holdout: float, seed: int) -> np.ndarray:
    """uint8 [N] split codes; per class, `holdout` and `val` shares are taken first."""
    rng = np.random.default_rng(seed)
    split = np.full(len(label), SPLITS["train"], np.uint8)
    for k in np.unique(label):
        idx = rng.permutation(np.flatnonzero(label == k))
        n_hold, n_val = int(round(holdout * len(idx))), int(round(val * len(idx)))
        split[idx[:n_hold]] = SPLITS["holdout"]
        split[idx[n_hold:n_hold + n_val]] = SPLITS["val"]
    return split


def render_client(src: SourceTiles, index: np.ndarray, spec: ClientSpec, name: str,
                  split: np.ndarray) -> ClientData:
    """The client's tiles resampled onto its sensor (and wavelength window)."""
    images, valids, view = [], [], None
    for i in index:
        view = simulate_sensor({"image": src.image[i], "valid": src.valid[i],
                                "wavelength": src.wavelength, "fwhm": src.fwhm,
                                "sensor": src.sensor}, spec.sensor)
        images.append(view["image"])
        valids.append(view["valid"])
    wl, fwhm = view["wavelength"], view["fwhm"]
    keep = np.ones(len(wl), bool)
    if spec.bands:
        lo, hi = spec.bands
        keep = (wl >= lo) & (wl <= hi)
        if keep.sum() < 2:
            raise ValueError(f"client {name}: bands {spec.bands} nm keep {int(keep.sum())} of "
                             f"{spec.sensor}'s bands ({wl.min():.0f}-{wl.max():.0f} nm); widen it")
    image, valid = np.stack(images)[:, keep], np.stack(valids)[:, keep]
    return ClientData(name, image.astype(np.float32), valid, src.label[index], split,
                      wl[keep], fwhm[keep], src.gsd, view["sensor"], src.class_names)


def build_clients(cfg: DataConfig, specs: list[ClientSpec], out: Path) -> list[Path]:
    """Write `out/client-<i>.npz` for every client and `out/partition.json` (counts)."""
    out.mkdir(parents=True, exist_ok=True)
    pairs = (synth_scenes(cfg, out / "synth") if cfg.kind == "synth"
             else [(Path(a), Path(b)) for a, b in zip(cfg.images, cfg.labels)])
    src = source_tiles(pairs, cfg)
    if cfg.kind == "synth":
        shutil.rmtree(out / "synth")     # the tiles are all that is kept of generated scenes
    parts = dirichlet_partition(src.label, len(specs), cfg.alpha, cfg.seed)
    paths, summary = [], {"classes": src.class_names, "source_sensor": src.sensor,
                          "tiles": int(len(src.label)), "clients": []}
    for i, (spec, index) in enumerate(zip(specs, parts)):
        name = spec.name or f"{i}-{spec.sensor}"
        split = split_client(src.label[index], cfg.val_fraction, cfg.holdout_fraction,
                             cfg.seed + 1000 + i)
        client = render_client(src, index, spec, name, split)
        paths.append(client.save(out / f"client-{i}.npz"))
        summary["clients"].append({
            "name": name, "sensor": client.sensor, "bands": int(client.image.shape[1]),
            "wavelength_nm": [float(client.wavelength.min()), float(client.wavelength.max())],
            **{s: np.bincount(client.label[split == code],
                              minlength=len(src.class_names)).tolist()
               for s, code in SPLITS.items()}})
    (out / "partition.json").write_text(json.dumps(summary, indent=1))
    return paths
