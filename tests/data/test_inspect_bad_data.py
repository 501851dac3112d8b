"""`specaware inspect` tells the truth about bad data: malformed headers are problem lines naming
the sample (never a traceback), the same bad metadata the loader skips is reported, and values
that make a loss non-finite are found."""
import math

import numpy as np
import pytest

from specaware.cli import main as cli_main
from specaware.data.inspect import summarise
from specaware.testing import edit_shard, edit_shard_headers, npy_bytes, write_tiny_shards

MALFORMED = {
    "null_gsd": (lambda h: {**h, "gsd": None}, "json 'gsd' is None"),
    "null_wavelength": (lambda h: {**h, "wavelength": None}, "json 'wavelength' is NoneType"),
    "list_meta": (lambda h: {**h, "meta": ["a", "b"]}, "json 'meta' is list"),
    "nan_gsd": (lambda h: {**h, "gsd": math.nan}, "'gsd' must be a finite"),
    "negative_fwhm": (lambda h: {**h, "fwhm": [-1.0] + h["fwhm"][1:]}, "'fwhm' must be finite"),
    "duplicated_wavelength": (lambda h: {**h, "wavelength": [h["wavelength"][1]]
                                         + h["wavelength"][1:]}, "more than once"),
    "not_json": (lambda h: b"{not json", "cannot parse members"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_a_problem_line_naming_the_sample(tmp_path, capsys, case):
    edit, expected = MALFORMED[case]
    manifest = write_tiny_shards(tmp_path, num_shards=1, per_shard=3, tile=8, max_bands=12)
    edit_shard_headers(tmp_path / "shard-000000.tar", lambda i, h: edit(h) if i == 1 else None)
    assert cli_main(["inspect", str(tmp_path)]) == 1
    out = capsys.readouterr()
    problems = [line for line in out.err.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1 and expected in problems[0], out.err
    assert manifest["tiles"][1]["key"] in problems[0]
    assert "Traceback" not in out.err and "decoded 2 tiles" in out.out


def test_nan_pixel_scale_is_reported_as_non_finite_pixels(tmp_path):
    write_tiny_shards(tmp_path, num_shards=1, per_shard=2, tile=8, max_bands=12, dtype="int16")
    edit_shard_headers(tmp_path / "shard-000000.tar",
                       lambda i, h: {**h, "scale": math.nan} if i == 0 else None)
    broken = summarise(tmp_path)["decoded"]["broken"]
    assert len(broken) == 1 and "non-finite" in broken[0] and "'scale'" in broken[0]


def test_values_that_overflow_a_loss_are_found(tmp_path, capsys):
    """What a NonFiniteLossError's hint to `specaware inspect` must lead to: a tile whose valid
    pixels decode to ~1e24 (a wrong int16 scale)."""
    manifest = write_tiny_shards(tmp_path, num_shards=1, per_shard=2, tile=8, max_bands=12,
                                 dtype="int16")
    edit_shard_headers(tmp_path / "shard-000000.tar",
                       lambda i, h: {**h, "scale": 1e20} if i == 1 else None)
    assert cli_main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"problem: sample '{manifest['tiles'][1]['key']}': valid values up to" in err
    assert "overflows" in err


def test_off_size_tile_is_reported(tmp_path):
    manifest = write_tiny_shards(tmp_path, num_shards=1, per_shard=3, tile=8, max_bands=12)
    edit_shard(tmp_path / "shard-000000.tar",
               lambda i, ext, p: npy_bytes(np.full((12, 10, 10), 0.1, np.float16))
               if i == 2 and ext == "npy" else None)
    s = summarise(tmp_path)
    assert s["decoded"]["decoded"] == 2
    assert s["decoded"]["broken"] == [f"sample '{manifest['tiles'][2]['key']}': 10x10 tile in a "
                                      "shard set of 8x8 tiles (skipped in training)"]


def test_only_the_sampled_tiles_are_read_but_every_shard_is_counted(tmp_path):
    write_tiny_shards(tmp_path, num_shards=3, per_shard=4, tile=8, max_bands=12)
    s = summarise(tmp_path, samples=5)
    assert [x["found"] for x in s["shards"]] == [4, 4, 4] and s["decoded"]["decoded"] == 5
