"""Each head learns a small generated task well above chance; freezing does what it says."""
import numpy as np
import pytest
import torch
from fixtures import change_pair, class_layout, cube_from_layout, sample
from torch.utils.data import DataLoader

from specaware.finetune import api
from specaware.finetune.config import OptimConfig
from specaware.data.collate import collate
from specaware.finetune.datasets.protocol import PixelPatches, SceneTiles, split_pixels
from specaware.finetune.datasets.scene import ChangeScene, HSIScene, LabelledScene
from specaware.finetune.heads import ChangeDetector, SceneClassifier, Segmenter
from specaware.finetune.train import evaluate, fit

CPU = torch.device("cpu")


def labelled_scene(h, w, k, bands, seed, lo=450.0, hi=2400.0, block=8) -> LabelledScene:
    wl = np.linspace(lo, hi, bands).astype(np.float32)
    layout = class_layout(h, w, k, seed, block)
    image = np.moveaxis(cube_from_layout(layout, wl, k, seed), -1, 0).astype(np.float32)
    scene = HSIScene(image, wl, np.full(bands, 20.0, np.float32), 30.0, name=f"synthetic{seed}")
    return LabelledScene(scene, layout, [f"c{i}" for i in range(k)])


def train_and_test(model, train, val, test, task, k, epochs, lr=3e-3, batch_size=8, **optim):
    """Fit with model selection on `val`, then metrics on `test` (never seen before)."""
    torch.manual_seed(0)
    loaders = [DataLoader(d, batch_size=batch_size, shuffle=s, collate_fn=collate)
               for d, s in ((train, True), (val, False), (test, False))]
    cfg = OptimConfig(epochs=epochs, lr=lr, encoder_lr=lr / 3, patience=epochs, warmup_fraction=0.1,
                      **optim)
    result = fit(model, loaders[0], loaders[1], task, k, cfg, CPU, progress=False)
    return evaluate(model, loaders[2], task, k, CPU)[1], result


def test_pixel_classifier_beats_chance_on_benchmark_protocol():
    """N labelled pixels per class, a patch around each. The encoder standardises every band per
    sample, so a one-token patch inside a field holds only noise: the patch spans 3 x 3 tokens."""
    torch.manual_seed(0)
    scene = labelled_scene(48, 48, 3, 16, seed=1, block=16)
    split = split_pixels(scene.labels, seed=0, per_class=40, val_per_class=20)
    test = split.test[np.random.default_rng(0).permutation(len(split.test))[:300]]
    model = SceneClassifier(api.build_encoder(None, "specaware_debug"), 3, pool="center")
    sets = [PixelPatches(scene, c, 24) for c in (split.train, split.val, test)]
    m, _ = train_and_test(model, *sets, "classification", 3, epochs=6)
    assert m["oa"] > 1 / 3 + 0.3 and m["kappa"] > 0.5, m


def test_segmenter_beats_chance_on_an_unseen_scene():
    torch.manual_seed(0)
    train, val, test = (labelled_scene(s, s, 3, 12, seed=i) for i, s in ((2, 64), (4, 32), (3, 32)))
    model = Segmenter(api.build_encoder(None, "specaware_debug"), 3, width=32)
    m, _ = train_and_test(model, SceneTiles(train, train.labels, 16, 8),
                          *(SceneTiles(s, s.labels, 16) for s in (val, test)), "segmentation", 3,
                          epochs=10)
    assert m["oa"] > 1 / 3 + 0.35 and m["miou"] > 0.5, m


def _change_scene(seed, h, wl2=None):
    """Dates from "sensor A" (14 bands) and, unless `wl2` is None, "sensor B" (other bands)."""
    wl1 = np.linspace(450, 2400, 14).astype(np.float32)
    wl2 = wl1 if wl2 is None else np.asarray(wl2, np.float32)
    c1, c2, mask = change_pair(h, h, wl1, wl2, seed)
    t1 = HSIScene(np.moveaxis(c1, -1, 0).astype(np.float32), wl1, np.full(14, 15, np.float32),
                  30.0, sensor="aviris-classic")
    t2 = HSIScene(np.moveaxis(c2, -1, 0).astype(np.float32), wl2,
                  np.full(len(wl2), 15 if wl2 is wl1 else 25, np.float32), 30.0,
                  sensor="aviris-classic" if wl2 is wl1 else "enmap")
    return ChangeScene(t1, t2, mask, ["no change", "change"])


def _change_sets(scenes, tile=32):
    train, *rest = scenes
    rest = [SceneTiles(s, s.labels, tile) for s in rest]
    return [SceneTiles(train, train.labels, tile, 8), *rest]


def test_change_detector_beats_chance():
    """Fields that switch class between dates; kappa is 0 for any trivial (constant) map."""
    torch.manual_seed(0)
    scenes = [_change_scene(seed, h) for seed, h in ((4, 64), (6, 32), (5, 48))]
    model = ChangeDetector(api.build_encoder(None, "specaware_debug"), 2, fusion="diff", width=32)
    m, _ = train_and_test(model, *_change_sets(scenes), "change", 2, epochs=10,
                          class_weight="balanced")
    assert m["kappa"] > 0.3 and m["f1"] > 0.5, m


@pytest.mark.parametrize("fusion", ["diff", "both"])
def test_change_detector_trains_on_dates_from_different_sensors(fusion):
    """t1 with 14 bands, t2 with 9 other bands and another sensor name: one siamese encoder reads
    both, the loss falls and the map has the input's size. (Beating chance across sensors from a
    random encoder depends on the seed within this budget; that is what pretraining is for.)"""
    torch.manual_seed(0)
    wl2 = np.linspace(500, 2300, 9)
    scenes = [_change_scene(seed, h, wl2) for seed, h in ((4, 48), (6, 32), (5, 32))]
    model = ChangeDetector(api.build_encoder(None, "specaware_debug"), 2, fusion=fusion, width=32)
    sets = _change_sets(scenes)
    m, fit_result = train_and_test(model, *sets, "change", 2, epochs=4, class_weight="balanced")
    losses = [h["loss"] for h in fit_result.history]
    assert losses[-1] < 0.9 * losses[0], losses
    batch = collate([sets[2][0]])
    assert batch["t1"]["image"].shape[1] == 14 and batch["t2"]["image"].shape[1] == 9
    with torch.no_grad():
        assert model.eval()(batch["t1"], batch["t2"]).shape == (1, 2, 32, 32)
    assert np.isfinite(m["kappa"])


def test_change_detector_rejects_dates_of_different_size():
    model = ChangeDetector(api.build_encoder(None, "specaware_debug"), 2)
    with pytest.raises(ValueError, match="co-register"):
        model(collate([sample(h=8)]), collate([sample(h=16)]))


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_frozen_encoder_is_a_linear_probe_and_stays_unchanged():
    enc = api.build_encoder(None, "specaware_debug")
    model = SceneClassifier(enc, 2, freeze="encoder")
    assert all(n.startswith("head.") for n in _trainable(model))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    batch = collate([sample(label=0), sample(seed=1, label=1)])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    torch.nn.functional.cross_entropy(model(batch), batch["label"]).backward()
    opt.step()
    assert not enc.training
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("make", [
    lambda enc, **kw: SceneClassifier(enc, 2, **kw),
    lambda enc, **kw: Segmenter(enc, 2, width=16, **kw),
    lambda enc, **kw: ChangeDetector(enc, 2, width=16, **kw)],
    ids=["classify", "segment", "change"])
def test_partial_freezing_trains_only_the_last_blocks(make):
    enc = api.build_encoder(None, "specaware_debug")
    model = make(enc, freeze="partial", trainable_blocks=1)
    last = f"encoder.blocks.{enc.depth - 1}."
    enc_trainable = {n for n in _trainable(model) if n.startswith("encoder.")}
    assert enc_trainable and all(n.startswith((last, "encoder.norm")) for n in enc_trainable)
    assert any(n.startswith(last) for n in enc_trainable)
    head = {n for n, _ in model.named_parameters() if not n.startswith("encoder.")}
    assert head and head <= _trainable(model)
    with pytest.raises(ValueError, match="trainable_blocks"):
        make(api.build_encoder(None, "specaware_debug"), freeze="partial",
             trainable_blocks=enc.depth + 1)


def test_partial_freezing_changes_only_the_trainable_weights_in_a_step():
    enc = api.build_encoder(None, "specaware_debug")
    model = SceneClassifier(enc, 2, freeze="partial", trainable_blocks=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = collate([sample(label=0), sample(seed=1, label=1)])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(model.train()(batch), batch["label"]).backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= _trainable(model)
    assert any(n.startswith(f"encoder.blocks.{enc.depth - 1}.") for n in moved)


def test_full_fine_tuning_trains_every_encoder_weight():
    enc = api.build_encoder(None, "specaware_debug")
    model = Segmenter(enc, 2, width=16, freeze="none")
    assert {n for n, _ in model.named_parameters()} == _trainable(model)
    with pytest.raises(ValueError, match="freeze mode"):
        Segmenter(api.build_encoder(None, "specaware_debug"), 2, freeze="half")


def test_dense_heads_return_input_resolution_for_sizes_off_the_patch_grid():
    enc = api.build_encoder(None, "specaware_debug")
    batch = collate([sample(h=13, w=19), sample(c=5, h=13, w=19, seed=3)])
    assert Segmenter(enc, 4, width=16)(batch).shape == (2, 4, 13, 19)
    assert ChangeDetector(enc, 3, fusion="concat", width=16)(batch, batch).shape == (2, 3, 13, 19)


def test_scene_mean_pooling_weighs_patches_by_their_real_pixels():
    """13 x 19 px with patch 8 is padded to 16 x 24: the last patch row holds 5 of 8 real rows,
    the last column 3 of 8 real columns. Mean pooling weighs each token by its real share,
    so padding counts for nothing (a plain mean gave the padded strip full weight)."""
    from specaware.finetune.heads.common import pad_to_patches
    enc = api.build_encoder(None, "specaware_debug").eval()
    assert enc.patch_size == 8
    clf = SceneClassifier(enc, 3, pool="mean").eval()
    batch = collate([sample(h=13, w=19), sample(c=5, h=13, w=19, seed=3)])
    with torch.no_grad():
        tokens = enc.forward_features(pad_to_patches(batch, 8)[0])            # [2, 6, d]
        pooled = clf.pooled(tokens, 13, 19, 3)
    share = torch.tensor([[1.0, 1.0, 3 / 8], [5 / 8, 5 / 8, 15 / 64]]).flatten()
    want = (tokens * share[:, None]).sum(1) / share.sum()
    torch.testing.assert_close(pooled, want, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(pooled, tokens.mean(1), atol=1e-4)


def test_padding_is_invalid_even_when_the_batch_has_no_valid_mask():
    from specaware.finetune.heads.common import pad_to_patches
    batch = {"image": torch.rand(1, 2, 13, 19)}
    padded, (h, w) = pad_to_patches(batch, 8)
    assert padded["valid"].shape == (1, 16, 24) and (h, w) == (13, 19)
    assert bool(padded["valid"][:, :13, :19].all()) and not bool(padded["valid"][:, 13:].any())
    assert not bool(padded["valid"][:, :, 19:].any())
