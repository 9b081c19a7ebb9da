"""The nearest-neighbour (Hummingbird) probe on cases worked out by hand."""

import math

import pytest
import torch

from viny.hummingbird import nn_label_distribution, nn_probe_miou, nn_segmentation, patch_label_distribution


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# memory: a at 0 degrees (class 0), b at 10 and c at 20 degrees (class 1), d at 180 degrees (class 2)
MEM = torch.tensor([_unit(0), _unit(10), _unit(20), _unit(180)], dtype=torch.float64)
LAB = torch.tensor([0, 1, 1, 2])
Q = torch.tensor([_unit(4)], dtype=torch.float64)  # cosines to a, b, c: cos 4, cos 6, cos 16 degrees; to d: -cos 4


def test_one_neighbour_is_the_most_cosine_similar_memory_token():
    assert nn_segmentation(MEM, LAB, Q, k=1).tolist() == [0]
    # the probe is cosine: scaling a memory token or a query changes nothing
    assert nn_segmentation(MEM * torch.tensor([[5.0], [1.0], [0.2], [3.0]]), LAB, Q * 7, k=1).tolist() == [0]
    # a query at 14 degrees is nearest to b (4 degrees away) rather than c (6) or a (14)
    assert nn_segmentation(MEM, LAB, torch.tensor([_unit(14)]), k=1).tolist() == [1]


def test_k_neighbours_weighted_by_softmax_of_cosine_over_temperature():
    # k = 3 at temperature 1: weights softmax([cos 4, cos 6, cos 16]) over labels [0, 1, 1]
    s = [math.cos(math.radians(d)) for d in (4, 6, 16)]
    e = [math.exp(v) for v in s]
    want = [e[0] / sum(e), (e[1] + e[2]) / sum(e), 0.0]
    got = nn_label_distribution(MEM, LAB, Q, k=3, temperature=1.0)
    assert got.shape == (1, 3)
    assert got[0].tolist() == pytest.approx(want, abs=1e-12)
    assert nn_segmentation(MEM, LAB, Q, k=3, temperature=1.0).tolist() == [1]  # two class-1 neighbours outvote one
    # a cold softmax follows the nearest neighbour: exp((cos4 - cos6) / 0.001) ~ 21 times a's weight over b's
    assert nn_segmentation(MEM, LAB, Q, k=3, temperature=0.001).tolist() == [0]
    # d (cosine -cos 4) is the 4th neighbour: with k = 3 it never enters, with k = 4 it gets a share
    assert nn_label_distribution(MEM, LAB, Q, k=4, temperature=1.0)[0, 2] == pytest.approx(math.exp(-s[0]) / (sum(e) + math.exp(-s[0])))
    # k larger than the bank: all of it
    assert torch.allclose(nn_label_distribution(MEM, LAB, Q, k=99, temperature=1.0), nn_label_distribution(MEM, LAB, Q, k=4, temperature=1.0))


def test_soft_memory_labels_and_leading_shapes():
    soft = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    mem = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # [1, 2, D]: the first query is equidistant (weights 1/2)
    got = nn_label_distribution(mem, soft, q, k=2, temperature=0.5)
    assert got.shape == (1, 2, 2)
    assert got[0, 0].tolist() == pytest.approx([0.625, 0.375])
    w = 1 / (1 + math.exp(-1 / 0.5))  # the second query: cosines 1 and 0
    assert got[0, 1].tolist() == pytest.approx([w + (1 - w) * 0.25, (1 - w) * 0.75])
    with pytest.raises(ValueError, match="labels"):
        nn_label_distribution(mem, torch.tensor([0]), q)
    with pytest.raises(ValueError, match="temperature"):
        nn_label_distribution(mem, soft, q, temperature=0)


def test_patch_label_distribution_by_hand():
    t = torch.tensor([[[0, 0, 1, 2], [0, 1, 1, 2], [2, 2, 0, 0], [2, 2, 0, 0]]])
    d = patch_label_distribution(t, 2, 3)
    assert d.tolist() == [[[0.75, 0.25, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]


def test_nn_probe_miou_by_hand():
    # 4x4 images, 2x2 patches of 2x2 pixels; the top patches are class 0 with features (1, 0), the bottom class 1 with (0, 1)
    target = torch.tensor([[[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]])
    tokens = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    query = torch.tensor([[[1.0, 0.1], [1.0, 0.1], [0.1, 1.0], [0.1, 1.0]]])
    perfect = nn_probe_miou(tokens, target, query, target, k=1, num_classes=2)
    assert perfect == {"miou": 1.0, "pixel_accuracy": 1.0, "patch_accuracy": 1.0}
    # the test image's bottom-right patch is really class 0: its 4 pixels are predicted 1
    wrong = target.clone()
    wrong[0, 2:, 2:] = 0
    s = nn_probe_miou(tokens, target, query, wrong, k=1, num_classes=2)
    # class 0: TP 8, FN 4 -> 8/12; class 1: TP 4, FP 4 -> 4/8; accuracy 12/16; 3 of 4 patches right
    assert s["miou"] == pytest.approx((8 / 12 + 4 / 8) / 2)
    assert s["pixel_accuracy"] == pytest.approx(0.75)
    assert s["patch_accuracy"] == pytest.approx(0.75)


def test_nn_probe_on_real_shaped_tokens_beats_chance_when_tokens_carry_the_label():
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 3, (6, 4, 4), generator=g).repeat_interleave(16, 1).repeat_interleave(16, 2)  # 64x64, 4x4 patches
    labels = patch_label_distribution(targets, 16, 3).argmax(-1)  # [6, 16]
    tokens = torch.nn.functional.one_hot(labels, 3).double() @ torch.randn(3, 8, generator=g, dtype=torch.float64)
    tokens = tokens + 0.01 * torch.randn(tokens.shape, generator=g, dtype=torch.float64)
    s = nn_probe_miou(tokens[:4], targets[:4], tokens[4:], targets[4:])
    # every patch right; a few pixels at patch corners go to the neighbours' class (bilinear upsampling, as in Hummingbird)
    assert s["patch_accuracy"] == 1.0 and s["miou"] > 0.85
