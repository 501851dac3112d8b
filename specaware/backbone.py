"""A SpecAware encoder as a timm / TerraTorch style backbone over plain tensors.

    bb = specaware.create_model("specaware_base", features_only=True, out_indices=(5, 11),
                                sensor="enmap", pretrained="run/export.safetensors")
    maps = bb(image)                    # image [B, C, H, W] -> list of [B, D, H/p, W/p]
    bb.feature_info.channels(), bb.feature_info.reduction(), bb.out_channels

The band set (centres and FWHM in nm, GSD in m, sensor name) is fixed when the backbone is
built, so the call takes an image tensor as timm and TerraTorch pass it. A batch dict
(docs/INTERFACES.md "A batch") is accepted too and brings its own band metadata; both give the
same features. Centres given in micrometres (the TorchGeo/DOFA convention) are converted with a
logged warning, or refused with `strict_units=True` (specaware.model.units).

`forward_intermediates` follows timm's signature and return convention: `(final, [maps])`, or
the list alone with `intermediates_only=True`; `indices` None = every block, int n = the last n,
list = those blocks. Hub methods (`save_pretrained`, `from_pretrained`, `push_to_hub`) come from
huggingface_hub's `PyTorchModelHubMixin` (layout in specaware.hub).

Letters: b batch, c bands, n tokens, d width, h w token grid, p patch size in pixels.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from einops import rearrange, repeat
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from specaware.config import from_dict
from specaware.features import FeatureInfo, take_indices
from specaware.model.config import MAEConfig
from specaware.model.encoder import SpecAwareEncoder
from specaware.model.inputs import BandInputs

log = logging.getLogger(__name__)


def resolve_bands(wavelengths, fwhm, gsd, sensor, strict_units) -> dict | None:
    """Band set of the backbone: {"wavelength": [C] nm, "fwhm": [C] nm, "gsd": m} or None.
    A sensor name fills what is not given from the sensor catalogue."""
    cat = None
    if sensor is not None:
        from specaware.sensors import get_sensor
        cat = get_sensor(sensor)            # UnknownSensorError lists the names
    if wavelengths is None:
        if cat is None:
            return None
        wavelengths = cat.wavelength
        fwhm = cat.fwhm if fwhm is None else fwhm
    # FWHM, when not given, is estimated from the spacing after any µm -> nm conversion
    from specaware.data.torchgeo import band_set
    wl, fw = band_set(wavelengths, fwhm, "create_model(wavelengths=...)", strict_units)
    if gsd is None and cat is not None:
        gsd = cat.gsd
    if gsd is None or not float(gsd) > 0:
        raise ValueError(f"create_model: gsd={gsd!r}; pass gsd= the ground sampling distance in "
                         "metres per pixel (token positions are in metres)")
    return {"wavelength": wl.tolist(), "fwhm": fw.tolist(), "gsd": float(gsd)}


class BandSet(nn.Module):
    """A fixed band set that turns an image tensor into a batch dict (docs/INTERFACES.md).

    Buffers (not persistent: they live in the config, not in the weights): wavelength [c] nm,
    fwhm [c] nm, gsd [1] m. Used by the backbone and by exported inference modules."""

    def __init__(self, bands: dict | None, sensor: str | None = None, level: str = "L2"):
        super().__init__()
        self.sensor, self.level = sensor or "unknown", level
        self.defined = bands is not None
        wl, fw, g = ((bands["wavelength"], bands["fwhm"], [bands["gsd"]]) if bands
                     else ([], [], [0.0]))
        self.register_buffer("wavelength", torch.tensor(wl, dtype=torch.float32), False)
        self.register_buffer("fwhm", torch.tensor(fw, dtype=torch.float32), False)
        self.register_buffer("gsd", torch.tensor(g, dtype=torch.float32), False)

    def forward(self, image: Tensor) -> dict:
        """image [b, c, H, W] -> batch dict carrying this band set."""
        if image.ndim != 4:
            raise ValueError(f"backbone input must be [B, C, H, W], got {tuple(image.shape)}")
        if not self.defined:
            raise ValueError("this backbone has no band set: build it with wavelengths=[nm] "
                             "(and gsd=, fwhm=) or sensor=NAME, or call it with a batch dict")
        b, c = image.shape[:2]
        if c != self.wavelength.shape[0]:
            raise ValueError(f"image has {c} bands but the backbone was built for "
                             f"{self.wavelength.shape[0]} wavelengths; pass matching "
                             "wavelengths= to create_model, or a batch dict with its own")
        return {"image": image, "wavelength": repeat(self.wavelength, "c -> b c", b=b),
                "fwhm": repeat(self.fwhm, "c -> b c", b=b),
                "gsd": repeat(self.gsd, "1 -> b", b=b),
                "sensor": self.sensor, "level": self.level}      # one name, shared


class SpecAwareBackbone(nn.Module, PyTorchModelHubMixin, library_name="specaware",
                        tags=["specaware", "hyperspectral", "remote-sensing",
                              "feature-extraction"]):
    """Encoder -> feature maps [b, d, h, w] after the blocks `out_indices`.

    Args (all JSON, stored as the hub config):
        model_config: `to_dict(MAEConfig)` of the encoder.
        variant: registered variant name the config came from (for the model card).
        out_indices: blocks whose outputs are returned (timm `indices` rules); default: four
            evenly spaced blocks ending with the last.
        wavelengths, fwhm: band centres and widths in nm (µm converted, see module docstring);
            fwhm None = estimated from the spacing. Needed for tensor input only.
        gsd: metres per pixel. sensor: catalogue name (fills wavelengths/fwhm/gsd not given,
            and is the sensor token of the conditioning). level: processing level token.
        norm: apply the final LayerNorm to each map (as the fine-tuning heads do).
        strict_units: refuse micrometre wavelengths instead of converting.
        pretraining: what the weights were pretrained on (variant, sensors, data; model card).
    """

    def __init__(self, model_config: dict, variant: str | None = None,
                 out_indices: int | Sequence[int] | None = None, wavelengths=None, fwhm=None,
                 gsd: float | None = None, sensor: str | None = None, level: str = "L2",
                 norm: bool = True, strict_units: bool | None = None,
                 pretraining: dict | None = None):
        super().__init__()
        cfg = model_config if isinstance(model_config, MAEConfig) else from_dict(
            MAEConfig, dict(model_config))
        self.encoder = SpecAwareEncoder(cfg)
        self.encoder.strict_units = strict_units
        self.variant, self.sensor, self.level, self.norm = variant, sensor, level, norm
        self.pretraining = pretraining or {}
        if out_indices is None:
            from specaware.finetune.heads.common import default_indices
            out_indices = default_indices(cfg.depth)
        self.out_indices = take_indices(cfg.depth, out_indices)
        self.feature_info = FeatureInfo(cfg.embed_dim, cfg.patch_size, self.out_indices)
        self.out_channels = self.feature_info.channels()       # TerraTorch reads this
        self.bands = BandSet(resolve_bands(wavelengths, fwhm, gsd, sensor, strict_units),
                             sensor, level)

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def depth(self) -> int:
        return self.encoder.depth

    def batch_from_tensor(self, image: Tensor) -> dict:
        """image [b, c, H, W] -> batch dict with the backbone's band set."""
        return self.bands(image)

    def prepare(self, x: Tensor | dict) -> BandInputs:
        return self.encoder.prepare(x if isinstance(x, dict) else self.batch_from_tensor(x))

    def _run_blocks(self, inputs: BandInputs, ids: list[int], stop_early: bool):
        """Token sequences [b, (1 +) n, d] after the blocks `ids` (before the final norm), and
        the last computed sequence."""
        enc = self.encoder
        x, _, _ = enc.embed_visible(inputs)
        if enc.cls_token is not None:
            x = torch.cat([enc.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        last = max(ids) if stop_early else len(enc.blocks) - 1
        taken: dict[int, Tensor] = {}
        for i, block in enumerate(enc.blocks[:last + 1]):
            x, _ = block(x)
            if i in ids:
                taken[i] = x
        return x, [taken[i] for i in ids]

    def forward_intermediates(self, x: Tensor | dict, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's signature. Returns `(final [b, (1 +) n, d] after the final norm, maps)`, or
        `maps` alone when `intermediates_only`; maps are [b, d, h, w] (NCHW) or [b, n, d]
        (NLC), prefix tokens dropped, in the order of `indices`."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt={output_fmt!r}: use 'NCHW' or 'NLC'")
        ids = take_indices(self.depth, indices)
        inputs = self.prepare(x)
        final, layers = self._run_blocks(inputs, ids, stop_early or intermediates_only)
        h, w = inputs.grid
        k = self.encoder.num_prefix_tokens
        maps = []
        for t in layers:
            t = (self.encoder.norm(t) if norm else t)[:, k:]
            maps.append(rearrange(t, "b (h w) d -> b d h w", h=h, w=w)
                        if output_fmt == "NCHW" else t)
        if intermediates_only:
            return maps
        return self.encoder.norm(final), maps

    def forward(self, x: Tensor | dict) -> list[Tensor]:
        """Feature maps [b, d, h, w] after each block of `out_indices`."""
        return self.forward_intermediates(x, self.out_indices, norm=self.norm,
                                          intermediates_only=True)

    def forward_features(self, x: Tensor | dict) -> Tensor:
        """All tokens after the final norm [b, n, d] (cls token dropped)."""
        final, _ = self.forward_intermediates(x, [self.depth - 1])
        return final[:, self.encoder.num_prefix_tokens:]

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's pruning: drop the blocks after the last of `indices`; returns the kept ids."""
        ids = take_indices(self.depth, indices)
        self.encoder.blocks = self.encoder.blocks[:max(ids) + 1]
        self.encoder.depth = len(self.encoder.blocks)
        if prune_norm:
            self.encoder.norm = nn.Identity()
        self.out_indices = [i for i in self.out_indices if i <= max(ids)] or ids
        self.feature_info = FeatureInfo(self.embed_dim, self.patch_size, self.out_indices)
        self.out_channels = self.feature_info.channels()
        return ids

    # -- hub (huggingface_hub.PyTorchModelHubMixin) -----------------------------------------
    def _save_pretrained(self, save_directory) -> None:
        import specaware.hub as hub
        hub.save_weights(self, save_directory)

    def generate_model_card(self, *args, **kwargs):
        import specaware.hub as hub
        return hub.model_card(self._hub_mixin_config)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision=None, cache_dir=None,
                         force_download=False, proxies=None, resume_download=None,
                         local_files_only=False, token=None, map_location="cpu", strict=True,
                         **model_kwargs):
        """The mixin's loader, with load_pretrained's strict key check (`strict` is ignored:
        a missing or misshapen encoder key is always an error naming it)."""
        import specaware.hub as hub
        model = cls(**model_kwargs)
        weights = hub.weights_file(model_id, revision=revision, cache_dir=cache_dir,
                                   force_download=force_download, token=token,
                                   local_files_only=local_files_only)
        hub.load_encoder_weights(model.encoder, weights)
        return model.to(map_location)
