"""Sin-cos positions: every frequency is useful on the tile it codes (issue 16, item 4).

A frequency is useful when its period is at least two patch spacings (else the patch grid
aliases it) and at most 8 tile extents (else it is constant over the tile). The old fixed
range of 4 m to 100 km left 38-41 % of them useful at 5-60 m GSD (patch 8, 128 px tiles:
30-56 % aliased, 5-31 % constant over the tile).
"""
import pytest
import torch

from specaware.model.pos_embed import MetricPositionEmbedding, patch_centres

PATCH, GRID = 8, 16                         # 128 px tiles


def useful_fraction(periods: torch.Tensor, gsd: torch.Tensor, grid: int) -> torch.Tensor:
    spacing = (PATCH * gsd)[:, None]
    extent = grid * spacing
    ok = (periods >= 2 * spacing * (1 - 1e-6)) & (periods <= 8 * extent)
    return ok.float().mean(1)


@pytest.mark.parametrize("grid", [4, GRID, 64])
def test_every_frequency_is_useful_from_5_to_60_m_gsd(grid):
    pe = MetricPositionEmbedding(64)
    gsd = torch.tensor([5.0, 10.0, 20.0, 30.0, 60.0])
    periods = pe.periods(grid, grid, PATCH, gsd)
    assert periods.shape == (5, 16)
    assert useful_fraction(periods, gsd, grid).tolist() == [1.0] * 5
    torch.testing.assert_close(periods[:, 0], 2 * PATCH * gsd)            # Nyquist of the grid
    torch.testing.assert_close(periods[:, -1], 4 * grid * PATCH * gsd)    # 4 tile extents


def test_the_range_is_chosen_per_sample_and_the_code_is_scale_free():
    """Two samples of one batch at 5 and 60 m get their own periods; as both ends scale with
    the GSD, the codes of the two tiles are equal (positions relative to the tile)."""
    pe = MetricPositionEmbedding(32)
    code = pe(GRID, GRID, PATCH, torch.tensor([5.0, 60.0]))
    torch.testing.assert_close(code[0], code[1], atol=1e-5, rtol=0)
    periods = pe.periods(GRID, GRID, PATCH, torch.tensor([5.0, 60.0]))
    torch.testing.assert_close(periods[1], 12 * periods[0])


def test_code_is_sin_cos_of_the_patch_centres_in_metres():
    pe = MetricPositionEmbedding(8)
    gsd = torch.tensor([10.0])
    code = pe(2, 3, PATCH, gsd)
    omega = 2 * torch.pi / pe.periods(2, 3, PATCH, gsd)[0]                 # [2]
    centre = patch_centres(2, 3, PATCH, gsd)[0, 4]                         # row 1, column 1
    torch.testing.assert_close(centre, torch.tensor([120.0, 120.0]))
    want = torch.cat([torch.sin(centre[0] * omega), torch.cos(centre[0] * omega),
                      torch.sin(centre[1] * omega), torch.cos(centre[1] * omega)])
    torch.testing.assert_close(code[0, 4], want)


def test_bounds_in_metres_clip_the_range():
    pe = MetricPositionEmbedding(16, min_period_m=200.0, max_period_m=5_000.0)
    periods = pe.periods(GRID, GRID, PATCH, torch.tensor([10.0]))     # 160 m to 5120 m
    assert float(periods.min()) == pytest.approx(200.0)
    assert float(periods.max()) == pytest.approx(5_000.0)
