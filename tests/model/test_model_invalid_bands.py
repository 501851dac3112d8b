"""A real band whose pixels are all invalid (water-vapour absorption, a dead detector row)
weighs exactly like a padded band: in the embedding, the conditioning, the output head and the
loss (issue 16, item 1). Before, 6 of 16 such bands moved the encoder's features by ~30 %."""
import pytest
import torch

import specaware
from specaware.model.conditioning import band_statistics
from tests.model.batches import pad_batch, sample

LOST = [3, 4, 9, 10, 11, 15]          # 6 of 16 bands


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(0)
    return specaware.create_model("specaware_debug").eval()


def lost_and_padded():
    """The same tile twice: LOST bands real but all-invalid (with junk pixel values), or
    padded as collate pads (band_mask False, zeros, no wavelength)."""
    lost = pad_batch([sample(16, size=32, seed=3), sample(16, size=32, seed=4)])
    lost["valid"][0, LOST] = False
    lost["image"][0, LOST] = 7.0
    padded = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in lost.items()}
    padded["band_mask"][0, LOST] = False
    for key in ("image", "wavelength", "fwhm"):
        padded[key][0, LOST] = 0.0
    return lost, padded


def test_all_invalid_bands_give_the_tokens_of_padded_bands(mae):
    lost, padded = lost_and_padded()
    with torch.no_grad():
        got = mae.encoder.forward_features(lost)
        want = mae.encoder.forward_features(padded)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_all_invalid_bands_give_the_conditions_of_padded_bands(mae):
    lost, padded = lost_and_padded()
    with torch.no_grad():
        z_lost = mae.encoder(lost).z
        z_padded = mae.encoder(padded).z
    torch.testing.assert_close(z_lost, z_padded, atol=1e-6, rtol=1e-6)
    assert float(z_lost[0, LOST].abs().max()) == 0.0


def test_all_invalid_bands_do_not_change_brightness():
    x = torch.full((1, 4, 2, 3), 0.3)
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[0, 1:3] = False
    stats = band_statistics(x * valid, valid, torch.ones(1, 4, dtype=torch.bool), zeroed=True)
    torch.testing.assert_close(stats["brightness"], torch.tensor([0.3]))


def test_all_invalid_target_bands_give_the_head_and_loss_of_padded_bands(mae):
    """Cross-sensor target with lost bands: the head's conditions of the other bands, the
    prediction of the other bands and the loss are those of the padded target."""
    view = pad_batch([sample(10, size=32, seed=5), sample(10, size=32, seed=6)])
    lost, padded = lost_and_padded()
    outs = []
    for target in (lost, padded):
        batch = {**view, "target": target}
        with torch.no_grad():
            outs.append(mae(batch, generator=torch.Generator().manual_seed(1)))
            inputs = mae.encoder.prepare(target)
            outs.append(mae.head.factors(inputs))
    out_lost, f_lost, out_padded, f_padded = outs
    real = [c for c in range(16) if c not in LOST]
    torch.testing.assert_close(f_lost.h[0, real], f_padded.h[0, real], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out_lost.loss, out_padded.loss, atol=1e-6, rtol=1e-6)
    for key in out_lost.parts:
        torch.testing.assert_close(out_lost.parts[key], out_padded.parts[key],
                                   atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out_lost.pred[0, real], out_padded.pred[0, real],
                               atol=1e-5, rtol=1e-5)
