import torch
import torch.nn.functional as F

from viny.heads import ClassificationHead, PatchClassifier, SegmentationHead, segmentation_loss


def test_segmentation_head_layout_is_class_major_per_patch():
    head = SegmentationHead(dim=4, patch_size=2, num_classes=3, grid_size=(2, 2))
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.copy_(torch.arange(12.0))  # (class, ph, pw) = 3 x 2 x 2
    tokens = torch.zeros(1, 4, 4)
    out = head(tokens)
    assert out.shape == (1, 3, 4, 4)
    # inside every patch: class c, pixel (i, j) = 4c + 2i + j
    for c in range(3):
        block = torch.tensor([[4.0 * c, 4.0 * c + 1], [4.0 * c + 2, 4.0 * c + 3]])
        assert torch.equal(out[0, c], block.repeat(2, 2))


def test_segmentation_head_places_patches_on_the_grid():
    head = SegmentationHead(dim=4, patch_size=2, num_classes=1, grid_size=(2, 2))
    with torch.no_grad():
        head.proj.weight.fill_(1.0)
        head.proj.bias.zero_()
    tokens = torch.tensor([0.0, 1.0, 2.0, 3.0])[None, :, None].expand(1, 4, 4) / 4  # token value = patch index
    out = head(tokens)[0, 0]
    assert torch.equal(out, torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))


def test_segmentation_loss_is_plain_pixel_cross_entropy():
    logits = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    assert torch.allclose(segmentation_loss(logits, target), F.cross_entropy(logits, target))
    quirk = segmentation_loss(logits, target, reference_quirk=True)
    assert not torch.allclose(quirk, F.cross_entropy(logits, target))
    # the quirk = log_softmax over each 16x16 patch's pixels before CE over classes
    x = logits.reshape(2, 3, 2, 16, 2, 16).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 2, 256)
    ls = x.log_softmax(-1).reshape(2, 3, 2, 2, 16, 16).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 32, 32)
    assert torch.allclose(quirk, F.cross_entropy(ls, target))


def test_classification_and_patch_heads():
    assert ClassificationHead(128, 6)(torch.randn(5, 128)).shape == (5, 6)
    assert PatchClassifier(128, 3)(torch.randn(5, 64, 128)).shape == (5, 64, 3)
