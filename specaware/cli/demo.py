"""`specaware demo`: the whole framework end to end on the embedded default dataset.

    specaware demo [--out demo_out] [--quick] [--procs N] [--fresh]

synth (scenes from real spectra) -> shard -> DeepSpeed pretraining of the debug model (2
processes under torchrun when 2 cores are available) -> export -> scene classification,
segmentation and change detection, each from the pretrained and from a random encoder -> one
table (task, metric, pretrained, random init) and `OUT/report/report.md` with the loss curve,
reconstruction panels per sensor and prediction maps next to the ground truth.
Finished stages are reused on a re-run (parameters permitting); `--fresh` redoes everything.
`--mat DIR` then writes the demo's labelled AVIRIS-NG scenes as a .mat pixel benchmark
(DIR/demo_scene.mat + DIR/demo_gt.mat, demo/pixel_mat.py) for configs/finetune/demo_pixels.yaml.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="smaller scenes, fewer steps and one fine-tuning seed (~ minutes)")
    parser.add_argument("--procs", type=int, help="DeepSpeed processes (default: 2 when the "
                        "machine has >= 2 cores, else 1)")
    parser.add_argument("--fresh", action="store_true", help="redo every stage")
    parser.add_argument("--mat", type=Path, help="after the demo, write its labelled AVIRIS-NG "
                        "scenes as a .mat pixel benchmark into this folder (demo_scene.mat, "
                        "demo_gt.mat) for configs/finetune/demo_pixels.yaml")
    size = parser.add_argument_group("size overrides (defaults: full demo, or --quick)")
    size.add_argument("--scenes", type=int, help="synthetic scenes")
    size.add_argument("--size", type=int, help="scene side in pixels")
    size.add_argument("--steps", type=int, help="pretraining steps")
    size.add_argument("--epochs", type=int, help="fine-tuning epochs")
    size.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds")
    size.add_argument("--seed", type=int, help="data/pretraining seed")
    size.add_argument("--sensor", help="sensor of the downstream tasks (default enmap)")


def main(args: argparse.Namespace) -> int:
    import logging

    from specaware.demo.pipeline import run
    from specaware.demo.plan import make_plan
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code = run(make_plan(args), args.out, args.fresh)
    if code == 0 and args.mat:
        from specaware.demo.pixel_mat import write_pixel_benchmark
        info = write_pixel_benchmark(args.out, args.mat)
        counts = ", ".join(f"{k} {v}" for k, v in info["labelled"].items() if v)
        print(f"wrote {info['image']} {tuple(info['shape'])} and {info['gt']}; labelled pixels: "
              f"{counts}")
    return code
