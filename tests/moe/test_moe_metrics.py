"""Routing metrics: values on cases where they are known in closed form, laziness, flattening."""
import math

import torch

from moe import RoutingMetrics, SoftMoE

torch.set_num_threads(1)


def uniform_layer(dim=8, e=4, s=2):
    layer = SoftMoE(dim, e, s, 16)
    with torch.no_grad():
        layer.router.phi.zero_()          # all logits 0: both softmaxes uniform
    return layer


def test_uniform_routing_metrics_are_known():
    layer = uniform_layer()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    _, metrics = layer(x, mask)
    t = metrics.tensors()
    # per sample: entropy log 5 and log 3, max weight 1/5 and 1/3
    assert math.isclose(t["dispatch_entropy"], (math.log(5) + math.log(3)) / 2, rel_tol=1e-5)
    assert math.isclose(t["dispatch_entropy_norm"], 1.0, rel_tol=1e-5)
    assert math.isclose(t["dispatch_max"], (1 / 5 + 1 / 3) / 2, rel_tol=1e-5)
    assert math.isclose(t["combine_entropy"], math.log(8), rel_tol=1e-5)
    assert math.isclose(t["combine_max"], 1 / 8, rel_tol=1e-5)
    torch.testing.assert_close(t["expert_load"], torch.full((4,), 0.25))
    assert math.isclose(t["expert_load_max"], 1.0, rel_tol=1e-5)
    assert math.isclose(t["slot_similarity"], 1.0, rel_tol=1e-5)   # every slot the same mix


def test_one_hot_routing_has_zero_entropy_and_distinct_slots():
    layer = SoftMoE(4, 2, 2, 8)
    with torch.no_grad():
        layer.router.phi.copy_(torch.eye(4))
        layer.router.scale.fill_(200.0)   # near-hard routing
    x = torch.eye(4)[None]                # token i matches slot i exactly, others orthogonal
    _, metrics = layer(x)
    d = metrics.as_dict()
    assert d["dispatch_entropy"] < 1e-3 and d["combine_entropy"] < 1e-3
    assert d["dispatch_max"] > 0.999 and d["combine_max"] > 0.999
    assert abs(d["slot_similarity"]) < 1e-3
    assert math.isclose(d["expert_load/0"] + d["expert_load/1"], 1.0, rel_tol=1e-5)


def test_metrics_are_lazy_detached_and_flat():
    layer = uniform_layer()
    x = torch.randn(2, 5, 8, requires_grad=True)
    _, metrics = layer(x)
    assert metrics._cache is None                 # nothing computed until asked
    flat = metrics.as_dict()
    assert all(isinstance(v, float) for v in flat.values())
    assert [k for k in flat if k.startswith("expert_load/")] == [f"expert_load/{i}" for i in range(4)]
    assert not any(t.requires_grad for t in metrics.tensors().values())
    assert "expert_load" in repr(metrics)


def test_empty_metrics():
    empty = RoutingMetrics.empty()
    assert empty.as_dict() == {} and not empty and empty.aux_loss is None


def test_expert_load_under_uneven_routing_counts_real_tokens_only():
    """Hand-made combine weights, 2 experts of 1 slot: the real tokens of sample 0 go to
    expert 0 (weight 1) and half/half, sample 1's single real token to expert 1; the padded
    tokens all point to expert 0, so averaging over them would give a different load."""
    from moe.metrics import soft_moe_metrics
    combine = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]],
                            [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    dispatch = torch.full((2, 3, 2), 1 / 3)
    t = soft_moe_metrics(dispatch, combine, mask, torch.randn(2, 2, 4), 2).tensors()
    # real tokens: expert 0 gets 1 + 0.5 + 0, expert 1 gets 0 + 0.5 + 1, of 3 tokens
    torch.testing.assert_close(t["expert_load"], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(t["combine_max"], torch.tensor((1.0 + 0.5 + 1.0) / 3))


def test_expert_load_of_a_trained_like_router_matches_a_per_token_count():
    torch.manual_seed(3)
    layer = SoftMoE(8, 4, 2, 16)
    with torch.no_grad():
        layer.router.scale.fill_(30.0)                      # sharp, uneven routing
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False],
                         [False, True, True, True, False, True]])
    _, metrics = layer(x, mask)
    combine = layer.router(x, mask).combine
    per_token = combine.reshape(3, 6, 4, 2).sum(-1)[mask]           # [real tokens, e]
    want = per_token.mean(0)
    assert float(want.max() - want.min()) > 0.1                     # really uneven
    torch.testing.assert_close(metrics["expert_load"], want, atol=1e-6, rtol=1e-5)


def test_dispatch_entropy_norm_divides_by_log_of_each_samples_real_tokens():
    """Two real tokens and a padded one; slot 0 takes 3/4 and 1/4 of them, slot 1 half each:
    the entropy is normalised by log 2 (two real tokens), not by log 3 (the padded length)."""
    from moe.metrics import soft_moe_metrics
    dispatch = torch.tensor([[[0.75, 0.5], [0.25, 0.5], [0.0, 0.0]]])     # [b, n, m]
    combine = torch.full((1, 3, 2), 0.5)
    mask = torch.tensor([[True, True, False]])
    t = soft_moe_metrics(dispatch, combine, mask, torch.randn(1, 2, 4), 2).tensors()
    slot0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    entropy = (slot0 + math.log(2)) / 2
    torch.testing.assert_close(t["dispatch_entropy"], torch.tensor(entropy))
    torch.testing.assert_close(t["dispatch_entropy_norm"], torch.tensor(entropy / math.log(2)))
