"""Fine-tuning tracking on rank 0 with pretraining's `wandb.*` keys: per-epoch loss, learning
rate and validation metrics, confusion-matrix and prediction-map images; offline, no network."""
import json
import sys
from pathlib import Path

import pytest
from fixtures import write_export, write_segmentation_pair

from specaware.config import build
from specaware.finetune.config import FinetuneConfig
from specaware.finetune.runner import run

ROOT = Path(__file__).parents[2]
HEAD_LR, ENCODER_LR = 2e-3, 5e-4
sys.path.insert(0, str(ROOT / "tests" / "training"))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracked")
    image, mask = write_segmentation_pair(folder, h=48, w=48)
    export, _ = write_export(folder)
    out = folder / "run"
    cfg = build(FinetuneConfig, [ROOT / "configs" / "finetune" / "segmentation.yaml"],
                [f"data.images=[{image}]", f"data.masks=[{mask}]", f"model.checkpoint={export}",
                 f"out={out}", "wandb.mode=offline", "optim.epochs=2", "optim.batch_size=2",
                 "model.decoder_width=16", "protocol.seeds=[0]", "protocol.tile=16",
                 "protocol.val_fraction=0.25", "protocol.test_fraction=0.25", "progress=false",
                 f"optim.lr={HEAD_LR}", f"optim.encoder_lr={ENCODER_LR}"])
    run(cfg)
    return out / "pretrained" / "seed0"


def test_every_epoch_logs_loss_lr_and_validation_metrics(tracked):
    rows = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()]
    metrics = json.loads((tracked / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0]["step"] < rows[1]["step"]                     # optimizer steps, increasing
    assert rows[0]["lr"] > rows[1]["lr"]                         # cosine decay to 0 at the end
    for row, past in zip(rows, metrics["history"]):
        assert row["loss"] == pytest.approx(past["loss"])
        assert row["val/miou"] == pytest.approx(past["val_miou"])
        # lr at the epoch's end: head and encoder follow one schedule at their own peaks
        assert row["encoder_lr"] == pytest.approx(row["lr"] * ENCODER_LR / HEAD_LR)
        assert {"val/oa", "val/kappa", "perf/samples_per_s"} <= set(row)


def test_confusion_and_prediction_images_are_written_each_epoch(tracked):
    names = sorted(p.name for p in (tracked / "panels").glob("*.png"))
    assert names == ["confusion_epoch000.png", "confusion_epoch001.png",
                     "prediction_epoch000.png", "prediction_epoch001.png"]


def test_offline_wandb_run_holds_the_same_records(tracked):
    from wandb_records import find_offline_run, history
    rows = history(find_offline_run(tracked))
    scalars = [r for r in rows if "loss" in r]
    assert [r["epoch"] for r in scalars] == [0, 1]
    for row in scalars:                               # images share the epoch's step
        assert row["val/confusion/_type"] == row["val/prediction/_type"] == "image-file"
        assert row["val/confusion/caption"] == f"epoch {row['epoch']}"
    assert (tracked / "wandb_id.txt").is_file()                  # a resumed run continues it
