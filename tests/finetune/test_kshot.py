"""k-shot protocol: exact k per class, disjoint from test, and the one-command grid with prompt
tuning (tokens train, encoder frozen) on a generated Indian Pines."""
import json

import numpy as np
import pytest
import torch
from fixtures import mat_cli_args, mat_task
from test_runner import _run

from specaware.cli import finetune as cli
from specaware.config import ConfigError
from specaware.finetune.kshot import kshot_indices, kshot_pixels



@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_kshot_split_has_exactly_k_per_class_and_never_overlaps_test(k):
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, size=(20, 20))
    split = kshot_pixels(labels, seed=3, k=k)
    train = labels[split.train[:, 0], split.train[:, 1]]
    assert np.bincount(train, minlength=4).tolist() == [k] * 4
    as_set = lambda c: {tuple(x) for x in c.tolist()}  # noqa: E731
    assert not as_set(split.train) & as_set(split.test)
    assert not as_set(split.val) & as_set(split.test)
    assert (labels[split.test[:, 0], split.test[:, 1]] >= 0).all()
    again = kshot_pixels(labels, seed=3, k=k)
    assert np.array_equal(again.train, split.train)


def test_kshot_tiles_exact_and_too_small_class_is_named():
    labels = np.repeat(np.arange(3), 6)
    train, val, test = kshot_indices(labels, seed=0, k=2)
    assert np.bincount(labels[train]).tolist() == [2, 2, 2]
    assert not set(train) & set(test) and not set(val) & set(test)
    from specaware.config import build
    from specaware.finetune.config import FinetuneConfig
    from specaware.finetune.runner import check_split
    with pytest.raises(ConfigError, match="not read by protocol.split=kshot"):
        check_split(build(FinetuneConfig, [], ["protocol.split=kshot", "data.test_gt=TS.mat"]))
    with pytest.raises(ConfigError, match="class 1 has only 2"):
        kshot_indices(np.array([0, 0, 0, 0, 1, 1]), seed=0, k=2)


def test_shots_grid_runs_three_methods_and_prompts_train_only_tokens(tmp_path):
    out = tmp_path / "shots"
    printed = _run(cli, mat_cli_args(out, *mat_task(tmp_path, h=16, w=16)) + [
        "optim.epochs=1", "optim.batch_size=8", "protocol.seeds=[0]", "protocol.shots=[1,2]",
        "protocol.methods=[linear,prompt,full]", "model.prompts=2"])
    assert "| shots | linear | prompt | full |" in printed
    result = json.loads((out / "kshot.json").read_text())
    assert sorted(result["rows"]) == ["1", "2"] and result["seeds"] == [0]
    meta = json.loads((out / "shot2" / "prompt" / "pretrained" / "seed0" / "best.json").read_text())
    assert meta["data"]["split"]["train"] == 2 * 3
    from safetensors.torch import load_file
    state = load_file(out / "shot2" / "prompt" / "pretrained" / "seed0" / "best.safetensors")
    assert state["prompt_tokens.groups.prompt"].shape[0] == 2
    frozen = load_file(out / "shot2" / "linear" / "pretrained" / "seed0" / "best.safetensors")
    name = next(k for k in frozen if k.startswith("encoder."))
    assert torch.equal(frozen[name], state[name.replace("encoder.", "encoder.encoder.", 1)])
