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
