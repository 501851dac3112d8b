"""Prompt tokens (visual prompt tuning, Jia et al. 2022, sec. 3.2) at the encoder: shallow
prompts enter once before block 0, deep prompts replace the prompt outputs before every block."""
import pytest
import torch

import specaware
from tests.model.batches import pad_batch, sample


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug").eval()
    batch = pad_batch([sample(6), sample(4)])
    prompts = torch.randn(mae.config.depth, 2, 3, mae.config.embed_dim)   # [l, b, m, d]
    return mae, batch, prompts


def test_shallow_prompts_add_m_tokens_that_change_the_patch_features(setup):
    mae, batch, prompts = setup
    with torch.no_grad():
        out = mae.encoder(batch, prompts=prompts[0])
        plain = mae.encoder.forward_features(batch)
        features = mae.encoder.forward_features(batch, prompts=prompts[0])
    assert out.num_prompts == 3 and out.tokens.shape == (2, 3 + 4, 64)
    assert features.shape == plain.shape == (2, 4, 64)
    torch.testing.assert_close(features, out.tokens[:, 3:])
    assert not torch.allclose(features, plain)


def test_deep_prompts_are_replaced_before_every_block(setup):
    mae, batch, prompts = setup
    with torch.no_grad():
        deep = mae.encoder.forward_features(batch, prompts=prompts)
        shallow = mae.encoder.forward_features(batch, prompts=prompts[0])
        other_later = prompts.clone()
        other_later[1:] += 1.0
        changed = mae.encoder.forward_features(batch, prompts=other_later)
    assert deep.shape == (2, 4, 64)
    assert not torch.allclose(deep, shallow)          # block 1 saw prompts[1], not block 0's outputs
    assert not torch.allclose(deep, changed)


def test_prompts_follow_the_models_dtype(setup):
    mae, batch, prompts = setup
    half = specaware.create_model("specaware_debug").to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in (prompts, prompts[0]):                # float32 prompts, bf16 model
            assert half.encoder(batch, prompts=p).tokens.dtype == torch.bfloat16


def test_prompts_of_another_shape_are_refused_naming_both_forms(setup):
    mae, batch, prompts = setup
    with pytest.raises(ValueError, match=r"expected \[b=2, m, d=64\] or \[l=2, b=2, m, d=64\]"):
        mae.encoder(batch, prompts=prompts[:1])        # [1, b, m, d]: not one set per block
