"""HyperEmbedding: the factorised contraction equals the paper's formula, and never builds
the [n, c, d] tensor (memory bound at AVIRIS-NG 425 bands, base width)."""
import torch
import torch.nn.functional as F

from specaware.model.flops import peak_cpu_memory
from specaware.model.hyper_embed import HyperEmbedding


def direct_tokens(embed: HyperEmbedding, x, z, band_mask, valid=None):
    """token_n = sum_c w_nc U_c V_c x[n, c] + bias, written out from the parameters alone
    (never through the module's own `basis_matrices`/`bias`/`factors`): U_c = sum_j h_cj G_j
    with h_c = [gelu(W_h z_c + b_h), 1], V_c = W_v z_c + b_v, bias = MLP(mean of z over real
    bands), w_nc = 1 / (bands with a valid pixel in patch n) at those bands."""
    b, c, n, p = x.shape
    lin_h = embed.u_features[0]
    h = F.gelu(z @ lin_h.weight.T + lin_h.bias)
    h = torch.cat([h, torch.ones(b, c, 1)], dim=-1)                           # [b, c, j]
    u = torch.einsum("bcj,jrd->bcdr", h, embed.u_basis)                       # [b, c, d, r]
    v = (z @ embed.v_gen.weight.T + embed.v_gen.bias).reshape(b, c, embed.rank, p)
    per_band = torch.einsum("bcdr,bcrp,bcnp->bncd", u, v, x)                  # [b, n, c, d]
    present = band_mask[:, :, None].expand(b, c, n).clone()
    if valid is not None:
        present &= valid.any(-1)
    w = present.float() / present.float().sum(1, keepdim=True).clamp_min(1)   # [b, c, n]
    real = band_mask.float()
    mean_z = (z * real[..., None]).sum(1) / real.sum(1, keepdim=True)
    lin1, lin2 = embed.bias_gen[0], embed.bias_gen[2]
    bias = F.gelu(mean_z @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    return torch.einsum("bncd,bcn->bnd", per_band, w) + bias[:, None]


def inputs(b=2, c=6, n=5, p=16, dz=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, n, p, generator=gen)
    z = torch.randn(b, c, dz, generator=gen)
    band_mask = torch.ones(b, c, dtype=torch.bool)
    if b > 1:                                             # sample 1 has 4 real bands
        band_mask[1, 4:] = False
        x[1, 4:] = 0.0
    return x, z, band_mask


def test_factorised_contraction_equals_direct_formula():
    torch.manual_seed(0)
    embed = HyperEmbedding(cond_dim=12, embed_dim=24, patch_size=4, rank=3, hidden=7)
    x, z, band_mask = inputs()
    torch.testing.assert_close(embed(x, z, band_mask), direct_tokens(embed, x, z, band_mask),
                               atol=1e-5, rtol=1e-4)


def test_band_without_valid_pixels_in_a_patch_is_left_out_of_that_token():
    """Band 2 has no valid pixel in patch 3 of sample 0: token 3 averages over the other five
    bands there, exactly as if band 2 were padding; the other tokens still count it."""
    torch.manual_seed(0)
    embed = HyperEmbedding(cond_dim=12, embed_dim=24, patch_size=4, rank=3, hidden=7)
    x, z, band_mask = inputs()
    valid = band_mask[:, :, None, None].expand_as(x).clone()
    valid[0, 2, 3] = False
    x[0, 2, 3] = 0.0
    got = embed(x, z, band_mask, valid)
    torch.testing.assert_close(got, direct_tokens(embed, x, z, band_mask, valid),
                               atol=1e-5, rtol=1e-4)
    others = [0, 1, 3, 4, 5]
    without = embed(x[:1, others], z[:1, others], band_mask[:1, others])
    lone_bias = embed.bias(z[:1], band_mask[:1]) - embed.bias(z[:1, others], band_mask[:1, others])
    torch.testing.assert_close(got[0, 3], without[0, 3] + lone_bias[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got[0, 2], without[0, 2] + lone_bias[0], atol=1e-3)


def test_padded_bands_contribute_nothing_even_with_garbage():
    torch.manual_seed(0)
    embed = HyperEmbedding(cond_dim=12, embed_dim=24, patch_size=4, rank=3, hidden=7)
    x, z, band_mask = inputs()
    clean = embed(x, z, band_mask)
    x[1, 4:], z[1, 4:] = 1e4, -3.0
    torch.testing.assert_close(embed(x, z, band_mask), clean)
    alone = embed(x[1:, :4], z[1:, :4], band_mask[1:, :4])
    torch.testing.assert_close(alone, clean[1:], atol=1e-5, rtol=1e-4)


def test_token_magnitude_does_not_grow_with_band_count():
    """Scale 1 / C_real: duplicating every band (same pixels, same conditions) changes nothing."""
    torch.manual_seed(0)
    embed = HyperEmbedding(cond_dim=12, embed_dim=24, patch_size=4, rank=3, hidden=7)
    x, z, _ = inputs(b=1)
    mask = torch.ones(1, 6, dtype=torch.bool)
    doubled = embed(x.repeat(1, 2, 1, 1), z.repeat(1, 2, 1), mask.repeat(1, 2))
    torch.testing.assert_close(doubled, embed(x, z, mask), atol=1e-5, rtol=1e-4)


def test_memory_meter_sees_a_large_intermediate():
    """The meter used below works on the CPU: it reports a 40 MB temporary freed before return."""
    def make_temp():
        big = torch.ones(10_000_000)                       # 40 MB
        return (big * 2).sum()
    peak = peak_cpu_memory(make_temp)
    assert 80e6 <= peak < 90e6                              # big and big * 2 live together


def test_aviris_ng_tile_at_base_width_never_allocates_n_c_d():
    """128 x 128 tile, 425 bands, patch 8 (n = 256), width 768: the direct formula's
    [n, c, d] float32 tensor is 334 MB. The embedding (forward, with autograd) must peak
    below input + 4 x output + 2 x hypernetwork parameters, which is ~7x smaller."""
    torch.manual_seed(0)
    c, n, p, d = 425, 256, 64, 768
    embed = HyperEmbedding(cond_dim=128, embed_dim=d, patch_size=8, rank=16, hidden=128)
    x = torch.rand(1, c, n, p)
    z = torch.randn(1, c, 128)
    band_mask = torch.ones(1, c, dtype=torch.bool)
    out_bytes = n * d * 4
    param_bytes = sum(q.numel() for q in embed.parameters()) * 4
    bound = x.numel() * 4 + 4 * out_bytes + 2 * param_bytes
    n_c_d = n * c * d * 4
    assert bound < n_c_d / 5
    tokens = None

    def run():
        nonlocal tokens
        tokens = embed(x, z, band_mask)
    peak = peak_cpu_memory(run)
    assert tokens.shape == (1, n, d)
    assert peak < bound, f"HyperEmbedding peaked at {peak / 1e6:.1f} MB > {bound / 1e6:.1f} MB"
    tokens.sum().backward()                                 # the graph is usable


def test_basis_matrices_for_inspection_equal_the_written_out_u():
    torch.manual_seed(0)
    embed = HyperEmbedding(cond_dim=12, embed_dim=24, patch_size=4, rank=3, hidden=7)
    _, z, band_mask = inputs()
    lin_h = embed.u_features[0]
    h = torch.cat([F.gelu(z @ lin_h.weight.T + lin_h.bias), torch.ones(2, 6, 1)], dim=-1)
    u = torch.einsum("bcj,jrd->bcdr", h, embed.u_basis)                       # [b, c, d, r]
    torch.testing.assert_close(embed.basis_matrices(z, band_mask), u)


def test_patch_band_weights_average_over_the_present_bands_in_the_asked_dtype():
    from specaware.model.hyper_embed import patch_band_weights
    valid = torch.zeros(1, 3, 2, 4, dtype=torch.bool)
    valid[0, :, 0, 0] = True            # patch 0: three bands with a valid pixel
    valid[0, 1, 1, 2] = True            # patch 1: only band 1
    w = patch_band_weights(valid, torch.ones(1, 3, dtype=torch.bool), torch.float64)
    assert w.dtype == torch.float64
    assert w[0].T.tolist() == [[1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]]
