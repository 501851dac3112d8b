"""Encoder invariances that make the model sensor-agnostic (docs/DESIGN.md section 2, consequences)."""
import pytest
import torch

import specaware
from specaware.model.masking import random_masking
from tests.model.batches import pad_batch, permute_bands, sample

ATOL = 1e-5


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(0)
    return specaware.create_model("specaware_debug").eval()


def test_permuting_bands_with_metadata_leaves_tokens_unchanged(mae):
    s = sample(12, seed=1)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    tokens = mae.encoder.forward_features(pad_batch([s]))
    permuted = mae.encoder.forward_features(pad_batch([permute_bands(s, order)]))
    torch.testing.assert_close(permuted, tokens, atol=ATOL, rtol=1e-4)


def test_permuting_pixels_without_metadata_changes_tokens(mae):
    """The check above is not vacuous: bands are told apart by their wavelengths."""
    s = sample(12, seed=1)
    shuffled = dict(s, image=s["image"][torch.arange(11, -1, -1)])
    tokens = mae.encoder.forward_features(pad_batch([s]))
    assert not torch.allclose(mae.encoder.forward_features(pad_batch([shuffled])), tokens,
                              atol=1e-3)


def test_padded_sample_in_mixed_batch_gives_same_tokens_as_alone(mae):
    a, b = sample(9, seed=1, sensor="emit"), sample(20, seed=2, sensor="sentinel-2a", gsd=10.0)
    alone = mae.encoder.forward_features(pad_batch([a]))
    mixed = mae.encoder.forward_features(pad_batch([a, b]))
    padded_wide = mae.encoder.forward_features(pad_batch([a], bands=31))
    torch.testing.assert_close(mixed[:1], alone, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(padded_wide, alone, atol=ATOL, rtol=1e-4)


def test_garbage_in_padded_bands_is_ignored(mae):
    batch = pad_batch([sample(9, seed=1)], bands=14)
    clean = mae.encoder.forward_features(batch)
    batch["image"][:, 9:] = 1e3
    batch["wavelength"][:, 9:] = 123.0
    batch["fwhm"][:, 9:] = 77.0
    torch.testing.assert_close(mae.encoder.forward_features(batch), clean, atol=ATOL, rtol=1e-4)


def test_masked_pixels_cannot_change_visible_tokens_or_condition(mae):
    batch = pad_batch([sample(10, seed=4), sample(7, seed=5)])
    keep, mask = random_masking(2, 4, 0.5, "cpu", torch.Generator().manual_seed(0))
    before = mae.encoder(mae.encoder.prepare(batch), keep)
    pixel_hidden = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    for i in range(2):
        for n in mask[i].nonzero().flatten().tolist():
            r, c = divmod(n, 2)
            pixel_hidden[i, 0, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = True
    changed = dict(batch, image=torch.where(pixel_hidden, batch["image"] * 5 + 3, batch["image"]))
    after = mae.encoder(mae.encoder.prepare(changed), keep)
    torch.testing.assert_close(after.z, before.z, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(after.tokens, before.tokens, atol=ATOL, rtol=1e-4)
    # ...while the same change in a VISIBLE patch does move them
    visible = ~pixel_hidden
    moved = dict(batch, image=torch.where(visible, batch["image"] * 5 + 3, batch["image"]))
    assert not torch.allclose(mae.encoder(mae.encoder.prepare(moved), keep).z, before.z)


def test_invalid_pixels_do_not_change_tokens(mae):
    s = sample(10, seed=6)
    s["valid"][:, 3:5, 2:9] = False
    clean = mae.encoder.forward_features(pad_batch([s]))
    s["image"][:, 3:5, 2:9] = float("nan")
    torch.testing.assert_close(mae.encoder.forward_features(pad_batch([s])), clean)
