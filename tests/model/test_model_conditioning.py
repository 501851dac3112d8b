"""Band conditioning: vocabulary, statistics from visible valid pixels, input checks."""
import logging

import pytest
import torch

import specaware
from specaware.model.conditioning import Vocabulary, band_statistics, standardise
from specaware.model.target_norm import destandardise
from tests.model.batches import pad_batch, sample


def test_unknown_sensor_maps_to_unknown_row_and_logs_once(caplog):
    vocab = Vocabulary(["emit", "enmap"])
    with caplog.at_level(logging.WARNING):
        rows = [vocab.index("EMIT"), vocab.index("my-drone"), vocab.index("my-drone")]
    assert rows == [0, 2, 2] and vocab.names[2] == "unknown"
    assert sum("my-drone" in r.message for r in caplog.records) == 1


def test_model_runs_on_an_unknown_sensor_and_level():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug")
    out = mae(pad_batch([sample(6, sensor="homemade-cam", level="L3")]))
    assert torch.isfinite(out.loss)


def test_sensor_table_changes_the_condition():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug").eval()
    emit = mae.encoder(pad_batch([sample(6, sensor="emit")])).z
    enmap = mae.encoder(pad_batch([sample(6, sensor="enmap")])).z
    assert not torch.allclose(emit, enmap)


def test_band_statistics_match_hand_computation_over_valid_pixels():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [0.0, 0.0, 0.0, 0.0]]).reshape(1, 2, 1, 4)
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]]).reshape(1, 2, 1, 4)
    stats = band_statistics(x, valid, torch.tensor([[True, True]]))
    torch.testing.assert_close(stats["mean"], torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(stats["std"], torch.tensor([[(2 / 3) ** 0.5, 0.0]]))
    torch.testing.assert_close(stats["valid_frac"], torch.tensor([[0.75, 1.0]]))
    torch.testing.assert_close(stats["brightness"], torch.tensor([1.0]))
    std = standardise(x, valid, stats)
    assert std[0, 0, 0, 3] == 0 and (std[0, 1] == 0).all()       # invalid pixel, flat band
    torch.testing.assert_close(destandardise(std, stats)[valid], x[valid])


def test_padded_bands_have_zero_condition():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug").eval()
    z = mae.encoder(pad_batch([sample(6)], bands=9)).z
    assert (z[0, 6:] == 0).all() and (z[0, :6].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("change, message", [
    (lambda b: b.pop("wavelength"), "wavelength"),
    (lambda b: b.update(image=b["image"][..., :12]), "multiple of the patch size"),
    (lambda b: b.update(fwhm=torch.ones(1, 3)), "fwhm"),
    (lambda b: b.update(wavelength=torch.ones(4)), "wavelength"),
    (lambda b: b.update(valid=torch.ones(1, 2, 2, dtype=torch.bool)), "valid"),
])
def test_bad_batches_name_the_key(change, message):
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug")
    batch = pad_batch([sample(6)])
    change(batch)
    with pytest.raises((KeyError, ValueError), match=message):
        mae(batch)


def test_shared_metadata_broadcasts_over_the_batch():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug").eval()
    s = sample(6)
    batch = pad_batch([s, s])
    shared = dict(batch, wavelength=s["wavelength"], fwhm=s["fwhm"], gsd=5.0, sensor="aviris-ng")
    torch.testing.assert_close(mae.encoder.forward_features(shared),
                               mae.encoder.forward_features(batch))


def test_metadata_of_any_numeric_type_becomes_float32_per_sample_rows():
    mae = specaware.create_model("specaware_debug")
    batch = pad_batch([sample(6), sample(6)])
    batch["wavelength"] = batch["wavelength"].double().numpy()      # float64 from numpy
    batch["level"] = ["L1", "L2"]
    inputs = mae.encoder.prepare(batch)
    assert inputs.wavelength.dtype == inputs.fwhm.dtype == inputs.gsd.dtype == torch.float32
    assert inputs.level.tolist() == [mae.encoder.levels.index("L1"),
                                     mae.encoder.levels.index("L2")]


@pytest.mark.parametrize("key, value, message", [
    ("gsd", torch.ones(3), r"batch\['gsd'\] has shape \(3,\), expected \(1,\) \(one value per "
                           r"sample\)"),
    ("fwhm", torch.ones(1, 2), r"expected \(1, 6\) \(one value per sample and band\)"),
])
def test_metadata_shape_errors_say_what_one_value_per_means(key, value, message):
    mae = specaware.create_model("specaware_debug")
    batch = pad_batch([sample(6)])
    batch[key] = value
    with pytest.raises(ValueError, match=message):
        mae.encoder.prepare(batch)
