"""load_pretrained: exported weights come back exactly; mismatches fail listing the keys."""
import json
from pathlib import Path

import pytest
import torch
from fixtures import sample, write_export
from safetensors.torch import load_file, save_file

from specaware.finetune import api
from specaware.finetune.api import CheckpointError, load_pretrained
from specaware.training.pickle_guard import UnsafePickleError, check_file
from specaware.data.collate import collate


def _batch():
    return collate([sample(seed=1), sample(c=6, seed=2)])


def test_round_trip_gives_identical_features(tmp_path):
    path, model = write_export(tmp_path)
    encoder = load_pretrained(path)
    model.eval(), encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(_batch()),
                           model.encoder.forward_features(_batch()))
    assert encoder.specaware_source["step"] == 7
    assert encoder.specaware_source["model_config"] is not None


def test_json_path_and_variant_override_load_the_same_weights(tmp_path):
    path, model = write_export(tmp_path)
    a = load_pretrained(path.with_suffix(".json"))
    b = load_pretrained(path, variant="specaware_debug")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


def test_missing_encoder_key_fails_listing_it(tmp_path):
    path, _ = write_export(tmp_path)
    state = load_file(str(path))
    dropped = sorted(k for k in state if k.startswith("encoder."))[0]
    del state[dropped]
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path)
    assert dropped in str(err.value) and "missing (1)" in str(err.value)
    assert "allow_missing" in str(err.value)


def test_allow_list_admits_exactly_the_named_missing_keys(tmp_path):
    path, model = write_export(tmp_path)
    state = load_file(str(path))
    dropped = sorted(k for k in state if k.startswith("encoder."))[0]
    del state[dropped]
    save_file(state, str(path))
    encoder = load_pretrained(path, allow_missing=(dropped,))
    kept = sorted(k for k in state if k.startswith("encoder."))[0]
    assert torch.equal(encoder.state_dict()[kept[len("encoder."):]], state[kept])


def test_unexpected_and_misshapen_keys_are_listed(tmp_path):
    path, _ = write_export(tmp_path)
    state = load_file(str(path))
    name = next(k for k in state if k.startswith("encoder.") and state[k].ndim == 2)
    state[name] = torch.zeros(3, 3)
    state["encoder.not_a_weight"] = torch.zeros(1)
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path)
    msg = str(err.value)
    assert "encoder.not_a_weight" in msg and name in msg and "shape mismatch" in msg


def test_pickle_checkpoints_are_refused_without_being_opened(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not even read")
    with pytest.raises(CheckpointError, match="pickle"):
        load_pretrained(bad)


def test_missing_json_names_the_fix(tmp_path):
    path, _ = write_export(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="specaware export"):
        load_pretrained(path)


def write_checkpoint_folder(run: Path, model, meta: dict, step: int) -> None:
    """A complete stage-0 checkpoint as `specaware pretrain` lays it out (run/checkpoints/step_*)."""
    folder = run / "checkpoints" / f"step_{step:08d}"
    (folder / "ds").mkdir(parents=True)
    torch.save({"module": model.state_dict()}, folder / "ds" / "mp_rank_00_model_states.pt")
    (folder / "trainer_state.json").write_text(json.dumps(
        {"step": step, "model": "specaware_debug", "model_config": meta["model_config"]}))
    (folder / "complete").write_text("{}")

class _Payload:
    """Unpickling this object runs `Path(target).write_text("ran")`: a crafted checkpoint."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "ran"))


def write_crafted_folder(run: Path, model, meta: dict, marker: Path) -> Path:
    """A complete-looking checkpoint folder whose model states carry a code payload."""
    write_checkpoint_folder(run, model, meta, step=5)
    states = run / "checkpoints" / "step_00000005" / "ds" / "mp_rank_00_model_states.pt"
    torch.save({"module": model.state_dict(), "extra": _Payload(marker)}, states)
    return states


def test_deepspeed_folder_is_refused_and_its_payload_never_runs(tmp_path):
    path, model = write_export(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    marker = tmp_path / "payload_ran"
    write_crafted_folder(tmp_path / "run", model, meta, marker)
    for target in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "step_00000005"):
        with pytest.raises(CheckpointError, match="specaware export") as err:
            load_pretrained(target)
        assert "\n" not in str(err.value) and str(target) in str(err.value)
    assert not marker.exists(), "loading a checkpoint folder ran pickled code"


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "renamed_pickle",
                                    "crafted_header", "empty"])
def test_damaged_safetensors_is_one_checkpoint_error_line(tmp_path, damage):
    path, model = write_export(tmp_path)
    data = path.read_bytes()
    marker = tmp_path / "payload_ran"
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif damage == "renamed_pickle":
        torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, path)
    elif damage == "crafted_header":  # a header pointing far past the end of the file
        header = json.dumps({"encoder.w": {"dtype": "F32", "shape": [1 << 20],
                                           "data_offsets": [0, 4 << 20]}}).encode()
        path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "safetensors" in msg
    assert not marker.exists()


def test_random_encoder_has_the_same_keys_but_different_weights(tmp_path):
    path, model = write_export(tmp_path)
    torch.manual_seed(123)
    fresh = api.build_encoder(json.loads(path.with_suffix(".json").read_text())["model_config"])
    assert fresh.state_dict().keys() == model.encoder.state_dict().keys()
    assert any(not torch.equal(v, model.encoder.state_dict()[k])
               for k, v in fresh.state_dict().items() if v.is_floating_point())


def test_trained_model_exported_by_specaware_export_comes_back_identical(tmp_path):
    """A few optimiser steps on the MAE loss, a checkpoint folder, `specaware export`, then
    load_pretrained: features and intermediate maps equal the trained model's, bit for bit."""
    export = pytest.importorskip("specaware.export")
    path, model = write_export(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if not hasattr(model, "encoder") or type(model).__name__ == "StandInMAE":
        pytest.skip("needs the real MaskedAutoencoder")
    fresh = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    batch = collate([sample(h=16, w=16, seed=1), sample(c=6, h=16, w=16, seed=2)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
    assert any(not torch.equal(v, fresh[k]) for k, v in model.encoder.state_dict().items())
    write_checkpoint_folder(tmp_path / "run", model, meta, step=3)
    out, _ = export.export(tmp_path / "run", tmp_path / "trained.safetensors")
    encoder = load_pretrained(out).eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(batch), model.encoder.forward_features(batch))
        for a, b in zip(encoder.forward_intermediates(batch),
                        model.encoder.forward_intermediates(batch)):
            assert torch.equal(a, b)
    assert encoder.specaware_source["step"] == 3


def test_export_refuses_a_crafted_pickle_naming_the_type(tmp_path, capsys):
    """`specaware export` reads DeepSpeed's files with the restricted unpickler first: a file
    naming a type outside the allow-list is one error line, and its payload never runs."""
    export = pytest.importorskip("specaware.export")
    from specaware.cli import main
    path, model = write_export(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    marker = tmp_path / "payload_ran"
    states = write_crafted_folder(tmp_path / "run", model, meta, marker)
    with pytest.raises(UnsafePickleError, match="--trust-pickle") as err:
        export.export(tmp_path / "run", tmp_path / "out.safetensors")
    assert str(states) in str(err.value) and "builtins.getattr" in str(err.value)
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "out.safetensors")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pathlib.PosixPath" in lines[0]
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    # the explicit opt-out unpickles without the check (and so runs the payload)
    export.export(tmp_path / "run", tmp_path / "out.safetensors", trust_pickle=True)
    assert marker.read_text() == "ran" and (tmp_path / "out.safetensors").is_file()


def test_export_refuses_a_checkpoint_file_that_is_no_torch_archive(tmp_path):
    export = pytest.importorskip("specaware.export")
    path, model = write_export(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    write_checkpoint_folder(tmp_path / "run", model, meta, step=5)
    states = (tmp_path / "run" / "checkpoints" / "step_00000005" / "ds"
              / "mp_rank_00_model_states.pt")
    states.write_bytes(states.read_bytes()[:1000])
    from specaware.training.checkpoint import CheckpointReadError
    with pytest.raises(CheckpointReadError, match="not a complete torch archive") as err:
        export.export(tmp_path / "run", tmp_path / "out.safetensors")
    assert states.name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UnsafePickleError, match="damaged") as err:
        check_file(states)
    assert str(states) in str(err.value) and "\n" not in str(err.value)


def test_finetune_refuses_a_checkpoint_folder_before_building_anything(tmp_path, capsys):
    """`specaware finetune --checkpoint DIR`: the folder is refused up front with the export
    command, and the crafted pickle inside it never runs."""
    from specaware import cli
    path, model = write_export(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    marker = tmp_path / "payload_ran"
    write_crafted_folder(tmp_path / "run", model, meta, marker)
    (tmp_path / "tiles").mkdir()
    config = Path(__file__).parents[2] / "configs" / "finetune" / "classification.yaml"
    rc = cli.main(["finetune", str(config), "--checkpoint", str(tmp_path / "run"),
                   f"data.root={tmp_path / 'tiles'}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and not marker.exists()
    assert "'model.checkpoint'" in err and f"specaware export {tmp_path / 'run'}" in err
