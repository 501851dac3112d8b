"""Freeze modes say what is frozen (none, encoder, partial, lora); the old spellings full and
frozen keep working with a logged deprecation warning."""
import logging

import pytest
import torch

from specaware.finetune import api
from specaware.finetune.heads import SceneClassifier
from specaware.finetune.heads.common import canonical_freeze


def _trainable(freeze: str) -> int:
    torch.manual_seed(0)
    model = SceneClassifier(api.build_encoder(None, "specaware_debug"), 2, freeze=freeze)
    return sum(p.numel() for p in model.encoder.parameters() if p.requires_grad)


@pytest.mark.parametrize("old,new", [("full", "none"), ("frozen", "encoder")])
def test_old_spelling_means_the_same_and_warns(old, new, caplog):
    with caplog.at_level(logging.WARNING):
        assert canonical_freeze(old) == new
    assert f"model.freeze={old} is read as model.freeze={new}" in caplog.text
    assert "DeprecationWarning" in caplog.text
    assert _trainable(old) == _trainable(new)


def test_none_trains_the_encoder_and_encoder_freezes_it():
    assert _trainable("none") > 0 and _trainable("encoder") == 0


def test_unknown_mode_names_the_choices():
    with pytest.raises(ValueError, match="none, encoder, partial, lora"):
        canonical_freeze("half")


def test_cli_config_with_the_old_spelling_resolves_to_the_new(tmp_path, caplog):
    from specaware.config import ConfigError, build
    from specaware.finetune.config import FinetuneConfig
    from specaware.finetune.runner import check_run
    cfg = build(FinetuneConfig, [], ["model.freeze=full"])
    with caplog.at_level(logging.WARNING):
        check_run(cfg)
    assert cfg.model.freeze == "none" and "deprecat" in caplog.text.lower()
    with pytest.raises(ConfigError, match="model.freeze"):
        build(FinetuneConfig, [], ["model.freeze=all"])
