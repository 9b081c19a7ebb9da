"""What each training phase trains: its data, model (encoder + head), loss and evaluation.

One :class:`Task` per phase feeds the single training loop of :mod:`viny.train`:

* :class:`PretrainTask`: SimMIM on a folder of images (RandomResizedCrop 128, scale
  (0.67, 1), flip, ImageNet normalisation); evaluated by the masked L1 on fixed images
  and masks.
* :class:`IntermediateTask`: ``cls_intel`` / ``cls_pets`` (CLS head, cross-entropy, flip +
  contrast 0.3, optional MixUp) or ``spatial`` (per-patch majority-trimap labels);
  evaluated by accuracy on held-out images.
* :class:`FinetuneTask`: trimap segmentation with a per-patch linear head (joint flip,
  contrast 0.3); evaluated on the never-augmented test split with
  :func:`viny.metrics.segmentation_scores` (both mIoU definitions).

All randomness of a step (order, augmentation, masks) comes from the
``torch.Generator`` the loop passes in.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from viny.config import FinetuneConfig, IntermediateConfig, PretrainConfig, TrainConfig
from viny.data import augment as A
from viny.data.datasets import load_image_folder, load_intel, load_pets, split_indices
from viny.diagnostics import layer_tokens
from viny.errors import DataError
from viny.heads import CLSClassifier, PatchSupervised, Segmenter, patch_majority_labels, segmentation_loss
from viny.metrics import SegmentationMeter
from viny.model import ViNy
from viny.simmim import SimMIM, reconstruction_yardstick
from viny.study import INTERMEDIATE_TASKS

__all__ = ["heldout_images", "pets_pretrain_index", "JointSegmenter", "Segmenter", "CLSClassifier", "PatchSupervised", "patch_majority_labels", "make_task", "Task"]


def _gather(array: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array[idx]))


class Task:
    """Interface used by the training loop."""

    config: TrainConfig
    train_index: np.ndarray  # indices into the task's arrays that form the training set

    def build(self, encoder: ViNy) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, idx: np.ndarray, gen: torch.Generator, device) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, device, autocast) -> dict:
        raise NotImplementedError

    def export(self, model: nn.Module) -> nn.Module:
        """The part of the trained model saved as the run's ``model.safetensors`` (training-only parts dropped)."""
        return model

    @property
    def data_summary(self) -> dict:
        return {}

    def _prep(self, images_u8: torch.Tensor, device) -> torch.Tensor:
        return A.to_float(images_u8.to(device, non_blocking=True))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return A.normalize(x) if self.config.normalize else x


def _valid_only(index: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return index[valid[index]]


class PretrainTask(Task):
    def __init__(self, config: PretrainConfig, progress: bool = True):
        self.config = config
        size = _image_size(config)
        if config.source == "pets":
            self.arrays = self.pets_pool(config, size, progress).arrays
            self.train_index = pets_pretrain_index(len(self.arrays), self.arrays.valid, config)
        else:
            self.arrays = load_image_folder(config.data, config.num_images, config.subset_seed, size, config.resize,
                                            config.cache_dir, config.skip_bad_images, progress)
            self.train_index = np.flatnonzero(self.arrays.valid)
        self.size = size

    @staticmethod
    def pets_pool(config: PretrainConfig, size: int, progress: bool = True):
        return load_pets(config.data, size, config.resize, cache_dir=config.cache_dir, skip_bad=config.skip_bad_images, progress=progress)

    @property
    def data_summary(self):
        return {"pretrain_images": int(len(self.train_index)), "skipped_bad_images": len(self.arrays.bad_files),
                **({"pretrain_source": "pets", "pets_pool_images": len(self.arrays)} if self.config.source == "pets" else {})}

    def build(self, encoder):
        return SimMIM(encoder, self.config.mask_ratio, self.config.divide_loss_by_masked)

    def loss(self, model, idx, gen, device):
        c = self.config
        x = self._prep(_gather(self.arrays.images, idx), device)
        x = A.random_resized_crop(x, self.size, c.crop_scale, c.crop_ratio, gen)
        x = self._norm(A.random_hflip(x, gen))
        mask = model.random_mask(x.shape[0], generator=gen).to(device)
        return model(x, mask=mask)[0]

    @torch.no_grad()
    def evaluate(self, model, device, autocast):
        """Masked L1 on up to 512 training images, un-augmented, with fixed masks, and the
        reconstruction yardstick on held-out Intel test images (``yardstick_*``)."""
        model.eval()
        idx = self.train_index[:512]
        gen = torch.Generator().manual_seed(0)
        total, n = 0.0, 0
        for chunk in np.array_split(idx, max(1, len(idx) // self.config.eval_batch_size)):
            x = self._norm(self._prep(_gather(self.arrays.images, chunk), device))
            mask = model.random_mask(len(chunk), generator=gen).to(device)
            with autocast:
                loss = model(x, mask=mask)[0]
            total += float(loss) * len(chunk)
            n += len(chunk)
        held = heldout_images(self.config, self.config.heldout_data, self.config.heldout_images)
        yard = reconstruction_yardstick(model, self._norm(self._prep(held, device)), autocast=autocast)
        return {"eval_l1": total / n, "eval_images": n, **{f"yardstick_{k}": v for k, v in yard.items()}}


def pets_pretrain_index(n: int, valid: np.ndarray, config: PretrainConfig) -> np.ndarray:
    """In-domain pre-training images (``--source pets``): the Pets pool of ``n`` images
    without the nested test set of ``(test_size, split_seed)`` (the one fine-tuning with
    ``--split nested`` and the same two options tests on), labels unused; with
    ``num_images``, a seeded (``subset_seed``) subset of them. Sorted pool indices."""
    if config.test_size >= n:
        raise DataError(f"--test-size {config.test_size} leaves no pre-training images among the {n} Pets images; use a smaller --test-size")
    rest, _ = split_indices(n, n - config.test_size, config.test_size, "nested", config.split_seed)
    index = np.sort(_valid_only(rest, valid))
    if config.num_images is not None:
        if config.num_images > len(index):
            raise DataError(f"--num-images {config.num_images} is more than the {len(index)} Pets images outside the test set")
        perm = torch.randperm(len(index), generator=torch.Generator().manual_seed(config.subset_seed)).numpy()
        index = np.sort(index[perm[: config.num_images]])
    return index


def heldout_images(config: TrainConfig, data: str | None = None, num_images: int = 256, seed: int = 0) -> torch.Tensor:
    """Up to ``num_images`` Intel ``seg_test`` images (a seeded sample, all classes), uint8
    ``[N, S, S, 3]``: never seen by pre-training, so they score the reconstruction yardstick."""
    intel = load_intel(data, "test", _image_size(config), config.resize, config.cache_dir, config.skip_bad_images, progress=False)
    valid = np.flatnonzero(intel.arrays.valid)
    perm = torch.randperm(len(valid), generator=torch.Generator().manual_seed(seed)).numpy()
    return _gather(intel.arrays.images, np.sort(valid[perm[:num_images]]))


class IntermediateTask(Task):
    def __init__(self, config: IntermediateConfig, progress: bool = True):
        self.config = config
        size = _image_size(config)
        c = config
        self.kind = kind = INTERMEDIATE_TASKS[c.task]
        if kind.data == "intel":
            train = load_intel(c.data, "train", size, c.resize, c.cache_dir, c.skip_bad_images, progress)
            test = load_intel(c.data, "test", size, c.resize, c.cache_dir, c.skip_bad_images, progress)
            self.images, self.labels = train.arrays.images, train.arrays.targets
            self.test_images, self.test_labels = test.arrays.images, test.arrays.targets
            self.train_index = np.flatnonzero(train.arrays.valid)
            self.test_index = np.flatnonzero(test.arrays.valid)
            self.num_classes = len(train.classes) if kind.labels == "class" else c.num_clusters
        else:
            pets = load_pets(c.data, size, c.resize, cache_dir=c.cache_dir, skip_bad=c.skip_bad_images, progress=progress)
            n = len(pets.arrays)
            if c.test_size >= n:
                raise DataError(f"--test-size {c.test_size} leaves no training images among the {n} Pets images; use a smaller --test-size")
            train_idx, test_idx = split_indices(n, n - c.test_size, c.test_size, "nested", c.split_seed)
            self.train_index = _valid_only(train_idx, pets.arrays.valid)
            self.test_index = _valid_only(test_idx, pets.arrays.valid)
            self.images = self.test_images = pets.arrays.images
            if kind.labels == "breed":
                self.labels = self.test_labels = pets.breeds
                self.num_classes = int(pets.breeds.max()) + 1
            else:
                self.labels = self.test_labels = pets.arrays.targets
                self.num_classes = 3
        if c.num_images is not None:
            if c.num_images > len(self.train_index):
                raise DataError(f"--num-images {c.num_images} is more than the {len(self.train_index)} training images of task {c.task}")
            perm = torch.randperm(len(self.train_index), generator=torch.Generator().manual_seed(c.split_seed)).numpy()
            self.train_index = np.sort(self.train_index[perm[: c.num_images]])

    @property
    def data_summary(self):
        return {"train_images": int(len(self.train_index)), "test_images": int(len(self.test_index)), "num_classes": self.num_classes}

    def build(self, encoder):
        if self.kind.labels == "clusters":
            # pseudo-labels from the initial encoder (built before any resume state is loaded)
            self.labels, self.test_labels = cluster_pseudo_labels(
                encoder, self.images, self.test_images, self.train_index, self.config.num_clusters, self.config.split_seed, self.config.normalize)
        if self.kind.head == "patch":
            return PatchSupervised(encoder, self.num_classes)
        return CLSClassifier(encoder, self.num_classes)

    def loss(self, model, idx, gen, device):
        c = self.config
        x = self._prep(_gather(self.images, idx), device)
        y = _gather(self.labels, idx).to(device).long()
        if self.kind.labels == "trimap":
            x, y = A.random_hflip(x, gen, y)
            x = self._norm(A.random_contrast(x, c.contrast, gen))
            y = patch_majority_labels(y, model.encoder.patch_size, self.num_classes)
            return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        if self.kind.labels == "clusters":  # labels [B, L] on the patch grid flip with the image
            gh, gw = model.encoder.grid_size
            x, y = A.random_hflip(x, gen, y.reshape(-1, gh, gw))
            x = self._norm(A.random_contrast(x, c.contrast, gen))
            return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        x = self._norm(A.random_contrast(A.random_hflip(x, gen), c.contrast, gen))
        x, soft = A.mixup(x, y, self.num_classes, c.mixup_alpha, gen)
        return F.cross_entropy(model(x).float(), soft)

    @torch.no_grad()
    def evaluate(self, model, device, autocast):
        model.eval()
        correct, n = 0, 0
        bs = self.config.eval_batch_size
        for start in range(0, len(self.test_index), bs):
            chunk = self.test_index[start : start + bs]
            x = self._norm(self._prep(_gather(self.test_images, chunk), device))
            y = _gather(self.test_labels, chunk).to(device).long()
            with autocast:
                out = model(x)
            if self.kind.labels == "trimap":
                y = patch_majority_labels(y, model.encoder.patch_size, self.num_classes)
            correct += int((out.argmax(-1) == y).sum())
            n += y.numel()
        key = "patch_accuracy" if self.kind.head == "patch" else "accuracy"
        return {key: correct / n, "test_images": int(len(self.test_index))}


class FinetuneTask(Task):
    def __init__(self, config: FinetuneConfig, progress: bool = True):
        self.config = config
        c = config
        size = _image_size(config)
        self.pets = load_pets(c.data, size, c.resize, cache_dir=c.cache_dir, skip_bad=c.skip_bad_images, progress=progress)
        n = len(self.pets.arrays)
        if c.validation_size:
            # validation images: the end of the nested permutation, disjoint from the test set and
            # from every nested training prefix that fits beside them
            if c.train_size + c.test_size + c.validation_size > n:
                raise DataError(f"train size {c.train_size} + test size {c.test_size} + validation size {c.validation_size} is more than the {n} Pets images")
            train_idx, _ = split_indices(n, c.train_size, c.test_size, c.split, c.split_seed)
            test_idx = torch.randperm(n, generator=torch.Generator().manual_seed(c.split_seed)).numpy()[n - c.validation_size:]
        else:
            train_idx, test_idx = split_indices(n, c.train_size, c.test_size, c.split, c.split_seed)
        self.train_index = _valid_only(train_idx, self.pets.arrays.valid)
        self.test_index = _valid_only(test_idx, self.pets.arrays.valid)

    @property
    def data_summary(self):
        return {"train_images": int(len(self.train_index)), "test_images": int(len(self.test_index)),
                "pool_images": len(self.pets.arrays), "skipped_bad_images": len(self.pets.arrays.bad_files)}

    def build(self, encoder):
        if self.config.aux_mim_weight:
            model = JointSegmenter(encoder, self.config.aux_mask_ratio)
            if model.aux.num_masked < 1:
                raise DataError(f"--aux-mask-ratio {self.config.aux_mask_ratio} masks no patch of the {model.aux.num_patches}; use a larger ratio")
            return model
        return Segmenter(encoder, 3)

    def export(self, model):
        return model.segmenter if isinstance(model, JointSegmenter) else model

    def loss(self, model, idx, gen, device):
        c = self.config
        x = _gather(self.pets.arrays.images, idx).to(device, non_blocking=True)
        y = _gather(self.pets.arrays.targets, idx).to(device, non_blocking=True)
        x, y = A.random_hflip(x, gen, y, width_dim=2)  # flipped while uint8 [B, H, W, C]: cheaper, same result
        x = self._norm(A.random_contrast(A.to_float(x), c.contrast, gen))
        if not c.aux_mim_weight:
            return segmentation_loss(model(x), y.long(), reference_quirk=c.loss_quirk, patch_size=model.encoder.patch_size)
        mask = model.aux.random_mask(x.shape[0], generator=gen).to(device)  # drawn after the augmentation: the batch and its flips are the plain fine-tune's
        logits, aux = model(x, mask)
        return segmentation_loss(logits, y.long(), reference_quirk=c.loss_quirk, patch_size=model.encoder.patch_size) + c.aux_mim_weight * aux

    @torch.no_grad()
    def predict(self, model, idx: np.ndarray, device, autocast) -> torch.Tensor:
        """Predicted label maps ``[N, H, W]`` for pool indices ``idx`` (no augmentation)."""
        model.eval()
        x = self._norm(self._prep(_gather(self.pets.arrays.images, idx), device))
        with autocast:
            return model(x).argmax(1).cpu()

    def evaluate(self, model, device, autocast):
        meter = SegmentationMeter(3)
        bs = self.config.eval_batch_size
        for start in range(0, len(self.test_index), bs):
            chunk = self.test_index[start : start + bs]
            meter.update(self.predict(model, chunk, device, autocast), _gather(self.pets.arrays.targets, chunk))
        return {**meter.scores(), "test_images": meter.num_images}


class JointSegmenter(nn.Module):
    """Fine-tuning with a masked-image-modelling auxiliary loss (beyond the paper; SSAT,
    Das et al., WACV 2024): the :class:`Segmenter` (``segmenter``) and, sharing its encoder, a
    :class:`~viny.simmim.SimMIM` mask token and linear decoder (``aux``) that are dropped after
    training (only ``segmenter`` is saved as the run's model).

    ``forward(images)``: the segmenter's logits; ``forward(images, mask)``: ``(logits, SimMIM
    masked L1 of the same images with ``mask`` [B, L] masked)``, two passes through the encoder
    (the segmentation pass sees every patch)."""

    def __init__(self, encoder: ViNy, mask_ratio: float = 0.5, num_classes: int = 3):
        super().__init__()
        self.segmenter = Segmenter(encoder, num_classes)  # first: its head's init is the plain fine-tune's
        self.aux = SimMIM(encoder, mask_ratio)

    @property
    def encoder(self) -> ViNy:
        return self.segmenter.encoder

    @property
    def head(self):
        return self.segmenter.head

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        logits = self.segmenter(images)
        if mask is None:
            return logits
        return logits, self.aux(images, mask=mask)[0]


@torch.no_grad()
def cluster_pseudo_labels(encoder: ViNy, train_images: np.ndarray, test_images: np.ndarray, train_index: np.ndarray,
                          k: int, seed: int, normalize: bool = True, max_fit_tokens: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Label-free patch targets: k-means (fitted on up to ``max_fit_tokens`` training tokens
    of ``encoder``) over its patch tokens; returns ``[N, L]`` labels for train and test images."""
    from viny.geometry import kmeans

    tr = layer_tokens(encoder, train_images, normalize=normalize, precision="fp32")[len(encoder.blocks)]
    te = layer_tokens(encoder, test_images, normalize=normalize, precision="fp32")[len(encoder.blocks)]
    fit = tr[torch.from_numpy(train_index)].reshape(-1, tr.shape[-1])
    pick = torch.randperm(len(fit), generator=torch.Generator().manual_seed(seed))[:max_fit_tokens]
    centroids, _ = kmeans(fit[pick], k, seed=seed)
    label = lambda t: torch.cdist(t.reshape(-1, t.shape[-1]).double(), centroids.double()).argmin(-1).reshape(t.shape[:2]).numpy()  # noqa: E731
    return label(tr), label(te)


def _image_size(config: TrainConfig) -> int:
    from viny.model import VINY_ARGS, VINY_TEST_ARGS

    return (VINY_TEST_ARGS if config.model == "viny_test" else VINY_ARGS)["img_size"]


def make_task(config: TrainConfig, progress: bool = True) -> Task:
    cls = {PretrainConfig: PretrainTask, IntermediateConfig: IntermediateTask, FinetuneConfig: FinetuneTask}[type(config)]
    return cls(config, progress)
