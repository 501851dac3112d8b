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
