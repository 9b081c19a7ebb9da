"""The study's three data sets, read from their original on-disk layouts.

* **Oxford-IIIT Pet** (downstream segmentation, paper Sec. 2.4) through
  ``torchvision.datasets.OxfordIIITPet``: ``oxford-iiit-pet/images/*.jpg``,
  ``annotations/trimaps/*.png``, ``annotations/{trainval,test}.txt``. Trimap values
  1/2/3 become classes 0 foreground / 1 background / 2 boundary ("not classified").
* **Intel Image Classification** (intermediate fine-tuning, Sec. 2.3), the Kaggle layout
  ``seg_train/seg_train/<class>/*.jpg`` and ``seg_test/seg_test/<class>/*.jpg``.
* **ImageNet** or any folder of images (SimMIM pre-training, Sec. 2.2), ImageFolder
  layout or flat, with seeded nested subsets.

Each ``load_*`` returns an :class:`~viny.data.cache.ArrayCache` of uint8 arrays at
training resolution, decoded once (:mod:`viny.data.cache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from viny.data.cache import ArrayCache, build_or_load
from viny.data.images import IMAGE_EXTENSIONS, load_rgb, resize_rgb, resize_short_center_crop
from viny.errors import DataError

__all__ = [
    "PETS_LAYOUT", "INTEL_LAYOUT", "sample_root", "resolve_pets_root", "PetsData", "load_pets", "load_trimap",
    "split_indices", "IntelData", "load_intel", "list_image_folder", "nested_subset", "load_image_folder",
]

PETS_LAYOUT = "oxford-iiit-pet/images/*.jpg, oxford-iiit-pet/annotations/trimaps/*.png, oxford-iiit-pet/annotations/{trainval,test}.txt"
INTEL_LAYOUT = "seg_train/seg_train/<class>/*.jpg and seg_test/seg_test/<class>/*.jpg"


# the data root of a full study (`viny demo --data-root`, grids' data_root): the three data sets side by side
DATA_FOLDERS = ("imagenet-subset/train", "intel-image-classification", "oxford-iiit-pet")


def check_data_root(data_root: str | Path, option: str = "--data-root") -> Path:
    """``data_root`` resolved, after checking it holds the three data sets' folders."""
    root = Path(data_root).expanduser().resolve()
    missing = [f for f in DATA_FOLDERS if not (root / f).is_dir()]
    if missing:
        raise DataError(f"{option} {data_root}: missing {', '.join(missing)}; it must hold "
                        "imagenet-subset/train (ImageFolder), intel-image-classification (Kaggle layout) and oxford-iiit-pet (official layout)")
    return root


def sample_root() -> Path:
    """The data sample shipped in the repository (``$VINY_DATA`` overrides)."""
    import os

    env = os.environ.get("VINY_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    if not root.is_dir():
        raise DataError(f"the shipped data sample is not at {root}; set VINY_DATA or pass --data")
    return root


# ----------------------------------------------------------------------------- Pets


def resolve_pets_root(root: str | Path) -> Path:
    """The folder that *contains* ``oxford-iiit-pet/`` (torchvision's ``root``); the
    ``oxford-iiit-pet`` folder itself is accepted too."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"Oxford-IIIT Pet root {root} does not exist (expected {PETS_LAYOUT})")
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        root = root.parent if root.name == "oxford-iiit-pet" else root
    base = root / "oxford-iiit-pet"
    missing = [p for p in ("images", "annotations/trimaps", "annotations/trainval.txt", "annotations/test.txt") if not (base / p).exists()]
    if missing:
        raise DataError(f"{root} is not an Oxford-IIIT Pet root: missing {', '.join(str(base / m) for m in missing)} (expected {PETS_LAYOUT})")
    return root


def load_trimap(path: str | Path, image_size: tuple[int, int]) -> Image.Image:
    """Open a trimap, checking its values (1, 2, 3) and that its size equals its image's."""
    try:
        with Image.open(path) as im:
            im.load()
            tri = im.convert("L") if im.mode not in ("L", "P") else im.copy()
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode trimap {path}: {e}") from None
    if tri.size != image_size:
        raise DataError(f"trimap {path} is {tri.size[0]}x{tri.size[1]} but its image is {image_size[0]}x{image_size[1]}")
    values = np.unique(np.asarray(tri))
    if not set(values.tolist()) <= {1, 2, 3}:
        raise DataError(f"trimap {path} has values {values.tolist()}; expected only 1 (pet), 2 (background), 3 (border)")
    return tri


@dataclass
class PetsData:
    """Decoded Pets (trainval then test, torchvision's order): ``arrays.images [N,S,S,3]``,
    ``arrays.targets [N,S,S]`` (0 fg / 1 bg / 2 boundary), ``breeds [N]``, ``names``."""

    arrays: ArrayCache
    breeds: np.ndarray
    names: list[str]
    classes: list[str]


def load_pets(
    root: str | Path | None = None, size: int = 128, interpolation: str = "bilinear", download: bool = False,
    cache_dir=None, skip_bad: bool = False, progress: bool = True,
) -> PetsData:
    """Oxford-IIIT Pet trainval + test, concatenated (the authors' 7,349-image pool),
    images resized to ``size x size`` with ``interpolation``, trimaps with NEAREST."""
    from torchvision.datasets import OxfordIIITPet

    root = resolve_pets_root(root or sample_root()) if not download else Path(root or sample_root())
    parts = []
    for split in ("trainval", "test"):
        try:
            parts.append(OxfordIIITPet(root, split=split, target_types=["segmentation", "category"], download=download))
        except RuntimeError as e:
            raise DataError(f"Oxford-IIIT Pet at {root}: {e} (expected {PETS_LAYOUT})") from None
    images = [Path(p) for d in parts for p in d._images]
    trimaps = [Path(p) for d in parts for p in d._segs]
    breeds = np.array([lab for d in parts for lab in d._labels], dtype=np.int64)
    missing = [str(p) for p in images + trimaps if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} file(s) listed in the split files are missing, e.g. {missing[0]}")

    def decode(i: int):
        im = load_rgb(images[i])
        tri = load_trimap(trimaps[i], im.size)
        target = np.asarray(tri.resize((size, size), Image.Resampling.NEAREST), dtype=np.uint8) - 1
        return resize_rgb(im, size, interpolation), target

    arrays = build_or_load(
        "pets", len(images), images + trimaps, decode, (size, size, 3), (size, size), np.uint8,
        {"size": size, "interpolation": interpolation}, cache_dir, skip_bad, progress,
    )
    return PetsData(arrays, breeds, [p.stem for p in images], list(parts[0].classes))


def split_indices(n: int, train_size: int, test_size: int, protocol: str = "paper", seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Train / test indices into the concatenated Pets pool of ``n`` images.

    ``paper``: ``random_split(pool, [train_size, test_size, rest], Generator().manual_seed(42))``
    exactly as the authors (so the test set depends on ``train_size``).
    ``nested``: one fixed test set (the first ``test_size`` of a seeded permutation) and
    training sets that are prefixes of the rest, so a larger size contains every smaller one.
    """
    if train_size < 1 or test_size < 1:
        raise DataError(f"train size ({train_size}) and test size ({test_size}) must be positive")
    if train_size + test_size > n:
        hint = (" (the shipped sample has 598 Pets images: e.g. --train-size 250 --test-size 200 --split nested, the notebooks' defaults)"
                if n < 1000 else "")
        raise DataError(f"train size {train_size} + test size {test_size} is more than the {n} images available; "
                        f"use smaller --train-size / --test-size or --data with the full data set{hint}")
    if protocol == "paper":
        train, test, _ = torch.utils.data.random_split(range(n), [train_size, test_size, n - train_size - test_size], generator=torch.Generator().manual_seed(seed))
        return np.array(train.indices, dtype=np.int64), np.array(test.indices, dtype=np.int64)
    if protocol == "nested":
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
        return perm[test_size : test_size + train_size].copy(), perm[:test_size].copy()
    raise DataError(f"unknown split protocol {protocol!r}: use 'paper' or 'nested'")


# ----------------------------------------------------------------------------- Intel


@dataclass
class IntelData:
    arrays: ArrayCache  # targets: class index [N]
    classes: list[str]
    files: list[Path]


def load_intel(
    root: str | Path | None = None, split: str = "train", size: int = 128, interpolation: str = "bilinear",
    cache_dir=None, skip_bad: bool = False, progress: bool = True,
) -> IntelData:
    """Intel Image Classification ``seg_train`` (``split="train"``) or ``seg_test``, images
    resized to ``size x size`` (a few originals are not 150x150)."""
    from torchvision.datasets import ImageFolder

    root = Path(root).expanduser() if root else sample_root() / "intel-image-classification"
    folder = {"train": root / "seg_train" / "seg_train", "test": root / "seg_test" / "seg_test"}.get(split)
    if folder is None:
        raise DataError(f"unknown Intel split {split!r}: use 'train' or 'test'")
    if not folder.is_dir():
        raise DataError(f"Intel Image Classification root {root} has no {folder.relative_to(root)} (expected {INTEL_LAYOUT})")
    try:
        ds = ImageFolder(str(folder), allow_empty=False)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{folder}: {e} (expected {INTEL_LAYOUT})") from None
    files = [Path(p) for p, _ in ds.samples]
    labels = np.array([c for _, c in ds.samples], dtype=np.int64)

    def decode(i: int):
        return resize_rgb(load_rgb(files[i]), size, interpolation), labels[i]

    arrays = build_or_load(f"intel-{split}", len(files), files, decode, (size, size, 3), (), np.int64,
                           {"size": size, "interpolation": interpolation}, cache_dir, skip_bad, progress)
    return IntelData(arrays, list(ds.classes), files)


# ----------------------------------------------------------------------------- image folders (ImageNet)


def list_image_folder(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (ImageFolder layout or flat), sorted by relative path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist (expected ImageFolder layout <root>/<class>/*.JPEG, or a flat folder of images)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files


def nested_subset(n_total: int, n: int | None, seed: int = 0) -> np.ndarray:
    """The first ``n`` of a seeded permutation: subsets for growing ``n`` are nested
    (45k within 100k within 200k), so a larger pre-training set only adds images."""
    if n is None:
        n = n_total
    if not 1 <= n <= n_total:
        raise DataError(f"asked for {n} pre-training images but the folder has {n_total}")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values.numpy()


def load_image_folder(
    root: str | Path | None = None, num_images: int | None = None, subset_seed: int = 0, size: int = 128,
    interpolation: str = "bilinear", cache_dir=None, skip_bad: bool = False, progress: bool = True,
) -> ArrayCache:
    """A seeded nested subset of a folder of images, each resized (shorter side) and
    centre-cropped to ``size x size``; ``targets`` are zeros (unlabelled)."""
    root = Path(root).expanduser() if root else sample_root() / "imagenet-subset" / "train"
    all_files = list_image_folder(root)
    files = [all_files[i] for i in nested_subset(len(all_files), num_images, subset_seed)]

    def decode(i: int):
        return resize_short_center_crop(load_rgb(files[i]), size, interpolation), 0

    return build_or_load("images", len(files), files, decode, (size, size, 3), (), np.uint8,
                         {"size": size, "interpolation": interpolation}, cache_dir, skip_bad, progress)
