"""`is_tracing` and the micrometre rule: eager code branches on values, traced code must not;
band centres below the limit are micrometres, noted once or refused with the rows named."""
import io
import logging

import pytest
import torch
from torch import nn

from specaware.model import units
from specaware.model.tracing import is_tracing


class Probe(nn.Module):
    """Adds 1 where the model would take its branch-free traced path."""

    def forward(self, x):
        return x + (1.0 if is_tracing() else 0.0)


def test_is_tracing_is_false_in_eager_code_and_true_under_export():
    # (not torch.compile: mutmut's wrappers around is_tracing break dynamo's graph, so the
    # probe would run eagerly there and `make mutate` could not run this test)
    x = torch.zeros(2)
    assert not is_tracing() and Probe()(x).tolist() == [0.0, 0.0]
    exported = torch.export.export(Probe(), (x,)).module()
    assert exported(x).tolist() == [1.0, 1.0]


def test_is_tracing_is_true_inside_a_torchscript_onnx_export():
    seen = []

    class Record(nn.Module):
        def forward(self, x):
            seen.append(is_tracing())
            return x * 2

    torch.onnx.export(Record(), (torch.zeros(2),), io.BytesIO(), dynamo=False)
    assert seen and all(seen)


@pytest.mark.parametrize("value, strict", [("1", True), (" TRUE ", True), ("Yes", True),
                                           ("0", False), ("", False), ("no", False)])
def test_strict_units_variable_ignores_case_and_spaces(monkeypatch, value, strict):
    monkeypatch.setenv("SPECAWARE_STRICT_UNITS", value)
    assert units.strict_from_env() is strict


def test_micrometre_refusal_names_the_first_eight_samples():
    wavelength = torch.full((10, 3), 0.5)
    mask = torch.ones(10, 3, dtype=torch.bool)
    with pytest.raises(units.WavelengthUnitError,
                       match=r"^batch: band centres of samples \[0, 1, 2, 3, 4, 5, 6, 7\] are "
                             r"all below 30 \(largest 0.5\)"):
        units.to_nanometres(wavelength, wavelength, mask, "batch", strict=True)


def test_micrometre_note_says_what_was_converted_and_how_to_silence_or_refuse(caplog,
                                                                               monkeypatch):
    monkeypatch.setattr(units, "_noted", set())
    wavelength = torch.tensor([[0.5, 2.5]])
    with caplog.at_level(logging.WARNING, logger="specaware.model.units"):
        nm, _ = units.to_nanometres(wavelength, wavelength, torch.ones(1, 2, dtype=torch.bool),
                                    "cube")
    assert nm.tolist() == [[500.0, 2500.0]]
    assert caplog.messages == [
        "cube: band centres up to 2.5 can only be micrometres; converted to nm (x1000), FWHM "
        "too. Pass nanometres to silence this, or strict_units=True to refuse"]
