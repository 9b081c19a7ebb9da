import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import viny  # noqa: F401  (registers the timm models)

# One intra-op thread per test process (VINY_TEST_THREADS overrides). The tests' models are
# tiny: with torch's default of a thread per core every small op is an OpenMP parallel region
# whose threads spin-wait for each other, and on 2 cores shared with other work that made
# `pytest -m "not slow"` 2-3x slower (188 s against 81 s at load 3). The kernels and workers
# the tests start inherit it through OMP_NUM_THREADS unless the grid sets their threads.
TEST_THREADS = int(os.environ.get("VINY_TEST_THREADS", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(TEST_THREADS)  # again per test: a grid run in this process sets its own


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    """One decoded-image cache for the whole session (never the user's ~/.cache)."""
    os.environ["VINY_CACHE"] = str(tmp_path_factory.mktemp("viny-cache"))
    yield


def _img(rng, w, h):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _trimap(w, h):
    t = np.full((h, w), 2, np.uint8)
    t[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 3
    t[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 1
    return Image.fromarray(t)


def make_pets_root(root: Path, n: int = 12, quirks: bool = True) -> Path:
    """An Oxford-IIIT Pet folder in the original layout, with the real data set's quirks:
    a grayscale JPEG, a GIF and an RGBA PNG saved as .jpg, a CMYK JPEG, odd sizes."""
    rng = np.random.default_rng(0)
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    lines = []
    for i in range(n):
        breed = ["Abyssinian", "beagle"][i % 2]
        name = f"{breed}_{i + 1}"
        w, h = 40 + 3 * i, 36 + 2 * i
        im = _img(rng, w, h)
        path = base / "images" / f"{name}.jpg"
        kind = i % 6 if quirks else 0
        if kind == 1:
            im.convert("L").save(path, "JPEG")
        elif kind == 2:
            im.convert("P").save(path, "GIF")
        elif kind == 3:
            im.convert("RGBA").save(path, "PNG")
        elif kind == 4:
            im.convert("CMYK").save(path, "JPEG")
        else:
            im.save(path, "JPEG")
        _trimap(w, h).save(base / "annotations" / "trimaps" / f"{name}.png")
        lines.append(f"{name} {i % 2 + 1} {i % 2 + 1} 1")
    half = n // 2
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines[:half]) + "\n")
    (base / "annotations" / "test.txt").write_text("\n".join(lines[half:]) + "\n")
    return root


def make_intel_root(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for split in ("seg_train", "seg_test"):
        for c in ("buildings", "forest", "glacier", "mountain", "sea", "street"):
            d = root / split / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                _img(rng, 150, 150 if i else 76).save(d / f"{i}.jpg")
    return root


@pytest.fixture
def pets_root(tmp_path):
    return make_pets_root(tmp_path / "pets")


@pytest.fixture
def intel_root(tmp_path):
    return make_intel_root(tmp_path / "intel")
