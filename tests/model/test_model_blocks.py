"""Building blocks against their definitions: stochastic depth, the widths the config asks
for, the output head's initialisation, and what the encoder hands on besides tokens."""
import math

import pytest
import torch

import specaware
from specaware.model.block import DropPath
from specaware.model.conditioning import NUM_CONTENT_STATS
from specaware.model.config import ConditioningConfig, MAEConfig
from specaware.model.hyper_head import HyperOutputHead
from tests.model.batches import pad_batch, sample


def test_drop_path_keeps_or_drops_whole_samples_and_rescales_the_kept():
    torch.manual_seed(0)
    x = torch.ones(200, 3, 4)
    y = DropPath(0.25).train()(x)
    per_sample = y.reshape(200, -1)
    kept = per_sample[:, 0] > 0
    assert torch.equal(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert torch.equal(per_sample[~kept], torch.zeros_like(per_sample[~kept]))
    assert 0.6 < kept.float().mean() < 0.9                    # about 1 - p of them kept
    assert torch.equal(DropPath(0.25).eval()(x), x) and torch.equal(DropPath(0.0).train()(x), x)


def test_decoder_mlps_are_mlp_ratio_times_the_decoder_width():
    mae = specaware.create_model("specaware_debug", decoder={"mlp_ratio": 3.0})
    fc1 = mae.decoder.blocks[0].mlp.fc1
    assert (fc1.in_features, fc1.out_features) == (32, 96)


def test_content_statistics_pass_through_two_layers_to_the_condition_width():
    mae = specaware.create_model("specaware_debug")
    dz = mae.config.conditioning.cond_dim
    mlp = mae.encoder.conditioning.content_mlp
    count = sum(p.numel() for p in mlp.parameters())
    assert count == (NUM_CONTENT_STATS * dz + dz) + (dz * dz + dz)


def test_head_factor_generator_starts_at_unit_variance_per_rank_and_input():
    torch.manual_seed(0)
    cond = ConditioningConfig(cond_dim=32)
    head = HyperOutputHead(cond, 14, 3, decoder_dim=32, patch_size=8, rank=8, hidden=16)
    std = head.a_gen.weight.std().item()                     # 64 * 8 x 32 = 16384 draws
    assert std == pytest.approx(1 / math.sqrt(32 * 8), rel=0.05)


def test_head_defaults_are_the_model_config_defaults():
    head = HyperOutputHead(ConditioningConfig(cond_dim=8), 14, 3, decoder_dim=4, patch_size=2)
    cfg = MAEConfig()
    assert head.b_basis.shape == (4, (cfg.hyper_hidden + 1) * cfg.rank)


def test_encoder_reads_sensor_aliases_and_returns_the_visible_band_statistics():
    mae = specaware.create_model("specaware_debug")
    batch = pad_batch([sample(6, sensor="avng"), sample(4, sensor="aviris-ng")])
    rows = mae.encoder.prepare(batch).sensor
    assert rows[0] == rows[1] == mae.encoder.sensors.index("aviris-ng")
    out = mae.encoder(batch)
    assert out.stats["valid_frac"].tolist() == [[1.0] * 6, [1.0] * 4 + [0.0] * 2]
