"""Inference export for a fixed band set: the torch.export program and the ONNX graph give the
eager outputs (within 1e-4), for the backbone and for a fine-tuned head, NaN pixels included."""
import json

import pytest
import torch

import specaware
from specaware.inference_export import (FixedBandHead, example_inputs, export_inference,
                                        inference_module, max_abs_diff, run_onnx)
from specaware.model.tracing import is_tracing

WL = [450.0, 550.0, 650.0, 800.0, 1600.0, 2200.0]


def _backbone():
    torch.manual_seed(0)
    return specaware.create_model("specaware_debug", features_only=True, wavelengths=WL,
                                  gsd=10.0, sensor="sentinel-2a", out_indices=[0, 1]).eval()


def _image(nan: bool = True):
    x = torch.rand(2, len(WL), 16, 16, generator=torch.Generator().manual_seed(1))
    if nan:
        x[0, 2, 3:5, 3:5] = float("nan")     # the data-dependent all-finite branch
    return x


def test_tracing_is_detected_inside_export_only():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(is_tracing())
            return x + 1

    Probe()(torch.zeros(1))
    torch.export.export(Probe(), (torch.zeros(1),), strict=False)
    assert seen[0] is False and any(seen[1:])


def test_torch_export_matches_eager_with_nan_pixels(tmp_path):
    bb = _backbone()
    x = _image()
    out, meta = export_inference(bb, (x,), tmp_path / "bb", "torch-export",
                                 {"bands": {"wavelength_nm": WL}})
    assert out.suffix == ".pt2"
    side = json.loads(meta.read_text())
    assert side["max_abs_diff"] < 1e-4 and side["outputs"] == [[2, 64, 2, 2]] * 2
    assert side["input"]["dynamic"] == ["batch", "height", "width"]
    loaded = torch.export.load(str(out)).module()
    with torch.no_grad():
        # one graph for NaN and finite pixels, other batch sizes and tile sizes
        for image in (x, _image(nan=False), torch.rand(3, len(WL), 24, 32)):
            eager = bb(image)
            assert all(torch.isfinite(m).all() for m in eager)
            assert max_abs_diff(eager, loaded(image)) < 1e-5


def test_onnx_graph_matches_eager(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    bb = _backbone()
    x = _image()
    out, meta = export_inference(bb, (x,), tmp_path / "bb", "onnx", {})
    side = json.loads(meta.read_text())
    assert out.suffix == ".onnx" and side["max_abs_diff"] is not None
    assert side["max_abs_diff"] < 1e-4
    other = torch.rand(1, len(WL), 32, 16)            # another batch and tile size
    with torch.no_grad():
        assert max_abs_diff(bb(other), run_onnx(out, (other,))) < 1e-4


def test_finetuned_segmenter_exports_with_its_band_set(tmp_path):
    from specaware.finetune.checkpoint import build_head, model_meta, save_finetuned
    from specaware.finetune.config import ModelConfig
    from specaware.finetune.api import build_encoder
    torch.manual_seed(0)
    encoder = build_encoder(variant="specaware_debug")
    head = build_head("segmentation", encoder, 3, ModelConfig()).eval()
    meta = model_meta("segmentation", 3, ["a", "b", "c"], ModelConfig(), encoder,
                      {"normalization": {"normalize": "none"}})
    path = save_finetuned(head, tmp_path / "best", meta)
    module, n, info = inference_module(path, {"wavelengths": WL, "gsd": 10.0})
    assert isinstance(module, FixedBandHead) and n == 1 and info["num_classes"] == 3
    x = example_inputs(module, n, tile=16)
    out, side = export_inference(module, x, tmp_path / "seg", "torch-export", info)
    side = json.loads(side.read_text())
    assert side["outputs"] == [[2, 3, 16, 16]]
    loaded = torch.export.load(str(out)).module()
    others = [torch.rand(3, len(WL), 24, 32)] if side["input"]["dynamic"] else []
    with torch.no_grad():
        for image in [x[0]] + others:
            b = image.shape[0]
            ref = head({"image": image, "wavelength": torch.tensor([WL] * b),
                        "gsd": torch.full((b,), 10.0), "fwhm": module.bands.fwhm.expand(b, -1),
                        "sensor": ["unknown"] * b, "level": ["L2"] * b})
            assert ref.shape == (b, 3, *image.shape[-2:])
            assert max_abs_diff(ref, loaded(image)) < 1e-4


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="torch-export, onnx"):
        export_inference(_backbone(), (_image(),), tmp_path / "x", "tflite", {})


def test_export_command_writes_hub_and_inference_files(tmp_path, capsys):
    from specaware.cli import main
    from tests.finetune.fixtures import write_export
    path, model = write_export(tmp_path)
    assert main(["export", str(path), str(tmp_path / "hub"), "--format", "hub"]) == 0
    encoder = specaware.load_pretrained(tmp_path / "hub")
    assert torch.equal(encoder.norm.weight, model.encoder.norm.weight)
    assert main(["export", str(tmp_path / "hub"), str(tmp_path / "bb"), "--format",
                 "torch-export", "--sensor", "sentinel-2a", "--tile", "16",
                 "--out-indices", "1"]) == 0
    side = json.loads((tmp_path / "bb.json").read_text())
    assert side["bands"]["sensor"] == "sentinel-2a" and side["outputs"] == [[2, 64, 2, 2]]
    assert side["max_abs_diff"] < 1e-4 and "max |exported - eager|" in capsys.readouterr().out
    assert main(["export", str(path), str(tmp_path / "x"), "--format", "onnx"]) == 1
    assert "--sensor NAME or --wavelengths" in capsys.readouterr().err
