"""`specaware audit CHECKPOINT`: a classifier from `specaware finetune` attacked with its own
training split as members and its test split as non-members."""
import argparse
import contextlib
import io
import json

import numpy as np
import pytest
import scipy.io

from specaware.cli import audit as audit_cli
from specaware.cli import finetune as finetune_cli
from specaware.export import CheckpointError
from tests.finetune.fixtures import mat_cli_args, mat_task


def _cli(module, argv) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main(parser.parse_args([str(a) for a in argv]))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """(best.safetensors of a 30-epoch pixel classifier, its gt .mat) on a 24 x 24 scene."""
    root = tmp_path_factory.mktemp("audit")
    export, image, gt = mat_task(root, h=24, w=24)
    code, _, _ = _cli(finetune_cli, mat_cli_args(root / "run", export, image, gt) + [
        "protocol.patch=8", "optim.epochs=30", "protocol.seeds=[0]", "model.init=pretrained"])
    assert code == 0
    return root / "run" / "pretrained" / "seed0" / "best.safetensors", gt


def test_members_are_the_runs_training_split(classifier, tmp_path):
    checkpoint, _ = classifier
    code, printed, _ = _cli(audit_cli, [checkpoint, "--shadows", "4", "--out", tmp_path])
    assert code == 0 and "lira AUC" in printed
    saved = json.loads((tmp_path / "audit.json").read_text())
    split = json.loads(checkpoint.with_suffix(".json").read_text())["data"]["split"]
    info = saved["info"]
    assert info["seed"] == 0 and info["shadows"] == 4
    assert info["members"] == info["non_members"] == min(split["train"], split["test"])
    # the classifier fits its own training pixels better than unseen ones: members are those
    assert info["member_accuracy"] >= info["non_member_accuracy"] + 0.1
    assert set(saved["attacks"]) == {"entropy", "modified_entropy", "lira"}
    assert all(np.isfinite(m["auc"]) for m in saved["attacks"].values())
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_changed_data_is_refused_rather_than_guessed(classifier, tmp_path):
    from specaware.audit.finetuned import audit_checkpoint
    checkpoint, gt = classifier
    original = gt.read_bytes()
    labels = scipy.io.loadmat(gt)
    key = next(k for k in labels if not k.startswith("__"))
    labels[key][:4] = 0  # fewer labelled pixels: a different split
    scipy.io.savemat(gt, {key: labels[key]})
    try:
        with pytest.raises(CheckpointError, match="no longer gives the split it trained on"):
            audit_checkpoint(checkpoint, tmp_path, shadows=2)
    finally:
        gt.write_bytes(original)


def test_only_classifiers_are_audited(classifier, tmp_path):
    checkpoint, _ = classifier
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    for name, change in (("seg", {"task": "segmentation"}), ("old", {"finetune_config": None})):
        fake = tmp_path / f"{name}.safetensors"
        fake.write_bytes(checkpoint.read_bytes())
        edited = {**meta, **change}
        if change.get("finetune_config", 1) is None:
            del edited["finetune_config"]
        fake.with_suffix(".json").write_text(json.dumps(edited))
        code, _, err = _cli(audit_cli, [fake])
        assert code == 2 and str(fake) in err
        assert ("classifiers (task=classification) only" if name == "seg"
                else "cannot be rebuilt") in err


def test_a_finetune_folder_points_at_its_classifiers(classifier, tmp_path):
    checkpoint, _ = classifier
    code, _, err = _cli(audit_cli, [checkpoint.parents[2]])       # the run's OUT folder
    assert code == 2 and "`specaware finetune` output folder" in err and str(checkpoint) in err
    code, printed, _ = _cli(audit_cli, [checkpoint.parent, "--shadows", "2", "--out", tmp_path])
    assert code == 0 and "lira AUC" in printed                     # OUT/<init>/seed<k>
    assert json.loads((tmp_path / "audit.json").read_text())["info"]["checkpoint"] == \
        str(checkpoint)
