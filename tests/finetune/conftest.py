"""Fine-tuning tests run on the real `specaware_debug` model when it is importable, else on a
tiny stand-in with the same encoder surface (tests/finetune/standin.py)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def real_model_available() -> bool:
    try:
        import specaware
        return "specaware_debug" in specaware.list_models()
    except Exception:
        return False


@pytest.fixture(autouse=True)
def _encoder_builder(monkeypatch):
    if not real_model_available():
        from standin import build_standin
        from specaware.finetune import api
        monkeypatch.setattr(api, "build_model", build_standin)
