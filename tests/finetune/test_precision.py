"""precision=bf16: autocast of the forward pass only; weights, optimizer state, loss and
metrics stay fp32 (finetune/precision.py)."""
import pytest
import torch
from fixtures import sample

from specaware.finetune import api
from specaware.data.collate import collate
from specaware.finetune.heads import SceneClassifier
from specaware.finetune.precision import autocast
from specaware.finetune.train import evaluate, fit, global_mean_loss
from specaware.finetune.config import OptimConfig

CPU = torch.device("cpu")


def _model():
    torch.manual_seed(0)
    return SceneClassifier(api.build_encoder(None, "specaware_debug"), 3, freeze="none")


def _batches(n=3):
    return [{**collate([sample(seed=4 * i + j, h=16, w=16) for j in range(4)]),
             "label": torch.tensor([0, 1, 2, 1])} for i in range(n)]


def test_bf16_runs_the_forward_in_bfloat16_and_fp32_does_not():
    model, batch = _model(), _batches(1)[0]
    with autocast("bf16", CPU):
        assert model(batch).dtype == torch.bfloat16
    with autocast("fp32", CPU):
        assert model(batch).dtype == torch.float32


def test_loss_is_fp32_cross_entropy_of_the_bf16_logits():
    logits = torch.randn(4, 3).to(torch.bfloat16)
    labels = torch.tensor([0, 2, -1, 1])
    loss, value, count = global_mean_loss(logits, labels, None, None)
    assert loss.dtype == torch.float32 and count == 3
    expected = torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=-1)
    assert value == pytest.approx(float(expected), rel=1e-6)


def test_bf16_fit_keeps_weights_and_optimizer_state_fp32():
    model = _model()
    cfg = OptimConfig(epochs=1, batch_size=4, patience=5)
    from specaware.finetune.train import FitOptions
    fit(model, _batches(), _batches(1), "classification", 3, cfg, CPU, progress=False,
        options=FitOptions(precision="bf16"))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_metrics_count_every_sample_like_fp32():
    model = _model()
    cm16, _ = evaluate(model, _batches(), "classification", 3, CPU, precision="bf16")
    cm32, _ = evaluate(model, _batches(), "classification", 3, CPU, precision="fp32")
    assert cm16.dtype == cm32.dtype and cm16.sum() == cm32.sum() == 12
    assert (cm16.sum(1) == cm32.sum(1)).all()           # same references, whatever is predicted


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16'"):
        autocast("fp16", CPU)
