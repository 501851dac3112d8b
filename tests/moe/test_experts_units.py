"""Expert banks and the dense MLP against hand-written references: the SwiGLU maths, the
multiply-add counts the FLOP tables rest on, and the expert split that expert parallelism uses
(checked here in one process; the gloo tests check the all-to-all around it)."""
import torch
import torch.nn.functional as F

from moe.dense import DenseMLP
from moe.experts import MLPExperts, SwiGLUExperts, shard_experts


def test_dense_swiglu_is_silu_gate_times_up():
    torch.manual_seed(0)
    mlp = DenseMLP(dim=6, hidden_dim=5, expert="swiglu")
    x = torch.randn(2, 3, 6)
    w_in, w_out = mlp.fc_in.weight, mlp.fc_out.weight          # [2h, d], [d, h]
    gate, up = x @ w_in[:5].T, x @ w_in[5:].T
    expected = (F.silu(gate) * up) @ w_out.T
    y, _ = mlp(x)
    torch.testing.assert_close(y, expected)


def test_multiply_add_counts_per_token():
    d, h, n = 6, 5, 7
    assert DenseMLP(d, h, "mlp").flops(n) == {"router": 0, "experts": n * 2 * d * h}
    assert DenseMLP(d, h, "swiglu").flops(n) == {"router": 0, "experts": n * 3 * d * h}
    assert MLPExperts(4, d, h).flops_per_row() == 2 * d * h
    assert SwiGLUExperts(4, d, h).flops_per_row() == 3 * d * h


def test_shard_holds_exactly_the_ranks_experts():
    torch.manual_seed(0)
    for bank in (MLPExperts(4, 6, 5), SwiGLUExperts(4, 6, 5)):
        for rank in (0, 1):
            shard = shard_experts(bank, rank, world_size=2)
            assert type(shard) is type(bank)
            assert (shard.num_experts, shard.dim, shard.hidden_dim) == (2, 6, 5)
            for name, param in bank.named_parameters():
                torch.testing.assert_close(shard.get_parameter(name),
                                           param[2 * rank:2 * rank + 2], rtol=0, atol=0)
            x = torch.randn(2, 3, 6)                       # [e_local, s, d]
            every = bank(torch.cat([x, x]))                # each of the 4 experts on x
            torch.testing.assert_close(shard(x), every[2 * rank:2 * rank + 2])


def test_dense_swiglu_has_no_biases_so_it_matches_one_expert_in_size():
    d, h = 6, 5
    dense = sum(p.numel() for p in DenseMLP(d, h, "swiglu").parameters())
    expert = sum(p.numel() for p in SwiGLUExperts(1, d, h).parameters())
    assert dense == expert == 3 * d * h
    assert sum(p.numel() for p in DenseMLP(d, h, "mlp").parameters()) == 2 * d * h + h + d
