"""Prompt tokens in the encoder's sequence (specaware.finetune.prompts, encoder `prompts=`)."""
import pytest
import torch

import specaware
from specaware.finetune.prompts import PromptTokens
from tests.model.batches import pad_batch, sample


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    enc = specaware.create_model("specaware_debug").encoder.eval()
    enc.requires_grad_(False)
    return enc


@pytest.fixture(scope="module")
def batch():
    return pad_batch([sample(9, seed=1), sample(12, seed=2, sensor="sentinel-2a", gsd=10.0)])


def test_prompts_change_patch_tokens_but_not_their_count(encoder, batch):
    prompts = PromptTokens(encoder, 3)
    plain = encoder.forward_features(batch)
    prompted = prompts.features(encoder, batch)
    assert prompted.shape == plain.shape
    assert not torch.allclose(prompted, plain, atol=1e-4)


def test_output_sequence_is_cls_then_prompts_then_patches(encoder, batch):
    prompts = PromptTokens(encoder, {"a": 2, "b": 3})
    out = encoder(batch, prompts=prompts.sequence(2))
    assert out.num_prompts == 5
    n = encoder.forward_features(batch).shape[1]
    assert out.tokens.shape[1] == encoder.num_prefix_tokens + 5 + n


def test_only_prompts_get_gradients_through_a_frozen_encoder(encoder, batch):
    prompts = PromptTokens(encoder, {"shared": 2, "private": 2})
    loss = prompts.pooled(encoder, batch, ["shared"]).square().mean()
    loss.backward()
    assert prompts.groups["shared"].grad.abs().sum() > 0
    assert prompts.groups["private"].grad is None       # not in the sequence, no gradient
    assert all(p.grad is None for p in encoder.parameters())


def test_deep_prompts_replace_each_blocks_prompts(encoder, batch):
    deep = PromptTokens(encoder, 2, deep=True)
    assert deep.groups["prompt"].shape == (encoder.depth, 2, encoder.embed_dim)
    base = deep.features(encoder, batch)
    with torch.no_grad():
        # only the last block's prompts (not a constant shift: LayerNorm would remove it)
        deep.groups["prompt"][-1] += torch.randn_like(deep.groups["prompt"][-1])
    assert not torch.allclose(deep.features(encoder, batch), base, atol=1e-5)


def test_group_order_and_state_round_trip(encoder):
    prompts = PromptTokens(encoder, {"shared": 1, "private": 2})
    seq = prompts.sequence(1, ["private", "shared"])
    torch.testing.assert_close(seq[0, :2], prompts.groups["private"])
    other = PromptTokens(encoder, {"shared": 1, "private": 2})
    other.load_group_state(prompts.group_state(["shared"]))
    torch.testing.assert_close(other.groups["shared"], prompts.groups["shared"])
    assert not torch.allclose(other.groups["private"], prompts.groups["private"])


def test_bad_prompt_shapes_and_names_are_refused(encoder, batch):
    with pytest.raises(ValueError, match=r"expected \[b=2, m, d="):
        encoder(batch, prompts=torch.zeros(2, 3, encoder.embed_dim + 1))
    prompts = PromptTokens(encoder, {"shared": 1})
    with pytest.raises(KeyError, match="private"):
        prompts.sequence(2, ["private"])
    with pytest.raises(ValueError, match="shape"):
        prompts.load_group_state({"shared": torch.zeros(2, encoder.embed_dim)})
