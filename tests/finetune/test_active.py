"""Active learning (finetune/active.py): a round queries exactly B new pool pixels, never a
labelled or test one; pseudo-labels never count as queried; the command writes JSON + PNG."""
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import mat_cli_args, mat_task
from test_runner import _run

from specaware.cli import finetune as cli
from specaware.finetune.active import active_round, run_loop, start_pool
from specaware.finetune.config import ActiveConfig

CONFIGS = Path(__file__).parents[2] / "configs" / "finetune"


def _blobs(n=240, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    feats = rng.normal(0, 1.0, (n, 6)) + 2.0 * np.eye(k, 6)[labels]
    return feats, labels


def test_active_round_queries_exactly_budget_new_pool_pixels_and_no_pseudo_labels():
    feats, labels = _blobs()
    test = np.arange(0, 240, 5)
    cfg = ActiveConfig(rounds=1, budget=7, initial_per_class=2, pseudo_threshold=0.5, epochs=30)
    for strategy in ("active", "random"):
        state = start_pool(labels, test, 2, seed=0)
        assert len(state.labelled) == 6 and not set(state.labelled) & set(test)
        nxt, acc = active_round(feats, labels, state, cfg, 3, 0, strategy)
        new = set(nxt.labelled) - set(state.labelled)
        assert len(new) == 7 == len(nxt.queried)
        assert not new & set(test) and new <= set(state.pool)
        assert len(nxt.labelled) == 6 + 7          # pseudo-labels (threshold 0.5) not counted
        assert not set(nxt.pool) & set(nxt.labelled) and 0.0 <= acc <= 1.0


def test_loop_counts_labelled_pixels_per_round_for_both_strategies():
    feats, labels = _blobs()
    cfg = ActiveConfig(rounds=3, budget=5, initial_per_class=1, epochs=30)
    for strategy in ("active", "random"):
        curve = run_loop(feats, labels, np.arange(0, 240, 4), cfg, 1, strategy)
        assert [p["labelled"] for p in curve] == [3, 8, 13, 18]
        assert [p["queried"] for p in curve] == [0, 5, 10, 15]


def test_finetune_active_command_writes_json_and_png(tmp_path):
    out = tmp_path / "al"
    printed = _run(cli, mat_cli_args(out, *mat_task(tmp_path, h=12, w=12)) + [
        "protocol.seeds=[0,1]", "protocol.active.rounds=2", "protocol.active.budget=4",
        "protocol.active.epochs=20"])
    assert "| labelled | active OA | random OA |" in printed
    result = json.loads((out / "active.json").read_text())
    assert [p["labelled"] for p in result["summary"]["random"]] == [6, 10, 14]
    assert len(result["runs"]["active"]) == 2
    assert (out / "active.png").read_bytes()[:4] == b"\x89PNG"


def test_active_learning_on_a_tile_folder_counts_tiles(tmp_path):
    """Scene classification: the pool is the tiles; labelled counts grow by the budget."""
    from fixtures import write_geotiff

    from specaware.config import build
    from specaware.finetune.active import run_active
    from specaware.finetune.config import FinetuneConfig
    rng = np.random.default_rng(0)
    for k, name in enumerate(["forest", "soil", "water"]):
        (tmp_path / "tiles" / name).mkdir(parents=True)
        for i in range(8):
            write_geotiff(tmp_path / "tiles" / name / f"t{i}.tif",
                          (0.1 + 0.2 * k + 0.02 * rng.normal(size=(4, 8, 8))).astype(np.float32),
                          [450, 650, 850, 1600])
    cfg = build(FinetuneConfig, [], [
        "task=classification", "model.init=random", "data.kind=tiles",
        f"data.root={tmp_path / 'tiles'}", "protocol.test_fraction=0.25", "protocol.seeds=[0]",
        f"out={tmp_path / 'al'}", "protocol.active.rounds=2", "protocol.active.budget=3",
        "protocol.active.initial_per_class=1", "protocol.active.epochs=20"])
    out = run_active(cfg)
    assert [p["labelled"] for p in out["summary"]["active"]] == [3, 6, 9]
    assert (tmp_path / "al" / "active.png").is_file()


def _closed_loop_cfg(tmp_path, train="prompt"):
    from specaware.config import build
    from specaware.finetune.config import FinetuneConfig
    export, image, gt = mat_task(tmp_path, h=12, w=12)
    return build(FinetuneConfig, [CONFIGS / "indian_pines.yaml"], [
        f"data.image={image}", f"data.gt={gt}", f"model.checkpoint={export}", "device=cpu",
        "protocol.patch=16", "optim.batch_size=16", "model.prompts=2",
        f"protocol.active.train={train}", "protocol.active.train_epochs=1",
        "protocol.active.rounds=2", "protocol.active.budget=4",
        "protocol.active.pseudo_threshold=0.0", "protocol.active.pseudo_max=6",
        "protocol.active.epochs=20", "protocol.active.max_pixels=60"])


def test_closed_loop_tunes_features_between_rounds_and_counts_only_queries(tmp_path):
    """train=prompt: features change from round to round (the encoder's prompts train on
    labelled + pseudo-labelled pixels); still exactly B queried per round, pseudo-labels drawn
    from the pool only and never counted, the frozen encoder weights untouched."""
    import torch

    from specaware.finetune.active import _samples
    from specaware.finetune.active_train import RoundTrainer
    cfg = _closed_loop_cfg(tmp_path)
    samples = _samples(cfg, 0)
    labels = samples[1]
    test = np.arange(0, len(labels), 5)
    trainer = RoundTrainer(cfg, *samples, seed=0)
    encoder = {k: v.clone() for k, v in trainer.model.encoder.encoder.state_dict().items()}
    tokens = trainer.model.prompt_tokens.groups["prompt"].detach().clone()
    seen, fit_round = [], trainer.fit_round

    def spy(labelled, pseudo, pseudo_labels):
        assert not set(pseudo) & (set(labelled) | set(test)) and len(pseudo) == len(pseudo_labels)
        seen.append((len(labelled), len(pseudo), fit_round(labelled, pseudo, pseudo_labels)))
        return seen[-1][2]
    trainer.fit_round = spy
    curve = run_loop(None, labels, test, cfg.protocol.active, 0, "active", trainer)
    assert [p["labelled"] for p in curve] == [6, 10, 14]
    assert [p["queried"] for p in curve] == [0, 4, 8]
    assert [n for n, _, _ in seen] == [6, 10, 14] and seen[1][1] > 0   # pseudo-labels trained
    assert not np.allclose(seen[0][2], seen[1][2], atol=1e-4)
    assert not np.allclose(seen[1][2], seen[2][2], atol=1e-4)
    assert not torch.allclose(trainer.model.prompt_tokens.groups["prompt"], tokens)
    now = trainer.model.encoder.encoder.state_dict()
    assert all(torch.equal(now[k], v) for k, v in encoder.items())


def test_closed_loop_command_writes_the_mode_and_rejects_an_unknown_one(tmp_path):
    from specaware.config import ConfigError
    from specaware.finetune.active import run_active
    cfg = _closed_loop_cfg(tmp_path, train="full")
    cfg.out, cfg.protocol.seeds, cfg.protocol.active.rounds = str(tmp_path / "al"), [0], 1
    out = run_active(cfg)
    assert out["train"] == "full"
    assert [p["labelled"] for p in out["summary"]["random"]] == [6, 10]
    cfg.protocol.active.train = "lora"
    with pytest.raises(ConfigError, match="protocol.active.train"):
        run_active(cfg)


def test_frozen_features_are_computed_on_the_configured_device(tmp_path, monkeypatch):
    """The linear mode's encoder pass runs where `device` says, like the closed loop's (the meta
    device stands in for a GPU: the spy sees where the model was moved)."""
    import torch

    from specaware.finetune import active, active_train, distributed
    cfg = _closed_loop_cfg(tmp_path, "linear")
    seen = {}

    def spy(model, dataset, batch_size):
        seen["device"] = next(model.parameters()).device
        return np.zeros((len(dataset), 2), np.float32)
    monkeypatch.setattr(active_train, "pooled_features", spy)
    monkeypatch.setattr(distributed, "resolve_device",
                        lambda device: torch.device("meta" if device == "gpu-stand-in" else device))
    cfg.device = "gpu-stand-in"
    active.pixel_features(cfg, 0)
    assert seen["device"] == torch.device("meta")
