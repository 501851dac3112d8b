"""How much of the MAE target can be learnt at all, under each `loss.target_norm`.

For every tile of a shard set, hide 75 % of its 8 x 8 patches at random (as pretraining does),
normalise the tile as the loss does (statistics of the visible patches; "band": each band by
its own mean/std; "sample": one mean/std over all bands) and score three predictors of the hidden patches with the loss's pixel
term (Charbonnier, eps 1e-3) on valid pixels:
- zero:   predict 0, i.e. the normalisation's mean (what a model that learnt nothing outputs);
- interp: each band of a hidden patch = 0.5 x the inverse-square-distance average of the visible
          patches' means (a few lines of arithmetic: a model should at least match it);
- oracle: each hidden patch's own per-band mean (not reachable: the best any patch-constant
          prediction can do).
Printed side by side, with the share of the zero -> oracle gap the interpolation closes: when it
is small, the objective leaves little to learn from the visible patches. Run:

    PYTHONPATH=. .venv/bin/python bench/bench_target.py [SHARD_DIR] [--quick]

Without SHARD_DIR it builds a small synthetic set first (`specaware synth` + `specaware shard`,
32 px tiles as in the demo).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the folder holding specaware/

from specaware.cli import main as cli  # noqa: E402
from specaware.data.codec import decode_sample  # noqa: E402
from specaware.data.shard_reader import SkipStats, read_shard, resolve_source  # noqa: E402
from specaware.model.conditioning import band_scale  # noqa: E402
from specaware.model.target_norm import target_statistics  # noqa: E402
from specaware.model.masking import num_visible, patchify  # noqa: E402

PATCH, MASK_RATIO, EPS = 8, 0.75, 1e-3


def build_shards(root: Path, quick: bool) -> Path:
    scenes, size = ("2", "64") if quick else ("4", "128")
    if cli(["synth", "--out", str(root / "synth"), "--seed", "0", "--size", size,
            "--scenes", scenes]):
        raise SystemExit("specaware synth failed")
    images = sorted(str(p) for p in (root / "synth" / "images").glob("*")
                    if p.suffix in (".img", ".tif"))
    if cli(["shard", *images, "--out", str(root / "shards"), "--tile", "32", "--quiet"]):
        raise SystemExit("specaware shard failed")
    return root / "shards"


def tiles(shards: Path):
    urls, expected = resolve_source(shards)
    stats = SkipStats()
    for url in urls:
        for member in read_shard(url, stats, expected.get(Path(url).name)):
            if "__broken__" not in member:
                yield decode_sample(np.asarray(member["npy"]), member["json"], member["__key__"])


def scores(sample: dict, norm: str, rng: np.random.Generator) -> dict[str, float] | None:
    x, valid = (patchify(torch.from_numpy(sample[k])[None], PATCH) for k in ("image", "valid"))
    x = torch.where(valid, x.float(), 0.0)
    n = x.shape[2]
    grid_w = sample["image"].shape[2] // PATCH
    order = rng.permutation(n)
    n_keep = num_visible(n, MASK_RATIO)
    keep, hidden = order[:n_keep], order[n_keep:]
    # normalised as the loss does: statistics of the visible patches only
    view = SimpleNamespace(patches=x, valid=valid, band_mask=valid.any(-1).any(-1))
    stats = target_statistics(view, torch.from_numpy(np.sort(keep))[None], norm)
    mean, std = band_scale(stats)
    z = torch.where(valid, (x - mean) / std, 0.0)[0]                       # [c, n, p]
    vf = valid[0].float()
    weight = vf[:, hidden]
    if weight.sum() == 0:
        return None
    patch_mean = (z * vf).sum(-1) / vf.sum(-1).clamp_min(1.0)             # [c, n]
    rows, cols = np.divmod(np.arange(n), grid_w)
    dist2 = ((rows[hidden, None] - rows[None, keep]) ** 2
             + (cols[hidden, None] - cols[None, keep]) ** 2).astype(np.float32)
    w = torch.from_numpy(1.0 / dist2)
    w = w / w.sum(1, keepdim=True)                                         # [hidden, keep]
    interp = 0.5 * patch_mean[:, keep] @ w.T                               # [c, hidden]
    target = z[:, hidden]

    def charbonnier(pred):
        err = torch.sqrt((target - pred.unsqueeze(-1)) ** 2 + EPS ** 2)
        return float((err * weight).sum() / weight.sum())

    return {"zero": charbonnier(torch.zeros_like(interp)), "interp": charbonnier(interp),
            "oracle": charbonnier(patch_mean[:, hidden])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shards", nargs="?", type=Path, help="shard folder (default: synthetic)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or build_shards(Path(tmp), args.quick)
        rng = np.random.default_rng(0)
        results: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in ("band", "sample")}
        count = 0
        for sample in tiles(shards):
            if sample["image"].shape[1] % PATCH or sample["image"].shape[2] % PATCH:
                continue
            state = rng.bit_generator.state
            for norm in ("band", "sample"):
                rng.bit_generator.state = state            # same hidden patches for both norms
                got = scores(sample, norm, rng)
                for k, v in (got or {}).items():
                    results[norm][k].append(v)
            count += 1
    print(f"{count} tiles, {PATCH} px patches, {MASK_RATIO:.0%} hidden; Charbonnier on hidden "
          f"valid pixels (lower is better)")
    print(f"{'target_norm':<12}{'zero':>8}{'interp':>8}{'oracle':>8}   gap closed by interp")
    for norm, r in results.items():
        zero, interp, oracle = (float(np.mean(r[k])) for k in ("zero", "interp", "oracle"))
        closed = (zero - interp) / max(zero - oracle, 1e-9)
        print(f"{norm:<12}{zero:8.3f}{interp:8.3f}{oracle:8.3f}   {closed:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
