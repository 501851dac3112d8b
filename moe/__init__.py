"""Soft mixture of experts (Puigcerver et al., ICLR 2024) with a dense and a top-k reference.

Stands on its own: imports torch and einops only (torch.distributed only in `moe.parallel`).

    from moe import SoftMoE, DenseMLP, TopKMoE, RoutingMetrics
    layer = SoftMoE(dim, num_experts, slots_per_expert, hidden_dim, expert="mlp")
    y, metrics = layer(x, mask=None)     # x [b, n, d]; mask bool [b, n], True = real token
    metrics.as_dict()                    # detached floats for logging

Expert parallelism (not imported here, so `import moe` never touches torch.distributed):
    from moe.parallel import ExpertParallelSoftMoE, expert_parallelize, expert_parameters
    layer = ExpertParallelSoftMoE.from_soft_moe(SoftMoE(...), group)   # e/w experts per rank
    expert_parallelize(model, group)     # every SoftMoE of a model, in place
"""
from .dense import DenseMLP
from .experts import EXPERTS, MLPExperts, SwiGLUExperts, make_experts
from .metrics import RoutingMetrics
from .router import Routing, SoftRouter
from .soft_moe import SoftMoE
from .topk import TopKMoE

__all__ = ["SoftMoE", "DenseMLP", "TopKMoE", "RoutingMetrics", "SoftRouter", "Routing",
           "MLPExperts", "SwiGLUExperts", "EXPERTS", "make_experts"]

