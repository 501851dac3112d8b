"""Initialisation: attention gets the same Xavier-uniform init as the MLPs and experts."""
import math

import torch

import specaware
from specaware.model.block import Attention


def test_attention_qkv_and_proj_are_xavier_uniform_with_zero_bias():
    torch.manual_seed(0)
    attn = Attention(96, 4)
    for layer in (attn.qkv, attn.proj):
        weight = layer.weight.detach()
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert float(weight.abs().max()) <= bound
        # uniform on [-bound, bound] has std bound / sqrt(3); the old default was ~1.2-1.7x
        # narrower, far outside this 5 % band at these sizes
        assert abs(float(weight.std()) / (bound / math.sqrt(3)) - 1) < 0.05
        assert torch.all(layer.bias.detach() == 0)


def test_every_attention_of_a_model_is_initialised_so():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug")
    layers = [m for m in mae.modules() if isinstance(m, Attention)]
    assert len(layers) > 2
    assert all(torch.all(a.qkv.bias == 0) and torch.all(a.proj.bias == 0) for a in layers)
