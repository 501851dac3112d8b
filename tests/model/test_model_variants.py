"""Registry-wide smoke tests: every variant builds and runs forward/backward (timm style)."""
import json

import pytest
import torch

import specaware
from specaware.config import ConfigError, to_dict
from specaware.model.variants import create_model_from_config, model_config, model_stats
from tests.model.batches import pad_batch, sample

VARIANTS = ["specaware_debug", "specaware_tiny", "specaware_small", "specaware_base",
            "specaware_large"]


def test_registry_lists_the_documented_variants():
    assert specaware.list_models() == VARIANTS


def test_debug_runs_forward_backward_on_cpu_with_two_band_counts():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug")
    out = mae(pad_batch([sample(11, size=32, seed=1), sample(4, size=32, seed=2)]))
    out.loss.backward()
    grads = [p.grad for p in mae.parameters()]
    assert all(g is not None for g in grads), "every parameter takes part in the loss"
    assert out.pred.shape == (2, 11, 32, 32)


def meta_batch(bands_per_sample, tile):
    c = max(bands_per_sample)
    b = len(bands_per_sample)
    band_mask = torch.arange(c)[None] < torch.tensor(bands_per_sample)[:, None]
    return {"image": torch.empty(b, c, tile, tile, device="meta"),
            "valid": torch.empty(b, c, tile, tile, dtype=torch.bool, device="meta"),
            "band_mask": band_mask.to("meta"),
            "wavelength": torch.empty(b, c, device="meta"),
            "fwhm": torch.empty(b, c, device="meta"),
            "gsd": torch.empty(b, device="meta"), "sensor": ["emit", "prisma"],
            "level": ["L2", "L1"]}


@pytest.mark.parametrize("name", VARIANTS[1:])
def test_bigger_variants_shape_check_forward_backward_on_meta(name):
    with torch.device("meta"):
        mae = specaware.create_model(name)
    batch = meta_batch([285, 239], tile=64)
    out = mae(batch)
    out.loss.backward()
    cfg = mae.config
    assert out.pred.shape == (2, 285, 64, 64)
    assert out.mask.shape == (2, 64)
    feats = mae.encoder.forward_features(batch)
    assert feats.shape == (2, 64, cfg.embed_dim)
    maps = mae.encoder.forward_intermediates(batch)
    assert [m.shape for m in maps] == [(2, cfg.embed_dim, 8, 8)] * 4
    assert mae.encoder.blocks[0].attn.qkv.weight.grad.shape == (3 * cfg.embed_dim, cfg.embed_dim)


def test_base_is_vit_b_with_patch_8():
    cfg = model_config("specaware_base")
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) == (768, 12, 12, 8)
    assert cfg.moe_block_ids() == list(range(6, 12))


def test_overrides_nested_and_dotted_and_unknown_keys():
    cfg = model_config("specaware_debug", depth=4, decoder={"depth": 2}, **{"moe.blocks": [0]})
    assert (cfg.depth, cfg.decoder.depth, cfg.moe.blocks) == (4, 2, [0])
    with pytest.raises(ConfigError, match="deepth"):
        model_config("specaware_debug", deepth=4)
    with pytest.raises(KeyError, match="specaware_debug"):
        model_config("specaware_huge")


def test_config_round_trips_through_json_to_identical_model():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug", cls_token=True, decoder={"moe": True})
    data = json.loads(json.dumps(to_dict(mae.config)))
    rebuilt = create_model_from_config(data)
    rebuilt.load_state_dict(mae.state_dict())
    assert rebuilt.config == mae.config
    batch = pad_batch([sample(5, seed=1)])
    mae.eval(), rebuilt.eval()
    a = mae(batch, generator=torch.Generator().manual_seed(0))
    b = rebuilt(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.loss, b.loss)
    assert any(k.startswith("decoder.block") for k in a.metrics)


def test_cls_token_is_dropped_from_features():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug", cls_token=True)
    feats = mae.encoder.forward_features(pad_batch([sample(5, size=32, seed=1)]))
    assert feats.shape == (1, 16, 64)


def test_intermediate_indices():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug", depth=4)
    batch = pad_batch([sample(5, size=16, seed=1)])
    assert len(mae.encoder.forward_intermediates(batch, indices=2)) == 2
    last = mae.encoder.forward_intermediates(batch, indices=[-1])[0]
    feats = mae.encoder.forward_features(batch)
    torch.testing.assert_close(last.flatten(2).transpose(1, 2), feats)
    with pytest.raises(ValueError, match="out of range"):
        mae.encoder.forward_intermediates(batch, indices=[7])


def test_model_stats_counts_params_and_flops():
    stats = model_stats("specaware_small", bands=224, tile=128)
    with torch.device("meta"):
        mae = specaware.create_model("specaware_small")
    assert stats["params"] == sum(p.numel() for p in mae.parameters())
    assert 0 < stats["encoder_params"] < stats["params"]
    # pretraining forward: 64 visible tokens through 12 blocks of width 384 is at least
    # 2 * 64 * 12 * (4 d^2 attention + 8 d^2 MLP) FLOPs
    assert stats["flops_per_tile"] > 2 * 64 * 12 * 12 * 384 ** 2
    assert stats["encoder_flops_per_tile"] > stats["flops_per_tile"] / 4
    more_bands = model_stats("specaware_small", bands=425, tile=128)
    assert more_bands["embedding_flops_per_tile"] > stats["embedding_flops_per_tile"]
    assert more_bands["params"] == stats["params"]          # band count never changes weights


def test_forward_on_another_device_creates_every_tensor_there():
    """The meta device stands in for a GPU; `one_device` fails any op that mixes in a tensor
    made on the CPU (list metadata, vocabulary rows, masking noise), as CUDA would."""
    import torch.fx.experimental._config as fx_config

    from specaware.testing import one_device
    with torch.device("meta"):
        mae = specaware.create_model("specaware_debug")
    plain = pad_batch([sample(6), sample(4)])
    batch = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in plain.items()}
    batch.update(wavelength=plain["wavelength"].tolist(), fwhm=plain["fwhm"].tolist(), gsd=5.0)
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), one_device():
        out = mae(batch)
        out.loss.backward()
        features = mae.encoder.forward_features(batch)
    assert out.loss.device.type == features.device.type == "meta"


def test_moe_blocks_count_from_the_end_and_out_of_range_ones_are_refused():
    from specaware.model.config import MAEConfig, MoEConfig
    cfg = MAEConfig(depth=4, moe=MoEConfig(blocks=[-1, 0, 3, -4]))
    assert cfg.moe_block_ids() == [0, 3]
    assert MAEConfig(depth=4, moe=MoEConfig(blocks=[-1])).moe_block_ids(depth=6) == [5]
    assert MAEConfig(depth=4).moe_block_ids() == [2, 3]          # default: the last half
    for bad in ([4], [-5]):
        with pytest.raises(ValueError, match=rf"^config key 'moe.blocks': \{bad}\ out of range "
                                             r"for depth 4$"):
            MAEConfig(depth=4, moe=MoEConfig(blocks=bad)).moe_block_ids()


def test_a_mistyped_variant_name_suggests_the_closest_one():
    with pytest.raises(KeyError, match="unknown model 'specaware_bse'; did you mean "
                                       "'specaware_base'"):
        model_config("specaware_bse")


def test_override_errors_name_the_key_where_the_user_wrote_it_and_configs_their_variant():
    from specaware.model.variants import resolve_model_config
    with pytest.raises(ConfigError, match="unknown config key 'model.overrides.depht'"):
        resolve_model_config("specaware_debug", {"depht": 3}, prefix="model.overrides.")
    assert model_config("specaware_small", depth=2).name == "specaware_small"


def test_model_stats_default_to_the_readme_setting_and_follow_the_mask_ratio():
    from specaware.model import flops
    stats = model_stats("specaware_debug")
    assert (stats["bands"], stats["tile"]) == (224, 128)        # the README table's setting
    assert flops.model_stats("specaware_debug") == stats
    assert stats == model_stats("specaware_debug", bands=224, tile=128, mask_ratio=0.75)
    half = model_stats("specaware_debug", mask_ratio=0.5)
    assert half["flops_per_tile"] > stats["flops_per_tile"]    # more visible tokens to encode
    assert half["encoder_flops_per_tile"] == stats["encoder_flops_per_tile"]


def test_synthetic_batch_lives_on_the_requested_device_with_boolean_masks():
    from specaware.model.flops import synthetic_batch
    batch = synthetic_batch(5, 16, batch_size=2, device="meta")
    tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    assert {v.device.type for v in tensors.values()} == {"meta"}
    assert batch["valid"].dtype == batch["band_mask"].dtype == torch.bool
    assert batch["band_mask"].shape == (2, 5) and batch["fwhm"].shape == (2, 5)
