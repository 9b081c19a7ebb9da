import os

import numpy as np
import pytest
import torch
from PIL import Image

from viny.data import augment as A
from viny.data import load_image_folder, load_intel, load_pets, nested_subset, split_indices
from viny.data.datasets import list_image_folder, load_trimap
from viny.data.images import load_rgb
from viny.errors import DataError

# ---------------------------------------------------------------- shipped sample


def test_shipped_pets_sample():
    pets = load_pets(progress=False)
    assert pets.arrays.images.shape == (598, 128, 128, 3)  # trainval 300 + test 298 lines
    assert pets.arrays.targets.shape == (598, 128, 128)
    assert set(np.unique(pets.arrays.targets)) == {0, 1, 2}
    assert pets.arrays.valid.all() and len(pets.classes) == 3
    # trimap 1 (pet) -> 0 foreground: the centre of a pet photo is mostly foreground
    centre = pets.arrays.targets[:, 48:80, 48:80]
    assert (centre == 0).mean() > 0.5


def test_shipped_intel_and_imagenet_samples():
    train = load_intel(split="train", progress=False)
    test = load_intel(split="test", progress=False)
    assert train.classes == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    assert np.bincount(train.arrays.targets).tolist() == [60] * 6
    assert len(test.arrays) == 120 and train.arrays.images.shape[1:] == (128, 128, 3)
    imgs = load_image_folder(num_images=50, progress=False)
    assert imgs.images.shape == (50, 128, 128, 3)


# ---------------------------------------------------------------- original layouts with quirks


def test_pets_fixture_with_quirky_files(pets_root):
    pets = load_pets(pets_root, size=32, cache_dir=False, progress=False)
    assert pets.arrays.images.shape == (12, 32, 32, 3)
    assert pets.names[:2] == ["Abyssinian_1", "beagle_2"]
    # the 'oxford-iiit-pet' folder itself is accepted as root too
    assert load_pets(pets_root / "oxford-iiit-pet", size=32, cache_dir=False, progress=False).names == pets.names


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8))
    if mode == "I;16":
        im = Image.fromarray((np.arange(120).reshape(10, 12) * 500).astype(np.uint16))
        fmt, name = "PNG", "x.jpg"  # a PNG saved as .jpg
    else:
        im = im.convert(mode)
        fmt, name = {"L": "JPEG", "P": "GIF", "RGBA": "PNG", "CMYK": "JPEG", "LA": "PNG"}[mode], "x.jpg"
    im.save(tmp_path / name, fmt)
    out = load_rgb(tmp_path / name)
    assert out.mode == "RGB" and out.size == (12, 10)


def test_truncated_jpeg_is_named_and_can_be_skipped(pets_root):
    bad = pets_root / "oxford-iiit-pet" / "images" / "beagle_2.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=r"beagle_2\.jpg.*--skip-bad-images"):
        load_pets(pets_root, size=32, cache_dir=False, progress=False)
    pets = load_pets(pets_root, size=32, cache_dir=False, skip_bad=True, progress=False)
    assert (~pets.arrays.valid).sum() == 1 and not pets.arrays.valid[1]
    assert "beagle_2.jpg" in pets.arrays.bad_files[0]


def test_bad_trimaps_are_named(pets_root):
    tri = pets_root / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_3.png"
    arr = np.array(Image.open(tri))
    arr[0, 0] = 7
    Image.fromarray(arr).save(tri)
    with pytest.raises(DataError, match=r"Abyssinian_3\.png has values \[1, 2, 3, 7\]"):
        load_pets(pets_root, size=32, cache_dir=False, progress=False)
    Image.fromarray(arr[:-3] .clip(1, 3)).save(tri)
    with pytest.raises(DataError, match=r"Abyssinian_3\.png is 46x37 but its image is 46x40"):
        load_pets(pets_root, size=32, cache_dir=False, progress=False)
    with pytest.raises(DataError, match=r"is 46x37 but its image is 44x40"):
        load_trimap(tri, (44, 40))


def test_wrong_layouts_say_what_is_expected(tmp_path, pets_root, intel_root):
    with pytest.raises(DataError, match="does not exist"):
        load_pets(tmp_path / "nowhere", cache_dir=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not an Oxford-IIIT Pet root: missing .*images.*expected oxford-iiit-pet/images"):
        load_pets(tmp_path / "empty", cache_dir=False)
    with pytest.raises(DataError, match=r"no seg_train/seg_train .*expected seg_train/seg_train/<class>"):
        load_intel(pets_root, cache_dir=False)
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "empty", cache_dir=False)
    os.remove(pets_root / "oxford-iiit-pet" / "annotations" / "trimaps" / "beagle_4.png")
    with pytest.raises(DataError, match="missing, e.g. .*beagle_4.png"):
        load_pets(pets_root, cache_dir=False)


def test_intel_layout_with_odd_sizes(intel_root):
    data = load_intel(intel_root, "train", size=32, cache_dir=False, progress=False)
    assert data.arrays.images.shape == (24, 32, 32, 3)
    assert np.bincount(data.arrays.targets).tolist() == [4] * 6


def test_image_folder_flat_and_nested(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.JPEG")
    assert len(list_image_folder(tmp_path)) == 6
    arr = load_image_folder(tmp_path, num_images=4, size=16, cache_dir=False, progress=False)
    assert arr.images.shape == (4, 16, 16, 3)
    with pytest.raises(DataError, match="asked for 7 pre-training images but the folder has 6"):
        load_image_folder(tmp_path, num_images=7, cache_dir=False)


def test_nested_pretraining_subsets():
    small, big = nested_subset(1000, 45, seed=3), nested_subset(1000, 100, seed=3)
    assert set(small) <= set(big) and len(set(big)) == 100


# ---------------------------------------------------------------- splits


def test_paper_split_is_random_split_seed_42():
    n, train, test = 7349, 250, 1000
    tr, te = split_indices(n, train, test, "paper")
    # random_split draws one randperm of the whole pool from Generator().manual_seed(42)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(42)).tolist()
    assert tr.tolist() == perm[:train] and te.tolist() == perm[train : train + test]
    # in the paper's protocol the test set depends on the training size
    assert set(split_indices(n, 500, test, "paper")[1]) != set(te)


def test_nested_split_keeps_the_test_set_and_nests_training_sets():
    tr1, te1 = split_indices(598, 100, 200, "nested")
    tr2, te2 = split_indices(598, 300, 200, "nested")
    assert np.array_equal(te1, te2) and set(tr1) <= set(tr2) and not set(tr2) & set(te2)


def test_split_errors():
    with pytest.raises(DataError, match="more than the 598 images"):
        split_indices(598, 500, 200)
    with pytest.raises(DataError, match="unknown split protocol"):
        split_indices(598, 5, 5, "kfold")


# ---------------------------------------------------------------- cache


def test_cache_decodes_once_and_notices_changed_files(pets_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_pets(pets_root, size=32, cache_dir=cache, progress=False)
    import viny.data.datasets as D

    monkeypatch.setattr(D, "load_rgb", lambda p: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_pets(pets_root, size=32, cache_dir=cache, progress=False)
    assert np.array_equal(first.arrays.images, again.arrays.images)
    assert isinstance(again.arrays.images, np.memmap)
    # a changed source file (new mtime) means a new cache entry, hence a decode
    img = pets_root / "oxford-iiit-pet" / "images" / "Abyssinian_1.jpg"
    os.utime(img, ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        load_pets(pets_root, size=32, cache_dir=cache, progress=False)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no half-built folder left


def test_cached_batch_equals_decoding_the_files_again(tmp_path):
    """The fast data path changes speed, not data: what the uint8 cache serves equals decoding
    each image and trimap again with plain PIL, as the authors' loader does every step."""
    from viny.data.datasets import sample_root

    pets = load_pets(size=64, cache_dir=tmp_path, progress=False)
    root = sample_root() / "oxford-iiit-pet"
    for i in (0, 311, len(pets.names) - 1):
        with Image.open(root / "images" / f"{pets.names[i]}.jpg") as im:
            image = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
        with Image.open(root / "annotations" / "trimaps" / f"{pets.names[i]}.png") as tri:
            target = np.asarray(tri.resize((64, 64), Image.Resampling.NEAREST)).astype(np.int64) - 1
        assert np.array_equal(pets.arrays.images[i], image)
        assert np.array_equal(pets.arrays.targets[i], target)


# ---------------------------------------------------------------- augmentation


def test_hflip_flips_image_and_target_together():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    y = x[:, 0].long()
    g = torch.Generator().manual_seed(0)
    xf, yf = A.random_hflip(x, g, y)
    for i in range(2):
        flipped = not torch.equal(xf[i], x[i])
        assert torch.equal(xf[i], x[i].flip(-1) if flipped else x[i])
        assert torch.equal(yf[i], y[i].flip(-1) if flipped else y[i])


def test_hflip_before_to_float_is_the_same_as_after():
    u8 = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8)
    y = torch.randint(0, 3, (16, 8, 8), dtype=torch.uint8)
    after = A.random_hflip(A.to_float(u8), torch.Generator().manual_seed(4), y.long())
    before = A.random_hflip(u8, torch.Generator().manual_seed(4), y, width_dim=2)
    assert 0 < sum(not torch.equal(a, b) for a, b in zip(after[0], A.to_float(u8))) < 16  # some flipped, some not
    assert torch.equal(after[0], A.to_float(before[0])) and torch.equal(after[1], before[1].long())


def test_contrast_matches_torchvision():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(1, 3, 8, 8)
    g = torch.Generator().manual_seed(5)
    factor = 1 + (2 * torch.rand(1, generator=torch.Generator().manual_seed(5)) - 1) * 0.3
    assert torch.allclose(A.random_contrast(x, 0.3, g), TF.adjust_contrast(x, float(factor)), atol=1e-5)


def test_random_resized_crop_identity_and_shape():
    x = torch.rand(3, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(A.random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), g), x, atol=1e-5)
    assert A.random_resized_crop(x, 8, (0.5, 1.0), (0.75, 1.33), g).shape == (3, 3, 8, 8)


def test_mixup_and_normalize():
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    mx, soft = A.mixup(x, y, 3, 0.1, torch.Generator().manual_seed(0))
    assert torch.allclose(soft.sum(1), torch.ones(4)) and mx.shape == x.shape
    assert torch.equal(A.mixup(x, y, 3, 0.0, None)[1], torch.nn.functional.one_hot(y, 3).float())
    m = torch.tensor(A.IMAGENET_MEAN)[None, :, None, None].expand(1, 3, 2, 2)
    assert torch.allclose(A.normalize(m), torch.zeros(1, 3, 2, 2))
