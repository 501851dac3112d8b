"""`specaware synth`: write the embedded default dataset (scenes from real measured spectra).

    specaware synth --out data/synth --seed 0 --size 256 --scenes 4 \
        --sensors aviris-ng enmap emit sentinel-2a --gsd emit=30
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from specaware.sensors import UnknownSensorError, get_sensor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from specaware.synth.generate import DEFAULT_SENSORS

    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> identical files")
    parser.add_argument("--size", type=int, default=256, help="pixels per side, every sensor")
    parser.add_argument("--scenes", type=int, default=4, help="number of scenes")
    parser.add_argument("--sensors", nargs="+", default=list(DEFAULT_SENSORS),
                        help="catalogue names (see `specaware sensors`)")
    parser.add_argument("--gsd", nargs="*", default=[], metavar="SENSOR=M",
                        help="override a sensor's ground sampling distance in metres")
    parser.add_argument("--format", choices=("auto", "tif", "envi"), default="auto",
                        help="auto: ENVI for airborne/ISS spectrometers, GeoTIFF otherwise")
    parser.add_argument("--no-second-date", action="store_true",
                        help="skip the second date and the change masks")
    parser.add_argument("--no-real", action="store_true",
                        help="skip the real Sentinel-2 tile from spyndex")
    parser.add_argument("--no-noise", action="store_true", help="noise-free rendering")
    parser.add_argument("--no-nodata", action="store_true", help="no swath edges or dead columns")


def _parse_gsd(items: list[str]) -> dict[str, float]:
    gsd = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            gsd[get_sensor(name).name] = float(value)
        except ValueError:
            raise SystemExit(f"--gsd {item!r}: expected SENSOR=METRES, e.g. emit=30") from None
        if not sep or gsd[get_sensor(name).name] <= 0:
            raise SystemExit(f"--gsd {item!r}: expected SENSOR=METRES with METRES > 0")
    return gsd


def main(args: argparse.Namespace) -> int:
    from specaware.synth.generate import SynthConfig, generate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.size < 8 or args.scenes < 1:
        raise SystemExit(f"--size must be >= 8 and --scenes >= 1 (got {args.size}, {args.scenes})")
    try:
        sensors = tuple(get_sensor(s).name for s in args.sensors)
        gsd = _parse_gsd(args.gsd)
    except UnknownSensorError as err:
        raise SystemExit(str(err)) from None
    cfg = SynthConfig(out=args.out, seed=args.seed, size=args.size, scenes=args.scenes,
                      sensors=sensors, gsd=gsd, format=args.format,
                      second_date=not args.no_second_date, include_real=not args.no_real,
                      noise=not args.no_noise, nodata=not args.no_nodata)
    start = time.perf_counter()
    manifest = generate(cfg)
    print(f"synth: {len(manifest['scenes'])} images ({cfg.scenes} scenes x {len(sensors)} sensors"
          f" x {1 + cfg.second_date} dates), {len(manifest['change_pairs'])} change pairs, "
          f"{len(manifest['real'])} real scene(s) in {time.perf_counter() - start:.1f} s "
          f"-> {args.out / 'synth_manifest.json'}")
    return 0
