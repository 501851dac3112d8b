"""`specaware sensors [NAME]`: list the catalogue, or print one sensor's band table."""
from __future__ import annotations

import argparse
import json
import sys

from specaware.sensors.catalogue import Sensor, UnknownSensorError, get_sensor, list_sensors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="sensor name or alias; omit to list all")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output (one object per sensor / the band table)")


def _summary(sensor: Sensor) -> dict:
    return {
        "name": sensor.name, "display_name": sensor.display_name, "bands": sensor.num_bands,
        "min_nm": round(float(sensor.wavelength.min()), 2),
        "max_nm": round(float(sensor.wavelength.max()), 2),
        "gsd_m": sensor.gsd, "levels": sensor.levels, "approximate": sensor.approximate,
        "aliases": sensor.aliases,
    }


def _print_list(as_json: bool) -> None:
    rows = [_summary(get_sensor(n)) for n in list_sensors()]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<16}{'bands':>6}  {'range nm':<16}{'gsd m':>6}  {'levels':<8}aliases")
    for r in rows:
        span = f"{r['min_nm']:.0f}-{r['max_nm']:.0f}"
        tag = " (approximate grid)" if r["approximate"] else ""
        print(f"{r['name']:<16}{r['bands']:>6}  {span:<16}{r['gsd_m']:>6g}  "
              f"{','.join(r['levels']):<8}{', '.join(r['aliases'])}{tag}")


def _print_table(sensor: Sensor, as_json: bool) -> None:
    absorbed = sensor.absorption_mask()
    if as_json:
        table = _summary(sensor) | {
            "source": sensor.source, "value_caps": sensor.value_caps,
            "value_units": sensor.value_units,
            "absorption_ranges": [list(r) for r in sensor.absorption_ranges],
            "band_table": [{"band": b, "wavelength_nm": float(w), "fwhm_nm": float(f),
                            "absorption": bool(a)} for b, w, f, a in
                           zip(sensor.band_names, sensor.wavelength, sensor.fwhm, absorbed)]}
        print(json.dumps(table, indent=1))
        return
    print(f"{sensor.display_name} [{sensor.name}]: {sensor.num_bands} bands, "
          f"GSD {sensor.gsd:g} m, levels {', '.join(sensor.levels)}")
    if sensor.approximate:
        print("approximate: grid built from the published range/count/spacing/FWHM, "
              "not the agency's per-band table")
    print(f"source: {sensor.source}")
    caps = ", ".join(f"{k} > {v:g} ({sensor.value_units.get(k, '?')})"
                     for k, v in sensor.value_caps.items())
    print(f"invalid above: {caps}")
    print("absorption ranges nm: "
          + ", ".join(f"{a:g}-{b:g}" for a, b in sensor.absorption_ranges))
    print(f"{'#':>4}  {'band':<6}{'centre nm':>11}{'fwhm nm':>9}  note")
    for i, (b, w, f, a) in enumerate(zip(sensor.band_names, sensor.wavelength, sensor.fwhm,
                                         absorbed)):
        print(f"{i + 1:>4}  {b:<6}{w:>11.2f}{f:>9.2f}  {'absorption' if a else ''}")


def main(args: argparse.Namespace) -> int:
    if not args.name:
        _print_list(args.json)
        return 0
    try:
        sensor = get_sensor(args.name)
    except UnknownSensorError as err:
        print(f"specaware sensors: {err}", file=sys.stderr)
        return 2
    _print_table(sensor, args.json)
    return 0
