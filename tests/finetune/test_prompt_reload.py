"""Prompt-tuned checkpoints: saved without pickle, rebuilt by `load_finetuned` (and so by
`specaware predict`) with the same tokens, giving the same logits; the tokens' own lr."""
import torch
from fixtures import sample, write_export

from specaware.data.collate import collate
from specaware.finetune import api
from specaware.finetune.checkpoint import build_head, load_finetuned, model_meta, save_finetuned
from specaware.finetune.config import ModelConfig, OptimConfig
from specaware.finetune.train import _optimizer


def _prompted(tmp_path, prompts=3):
    export, _ = write_export(tmp_path)
    encoder = api.load_pretrained(export)
    m = ModelConfig(freeze="encoder", prompts=prompts, pool="center")
    return build_head("classification", encoder, 3, m), m, encoder


def test_prompt_tuned_checkpoint_reloads_with_identical_logits(tmp_path):
    model, m, encoder = _prompted(tmp_path)
    batch = collate([sample(c=12, h=16, w=16, seed=i, label=i % 3) for i in range(6)])
    start = model.prompt_tokens.groups["prompt"].detach().clone()
    frozen = {k: v.clone() for k, v in encoder.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model.train()(batch), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens = model.prompt_tokens.groups["prompt"]
    assert not torch.allclose(tokens, start)                      # the tokens trained
    assert all(torch.equal(v, frozen[k]) for k, v in encoder.state_dict().items())
    meta = model_meta("classification", 3, ["a", "b", "c"], m, encoder, {})
    path = save_finetuned(model, tmp_path / "best", meta)
    loaded, meta = load_finetuned(path)
    assert meta["model"]["prompts"] == 3
    torch.testing.assert_close(loaded.prompt_tokens.groups["prompt"], tokens.detach())
    with torch.no_grad():
        assert torch.equal(loaded(batch), model.eval()(batch))


def test_prompt_lr_puts_the_tokens_in_their_own_group(tmp_path):
    model, _, _ = _prompted(tmp_path, prompts=2)
    loader = [None] * 4
    optimizer, _, _ = _optimizer(model, loader, OptimConfig(lr=1e-3, prompt_lr=3e-2))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["prompt"]["names"] == ["prompt_tokens.groups.prompt"]
    assert groups["prompt"]["initial_lr"] == 3e-2
    head = [g for g in optimizer.param_groups if g["name"] != "prompt"]
    assert all("prompt_tokens.groups.prompt" not in g["names"] for g in head)
    assert {g["initial_lr"] for g in head} == {1e-3}
    default, _, _ = _optimizer(model, loader, OptimConfig(lr=1e-3))
    assert "prompt" not in {g["name"] for g in default.param_groups}


def _dense_batch(task: str) -> dict:
    """A segmentation batch, or a change pair {t1, t2, label}, with per-pixel labels."""
    labels = torch.arange(6 * 16 * 16).reshape(6, 16, 16) % 3
    dates = [collate([sample(c=12, h=16, w=16, seed=i + 10 * t) for i in range(6)])
             for t in (0, 1)]
    if task == "segmentation":
        return {**dates[0], "label": labels}
    return {"t1": dates[0], "t2": dates[1], "label": labels}


def test_dense_heads_tune_prompts_in_the_frozen_encoder_and_reload(tmp_path):
    """Segmentation and change detection: the tokens get gradients through the decoder's
    feature maps, the encoder stays as loaded, and a reload gives the same logits."""
    from specaware.finetune.train import logits_and_labels
    export, _ = write_export(tmp_path)
    for task in ("segmentation", "change"):
        encoder = api.load_pretrained(export)
        frozen = {k: v.clone() for k, v in encoder.state_dict().items()}
        m = ModelConfig(freeze="encoder", prompts=2)
        model = build_head(task, encoder, 3, m)
        batch = _dense_batch(task)
        tokens = model.prompt_tokens.groups["prompt"]
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for step in range(2):
            logits, labels = logits_and_labels(model.train(), batch, task)
            assert logits.shape == (6, 3, 16, 16)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits, labels).backward()
            assert tokens.grad is not None and tokens.grad.abs().sum() > 0, task
            opt.step()
        assert all(torch.equal(v, frozen[k]) for k, v in encoder.state_dict().items()), task
        before = tokens.detach().clone()
        with torch.no_grad():                       # the prompts change the dense output
            tokens.add_(torch.randn_like(tokens))
            moved, _ = logits_and_labels(model.eval(), batch, task)
            tokens.copy_(before)
            kept, _ = logits_and_labels(model, batch, task)
        assert not torch.allclose(moved, kept), task
        path = save_finetuned(model, tmp_path / f"best_{task}",
                              model_meta(task, 3, ["a", "b", "c"], m, encoder, {}))
        loaded, meta = load_finetuned(path)
        assert meta["model"]["prompts"] == 2
        with torch.no_grad():
            torch.testing.assert_close(logits_and_labels(loaded, batch, task)[0], kept,
                                       rtol=0, atol=0)
