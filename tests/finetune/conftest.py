"""Fine-tuning tests run on the real `specaware_debug` model. A broken model must fail them,
so there is no silent fallback: a test that wants the tiny stand-in encoder of
tests/finetune/standin.py asks for the `standin_encoder` fixture by name."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def standin_encoder(monkeypatch):
    """Build encoders with the stand-in (same surface as the real encoder, a few hundred
    parameters) for a test that checks fine-tuning logic apart from the model."""
    from standin import build_standin

    from specaware.finetune import api
    monkeypatch.setattr(api, "build_model", build_standin)
    return build_standin
