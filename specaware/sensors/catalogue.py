"""Sensor catalogue: one JSON data file per sensor in `data/` (docs/DESIGN.md section 1).

Units: wavelength and FWHM in nm, GSD in m. Lookup is case-insensitive and accepts aliases
(`s2a`, `l8`, `avng`, ...). A file that carries its own wavelengths always wins over the
catalogue; the catalogue fills in when the file has none.
"""
from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).with_name("data")
# Water-vapour absorption windows (nm) for files of unknown sensors; catalogue files carry their
# own copy. The last window stands for "> 2450 nm" within the solar-reflective range.
DEFAULT_ABSORPTION_RANGES = [(1340.0, 1460.0), (1790.0, 1960.0), (2450.0, 2600.0)]
# Default upper valid value per level when the sensor is unknown (reflectance at L2).
DEFAULT_VALUE_CAPS = {"L2": 1.5}
REQUIRED_KEYS = ("name", "wavelength", "fwhm", "gsd", "levels", "absorption_ranges",
                 "value_caps")


class UnknownSensorError(KeyError):
    """Raised for a sensor name that is neither a catalogue name nor an alias."""

    def __str__(self) -> str:  # KeyError would print the repr with quotes
        return str(self.args[0])


@dataclass(frozen=True, eq=False)
class Sensor:
    """One sensor of the catalogue.

    wavelength, fwhm: float32 [C] nm; gsd: m; value_caps: per level, values above are invalid;
    absorption_ranges: (low, high) nm windows whose bands carry no surface signal.
    responses: optional tabulated response curves, one (wavelength nm [K], response [K]) per
    band, in band order (multispectral sensors); None for grid-built spectrometers.
    """

    name: str
    wavelength: np.ndarray
    fwhm: np.ndarray
    band_names: list[str]
    gsd: float
    levels: list[str]
    absorption_ranges: list[tuple[float, float]]
    value_caps: dict[str, float]
    approximate: bool = False
    display_name: str = ""
    aliases: list[str] = field(default_factory=list)
    source: str = ""
    value_units: dict[str, str] = field(default_factory=dict)
    band_gsd: np.ndarray | None = None
    responses: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def num_bands(self) -> int:
        return int(self.wavelength.shape[0])

    def absorption_mask(self) -> np.ndarray:
        """bool [C]: True where the band centre falls in a water-absorption range."""
        return absorption_mask(self.wavelength, self.absorption_ranges)

    def value_cap(self, level: str) -> float | None:
        """Upper valid value for `level` (None when the catalogue gives no cap)."""
        return self.value_caps.get(level)

    def __repr__(self) -> str:
        tag = ", approximate" if self.approximate else ""
        return (f"Sensor({self.name!r}, {self.num_bands} bands, "
                f"{self.wavelength.min():.0f}-{self.wavelength.max():.0f} nm, "
                f"gsd {self.gsd:g} m{tag})")


def absorption_mask(wavelength, ranges) -> np.ndarray:
    """bool [C]: True where `wavelength` (nm) lies inside any of `ranges` [(low, high) nm]."""
    wl = np.asarray(wavelength, dtype=np.float64)
    mask = np.zeros(wl.shape, dtype=bool)
    for low, high in ranges:
        mask |= (wl >= low) & (wl <= high)
    return mask


def _from_json(path: Path) -> Sensor:
    raw = json.loads(path.read_text())
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"sensor file {path} lacks keys {missing}")
    wl = np.asarray(raw["wavelength"], dtype=np.float32)
    fwhm = np.asarray(raw["fwhm"], dtype=np.float32)
    names = raw.get("band_names") or [f"B{i + 1}" for i in range(len(wl))]
    if not (len(wl) == len(fwhm) == len(names)):
        raise ValueError(f"sensor file {path}: wavelength ({len(wl)}), fwhm ({len(fwhm)}) "
                         f"and band_names ({len(names)}) must have the same length")
    responses = None
    if raw.get("responses"):
        responses = [(np.asarray(raw["responses"][b]["wavelength"], dtype=np.float32),
                      np.asarray(raw["responses"][b]["response"], dtype=np.float32))
                     for b in names]
    band_gsd = raw.get("band_gsd")
    return Sensor(
        name=raw["name"], wavelength=wl, fwhm=fwhm, band_names=list(names),
        gsd=float(raw["gsd"]), levels=list(raw["levels"]),
        absorption_ranges=[(float(a), float(b)) for a, b in raw["absorption_ranges"]],
        value_caps={k: float(v) for k, v in raw["value_caps"].items()},
        approximate=bool(raw.get("approximate", False)),
        display_name=raw.get("display_name", raw["name"]), aliases=list(raw.get("aliases", [])),
        source=raw.get("source", ""), value_units=dict(raw.get("value_units", {})),
        band_gsd=None if band_gsd is None else np.asarray(band_gsd, dtype=np.float32),
        responses=responses,
    )


@functools.lru_cache(maxsize=None)
def _catalogue() -> dict[str, Sensor]:
    sensors = {}
    for path in sorted(DATA_DIR.glob("*.json")):
        sensor = _from_json(path)
        sensors[sensor.name] = sensor
    return sensors


@functools.lru_cache(maxsize=None)
def _lookup_table() -> dict[str, str]:
    table = {}
    for name, sensor in _catalogue().items():
        for key in [name, *sensor.aliases]:
            table[_normalise(key)] = name
    return table


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def list_sensors() -> list[str]:
    """Canonical sensor names, sorted."""
    return sorted(_catalogue())


def get_sensor(name: str) -> Sensor:
    """The catalogue entry for `name` (case-insensitive, aliases accepted)."""
    key = _normalise(str(name))
    table = _lookup_table()
    if key not in table:
        close = difflib.get_close_matches(key, list(table), n=1)
        hint = f" Did you mean '{table[close[0]]}'?" if close else ""
        raise UnknownSensorError(
            f"unknown sensor '{name}'.{hint} Known sensors: {', '.join(list_sensors())} "
            f"(see `specaware sensors`)")
    return _catalogue()[table[key]]
