import itertools
import math

import numpy as np
import pytest
import timm
import torch

import viny.train as T
from viny.config import make_config
from viny.diagnostics import along_training, compare_encoders, diagnostic_images, kendall_tau, kendall_tau_rows, layer_tokens, stage_cka
from viny.model import patch_tokens


@pytest.fixture(scope="module")
def data():
    return diagnostic_images(num_images=48, size=64)


def test_diagnostic_images(data):
    assert data.images.shape == (48, 64, 64, 3) and data.patch_labels.shape == (48, 16)
    assert data.probe_train.sum() == 36  # 25 % held out for the probe


def test_layer_tokens_last_layer_is_patch_tokens(data):
    enc = timm.create_model("viny_test").eval()
    toks = layer_tokens(enc, data.images[:5], [1, 2], precision="fp32")
    from viny.data import augment as A

    x = A.normalize(A.to_float(torch.from_numpy(data.images[:5])))
    with torch.no_grad():
        assert torch.allclose(toks[2], patch_tokens(enc, x), atol=1e-5)
        assert not torch.allclose(toks[1], toks[2])
    with pytest.raises(ValueError, match="layers must be in 1..2"):
        layer_tokens(enc, data.images[:2], [3])


def test_compare_encoders_all_layers(data):
    encs = {"a": timm.create_model("viny_test"), "b": timm.create_model("viny_test")}
    table, cosine = compare_encoders(encs, data, layers="all", dse_images=16, precision="fp32")
    assert list(table["encoder"]) == ["a", "a", "b", "b"] and list(table["layer"]) == [1, 2, 1, 2]
    assert {"within_variance", "probe_accuracy", "probe_train_accuracy_authors", "dse"} <= set(table.columns)
    assert table["probe_accuracy"].between(0, 1).all()
    assert table["nn_probe_miou"].between(0, 1).all() and table["nn_probe_accuracy"].between(0, 1).all()
    assert len(cosine) == 4 * 7 and set(cosine["distance"]) == set(range(7))  # 4x4 grid: d = 0..6


def test_stage_cka_of_an_encoder_with_itself_is_one(data):
    enc = timm.create_model("viny_test")
    df = stage_cka(enc, enc, data, precision="fp32")
    assert np.allclose(df["cka"], 1.0)


def test_kendall_tau_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # pairs: (1,2) concordant, (1,3) concordant, (2,3) discordant -> (2-1)/3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # tau-b with ties: x = [1, 1, 2], y = [1, 2, 3]: pair (1,2) tied in x only; (1,3), (2,3) concordant
    # -> (2 - 0) / sqrt((2 + 0 + 1) * (2 + 0 + 0)) = 2 / sqrt(6)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # constant: undefined


def _tau_b_by_pairs(x, y):
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
        if sx == 0 and sy == 0:
            continue
        tx, ty = tx + (sx == 0), ty + (sy == 0)
        c, d = c + (sx * sy > 0), d + (sx * sy < 0)
    den = math.sqrt((c + d + tx) * (c + d + ty))
    return (c - d) / den if den else float("nan")


def test_kendall_tau_rows_agrees_with_counting_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 3, (50, 6)).astype(float), rng.integers(0, 3, (50, 6)).astype(float)
    x[0] = 1.0  # a constant row: NaN
    rows = kendall_tau_rows(x, y)
    assert math.isnan(rows[0])
    for i in range(50):
        assert rows[i] == pytest.approx(_tau_b_by_pairs(x[i].tolist(), y[i].tolist()), nan_ok=True)


def test_along_training(tmp_path, data):
    cfg = make_config("pretrain", model="viny_test", epochs=3, num_images=32, batch_size=16, precision="fp32", save_encoder_every=1)
    T.train(cfg, tmp_path / "p", progress=False)
    table, tau = along_training(tmp_path / "p", data, dse_images=16, precision="fp32")
    assert list(table["epoch"]) == [1, 2, 3] and -1 <= tau <= 1


def test_similarity_maps_per_layer(data):
    from viny.geometry import similarity_map
    from viny.views import similarity_maps

    enc = timm.create_model("viny_test")
    image = data.images[0]
    toks = layer_tokens(enc, image[None], [1, 2], precision="fp32")
    maps1 = similarity_maps(enc, image, {"ref": 5}, layer=1)["ref"]
    maps2 = similarity_maps(enc, image, {"ref": 5})["ref"]
    assert np.allclose(maps1, similarity_map(toks[1][0], 5, (4, 4)).numpy(), atol=1e-6)
    assert np.allclose(maps2, similarity_map(toks[2][0], 5, (4, 4)).numpy(), atol=1e-6)
    assert maps1[1, 1] == pytest.approx(1.0)  # patch 5 is row 1, column 1 of the 4x4 grid
