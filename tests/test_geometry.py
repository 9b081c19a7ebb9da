
import numpy as np
import pandas as pd
import pytest
import torch

from viny.geometry import (
    cosine_vs_distance,
    dse_components,
    dse_scores,
    effective_rank,
    grid_distances,
    kmeans,
    linear_cka,
    patch_probe,
    reference_patches,
    similarity_map,
    variance_decomposition,
)


def test_identical_tokens_within_an_image_have_zero_within_variance():
    per_image = torch.randn(5, 1, 16)
    tokens = per_image.expand(5, 64, 16)
    v = variance_decomposition(tokens)
    assert v["within"] == pytest.approx(0.0, abs=1e-12)
    assert v["across"] == pytest.approx(per_image.double().squeeze(1).var(0, unbiased=False).mean().item())
    assert v["total"] == pytest.approx(v["across"])


def test_variance_by_hand_and_total_law():
    # one dim, two images of two patches: [0, 2] and [4, 4]
    t = torch.tensor([[[0.0], [2.0]], [[4.0], [4.0]]])
    v = variance_decomposition(t)
    assert v["within"] == pytest.approx((1.0 + 0.0) / 2)  # var([0,2]) = 1, var([4,4]) = 0
    assert v["across"] == pytest.approx(2.25)  # means 1 and 4 -> var 2.25
    assert v["total"] == pytest.approx(v["within"] + v["across"])
    r = torch.randn(7, 64, 9)
    v = variance_decomposition(r)
    assert v["total"] == pytest.approx(v["within"] + v["across"])


def test_grid_distances():
    d = grid_distances((8, 8))
    assert d.shape == (64, 64) and d[0, 63] == 14 and d[0, 1] == 1 and d[0, 8] == 1 and d[9, 0] == 2


def test_cosine_vs_distance_by_construction():
    # tokens = one-hot of the patch's row: same row -> cos 1, different rows -> 0
    rows = torch.arange(64) // 8
    tokens = torch.nn.functional.one_hot(rows, 8).float()[None].repeat(3, 1, 1)
    df = cosine_vs_distance(tokens)
    assert list(df["distance"]) == list(range(15))
    # at distance 1, of the pairs 2*8*7 are in the same row (horizontal), 2*7*8 across rows
    assert df.loc[1, "within_mean"] == pytest.approx(0.5)
    assert df.loc[0, "within_mean"] == pytest.approx(1.0)
    assert df.loc[14, "within_mean"] == pytest.approx(0.0)
    # every image identical -> the cross-image control equals the within curve, spread 0
    assert np.allclose(df["cross_mean"], df["within_mean"]) and np.allclose(df["within_std"], 0)


def test_cross_image_control_sees_position_only():
    # tokens = position code + image-specific noise: cross-image similarity at d=0 is high
    pos = torch.randn(1, 64, 32) * 3
    tokens = pos + torch.randn(20, 64, 32)
    df = cosine_vs_distance(tokens)
    assert df.loc[0, "cross_mean"] > 0.8 and abs(df.loc[5, "cross_mean"]) < 0.2
    # brute force check of the closed form at distance 3
    t = torch.nn.functional.normalize(tokens.double(), dim=-1)
    m = grid_distances() == 3
    vals = [(t[i] @ t[j].T)[m].mean() for i in range(20) for j in range(20) if i != j]
    assert df.loc[3, "cross_mean"] == pytest.approx(torch.stack(vals).mean().item(), rel=1e-9)


def test_probe_separates_two_clusters_perfectly():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (40, 64), generator=g)
    tokens = torch.randn(40, 64, 8, generator=g) * 0.1
    tokens[..., 0] += labels * 4.0 - 2.0
    r = patch_probe(tokens[:30], labels[:30], tokens[30:], labels[30:], num_classes=2, epochs=5, batch_size=256)
    assert r["accuracy"] == 1.0 and r["miou"] == 1.0 and r["train_accuracy_last_epoch"] > 0.95


def test_probe_on_noise_is_chance():
    g = torch.Generator().manual_seed(1)
    tokens, labels = torch.randn(60, 64, 8, generator=g), torch.randint(0, 2, (60, 64), generator=g)
    r = patch_probe(tokens[:40], labels[:40], tokens[40:], labels[40:], num_classes=2)
    assert 0.4 < r["accuracy"] < 0.6


def test_reference_patches_by_hand():
    t = torch.ones(32, 32, dtype=torch.long)  # 2x2 grid of 16px patches, all background
    t[16:, 16:] = 0  # bottom-right patch: all foreground
    t[16:, 0:16] = 0
    t[16:20, 0:16] = 2  # bottom-left patch: 25% boundary, 75% foreground
    t[0:16, 16:] = 2  # top-right: all boundary
    ref = reference_patches(t, patch_size=16)
    assert ref == {"background": 0, "foreground": 3, "boundary": 1}


def test_similarity_map():
    tokens = torch.zeros(4, 3)
    tokens[:, 0] = 1
    tokens[3] = torch.tensor([0.0, 1.0, 0.0])
    m = similarity_map(tokens, 0, grid=(2, 2))
    assert m.tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_effective_rank_rank1_vs_isotropic():
    u = torch.randn(200, 1, dtype=torch.float64)
    assert effective_rank(u @ torch.randn(1, 16, dtype=torch.float64)) == pytest.approx(1.0, abs=1e-6)
    iso = torch.linalg.qr(torch.randn(16, 16)).Q  # orthonormal rows: equal singular values
    assert effective_rank(iso) == pytest.approx(16.0)
    assert effective_rank(iso, normalized=True) == pytest.approx(1.0)


def test_cka_rotation_invariance_and_independence():
    x = torch.randn(500, 16)
    q = torch.linalg.qr(torch.randn(16, 16)).Q
    assert linear_cka(x, x @ q) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(500, 16)) < 0.1
    with pytest.raises(ValueError, match="same items"):
        linear_cka(x, x[:10])


def test_kmeans_finds_obvious_clusters():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2) for c in centres])
    cent, lab = kmeans(x, 3, seed=0)
    assert len(set(lab[:30].tolist())) == 1 and len(set(lab.tolist())) == 3
    assert torch.cdist(cent.float(), centres).min(1).values.max() < 0.2


def test_dse_prefers_clustered_full_rank_tokens():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=g) * 3
    assign = torch.randint(0, 3, (16, 64), generator=g)
    clustered = centres[assign] + 0.1 * torch.randn(16, 64, 32, generator=g)
    noise = torch.randn(16, 64, 32, generator=g)
    collapsed = torch.randn(16, 64, 1, generator=g) * torch.randn(1, 1, 32, generator=g)
    a = dse_components(clustered, global_clusters=3)
    b = dse_components(noise, global_clusters=3)
    c = dse_components(collapsed, global_clusters=3)
    assert a["m_inter"] - a["m_intra"] > b["m_inter"] - b["m_intra"]  # separable clusters
    assert b["m_dim"] > c["m_dim"]  # isotropic vs rank-1
    assert a["dse"] == pytest.approx(a["m_inter"] - a["m_intra"] + a["m_dim"])
    df = pd.DataFrame([a, b, c])
    lam = (df.m_inter - df.m_intra).std(ddof=0) / df.m_dim.std(ddof=0)
    assert dse_scores(df)[0] == pytest.approx(a["m_inter"] - a["m_intra"] + lam * a["m_dim"])


def test_bad_token_shapes():
    with pytest.raises(ValueError, match=r"\[N, L, D\]"):
        variance_decomposition(torch.zeros(64, 8))
    with pytest.raises(ValueError, match="8x8 grid"):
        cosine_vs_distance(torch.zeros(2, 10, 4))


def test_similarity_panel_marks_the_chosen_patch_and_has_a_colour_bar():
    import numpy as np

    from viny.views import similarity_panel

    img = np.zeros((128, 128, 3), np.uint8)
    sim = np.full((8, 8), 1.0)
    out = np.asarray(similarity_panel(img, np.zeros((128, 128), np.int64), sim, patch=27, scale=1))
    # patch 27 = row 3, col 3: its box's top-left corner on the image, below the 14-px title and a 4-px gap
    assert tuple(out[14 + 4 + 3 * 16, 4 + 3 * 16]) == (255, 0, 0)
    assert tuple(out[14 + 4, 4]) == (0, 0, 0)  # the image elsewhere is untouched
    assert out.shape[0] > 14 + 4 + 128 + 10  # the colour bar below
