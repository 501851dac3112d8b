"""Top-k token-choice baseline: matches a per-token loop, capacity drops, padding, balance loss."""
import math

import pytest
import torch

from moe import TopKMoE

torch.set_num_threads(1)


def make_layer(k=2, capacity_factor=None, e=4, seed=0):
    torch.manual_seed(seed)
    return TopKMoE(8, e, 16, k=k, capacity_factor=capacity_factor)


def reference(layer, x):
    """Per token: sum of its k chosen experts, weighted by renormalised gates (no capacity)."""
    probs = layer.gate(x).softmax(-1)
    gates, index = probs.topk(layer.k, dim=-1)
    gates = gates / gates.sum(-1, keepdim=True) if layer.k > 1 else gates
    y = torch.zeros_like(x)
    for bi in range(x.shape[0]):
        for t in range(x.shape[1]):
            for g, i in zip(gates[bi, t], index[bi, t]):
                rows = x[bi, t][None, None].expand(layer.num_experts, 1, -1)
                y[bi, t] += g * layer.experts(rows)[i, 0]
    return y


@pytest.mark.parametrize("k", [1, 2])
def test_matches_per_token_loop_without_capacity_limit(k):
    layer = make_layer(k=k)
    x = torch.randn(2, 6, 8)
    y, metrics = layer(x)
    torch.testing.assert_close(y, reference(layer, x), atol=1e-5, rtol=1e-5)
    assert metrics["dropped_fraction"] == 0


def test_capacity_drops_late_assignments_in_queue_order():
    layer = make_layer(k=1, capacity_factor=1.0, e=2)
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[0, 0] = 10.0        # every token with x[0] > 0 picks expert 0
    x = torch.randn(1, 8, 8)
    x[0, :, 0] = 1.0                          # all 8 tokens want expert 0; capacity 4
    y, metrics = layer(x)
    full = reference(layer, x)                # what an unlimited capacity would give
    torch.testing.assert_close(y[0, :4], full[0, :4], atol=1e-5, rtol=1e-5)
    assert torch.all(y[0, 4:] == 0)           # dropped: the residual carries them
    assert math.isclose(metrics["dropped_fraction"].item(), 0.5)
    torch.testing.assert_close(metrics["expert_load"], torch.tensor([1.0, 0.0]))


def test_samples_do_not_compete_and_padding_changes_nothing():
    layer = make_layer(k=2, capacity_factor=1.0)
    x = torch.randn(3, 6, 8)
    y, _ = layer(x)
    x2 = x.clone()
    x2[1] = torch.randn(6, 8) * 5
    torch.testing.assert_close(layer(x2)[0][[0, 2]], y[[0, 2]], atol=0, rtol=0)
    padded = torch.cat([x[:1], torch.randn(1, 4, 8)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 4])
    y_pad, _ = layer(padded, mask)
    torch.testing.assert_close(y_pad[:, :6], y[:1], atol=1e-5, rtol=1e-5)
    assert torch.all(y_pad[:, 6:] == 0)


def test_balance_loss_is_one_when_balanced_and_gets_gradients():
    layer = make_layer(k=1, e=2)
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[0, 0], layer.gate.weight[1, 0] = 1.0, -1.0
    x = torch.zeros(1, 4, 8)
    x[0, :, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0])   # two tokens each way, mirrored probs
    y, metrics = layer(x)
    assert math.isclose(metrics.aux_loss.item(), 1.0, rel_tol=1e-5)
    (y.sum() + metrics.aux_loss).backward()
    assert layer.gate.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in layer.experts.parameters())
    assert "aux_loss" in metrics.as_dict()


def test_capacity_and_flops():
    layer = TopKMoE(16, 8, 32, k=2, capacity_factor=1.25)
    assert layer.capacity(196) == math.ceil(1.25 * 2 * 196 / 8)
    assert layer.flops(196)["experts"] == 8 * layer.capacity(196) * 2 * 16 * 32
    with pytest.raises(ValueError, match="k <= num_experts"):
        TopKMoE(8, 2, 8, k=3)


@pytest.mark.parametrize("capacity_factor", [None, 1.25])
def test_forward_on_another_device_creates_every_tensor_there(capacity_factor):
    """The meta device stands in for a GPU: a helper tensor made on the default (CPU) device
    fails here as it would on CUDA. Meta tensors have no values, so boolean indexing needs
    torch's permission to assume every element is non-zero."""
    import torch.fx.experimental._config as fx_config
    layer = make_layer(capacity_factor=capacity_factor).to("meta")
    x = torch.empty(2, 5, 8, device="meta")
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        y, metrics = layer(x, torch.ones(2, 5, dtype=torch.bool, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 5, 8)
    assert {t.device.type for t in metrics.tensors().values()} == {"meta"}


def test_combine_max_is_each_real_tokens_largest_gate_averaged():
    from moe.metrics import topk_metrics
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.9, 0.05, 0.05]]])
    index = probs.topk(1, dim=-1).indices
    mask = torch.tensor([[True, True, False]])          # the padded token's 0.9 must not count
    t = topk_metrics(probs, index, torch.ones(1, 3, 1, dtype=torch.bool), mask,
                     torch.tensor(0.0)).tensors()
    torch.testing.assert_close(t["combine_max"], torch.tensor((0.7 + 0.4) / 2))
