import pytest
import timm
import torch

from viny.model import patchify
from viny.simmim import SimMIM, random_mask, reconstruction_panels


def make(name="viny", **kw):
    return SimMIM(timm.create_model(name), **kw)


def test_exactly_int_ratio_times_64_masked_per_image():
    m = make()
    assert m.num_masked == 32
    _, pred, mask = m(torch.randn(5, 3, 128, 128))
    assert mask.dtype == torch.bool and mask.shape == (5, 64)
    assert mask.sum(1).tolist() == [32] * 5
    assert pred.shape == (5, 64, 768)
    assert make(mask_ratio=0.3).num_masked == int(0.3 * 64) == 19


def test_random_mask_is_seeded_and_uniform():
    a = random_mask(4, 64, 32, generator=torch.Generator().manual_seed(3))
    b = random_mask(4, 64, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    freq = random_mask(4000, 64, 32, generator=torch.Generator().manual_seed(0)).float().mean(0)
    assert torch.allclose(freq, torch.full((64,), 0.5), atol=0.05)


def test_explicit_mask_is_used_and_loss_is_l1_on_masked_patches():
    m = make("viny_test").eval()
    x = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [0, 5]] = True
    mask[1, [15]] = True
    loss, pred, out_mask = m(x, mask=mask)
    assert torch.equal(out_mask, mask)
    target = patchify(x, 16)
    # hand computation: mean |pred - target| over the 3 masked patches' pixels
    expected = torch.cat([(pred[0, [0, 5]] - target[0, [0, 5]]).abs().flatten(), (pred[1, [15]] - target[1, [15]]).abs().flatten()]).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    # unmasked predictions do not enter the loss
    pred2 = pred.detach().clone()
    pred2[~mask] += 100.0
    assert torch.allclose(m.forward_loss(x, pred2, mask), loss)


def test_authors_loss_division_is_an_option():
    m = make("viny_test").eval()
    x = torch.randn(2, 3, 64, 64)
    mask = m.random_mask(2, generator=torch.Generator().manual_seed(0))
    plain, _, _ = m(x, mask=mask)
    m.divide_loss_by_masked = True
    divided, _, _ = m(x, mask=mask)
    assert torch.allclose(divided, plain / 8)


def test_mask_changes_only_through_the_mask_token():
    m = make("viny_test").eval()
    x = torch.randn(1, 3, 64, 64)
    mask = m.random_mask(1, generator=torch.Generator().manual_seed(0))
    x2 = x.clone()
    # altering the pixels of masked patches must not change the prediction
    pix = patchify(x2, 16)
    pix[mask] = 7.0
    from viny.model import unpatchify

    x2 = unpatchify(pix, 16)
    with torch.no_grad():
        _, p1, _ = m(x, mask=mask)
        _, p2, _ = m(x2, mask=mask)
    assert torch.allclose(p1, p2, atol=1e-6)


def test_bad_mask_shape_and_ratio():
    m = make("viny_test")
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 16\)"):
        m(torch.randn(2, 3, 64, 64), mask=torch.zeros(2, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask_ratio"):
        make("viny_test", mask_ratio=1.5)


def test_every_simmim_parameter_receives_a_gradient():
    m = make("viny_test")
    loss, _, _ = m(torch.randn(2, 3, 64, 64))
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == ["encoder.cls_token"]  # SimMIM runs on patch tokens only, as the authors' does


def test_reconstruction_panels():
    x = torch.rand(1, 3, 32, 32)
    mask = torch.tensor([[True, False, False, True]])
    pred = torch.zeros(1, 4, 768)
    panels = reconstruction_panels(x, pred, mask, patch_size=16)
    assert torch.allclose(panels["original"], x)
    rec = panels["reconstruction"]
    assert torch.equal(rec[..., :16, 16:], x[..., :16, 16:])  # visible patch kept
    assert (rec[..., :16, :16] == 0).all() and (rec[..., 16:, 16:] == 0).all()  # masked = prediction
    assert (panels["masked"][..., :16, :16] == 0.5).all()
    # de-normalisation
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    out = reconstruction_panels(torch.zeros(1, 3, 32, 32), pred, mask, 16, mean, std)["original"]
    assert torch.allclose(out, torch.full_like(out, 0.5))


def test_trivial_predictors_by_hand():
    from viny.simmim import dataset_mean_prediction, masked_l1, mean_colour_prediction

    # one image, 2 patches of 2 pixels x 3 channels (pixel-major: r g b r g b); patch 1 masked
    t = torch.tensor([[[0.0, 1.0, 2.0, 2.0, 3.0, 4.0], [6.0, 6.0, 6.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[False, True]])
    mc = mean_colour_prediction(t, mask)
    assert mc[0, 1].tolist() == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]  # the visible patch's mean colour
    # masked patch's error: 5, 4, 3, 1, 2, 3 -> mean 18/6
    assert masked_l1(mc, t, mask).item() == pytest.approx(3.0)
    dm = dataset_mean_prediction(t)  # mean over all 4 pixels: (2, 2.5, 3)
    assert dm[0, 0].tolist() == [2.0, 2.5, 3.0, 2.0, 2.5, 3.0]
    assert masked_l1(dm, t, mask).item() == pytest.approx((4 + 3.5 + 3 + 2 + 2.5 + 3) / 6)


def test_reconstruction_yardstick_fixed_masks_and_a_perfect_model():
    from viny.simmim import reconstruction_yardstick

    m = make("viny_test")
    x = torch.randn(6, 3, 64, 64)
    a = reconstruction_yardstick(m, x, seed=1, batch_size=4)
    assert a == pytest.approx(reconstruction_yardstick(m, x, seed=1, batch_size=6), rel=1e-6)  # chunking does not change the pooled L1
    assert a["images"] == 6 and a["ratio"] == pytest.approx(a["l1"] / a["mean_colour_l1"])

    class Oracle(SimMIM):  # predicts the true pixels: ratio 0
        def forward(self, images, mask=None, generator=None):
            return None, patchify(images, 16), mask

    oracle = Oracle(timm.create_model("viny_test"))
    assert reconstruction_yardstick(oracle, x)["ratio"] == 0.0
