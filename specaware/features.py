"""timm-style feature metadata: which block each feature map comes from, its channels and stride.

`FeatureInfo` answers the questions timm's `model.feature_info` answers (`channels()`,
`reduction()`, `module_name()`, `get_dicts()`), so code written for
`timm.create_model(..., features_only=True)` (and TerraTorch necks, which read the channel
list) can size its decoder from a specaware backbone. `take_indices` resolves block indices the
way timm's `feature_take_indices` documents it: None = every block, an int n = the last n blocks,
a list = those blocks (negative counts from the end), in the order given.
"""
from __future__ import annotations

from typing import Sequence


def take_indices(depth: int, indices: int | Sequence[int] | None) -> list[int]:
    """Block indices (0-based, order kept) for timm's `indices` argument; errors name the range."""
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 1 <= indices <= depth:
            raise ValueError(f"indices={indices}: asks for the last {indices} blocks of a "
                             f"depth-{depth} encoder; use 1..{depth}")
        return list(range(depth - indices, depth))
    picked = [int(i) for i in indices]
    bad = [i for i in picked if not -depth <= i < depth]
    if bad or not picked:
        raise ValueError(f"indices {picked}: block indices must lie in {-depth}..{depth - 1} "
                         f"for a depth-{depth} encoder")
    return [i % depth for i in picked]


class FeatureInfo:
    """One dict per output map: `num_chs` (channels D), `reduction` (stride p, pixels per token
    side), `module` (the block it is taken after), `index` (block index)."""

    def __init__(self, channels: int, reduction: int, out_indices: Sequence[int]):
        self.out_indices = list(out_indices)
        self.info = [{"num_chs": channels, "reduction": reduction, "module": f"blocks.{i}",
                      "index": i} for i in self.out_indices]

    def _pick(self, key: str, idx: int | Sequence[int] | None):
        if idx is None:
            return [d[key] for d in self.info]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None):
        return self._pick("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self._pick("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self._pick("module", idx)

    def get_dicts(self, keys: Sequence[str] | None = None) -> list[dict]:
        if keys is None:
            return [dict(d) for d in self.info]
        return [{k: d[k] for k in keys} for d in self.info]

    def __getitem__(self, idx: int) -> dict:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"
