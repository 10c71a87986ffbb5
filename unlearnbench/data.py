"""Image datasets held as uint8 tensors on the compute device (or, when larger than a memory budget, read from
disk batch by batch: `disk_images`), with class views and device-side augmentation."""
from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .disk_images import DiskImages, check_rows
from .errors import DataFileError, UserError
from .registry import Registry


@dataclass(frozen=True)
class Split:
    """Images as uint8 [N, C, H, W] and int64 labels [N], on one device. The images are a tensor or, for a dataset
    stored on disk, a `DiskImages` view: indexing either gives a uint8 tensor; `subset` reads nothing from disk."""

    images: torch.Tensor | DiskImages
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def on_disk(self) -> bool:
        return isinstance(self.images, DiskImages)

    def subset(self, index: torch.Tensor) -> "Split":
        """Return the samples at `index` (a LongTensor or bool mask)."""
        index = index.to(self.labels.device)
        images = self.images.select(index) if self.on_disk else self.images[index]
        return Split(images, self.labels[index])

    @staticmethod
    def concat(splits: list["Split"]) -> "Split":
        """The samples of `splits`, one after another (views of one image file stay on disk)."""
        if all(s.on_disk for s in splits) and len({(s.images.path, s.images.offset) for s in splits}) == 1:
            images = DiskImages.concat(s.images for s in splits)
        else:
            images = torch.cat([s.images[:] if s.on_disk else s.images for s in splits])
        return Split(images, torch.cat([s.labels for s in splits]))

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
    test_images: int | None = None
    image_shape: tuple[int, int, int] | None = None  # decoded H, W, C
    count_images: Callable[["DataSource"], tuple] | None = None  # (train, test, shape) of the files present
    decodes_to_file: bool = False  # its loader decodes to a .npy file it can be streamed from (storage: disk)
    # which of several possible files the loader would read, where they differ in their images (a tree's place and
    # classes, CIFAR-10's pickles or JPEG copy): part of every cache key, so that other data is never a cache hit
    identity: Callable[["DataSource"], dict] | None = None
    # (classes, training images per class, test images per class) of the files present, read without decoding an
    # image (None: not countable yet, e.g. before a download): planning checks the per-class subsets against it
    count_per_class: Callable[["DataSource"], tuple | None] | None = None


@dataclass(frozen=True)
class DataSource:
    """Where a loader may read from: the data root, a cache folder, download permission, options, and `files`: the
    dataset's identity as scanned just before loading (`dataset_identity(rescan=True)`, what a group load passes),
    which a loader keys its decoded cache by instead of signing the files again, refusing files it sees changed
    since (decode_image_folder says how far it looks; None: the loader signs what it reads)."""

    root: Path | None
    cache_dir: Path
    download: bool = False
    options: dict = field(default_factory=dict)
    files: dict | None = None


# the dataset modules register themselves when imported: at the registry's first lookup
DATASETS: Registry[DatasetInfo] = Registry("dataset", load=lambda: importlib.import_module(".datasets", __package__))


class WithheldSplit:
    """`task.data.test` as methods see it: any use is refused with one sentence (the metrics alone read the test
    split). Python's own protocol lookups (`__deepcopy__`, …) still find nothing, so copying a task works."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()

    def __len__(self) -> int:
        self._refuse()

    def __iter__(self):
        self._refuse()

    def __getitem__(self, index):
        self._refuse()

    @staticmethod
    def _refuse():
        raise UserError("The test split is withheld from unlearning methods: a method trains, stops and chooses on "
                        "task.data.train and task.data.val only; the metrics alone read the test split.")


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
    train_eval: Split | None = None  # what metrics read as 'train' where the whole split is too large (ImageNet)

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
        """Return the split that metrics evaluate as 'train', 'val' or 'test': 'train' is the training-split
        evaluation subset where the dataset has one (`train_eval_per_class`), else the whole training split."""
        if name not in ("train", "val", "test"):
            raise UserError(f"Unknown split '{name}'; choose train, val or test.")
        if name == "train" and self.train_eval is not None:
            return self.train_eval
        return getattr(self, name)

    def to(self, device: torch.device | str) -> "ImageData":
        test = self.test if isinstance(self.test, WithheldSplit) else self.test.to(device)
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=test,
                       train_eval=None if self.train_eval is None else self.train_eval.to(device))

    def without_test(self) -> "ImageData":
        """This dataset as a method receives it (`UnlearnTask.data`): the test split withheld, so that no method
        trains, stops or chooses on it (docs/protocol.md), and its own copy of every label tensor (a method that
        relabels samples in place, e.g. `train.labels[mask] = ...`, changed the worker's data for every later cell
        of the group; the images are shared)."""
        def own(split):
            return None if split is None else Split(split.images, split.labels.clone())

        return replace(self, train=own(self.train), val=own(self.val), test=WithheldSplit(),
                       train_eval=own(self.train_eval))

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
        """Yield normalised (x, y) batches of `split`, shuffled and augmented on the device when asked. A split on
        disk is read one batch ahead, in a thread, while the caller works on the current one."""
        n = len(split)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(split.labels.device)
        indices = [order[start : start + batch_size] for start in range(0, n, batch_size)]
        for index, images in zip(indices, _read_ahead(split, indices)):
            if augment and self.augment != "none":
                images = augment_batch(images, self.augment, generator)
            yield self.normalize(images), split.labels[index]


def _read_ahead(split: Split, indices: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """split.images[index] for every index; from disk, the next batch is read while this one is used."""
    if not split.on_disk:
        yield from (split.images[index] for index in indices)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(split.images.__getitem__, indices[0]) if indices else None
        for k in range(len(indices)):
            images = pending.result()
            pending = reader.submit(split.images.__getitem__, indices[k + 1]) if k + 1 < len(indices) else None
            yield images


AUGMENTATIONS = ("none", "crop", "flip", "crop_flip")  # a dataset's training augmentation (augment_batch)


def augment_batch(images: torch.Tensor, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    """'crop': a random 4-px translate (reflect padding); 'flip': a random horizontal flip; 'crop_flip': both; all
    on the device."""
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
    """Split indices into (kept, carved) with `fraction` of every class carved out, seeded; a class of two images
    or more gives at least one (a small class would otherwise have no validation image at all)."""
    rng = np.random.default_rng(seed)
    carved = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        carved.append(idx[:carve_size(len(idx), fraction)])
    carved_idx = np.sort(np.concatenate(carved))
    kept_idx = np.setdiff1d(np.arange(len(labels)), carved_idx)
    return kept_idx, carved_idx


def carve_size(n: int, fraction: float) -> int:
    """How many of a class's `n` training images the validation carve takes (`stratified_split`)."""
    count = int(round(fraction * n))
    return 1 if fraction > 0 and count == 0 and n >= 2 else count


def per_class_subset(indices: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """At most `per_class` of `indices` from every class, drawn at random (seeded), in ascending order (a dataset
    option asking for more than a class holds is refused first: `check_subsets`)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels[indices]):
        idx = indices[labels[indices] == c].copy()
        rng.shuffle(idx)
        chosen.append(idx[:per_class])
    return np.sort(np.concatenate(chosen))


def check_subsets(name: str, options: dict, classes: list, train_counts, test_counts, val_fraction: float) -> None:
    """Refuse dataset `name`'s per-class options (`test_per_class`, `train_per_class`, `val_per_class`,
    `train_eval_per_class`) where a class holds fewer images than asked in the pool the subset is drawn from, and
    `val_from: test` where the evaluation subset leaves a class no validation image: from the training and test
    splits' images per class, so that planning checks it from counts before anything is loaded. A class with no
    training or no test image, or whose training images the validation carve takes all of, is refused: its forget
    accuracy, ZRF and the rest would be undefined on that split."""
    train, test = np.asarray(train_counts, dtype=np.int64), np.asarray(test_counts, dtype=np.int64)
    for counts, split in ((train, "training"), (test, "test")):
        if (counts == 0).any():
            raise UserError(f"Class {classes[int(np.argmin(counts))]!r} of dataset '{name}' has no image in its "
                            f"{split} split; every class needs training and test images.")

    def check(option: str, counts: np.ndarray, pool: str) -> np.ndarray:
        """`counts` capped at the option's per-class number (where it is set and every class holds it)."""
        per_class = options.get(option)
        if not per_class:
            return counts
        short = int(np.argmin(counts))
        if counts[short] < per_class:
            raise UserError(f"'{option}: {per_class}' of dataset '{name}' asks for more images than class "
                            f"{classes[short]!r} has in {pool} ({counts[short]}); use at most {counts[short]}.")
        return np.minimum(counts, per_class)

    tested = check("test_per_class", test, "the test split")
    if options.get("val_from", "train") == "test":  # validation: the test images the evaluation subset leaves
        kept, carved = train, test - tested
        bare = np.flatnonzero((test > 0) & (carved == 0))
        if len(bare):
            raise UserError(f"'val_from: test' of dataset '{name}' leaves class {classes[bare[0]]!r} no validation "
                            f"image: its test images all go to the evaluation subset (test_per_class: "
                            f"{options.get('test_per_class')}); lower test_per_class or use val_from: train.")
    else:
        carved = np.array([carve_size(int(n), val_fraction) for n in train], dtype=np.int64)
        kept = train - carved
        if (kept == 0).any():
            short = int(np.argmin(kept))
            raise UserError(f"The validation carve (val_fraction: {val_fraction}) takes all {train[short]} training "
                            f"images of class {classes[short]!r} of dataset '{name}', leaving it none to train on; "
                            f"lower val_fraction.")
    kept = check("train_per_class", kept, "the training split"
                 + (" after the validation carve" if options.get("val_from", "train") == "train" else ""))
    check("val_per_class", carved, "the validation split")
    check("train_eval_per_class", kept, "the training split")


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """[N, H, W, C] uint8 numpy → Split with [N, C, H, W] tensors on the CPU, in plain NCHW strides: a permuted
    one-channel tensor passes as contiguous yet keeps channels-last strides, which sends CPU convolutions down
    the channels-last path (ResNet-18/16 on MNIST trained 1.5× slower)."""
    nhwc = torch.from_numpy(np.require(images, requirements=["C", "W"]))
    tensor = nhwc.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)  # .contiguous() is a no-op here
    return Split(tensor, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


SPLIT_SEED = 0  # the train/val carve is part of a dataset's definition, not of a run's seed
STORAGES = ("auto", "memory", "disk")
DEFAULT_MEMORY_BUDGET_GB = 4.0  # decoded images a worker holds in memory at most; larger datasets stay on disk


def memory_budget_bytes(options: dict) -> int:
    """The dataset option `memory_budget_gb` (default DEFAULT_MEMORY_BUDGET_GB) in bytes."""
    budget = options.get("memory_budget_gb", DEFAULT_MEMORY_BUDGET_GB)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < math.inf:
        raise UserError(f"memory_budget_gb must be a number of GiB above 0, got {budget!r}.")
    return int(budget * 2**30)


def images_on_disk(name: str, decodes_to_file: bool, storage: str, budget: int, nbytes: int) -> bool:
    """Whether a dataset's `nbytes` of decoded images are read from disk batch by batch rather than held on the
    device: `storage` says so, or (auto) they would take more than the memory budget and its loader decodes them
    to a file."""
    if storage not in STORAGES:
        raise UserError(f"Unknown storage '{storage}' for dataset '{name}'; choose one of: {', '.join(STORAGES)}.")
    if storage == "disk" and not decodes_to_file:
        raise UserError(f"Dataset '{name}' is loaded into memory by its loader; storage: disk applies to datasets "
                        f"decoded to a file (ImageFolder trees such as imagenet).")
    return storage == "disk" or (storage == "auto" and decodes_to_file and nbytes > budget)


PER_CLASS_OPTIONS = ("train_per_class", "val_per_class", "test_per_class", "train_eval_per_class")  # subsets
DEFAULT_VAL_FRACTION = 0.1  # of each class of the training split, carved out as the validation split
VAL_SOURCES = ("train", "test")  # where the validation split comes from (`val_from`)


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    cache_dir: str | Path = "results/cache",
    download: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    device: torch.device | str = "cpu",
    options: dict | None = None,
    files: dict | None = None,
) -> ImageData:
    """Load a registered dataset, carve a stratified validation split from train, and move it to `device`.

    Options besides the loader's: `train_per_class` (a training subset), `val_per_class` (a subset of the carved
    validation split, what stopping rules and tuning score), `test_per_class` (an evaluation subset of the test split), `train_eval_per_class` (an evaluation subset of the training split, what metrics read as
    'train'), `val_from` ('train': validation is carved from the training split, the default; 'test': it is the
    test images outside the `test_per_class` subset and the training split stays whole, for originals pretrained
    on the whole training set, whose training images are not held out), `storage` (auto | memory | disk) and
    `memory_budget_gb`: a dataset whose decoded images exceed the budget is read from its decoded file batch by
    batch (auto), so memory stays bounded whatever its size. `files`: the identity the caller scanned the files by
    (`DataSource.files`)."""
    info = DATASETS.get(name)
    options = dict(options or {})
    subsets = {key: options.pop(key, None) for key in PER_CLASS_OPTIONS}  # applied below, in this order:
    test_per_class = subsets["test_per_class"]  # an evaluation subset (the paper's ImageNet: 5 a class)
    per_class = subsets["train_per_class"]  # a training subset, applied after the validation carve
    val_per_class = subsets["val_per_class"]  # a validation subset, taken from the carve (mini: 100 a class)
    train_eval_per_class = subsets["train_eval_per_class"]  # Table 1's training columns on ImageNet
    val_from = subsets["val_from"] = options.pop("val_from", "train")
    check_val_source(name, val_from, test_per_class)
    storage = options.pop("storage", "auto")
    budget = memory_budget_bytes(options)  # the option stays for the loader: it decodes in chunks within it
    images_on_disk(name, info.decodes_to_file, storage, budget, 0)  # a bad storage value fails before decoding
    source = DataSource(Path(root).expanduser() if root else None, Path(cache_dir), download, options, files)
    problem = info.missing(source)
    if problem:
        raise UserError(problem)
    raw = info.load(source)
    train_labels, test_labels = np.asarray(raw.train_labels), np.asarray(raw.test_labels)
    check_subsets(name, subsets, raw.classes, np.bincount(train_labels, minlength=len(raw.classes)),
                  np.bincount(test_labels, minlength=len(raw.classes)), val_fraction)
    tested = np.arange(len(test_labels))
    if test_per_class:
        tested = per_class_subset(tested, test_labels, test_per_class, SPLIT_SEED)
    if val_from == "test":  # held out from every model: the test images the evaluation subset leaves
        kept, carved = np.arange(len(train_labels)), np.setdiff1d(np.arange(len(test_labels)), tested)
        val_images, val_labels = raw.test_images, test_labels
    else:
        kept, carved = stratified_split(train_labels, val_fraction, SPLIT_SEED)
        val_images, val_labels = raw.train_images, train_labels
    if per_class:
        kept = per_class_subset(kept, train_labels, per_class, SPLIT_SEED)
    if val_per_class:
        carved = per_class_subset(carved, val_labels, val_per_class, SPLIT_SEED)
    on_file = info.decodes_to_file and isinstance(raw.train_images, np.memmap) and isinstance(raw.test_images, np.memmap)
    row_bytes = int(np.prod(raw.train_images.shape[1:]))
    on_disk = images_on_disk(name, on_file, storage, budget, (len(kept) + len(carved) + len(tested)) * row_bytes)
    make = _disk_split if on_disk else _memory_split
    # a decoded file read whole into memory is checked against the digest written with it (a hash costs less than
    # the read then; an ImageNet subset held in memory reads a fraction of its file, which is not hashed whole)
    held = {"train": [kept] + ([carved] if val_from != "test" else []),
            "test": [tested] + ([carved] if val_from == "test" else [])}
    for split, rows in held.items():
        images = getattr(raw, f"{split}_images")
        if not on_disk and isinstance(images, np.memmap) and len(np.unique(np.concatenate(rows))) == len(images):
            check_rows(images.filename)
    data = ImageData(
        name=name,
        classes=list(raw.classes),
        mean=tuple(raw.mean),
        std=tuple(raw.std),
        augment=raw.augment,
        train=make(raw.train_images, train_labels, kept),
        val=make(val_images, val_labels, carved),
        test=make(raw.test_images, test_labels, tested),
        train_eval=None if not train_eval_per_class else make(
            raw.train_images, train_labels, per_class_subset(kept, train_labels, train_eval_per_class, SPLIT_SEED)),
    )
    return data.to(device)


def check_val_source(name: str, val_from, test_per_class, where: str = "") -> None:
    """`val_from` is 'train' or 'test', and 'test' needs an evaluation subset to leave images for validation."""
    if val_from not in VAL_SOURCES:
        raise UserError(f"'val_from' of dataset '{name}'{where} must be one of {', '.join(VAL_SOURCES)}, "
                        f"got {val_from!r}.")
    if val_from == "test" and not test_per_class:
        raise UserError(f"'val_from: test' of dataset '{name}'{where} takes validation from the test images outside "
                        f"the evaluation subset, so it needs 'test_per_class' (the paper's ImageNet: 5).")


def _memory_split(images: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> Split:
    whole = len(rows) == len(labels) and np.array_equal(rows, np.arange(len(labels)))
    return _to_split(images if whole else images[rows], labels[rows])


def _disk_split(images: np.memmap, labels: np.ndarray, rows: np.ndarray) -> Split:
    return Split(DiskImages.open(images, rows), torch.from_numpy(labels[rows].astype(np.int64)))


def dataset_classes(name: str, root: str | Path | None, cache_dir: str | Path = "results/cache",
                    options: dict | None = None) -> int | None:
    """How many classes dataset `name` has: counted in its files where it can be (an ImageFolder tree: its train/
    class folders, so an ImageNet-100 tree under `imagenet` has 100) and they are present, else the registered
    number (None: known only after loading)."""
    info, source = DATASETS.get(name), _source(root, cache_dir, options)
    if info.count_classes is not None and info.missing(source) is None:
        return info.count_classes(source)
    return info.num_classes


def check_dataset_subsets(dataset, root: str | Path | None, cache_dir: str | Path, val_fraction: float) -> None:
    """`check_subsets` of a grid's dataset entry against the images per class its files hold, where it sets a
    per-class option and they can be counted without loading (else loading checks it)."""
    options = dataset.options_dict
    if not any(options.get(key) for key in PER_CLASS_OPTIONS):
        return
    info = DATASETS.get(dataset.name)
    source = _source(root, cache_dir, options)
    try:
        counted = info.count_per_class(source) if info.count_per_class and info.missing(source) is None else None
    except DataFileError:  # a damaged file: its cells fail with this sentence when they load it, the rest run
        counted = None
    if counted is not None:
        check_subsets(dataset.name, options, *counted, val_fraction)


def dataset_sizes(name: str, root: str | Path | None, cache_dir: str | Path = "results/cache",
                  options: dict | None = None) -> tuple[int | None, int | None, tuple | None]:
    """(training images before the validation carve, test images, decoded image shape H, W, C) of dataset `name`,
    counted in its files where it can be (an ImageFolder tree: a directory scan, nothing decoded), else the
    registered figures; None where unknown."""
    info, source = DATASETS.get(name), _source(root, cache_dir, options)
    if info.count_images is not None and info.missing(source) is None:
        return info.count_images(source)
    return info.train_images, info.test_images, info.image_shape


def _source(root: str | Path | None, cache_dir: str | Path, options: dict | None,
            download: bool = False) -> DataSource:
    """Where planning looks for a dataset's files (it never downloads: `download` only says a loader may)."""
    return DataSource(Path(root).expanduser() if root else None, Path(cache_dir), download, dict(options or {}))


_IDENTITIES: dict[tuple, dict] = {}  # a grid's cells share their dataset's (planning scans a tree once a run)
_IN_RUN = False  # inside `scans_files_afresh`: the run that cleared the memo is still going


def scans_files_afresh(entry: Callable) -> Callable:
    """Decorate a run's entry point (run, tune, the CLI's commands): it scans each dataset's files again, since an
    earlier run in this process (the Python API, a notebook) may have seen other files, and its planning once only,
    calls it makes included. Loading a group's data scans its files once more (`dataset_identity(rescan=True)`,
    in whichever process loads it), so that its cells are checked against the files loaded."""
    @functools.wraps(entry)
    def fresh(*args, **kwargs):
        global _IN_RUN
        if _IN_RUN:
            return entry(*args, **kwargs)
        _IDENTITIES.clear()
        _IN_RUN = True
        try:
            return entry(*args, **kwargs)
        finally:
            _IN_RUN = False
    return fresh


def dataset_identity(name: str, options: dict, root: str | Path | None, cache_dir: str | Path,
                     download: bool = False, rescan: bool = False) -> dict:
    """Which files dataset `name` with `options` reads under `root`, as far as they change its images ({} where
    its name and options say it all, or its files are missing): a cache key's part. `rescan`: scan the files again
    (and remember that scan), as loading them does."""
    memo = (name, repr(sorted(options.items())), str(root) if root else None, str(cache_dir), download)
    if rescan:
        _IDENTITIES.pop(memo, None)
    if memo not in _IDENTITIES:
        info, source = DATASETS.get(name), _source(root, cache_dir, options, download)
        if info.identity is None or info.missing(source) is not None:
            return {}  # not remembered: the files may appear later in this process
        _IDENTITIES[memo] = info.identity(source)
    return _IDENTITIES[memo]


def dataset_missing(name: str, root: str | Path | None, cache_dir: str | Path = "results/cache",
                    options: dict | None = None, download: bool = False) -> str | None:
    """Return why dataset `name` cannot be loaded from `root`, or fetched where `download` allows (one sentence),
    or None when it can."""
    return DATASETS.get(name).missing(_source(root, cache_dir, options, download))


