"""Image datasets held as uint8 tensors on the compute device, with class views and device-side augmentation."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .registry import Registry


@dataclass(frozen=True)
class Split:
    """Images as uint8 [N, C, H, W] and int64 labels [N], on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "Split":
        """Return the samples at `index` (a LongTensor or bool mask)."""
        index = index.to(self.labels.device)
        return Split(self.images[index], self.labels[index])

    def forget(self, forget_class: int) -> "Split":
        """D_f(c): every sample of class `forget_class`."""
        return self.subset(self.labels == forget_class)

    def retain(self, forget_class: int) -> "Split":
        """D_r(c): every sample not of class `forget_class`."""
        return self.subset(self.labels != forget_class)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class RawDataset:
    """What a loader returns: CPU uint8 arrays [N, H, W, C] and labels, plus metadata."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: how to load it and how to tell the user what is missing."""

    name: str
    load: Callable[["DataSource"], RawDataset]
    missing: Callable[["DataSource"], str | None]
    description: str = ""
    num_classes: int | None = None
    train_images: int | None = None  # the training set's size before the validation cut (None: depends on the files)
    count_classes: Callable[["DataSource"], int] | None = None  # the class count of the files present, read cheaply


@dataclass(frozen=True)
class DataSource:
    """Where a loader may read from: the data root, a cache folder, download permission, options."""

    root: Path | None
    cache_dir: Path
    download: bool = False
    options: dict = field(default_factory=dict)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


@dataclass(frozen=True)
class ImageData:
    """A dataset on the device: train / val / test splits and how to turn uint8 into model input."""

    name: str
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    train: Split
    val: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.train.images.device

    def split(self, name: str) -> Split:
        """Return the split called 'train', 'val' or 'test'."""
        if name not in ("train", "val", "test"):
            raise UserError(f"Unknown split '{name}'; choose train, val or test.")
        return getattr(self, name)

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] → float32 normalised with the dataset's mean and std."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        x = (images.float() / 255.0 - mean) / std
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batches(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised (x, y) batches of `split`, shuffled and augmented on the device when asked."""
        n = len(split)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(split.labels.device)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            images = split.images[index]
            if augment and self.augment != "none":
                images = augment_batch(images, self.augment, generator)
            yield self.normalize(images), split.labels[index]


def augment_batch(images: torch.Tensor, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    """Random 4-px translate (reflect padding) and, for 'crop_flip', a horizontal flip; all on the device."""
    b, c, h, w = images.shape
    pad = 4 if kind.startswith("crop") else 0
    out = images
    if pad:
        padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect").to(images.dtype)
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device)[None])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device)[None])[:, None, None, :]
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        chan = torch.arange(c, device=images.device)[None, :, None, None]
        out = padded[batch, chan, rows, cols]
    if kind.endswith("flip"):
        flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, carved) with `fraction` of every class carved out, seeded."""
    rng = np.random.default_rng(seed)
    carved = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        carved.append(idx[: int(round(fraction * len(idx)))])
    carved_idx = np.sort(np.concatenate(carved))
    kept_idx = np.setdiff1d(np.arange(len(labels)), carved_idx)
    return kept_idx, carved_idx


def per_class_subset(indices: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """At most `per_class` of `indices` from every class, drawn at random (seeded), in ascending order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels[indices]):
        idx = indices[labels[indices] == c].copy()
        rng.shuffle(idx)
        chosen.append(idx[:per_class])
    return np.sort(np.concatenate(chosen))


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """[N, H, W, C] uint8 numpy → Split with [N, C, H, W] tensors on the CPU, in plain NCHW strides: a permuted
    one-channel tensor passes as contiguous yet keeps channels-last strides, which sends CPU convolutions down
    the channels-last path (ResNet-18/16 on MNIST trained 1.5× slower)."""
    nhwc = torch.from_numpy(np.require(images, requirements=["C", "W"]))
    tensor = nhwc.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)  # .contiguous() is a no-op here
    return Split(tensor, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


SPLIT_SEED = 0  # the train/val carve is part of a dataset's definition, not of a run's seed


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    cache_dir: str | Path = "results/cache",
    download: bool = False,
    val_fraction: float = 0.1,
    device: torch.device | str = "cpu",
    options: dict | None = None,
) -> ImageData:
    """Load a registered dataset, carve a stratified validation split from train, and move it to `device`."""
    info = DATASETS.get(name)
    options = dict(options or {})
    per_class = options.pop("train_per_class", None)  # a training subset, applied after the validation carve
    test_per_class = options.pop("test_per_class", None)  # an evaluation subset (the paper's ImageNet: 5 a class)
    source = DataSource(Path(root).expanduser() if root else None, Path(cache_dir), download, options)
    problem = info.missing(source)
    if problem:
        raise UserError(problem)
    raw = info.load(source)
    kept, carved = stratified_split(raw.train_labels, val_fraction, SPLIT_SEED)
    if per_class:
        kept = per_class_subset(kept, raw.train_labels, per_class, SPLIT_SEED)
    tested = np.arange(len(raw.test_labels))
    if test_per_class:
        tested = per_class_subset(tested, np.asarray(raw.test_labels), test_per_class, SPLIT_SEED)
    data = ImageData(
        name=name,
        classes=list(raw.classes),
        mean=tuple(raw.mean),
        std=tuple(raw.std),
        augment=raw.augment,
        train=_to_split(raw.train_images[kept], raw.train_labels[kept]),
        val=_to_split(raw.train_images[carved], raw.train_labels[carved]),
        test=_to_split(raw.test_images[tested] if test_per_class else raw.test_images,
                       np.asarray(raw.test_labels)[tested]),
    )
    return data.to(device)


def dataset_classes(name: str, root: str | Path | None, cache_dir: str | Path = "results/cache",
                    options: dict | None = None) -> int | None:
    """How many classes dataset `name` has: counted in its files where it can be (an ImageFolder tree: its train/
    class folders, so an ImageNet-100 tree under `imagenet` has 100) and they are present, else the registered
    number (None: known only after loading)."""
    info, source = DATASETS.get(name), _source(root, cache_dir, options)
    if info.count_classes is not None and info.missing(source) is None:
        return info.count_classes(source)
    return info.num_classes


def _source(root: str | Path | None, cache_dir: str | Path, options: dict | None) -> DataSource:
    """Where planning looks for a dataset's files (no download)."""
    return DataSource(Path(root).expanduser() if root else None, Path(cache_dir), False, dict(options or {}))


def dataset_missing(name: str, root: str | Path | None, cache_dir: str | Path = "results/cache", options: dict | None = None) -> str | None:
    """Return why dataset `name` cannot be loaded from `root` (one sentence), or None when it can."""
    return DATASETS.get(name).missing(_source(root, cache_dir, options))


