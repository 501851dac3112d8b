"""Session fixtures of the pretraining tests: tiny real shards and the fast debug schedule."""
from __future__ import annotations

from pathlib import Path

import pytest

from specaware.testing import write_tiny_shards
from tests.training.launching import DEBUG_YAML, FAST


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """16 tiles of 32x32 px (AVIRIS-NG thinned to 24 bands and Sentinel-2A) in 4 shards."""
    out = tmp_path_factory.mktemp("pretrain_shards")
    write_tiny_shards(out, tile=32, num_shards=4, per_shard=4, overwrite=True)
    return out


@pytest.fixture(scope="session")
def base_items(tiny_shards) -> list[str]:
    return [DEBUG_YAML, f"data.shards={tiny_shards}", *FAST]
