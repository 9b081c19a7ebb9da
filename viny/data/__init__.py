"""Data: the study's real data sets (:mod:`~viny.data.datasets`), decoded once into a uint8
cache (:mod:`~viny.data.cache`), augmented in batches (:mod:`~viny.data.augment`)."""

from viny.data.augment import IMAGENET_MEAN, IMAGENET_STD
from viny.data.cache import ArrayCache, default_cache_dir
from viny.data.datasets import (
    IntelData,
    PetsData,
    load_image_folder,
    load_intel,
    load_pets,
    nested_subset,
    sample_root,
    split_indices,
)
from viny.data.images import load_rgb

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ArrayCache", "default_cache_dir", "IntelData", "PetsData", "load_image_folder",
    "load_intel", "load_pets", "nested_subset", "sample_root", "split_indices", "load_rgb",
]
