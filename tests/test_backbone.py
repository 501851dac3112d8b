"""The timm / TerraTorch backbone: tensors and batch dicts give the same maps, feature_info
describes them, forward_intermediates keeps timm's conventions, micrometres are handled."""
import logging

import pytest
import torch

import specaware
from specaware.backbone_factory import register_terratorch
from specaware.model.units import WavelengthUnitError
from tests.model.batches import pad_batch, sample

BANDS = 12


def _batch(b: int = 2, size: int = 16):
    batch = pad_batch([sample(BANDS, size, seed=i) for i in range(b)])
    batch["wavelength"] = batch["wavelength"][:1].expand(b, -1).clone()   # one band set
    batch["fwhm"] = batch["fwhm"][:1].expand(b, -1).clone()
    batch["gsd"] = torch.full((b,), 5.0)
    batch["level"] = ["L2"] * b
    return batch


def _backbone(batch, **kwargs):
    torch.manual_seed(0)
    return specaware.create_model(
        "specaware_debug", features_only=True, wavelengths=batch["wavelength"][0].tolist(),
        fwhm=batch["fwhm"][0].tolist(), gsd=5.0, sensor="aviris-ng", **kwargs).eval()


@torch.no_grad()
def test_tensor_and_batch_dict_give_identical_features():
    batch = _batch()
    del batch["valid"]
    bb = _backbone(batch, out_indices=(0, 1))
    from_tensor, from_dict = bb(batch["image"]), bb(batch)
    assert len(from_tensor) == 2
    for a, b in zip(from_tensor, from_dict):
        assert a.shape == (2, 64, 2, 2)
        assert torch.equal(a, b)
    # and the maps the fine-tuning heads get from the encoder
    for a, b in zip(from_tensor, bb.encoder.forward_intermediates(batch, [0, 1])):
        assert torch.equal(a, b)


@torch.no_grad()
def test_feature_info_matches_the_maps():
    batch = _batch(size=24)
    bb = _backbone(batch, out_indices=[-1, 0])
    maps = bb(batch["image"])
    assert bb.out_indices == [1, 0]
    assert bb.feature_info.channels() == [m.shape[1] for m in maps] == bb.out_channels
    assert bb.feature_info.reduction() == [24 // m.shape[-1] for m in maps] == [8, 8]
    assert bb.feature_info.module_name() == ["blocks.1", "blocks.0"]
    assert len(bb.feature_info) == len(maps)


@torch.no_grad()
def test_forward_intermediates_follows_timm_conventions():
    batch = _batch()
    bb = _backbone(batch)
    x = batch["image"]
    final, maps = bb.forward_intermediates(x)                       # None = every block
    assert len(maps) == bb.depth and final.shape == (2, 4, 64)      # [b, n, d] after norm
    only = bb.forward_intermediates(x, indices=1, intermediates_only=True)   # last 1 block
    assert isinstance(only, list) and len(only) == 1
    assert torch.equal(only[0], maps[-1])                            # norm=False by default
    normed = bb.forward_intermediates(x, indices=[1], norm=True, intermediates_only=True)
    assert torch.allclose(normed[0].flatten(2).transpose(1, 2), final)
    nlc = bb.forward_intermediates(x, indices=[0], output_fmt="NLC", stop_early=True)[1]
    assert nlc[0].shape == (2, 4, 64)
    assert torch.equal(nlc[0], maps[0].flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="indices"):
        bb.forward_intermediates(x, indices=[5])


def test_micrometre_wavelengths_are_converted_with_a_note(caplog, monkeypatch):
    # the note is logged once per input key and process: start from a process that has not
    # logged it yet, whatever ran before this test
    monkeypatch.setattr("specaware.model.units._noted", set())
    batch = _batch()
    bb_nm = _backbone(batch)
    micro = {k: (v / 1000 if k in ("wavelength", "fwhm") else v) for k, v in batch.items()}
    with caplog.at_level(logging.WARNING, logger="specaware.model.units"):
        bb_um = _backbone(micro)
    assert "micrometres" in caplog.text
    assert torch.allclose(bb_um.bands.wavelength, bb_nm.bands.wavelength)
    with torch.no_grad():
        for a, b in zip(bb_nm(micro), bb_nm(batch)):         # a µm batch dict as well
            assert torch.allclose(a, b, atol=1e-5)


def test_micrometres_are_refused_under_strict_units(monkeypatch):
    batch = _batch()
    micro = {k: (v / 1000 if k in ("wavelength", "fwhm") else v) for k, v in batch.items()}
    with pytest.raises(WavelengthUnitError, match="micrometres"):
        _backbone(micro, strict_units=True)
    mae = specaware.create_model("specaware_debug")
    monkeypatch.setenv("SPECAWARE_STRICT_UNITS", "1")
    with pytest.raises(WavelengthUnitError, match=r"batch\['wavelength'\]"):
        mae.encoder.forward_features(micro)
    monkeypatch.delenv("SPECAWARE_STRICT_UNITS")
    assert mae.encoder.forward_features(micro).shape == (2, 4, 64)


def test_fwhm_of_micrometre_centres_is_estimated_in_nanometres():
    bb = specaware.create_model("specaware_debug", features_only=True, gsd=10.0,
                                wavelengths=[0.49, 0.56, 0.665, 0.842])
    assert bb.bands.wavelength.tolist() == pytest.approx([490, 560, 665, 842])
    assert bb.bands.fwhm.tolist() == pytest.approx([70, 87.5, 141, 177])   # band spacing, nm


def test_bad_inputs_name_the_fix():
    batch = _batch()
    bb = _backbone(batch)
    with pytest.raises(ValueError, match="built for 12 wavelengths"):
        bb(torch.zeros(1, 5, 16, 16))
    bare = specaware.create_model("specaware_debug", features_only=True)
    with pytest.raises(ValueError, match="no band set"):
        bare(torch.zeros(1, 5, 16, 16))
    with pytest.raises(ValueError, match="gsd"):
        specaware.create_model("specaware_debug", features_only=True, wavelengths=[500, 600])
    with pytest.raises(ValueError, match="features_only=False"):
        specaware.create_model("specaware_debug", features_only=False, sensor="enmap")


def test_sensor_fills_the_band_set_from_the_catalogue():
    from specaware.sensors import get_sensor
    bb = specaware.create_model("specaware_debug", features_only=True, sensor="sentinel-2a")
    s = get_sensor("sentinel-2a")
    assert bb.bands.wavelength.tolist() == pytest.approx(s.wavelength.tolist())
    assert float(bb.bands.gsd) == pytest.approx(s.gsd)
    maps = bb(torch.rand(1, s.num_bands, 16, 16))
    assert [m.shape for m in maps] == [(1, 64, 2, 2)] * len(bb.out_indices)


class TerraTorchLikeRegistry:
    """The contract of TerraTorch's `Registry` (terratorch.registry.registry): `register` keys a
    constructor by `__name__`, `build(name, *args, **kwargs)` calls it, `in` tests names."""

    def __init__(self):
        self._registry = {}

    def register(self, constructor):
        self._registry[constructor.__name__] = constructor
        return constructor

    def build(self, name, *args, **kwargs):
        return self._registry[name](*args, **kwargs)

    def __contains__(self, name):
        return name in self._registry


def test_variants_register_in_a_terratorch_style_registry():
    registry = TerraTorchLikeRegistry()
    names = register_terratorch(registry)
    assert set(names) == set(specaware.list_models())
    bb = registry.build("specaware_debug", sensor="sentinel-2a", out_indices=[1])
    assert bb.out_channels == [64]
    maps = bb(torch.rand(2, bb.bands.wavelength.shape[0], 16, 16))
    assert isinstance(maps, list) and maps[0].shape == (2, 64, 2, 2)
    assert register_terratorch(registry) == names          # idempotent


def test_real_terratorch_registry_when_installed():
    reg = pytest.importorskip("terratorch.registry")
    register_terratorch()
    bb = reg.BACKBONE_REGISTRY.build("terratorch_specaware_debug", sensor="sentinel-2a")
    assert bb.out_channels == [64] * len(bb.out_indices)


def test_encoder_called_on_a_tensor_points_to_the_backbone():
    mae = specaware.create_model("specaware_debug")
    with pytest.raises(TypeError, match="features_only=True"):
        mae.encoder(torch.zeros(1, 4, 16, 16))


def test_importing_specaware_after_terratorch_registers_the_variants(monkeypatch):
    """`import terratorch; import specaware` fills TerraTorch's backbone registry."""
    import sys
    import types
    registry = TerraTorchLikeRegistry()
    fake = types.ModuleType("terratorch")
    fake_registry = types.ModuleType("terratorch.registry")
    fake_registry.TERRATORCH_BACKBONE_REGISTRY = registry
    monkeypatch.setitem(sys.modules, "terratorch", fake)
    monkeypatch.setitem(sys.modules, "terratorch.registry", fake_registry)
    specaware._register_in_terratorch()
    assert "specaware_base" in registry and "specaware_debug" in registry
