import pytest
import torch

from viny.metrics import SegmentationMeter, confusion_matrix, segmentation_scores


def T(rows):
    return torch.tensor(rows)


def test_confusion_matrix_by_hand():
    target = T([[[0, 0], [1, 2]]])
    pred = T([[[0, 1], [1, 1]]])
    cm = confusion_matrix(pred, target)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_scores_by_hand_with_a_class_absent_from_one_image():
    # image A: target [[0,0],[1,1]], pred [[0,1],[1,1]]: classes 0,1 present, 2 absent in both
    # image B: target [[2,2],[2,0]], pred [[2,2],[0,0]]
    target = T([[[0, 0], [1, 1]], [[2, 2], [2, 0]]])
    pred = T([[[0, 1], [1, 1]], [[2, 2], [0, 0]]])
    s = segmentation_scores(pred, target)
    # dataset confusion: rows target, cols pred
    # class0: tp=2 (A00, B11) ; target0 = 3 (A00,A01,B11); pred0 = 3 (A00,B10,B11) -> IoU 2/4
    # class1: tp=2 ; target1=2 ; pred1=3 -> IoU 2/3
    # class2: tp=2 ; target2=3 ; pred2=2 -> IoU 2/3
    assert s["pixel_accuracy"] == pytest.approx(6 / 8)
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    # paper protocol, per image:
    # A: acc 3/4; IoU0 = 1/2, IoU1 = 2/3, class 2 absent -> (1/2 + 2/3)/3
    # B: acc 3/4; IoU0 = 1/2 (tp1, target1, pred2), IoU2 = 2/3, class 1 absent -> (1/2+2/3)/3
    assert s["paper_pixel_accuracy"] == pytest.approx(3 / 4)
    assert s["paper_miou"] == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_perfect_prediction():
    t = torch.randint(0, 3, (4, 8, 8))
    s = segmentation_scores(t, t)
    assert s["pixel_accuracy"] == 1.0 and s["miou"] == 1.0
    # paper mIoU of a perfect prediction is (#classes present)/3 per image
    present = torch.stack([torch.bincount(x.flatten(), minlength=3) > 0 for x in t]).sum(1).float()
    assert s["paper_miou"] == pytest.approx((present / 3).mean().item())


def test_class_absent_everywhere_is_left_out_of_dataset_miou():
    t = T([[[0, 1]]])
    p = T([[[0, 1]]])
    assert segmentation_scores(p, t)["miou"] == 1.0
    assert segmentation_scores(p, t)["paper_miou"] == pytest.approx(2 / 3)


def test_meter_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 3, (10, 16, 16), generator=g)
    p = torch.randint(0, 3, (10, 16, 16), generator=g)
    meter = SegmentationMeter()
    for i in range(0, 10, 3):
        meter.update(p[i : i + 3], t[i : i + 3])
    assert meter.num_images == 10
    one = segmentation_scores(p, t)
    assert meter.scores() == pytest.approx(one)
    assert torch.equal(meter.confusion(), confusion_matrix(p, t))


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_scores(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside 0..2"):
        segmentation_scores(torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        segmentation_scores(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="before any update"):
        SegmentationMeter().scores()
    with pytest.raises(ValueError, match="no images"):
        segmentation_scores(torch.zeros(0, 2, 2, dtype=torch.long), torch.zeros(0, 2, 2, dtype=torch.long))
