"""The SpecAware masked autoencoder (docs/DESIGN.md section 2).

    from specaware.model import create_model, list_models, model_stats
    mae = create_model("specaware_debug")
    out = mae(batch)                      # MAEOutput: loss, parts, pred, mask, metrics
    tokens = mae.encoder.forward_features(batch)

Pure math: imports torch, einops and `moe`; never torch.distributed, deepspeed, specaware.data
or specaware.training.
"""
from specaware.model.config import MAEConfig
from specaware.model.encoder import SpecAwareEncoder
from specaware.model.mae import MAEOutput, MaskedAutoencoder
from specaware.model.variants import (create_model, create_model_from_config, list_models,
                                      model_config, model_stats)

__all__ = ["MAEConfig", "MAEOutput", "MaskedAutoencoder", "SpecAwareEncoder", "create_model",
           "create_model_from_config", "list_models", "model_config", "model_stats"]
