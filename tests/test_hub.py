"""Hub-style folders (config.json + model.safetensors + README.md) round-trip identical weights,
offline, through the mixin, load_pretrained and `specaware export --format hub`."""
import json

import pytest
import torch

import specaware
from specaware import hub
from specaware.backbone import SpecAwareBackbone
from specaware.finetune.api import CheckpointError
from tests.finetune.fixtures import write_export
from tests.model.batches import pad_batch, sample


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network, and an empty hub cache of the test's own (huggingface_hub reads both
    variables once, at import, so its constants are set too)."""
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_save_pretrained_round_trips_identical_weights(tmp_path):
    torch.manual_seed(3)
    bb = specaware.create_model("specaware_debug", features_only=True, sensor="sentinel-2a",
                                out_indices=[1])
    bb.save_pretrained(tmp_path / "hub")
    assert {p.name for p in (tmp_path / "hub").iterdir()} >= {"config.json", "model.safetensors",
                                                             "README.md"}
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["variant"] == "specaware_debug" and config["sensor"] == "sentinel-2a"
    back = SpecAwareBackbone.from_pretrained(tmp_path / "hub")
    _same_weights(bb, back)
    assert back.out_indices == [1] and back.bands.sensor == "sentinel-2a"
    x = torch.rand(1, bb.bands.wavelength.shape[0], 16, 16)
    with torch.no_grad():
        assert torch.equal(bb.eval()(x)[0], back.eval()(x)[0])
    encoder = specaware.load_pretrained(tmp_path / "hub")          # the encoder alone
    _same_weights(bb.encoder, encoder)


def test_export_to_hub_writes_a_card_and_loads_everywhere(tmp_path):
    path, model = write_export(tmp_path)
    folder = hub.export_hub(path, tmp_path / "hub")
    card = (folder / "README.md").read_text()
    assert "specaware_debug" in card and "library_name: specaware" in card
    encoder = specaware.load_pretrained(folder)
    _same_weights(model.encoder, encoder)
    assert encoder.specaware_source["step"] == 7
    bb = specaware.create_model("specaware_debug", features_only=True, pretrained=folder,
                                sensor="enmap")
    _same_weights(model.encoder, bb.encoder)
    via_mixin = SpecAwareBackbone.from_pretrained(folder)        # whole-MAE file, encoder part
    _same_weights(model.encoder, via_mixin.encoder)


def test_card_lists_sensors_and_band_ranges_of_the_pretraining_data(tmp_path):
    from specaware.testing import write_tiny_shards
    shards = tmp_path / "shards"
    write_tiny_shards(shards)
    summary = hub.pretraining_summary({"data": {"shards": str(shards)}}, step=9)
    assert summary["sensors"] and summary["step"] == 9
    card = hub.model_card({"variant": "specaware_debug", "model_config": {},
                           "pretraining": summary}).content
    for name, entry in summary["sensors"].items():
        assert name in card
        lo, hi = entry["range_nm"]
        assert f"{lo:g}-{hi:g}" in card


def test_tampered_hub_weights_fail_listing_the_keys(tmp_path):
    from safetensors.torch import load_file, save_file
    bb = specaware.create_model("specaware_debug", features_only=True)
    bb.save_pretrained(tmp_path / "hub")
    weights = tmp_path / "hub" / "model.safetensors"
    state = load_file(str(weights))
    state.pop("encoder.norm.weight")
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="encoder.norm.weight"):
        SpecAwareBackbone.from_pretrained(tmp_path / "hub")
    with pytest.raises(CheckpointError, match="encoder.norm.weight"):
        specaware.load_pretrained(tmp_path / "hub")


def test_unknown_repo_id_offline_names_the_fix():
    with pytest.raises(CheckpointError, match="local folder"):
        specaware.load_pretrained("nobody/specaware-missing")
    with pytest.raises(CheckpointError, match="not found"):       # a file path stays a path
        specaware.load_pretrained("nothere/export.safetensors")


def test_hub_batch_features_match_the_saved_model(tmp_path):
    bb = specaware.create_model("specaware_debug", features_only=True, out_indices=[0, 1])
    bb.save_pretrained(tmp_path / "hub")
    back = SpecAwareBackbone.from_pretrained(tmp_path / "hub").eval()
    batch = pad_batch([sample(9, 16, seed=1)])
    with torch.no_grad():
        for a, b in zip(bb.eval()(batch), back(batch)):
            assert torch.equal(a, b)


def test_checkpoint_folder_exports_to_a_hub_folder(tmp_path):
    """A stage-0 pretraining checkpoint goes through `specaware export` (pickle allow-list,
    strict verification) into a hub folder holding the same weights."""
    path, model = write_export(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    step = tmp_path / "run" / "checkpoints" / "step_00000005"     # as `specaware pretrain` writes
    (step / "ds").mkdir(parents=True)
    torch.save({"module": model.state_dict()}, step / "ds" / "mp_rank_00_model_states.pt")
    (step / "trainer_state.json").write_text(json.dumps(
        {"step": 5, "model": "specaware_debug", "model_config": meta["model_config"]}))
    (step / "complete").write_text("{}")
    folder = hub.export_hub(tmp_path / "run", tmp_path / "out" / "hub")
    encoder = specaware.load_pretrained(folder)
    _same_weights(model.encoder, encoder)
    assert json.loads((folder / "config.json").read_text())["pretraining"]["step"] == 5
    assert not list((tmp_path / "out").glob("tmp*"))              # no temporary export left


def test_repo_id_loads_offline_from_the_hub_cache(tmp_path):
    """A repo id resolves through huggingface_hub's cache (HF_HUB_OFFLINE=1): the layout
    hf_hub_download leaves after a download (refs/main -> snapshots/<commit>/files)."""
    import shutil
    bb = specaware.create_model("specaware_debug", features_only=True, sensor="enmap")
    bb.save_pretrained(tmp_path / "hub")
    repo = tmp_path / "cache" / "models--someone--specaware-debug"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tmp_path / "hub", repo / "snapshots" / commit)
    _same_weights(bb, SpecAwareBackbone.from_pretrained("someone/specaware-debug"))
    _same_weights(bb.encoder, specaware.load_pretrained("someone/specaware-debug"))
