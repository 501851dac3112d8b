"""`--resume auto`: a fine-tuning run killed after an epoch checkpoint continues to exactly the
result of a run that was never interrupted (model, optimizer, schedule, early stopping, RNG)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import write_export, write_segmentation_pair
from safetensors.torch import load_file

from specaware.config import build
from specaware.finetune.config import FinetuneConfig
from specaware.finetune.runner import run
from specaware.faults import EXIT_CODE

ROOT = Path(__file__).parents[2]
# dropout-free model, but a shuffled sampler and a warmup + cosine schedule: a resume that
# restored the wrong epoch, step count or data order would not reproduce the weights
ITEMS = ["optim.epochs=4", "optim.batch_size=2", "model.decoder_width=16", "protocol.seeds=[0]",
         "protocol.tile=16", "protocol.val_fraction=0.25", "protocol.test_fraction=0.25",
         "optim.patience=10", "model.freeze=partial", "progress=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    image, mask = write_segmentation_pair(folder, h=48, w=48)
    export, _ = write_export(folder)
    return [f"data.images=[{image}]", f"data.masks=[{mask}]", f"model.checkpoint={export}",
            "task=segmentation"]


def _cfg(data, out, *extra) -> FinetuneConfig:
    return build(FinetuneConfig, [ROOT / "configs" / "finetune" / "segmentation.yaml"],
                 [*data, *ITEMS, f"out={out}", *extra])


def test_killed_run_resumes_to_the_uninterrupted_result(data, tmp_path):
    run(_cfg(data, tmp_path / "straight"))
    out = tmp_path / "killed"
    env = {**os.environ, "SPECAWARE_FAULT": "epoch:1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    argv = [sys.executable, "-m", "specaware.finetune",
            str(ROOT / "configs" / "finetune" / "segmentation.yaml"), *data, *ITEMS, f"out={out}"]
    died = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert died.returncode == EXIT_CODE, died.stderr[-2000:]
    seed_dir = out / "pretrained" / "seed0"
    assert not (seed_dir / "metrics.json").exists()
    assert sorted(p.name for p in (seed_dir / "last").glob("epoch_*")) == [
        "epoch_0001.json", "epoch_0001.safetensors"]         # older epochs pruned

    run(_cfg(data, out, "resume=auto"))
    a = json.loads((tmp_path / "straight/pretrained/seed0/metrics.json").read_text())
    b = json.loads((seed_dir / "metrics.json").read_text())
    assert b["history"] == a["history"]                      # epochs 0-1 restored, 2-3 re-run
    assert (b["miou"], b["best_epoch"]) == (a["miou"], a["best_epoch"])
    wa = load_file(str(tmp_path / "straight/pretrained/seed0/best.safetensors"))
    wb = load_file(str(seed_dir / "best.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (seed_dir / "last").exists()                  # finished: resume state removed
    logged = [json.loads(line)["epoch"] for line in
              (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2, 3]          # the resumed process trained epochs 2 and 3 only


def test_resume_skips_finished_runs_and_starts_fresh_without_state(data, tmp_path):
    out = tmp_path / "run"
    first = run(_cfg(data, out, "optim.epochs=1"))
    stamp = (out / "pretrained/seed0/metrics.json").stat().st_mtime_ns
    again = run(_cfg(data, out, "optim.epochs=1", "resume=auto"))
    assert again == first
    assert (out / "pretrained/seed0/metrics.json").stat().st_mtime_ns == stamp


def test_resume_state_of_another_freeze_mode_is_refused(data, tmp_path):
    from specaware.finetune import runner
    from specaware.finetune.checkpoint import build_head
    from specaware.finetune.resume import EarlyStop, save_epoch
    out = tmp_path / "run"
    cfg = _cfg(data, out, "model.freeze=encoder")
    encoder = runner.make_encoder(cfg, "pretrained")
    model = build_head("segmentation", encoder, 3, cfg.model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_epoch(out / "pretrained/seed0/last", 0, model, opt, sched, EarlyStop(next_epoch=1),
               [({"torch": torch.get_rng_state()}, {"numpy": None, "python": None})])
    with pytest.raises(ValueError, match="different model or freeze mode"):
        run(_cfg(data, out, "model.freeze=none", "resume=auto"))


def test_unknown_resume_value_is_a_config_error(data, tmp_path):
    from specaware.config import ConfigError
    with pytest.raises(ConfigError, match="'resume'"):
        run(_cfg(data, tmp_path, "resume=last"))
