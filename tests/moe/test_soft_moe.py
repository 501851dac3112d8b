"""Soft MoE behaviour: hand-computed values, the invariances the paper's construction implies,
padding, gradients, precision and persistence."""
import io
import math

import pytest
import torch
from torch import nn

from moe import DenseMLP, SoftMoE, SoftRouter
from moe.experts import MLPExperts

torch.set_num_threads(1)


class ScaleExperts(nn.Module):
    """Expert i multiplies its rows by (i + 1): makes outputs computable by hand."""

    def __init__(self, num_experts, dim, hidden_dim):
        super().__init__()
        self.num_experts, self.dim, self.hidden_dim = num_experts, dim, hidden_dim
        self.factor = nn.Parameter(torch.arange(1.0, num_experts + 1))

    def forward(self, x):
        return x * self.factor[:, None, None]


def make_layer(dim=8, e=4, s=2, h=16, seed=0, expert="mlp"):
    torch.manual_seed(seed)
    return SoftMoE(dim, e, s, h, expert=expert)


def reference_soft_moe(layer, x, mask=None):
    """Loop-per-sample, loop-per-expert transcription of the paper's algorithm."""
    phi = layer.router.scale * nn.functional.normalize(layer.router.phi, dim=0)
    e, s = layer.num_experts, layer.slots_per_expert
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        keep = mask[i] if mask is not None else torch.ones(x.shape[1], dtype=torch.bool)
        xi = x[i][keep]
        if len(xi) == 0:
            continue
        logits = nn.functional.normalize(xi, dim=-1) @ phi              # [n, m]
        slots = logits.softmax(dim=0).T @ xi                             # [m, d]
        ys = torch.cat([layer.experts(slots[j * s:(j + 1) * s][None].expand(e, -1, -1))[j]
                        for j in range(e)])                              # expert j on its slots
        out[i, keep] = logits.softmax(dim=1) @ ys
    return out


def test_hand_computed_three_tokens_two_slots():
    layer = SoftMoE(2, num_experts=2, slots_per_expert=1, hidden_dim=1, expert=ScaleExperts)
    with torch.no_grad():
        layer.router.phi.copy_(torch.eye(2))
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    y, _ = layer(x)
    # unit tokens: (1, 0), (0, 1), (a, a) with a = 1/sqrt(2); Phi = I, so logits = unit tokens
    a, ex = 1 / math.sqrt(2), math.exp
    z = ex(1) + ex(0) + ex(a)                         # dispatch: softmax over the 3 tokens
    slot0 = (ex(1) * x[0, 0] + ex(0) * x[0, 1] + ex(a) * x[0, 2]) / z
    slot1 = (ex(0) * x[0, 0] + ex(1) * x[0, 1] + ex(a) * x[0, 2]) / z
    out0, out1 = 1 * slot0, 2 * slot1                 # expert i multiplies by i + 1
    sg = ex(1) / (ex(1) + ex(0))                      # combine: softmax over the 2 slots
    expected = torch.stack([sg * out0 + (1 - sg) * out1, (1 - sg) * out0 + sg * out1,
                            0.5 * out0 + 0.5 * out1])
    torch.testing.assert_close(y[0], expected)


def test_scale_sharpens_routing_by_hand():
    layer = SoftMoE(2, 2, 1, 1, expert=ScaleExperts)
    with torch.no_grad():
        layer.router.phi.copy_(torch.eye(2))
        layer.router.scale.fill_(3.0)
    routing = layer.router(torch.tensor([[[2.0, 0.0], [0.0, 5.0]]]))   # norms do not matter
    sg = 1 / (1 + math.exp(-3.0))
    torch.testing.assert_close(routing.dispatch[0], torch.tensor([[sg, 1 - sg], [1 - sg, sg]]))


@pytest.mark.parametrize("expert", ["mlp", "swiglu"])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_loop_reference(expert, padded):
    layer = make_layer(expert=expert)
    x = torch.randn(3, 7, 8)
    mask = None
    if padded:
        mask = torch.ones(3, 7, dtype=torch.bool)
        mask[1, 4:] = False
    y, _ = layer(x, mask)
    torch.testing.assert_close(y, reference_soft_moe(layer, x, mask), atol=1e-5, rtol=1e-5)


def test_permuting_tokens_permutes_outputs():
    layer = make_layer()
    x = torch.randn(2, 9, 8)
    perm = torch.randperm(9)
    y, _ = layer(x)
    y_perm, _ = layer(x[:, perm])
    torch.testing.assert_close(y_perm, y[:, perm], atol=1e-5, rtol=1e-5)


def test_changing_one_sample_never_changes_another():
    layer = make_layer()
    x = torch.randn(4, 6, 8)
    y, _ = layer(x)
    x2 = x.clone()
    x2[2] = torch.randn(6, 8) * 10
    y2, _ = layer(x2)
    torch.testing.assert_close(y2[[0, 1, 3]], y[[0, 1, 3]], atol=0, rtol=0)
    assert not torch.allclose(y2[2], y[2])


def test_padding_does_not_change_real_tokens_and_gets_no_dispatch_weight():
    layer = make_layer()
    real = torch.randn(1, 5, 8)
    padded = torch.cat([real, torch.randn(1, 3, 8) * 100], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    y_alone, _ = layer(real)
    y_pad, _ = layer(padded, mask)
    torch.testing.assert_close(y_pad[:, :5], y_alone, atol=1e-5, rtol=1e-5)
    assert torch.all(y_pad[:, 5:] == 0)
    dispatch = layer.router(padded, mask).dispatch
    assert torch.all(dispatch[:, 5:] == 0)


def test_padding_in_the_middle_and_uneven_lengths_in_one_batch():
    layer = make_layer()
    a, b = torch.randn(1, 6, 8), torch.randn(1, 3, 8)
    batch = torch.zeros(2, 6, 8)
    batch[0], batch[1, [0, 2, 5]] = a[0], b[0]
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0], mask[1, [0, 2, 5]] = True, True
    y, _ = layer(batch, mask)
    torch.testing.assert_close(y[0], layer(a)[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[1, [0, 2, 5]], layer(b)[0][0], atol=1e-5, rtol=1e-5)


def test_all_padding_sequence_is_finite_and_zero():
    layer = make_layer()
    x = torch.randn(2, 4, 8, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    y, metrics = layer(x, mask)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.all(y[1] == 0)
    assert torch.isfinite(x.grad).all()
    assert all(math.isfinite(v) for v in metrics.as_dict().values())


def test_weights_sum_to_one():
    router = SoftRouter(8, 3, 2)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, False, True, True, False]])
    for m in (None, mask):
        routing = router(x, m)
        torch.testing.assert_close(routing.dispatch.sum(dim=1), torch.ones(2, 6))
        torch.testing.assert_close(routing.combine.sum(dim=2), torch.ones(2, 5))
        assert (routing.dispatch >= 0).all() and (routing.combine >= 0).all()


@pytest.mark.parametrize("expert", ["mlp", "swiglu"])
def test_gradients_reach_every_expert_and_slot_parameters(expert):
    layer = make_layer(e=4, s=1, expert=expert)
    x = torch.randn(2, 6, 8)
    y, _ = layer(x)
    (y ** 2).sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    for name, param in layer.experts.named_parameters():
        per_expert = param.grad.flatten(1).abs().sum(1)
        assert (per_expert > 0).all(), f"{name}: an expert got no gradient {per_expert}"
    assert (layer.router.phi.grad.abs().sum(0) > 0).all(), "a slot column got no gradient"
    assert layer.router.scale.grad.abs() > 0


def test_bf16_forward_matches_fp32():
    layer = make_layer(dim=32, e=4, s=4, h=64)
    x = torch.randn(2, 16, 32)
    y32, _ = layer(x)
    y16, metrics = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    err = (y16.float() - y32).norm() / y32.norm()
    assert err < 2e-2, f"relative error {err:.3g}"
    assert all(math.isfinite(v) for v in metrics.as_dict().values())


def test_autocast_bf16_matches_fp32():
    layer = make_layer(dim=32, e=4, s=4, h=64)
    x = torch.randn(2, 16, 32)
    y32, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, _ = layer(x)
    err = (y16.float() - y32).norm() / y32.norm()
    assert err < 2e-2, f"relative error {err:.3g}"


def test_state_dict_round_trip():
    layer = make_layer(seed=1)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_layer(seed=2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(fresh(x)[0], layer(x)[0], atol=0, rtol=0)
    assert set(layer.state_dict()) == {"router.phi", "router.scale", "experts.w1", "experts.b1",
                                       "experts.w2", "experts.b2"}


def test_init_follows_the_paper():
    layer = SoftMoE(256, 8, 16, 64)
    std = layer.router.phi.std().item()
    assert abs(std - 1 / 16) < 0.005, std
    assert layer.router.scale.item() == 1.0
    assert layer.router.phi.shape == (256, 128)


def test_experts_are_one_batched_call():
    layer = make_layer(e=4, s=2)
    calls = []
    layer.experts.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    layer(torch.randn(3, 5, 8))
    assert calls == [torch.Size([4, 3 * 2, 8])]


def test_bad_inputs_name_the_problem():
    layer = make_layer()
    with pytest.raises(ValueError, match=r"\[b, n, 8\]"):
        layer(torch.randn(5, 8))
    with pytest.raises(ValueError, match="mask must be bool"):
        layer(torch.randn(2, 5, 8), torch.ones(2, 5))
    with pytest.raises(ValueError, match="unknown expert type 'relu'"):
        SoftMoE(8, 2, 2, 8, expert="relu")


def test_dense_mlp_has_the_same_call_signature():
    mlp = DenseMLP(8, 16)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    y, metrics = mlp(x, mask)
    assert y.shape == x.shape and metrics.as_dict() == {} and not metrics
    assert torch.all(y[1, 2:] == 0)
    torch.testing.assert_close(y[0], mlp(x[:1])[0][0])
    y_swiglu, _ = DenseMLP(8, 16, expert="swiglu")(x)
    assert y_swiglu.shape == x.shape


def test_flops_follow_slots_not_experts():
    few = SoftMoE(64, 2, 8, 128).flops(100)
    many = SoftMoE(64, 16, 1, 128).flops(100)
    assert few == many == {"router": 3 * 100 * 16 * 64, "experts": 16 * 2 * 64 * 128}


def test_expert_bank_shapes():
    bank = MLPExperts(3, 4, 5)
    assert bank(torch.randn(3, 7, 4)).shape == (3, 7, 4)
    assert bank.w1.shape == (3, 4, 5) and bank.w2.shape == (3, 5, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_router_logits_equal_normalised_tokens_times_normalised_slots(dtype):
    router = SoftRouter(8, 3, 2)
    with torch.no_grad():
        router.scale.fill_(2.5)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    x[1, 3] = 0                                          # an all-zero (padding) token
    phi = 2.5 * nn.functional.normalize(router.phi.double(), dim=0)
    expected = nn.functional.normalize(x, dim=-1) @ phi
    logits = router.to(dtype).logits(x.to(dtype))
    # at least float32 (the softmaxes need it), float64 kept
    assert logits.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    expected = expected.to(logits.dtype)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(logits, expected, atol=tol, rtol=tol)
    assert torch.all(logits[1, 3] == 0)


def test_all_padding_sequence_gets_exactly_zero_dispatch_and_slots():
    """Not just a zero output (the final mask hides a wrong dispatch): the router gives every
    token of an all-padding sequence, and every padded token elsewhere, weight exactly 0, so
    its slots are exactly 0."""
    layer = make_layer()
    x = torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    routing = layer.router(x, mask)
    assert torch.all(routing.dispatch[1] == 0)
    assert torch.all(routing.dispatch[0, 2:] == 0)
    torch.testing.assert_close(routing.dispatch[0].sum(0), torch.ones(8))
    seen = []
    layer.experts.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    y, _ = layer(x, mask)
    slots = seen[0].reshape(4, 2, 2, 8).transpose(0, 1)                 # [b, e, s, d]
    assert torch.all(slots[1] == 0) and torch.all(y[1] == 0)


def test_float64_stays_float64_and_passes_gradcheck():
    layer = make_layer(dim=6, e=2, s=2, h=5).double()
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    routing = layer.router(x, mask)
    assert routing.logits.dtype == routing.dispatch.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda t: layer(t, mask)[0], (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("sizes", [(0, 2, 2), (8, 0, 2), (8, 2, 0)])
def test_router_rejects_empty_sizes_naming_them(sizes):
    with pytest.raises(ValueError, match=r"dim, num_experts, slots_per_expert >= 1, got "
                                         + ", ".join(map(str, sizes))):
        SoftRouter(*sizes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unnormalised_router_is_the_raw_dot_product_in_at_least_float32(dtype):
    router = SoftRouter(8, 3, 2, normalize=False).to(dtype)
    x = torch.randn(2, 5, 8).to(dtype)
    logits = router.logits(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, (x @ router.phi).float())


def test_flops_count_the_experts_own_multiply_adds():
    # SwiGLU: gate, up and down projections = 3 d h multiply-adds per slot row
    assert SoftMoE(64, 4, 2, 128, expert="swiglu").flops(100) == {
        "router": 3 * 100 * 8 * 64, "experts": 8 * 3 * 64 * 128}
