"""TorchGeo-style datasets feed specaware: band centres in µm from the dataset's `wavelengths`
table, masks as labels, a GeoDataset read at a sampler's queries, one fine-tuning epoch."""
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from specaware.data.torchgeo import TorchGeoAdapter, adapt, sample_from_torchgeo
from specaware.model.units import WavelengthUnitError


class TinyHyperspectral:
    """A NonGeoDataset as TorchGeo writes them: `bands`, a `wavelengths` table in µm (as
    torchgeo.datasets.EnMAP), samples {"image": float [C, H, W], "mask": long [H, W]}; the two
    classes differ by where their reflectance peaks."""

    bands = tuple(f"B{i:02d}" for i in range(10))
    wavelengths = {b: 0.45 + 0.2 * i for i, b in enumerate(bands)}      # 0.45 .. 2.25 µm
    res = 10.0

    def __init__(self, n: int = 8, size: int = 16):
        rng = np.random.default_rng(0)
        self.items = []
        wl = np.array([self.wavelengths[b] for b in self.bands])
        spectra = np.stack([0.2 + 0.5 * np.exp(-((wl - c) / 0.4) ** 2) for c in (0.7, 1.9)])
        for _ in range(n):
            mask = (rng.random((size // 8, size // 8)) > 0.5).astype(np.int64)
            mask = np.kron(mask, np.ones((8, 8), np.int64))
            image = spectra[mask].transpose(2, 0, 1) + rng.normal(0, 0.02, (10, size, size))
            self.items.append({"image": torch.tensor(image, dtype=torch.float32),
                               "mask": torch.tensor(mask)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])


class TinyGeo:
    """A GeoDataset: indexed by bounding-box queries, returns {"image", "crs", "bounds"}."""

    bands = ("red", "nir")
    wavelengths = {"red": 0.665, "nir": 0.842}
    res = (20.0, 20.0)
    crs = "EPSG:32611"

    def __getitem__(self, query):
        x0, y0 = query
        image = torch.full((2, 8, 8), float(x0)) + torch.arange(2.0)[:, None, None]
        return {"image": image, "crs": self.crs, "bounds": query}


def test_dataset_wavelengths_in_micrometres_become_nm_with_a_note(caplog, monkeypatch):
    # the note is logged once per input key and process: start from a process that has not
    # logged it yet, whatever ran before this test (mutmut runs the suite twice in one process)
    monkeypatch.setattr("specaware.model.units._noted", set())
    with caplog.at_level(logging.WARNING, logger="specaware.model.units"):
        ds = TorchGeoAdapter(TinyHyperspectral(2))
    assert "micrometres" in caplog.text
    s = ds[0]
    assert s["wavelength"].tolist() == pytest.approx([450 + 200 * i for i in range(10)], rel=1e-5)
    assert s["fwhm"].tolist() == pytest.approx([200.0] * 10, rel=1e-5)   # band spacing, nm
    assert s["gsd"] == 10.0 and s["label"].shape == (16, 16) and s["label"].dtype == torch.long
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch["wavelength"].shape == (2, 10) and batch["label"].shape == (2, 16, 16)


def test_strict_units_refuse_micrometres():
    with pytest.raises(WavelengthUnitError, match="TinyHyperspectral wavelengths"):
        TorchGeoAdapter(TinyHyperspectral(1), strict_units=True)
    nm = [450 + 200 * i for i in range(10)]
    s = TorchGeoAdapter(TinyHyperspectral(1), wavelengths=nm, strict_units=True)[0]
    assert s["wavelength"].tolist() == pytest.approx(nm)


def test_bad_samples_name_the_fix():
    with pytest.raises(KeyError, match="wavelengths"):
        sample_from_torchgeo({"image": torch.zeros(3, 8, 8)}, gsd=10.0)
    with pytest.raises(ValueError, match="3 bands, wavelengths 2"):
        sample_from_torchgeo({"image": torch.zeros(3, 8, 8)}, wavelengths=[500, 600], gsd=10.0)
    with pytest.raises(ValueError, match="gsd"):
        sample_from_torchgeo({"image": torch.zeros(2, 8, 8)}, wavelengths=[500, 600])


def test_geodataset_is_read_at_the_sampler_queries():
    queries = [(0, 0), (3, 0), (7, 0)]
    ds = adapt(TinyGeo(), sampler=queries)
    assert len(ds) == 3
    samples = list(ds)
    assert [float(s["image"][0, 0, 0]) for s in samples] == [0.0, 3.0, 7.0]
    assert samples[0]["wavelength"].tolist() == pytest.approx([665.0, 842.0])
    assert samples[0]["gsd"] == 20.0 and samples[0]["meta"]["crs"] == "EPSG:32611"
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=ds.collate_fn)))
    assert batch["image"].shape == (3, 2, 8, 8)


def test_torchgeo_dataset_runs_one_finetuning_epoch():
    import specaware
    from specaware.finetune.config import OptimConfig
    from specaware.finetune.heads import Segmenter
    from specaware.finetune.train import fit

    torch.manual_seed(0)
    ds = TorchGeoAdapter(TinyHyperspectral(8), sensor="enmap")
    train = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=ds.collate_fn)
    val = DataLoader(ds, batch_size=4, collate_fn=ds.collate_fn)
    encoder = specaware.create_model("specaware_debug").encoder
    model = Segmenter(encoder, num_classes=2, width=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, train, val, "segmentation", 2, OptimConfig(epochs=1, patience=1),
                 torch.device("cpu"), progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])
    assert 0.0 <= result.best_score <= 1.0
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
